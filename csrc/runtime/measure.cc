#include "layertune/measure.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace layertune {

TimingStats summarize(std::vector<double> s) {
  TimingStats t;
  t.repeats = int(s.size());
  if (s.empty()) return t;
  std::sort(s.begin(), s.end());
  const size_t n = s.size();
  t.median = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
  t.min = s.front();
  double sum = 0;
  for (double v : s) sum += v;
  t.mean = sum / n;
  double var = 0;
  for (double v : s) var += (v - t.mean) * (v - t.mean);
  t.std = n > 1 ? std::sqrt(var / (n - 1)) : 0;
  return t;
}

std::vector<std::vector<double>> time_interleaved(const std::vector<std::function<void()>>& candidates, int warmup,
                                                  int rounds, int repeats, const std::function<void()>& before,
                                                  int first_round) {
  for (const auto& run : candidates)
    for (int i = 0; i < warmup; ++i) run();
  std::vector<std::vector<double>> out(candidates.size());
  std::vector<double> runs(repeats);
  const size_t n = candidates.size();
  for (int r = 0; r < rounds; ++r) {
    // Each round starts one candidate later: no candidate always runs right after the same one
    // (a position in the round can favour what runs there: caches, clock boost, thread wake-up).
    for (size_t k = 0; k < n; ++k) {
      const size_t c = (k + size_t(r + first_round)) % n;
      for (int i = 0; i < repeats; ++i) {
        if (before) before();
        const auto t0 = std::chrono::steady_clock::now();
        candidates[c]();
        runs[i] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      }
      out[c].push_back(summarize(runs).median);
    }
  }
  return out;
}

Comparison compare(const float* out, const float* ref, size_t n) {
  Comparison c;
  for (size_t i = 0; i < n; ++i) {
    const double r = ref[i], o = out[i];
    c.max_abs_ref = std::max(c.max_abs_ref, std::fabs(r));
    const double d = std::fabs(o - r);
    if (std::isnan(d) && !std::isnan(r)) c.max_abs_diff = std::numeric_limits<double>::infinity();
    else if (d > c.max_abs_diff) c.max_abs_diff = d;
  }
  return c;
}

void fill_uniform(float* p, size_t n, uint32_t seed, float lo, float hi) {
  uint64_t state = 0x9E3779B97F4A7C15ull ^ seed;  // splitmix64: identical on every platform
  for (size_t i = 0; i < n; ++i) {
    state += 0x9E3779B97F4A7C15ull;
    uint64_t z = state;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    p[i] = lo + (hi - lo) * float(double(z >> 40) / double(1ull << 24));
  }
}

}  // namespace layertune
