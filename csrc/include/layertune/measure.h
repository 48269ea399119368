// Timing and checking shared by the profiler and the Python binding: warm-up then repeated
// timed runs; outputs compared to the reference kernel's.
#pragma once
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

namespace layertune {

struct TimingStats {
  double median = 0, min = 0, mean = 0, std = 0;  // seconds
  int repeats = 0;
};

// Runs fn `warmup` times untimed, then `repeats` times timed; returns seconds per run.
template <class F>
std::vector<double> time_repeated(F&& fn, int warmup, int repeats) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> seconds;
  seconds.reserve(repeats);
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return seconds;
}

TimingStats summarize(std::vector<double> seconds);

// The one measurement protocol for candidates that are compared (a layer's variants, whole
// plans): each candidate runs `warmup` times untimed, then `rounds` rounds in which every
// candidate in turn runs `repeats` timed times (round-robin, so drift and noise hit all of them
// alike; each round starts one candidate later, so no position in the round favours anyone); a
// candidate's time in a round is the median of its runs there. `before` (may be empty)
// runs untimed before every timed run (e.g. a cache flush). Returns [candidate][round] seconds.
// The statistics on these series (ratios to a baseline with confidence intervals, when to stop
// adding rounds, which candidate wins) are the host's: layertune/tuner/protocol.py.
// `first_round` numbers the first round (the rotation goes on across calls that continue a series).
std::vector<std::vector<double>> time_interleaved(const std::vector<std::function<void()>>& candidates, int warmup,
                                                  int rounds, int repeats, const std::function<void()>& before = {},
                                                  int first_round = 0);

struct Comparison {
  double max_abs_diff = 0;  // max |out - ref|; infinity if out has a NaN where ref has none
  double max_abs_ref = 0;   // max |ref|: the scale a tolerance is relative to
  bool within(double rel_tolerance) const { return max_abs_diff <= rel_tolerance * (max_abs_ref > 0 ? max_abs_ref : 1.0); }
};
Comparison compare(const float* out, const float* ref, size_t n);

// Deterministic uniform [lo, hi) values (same on every platform for a given seed).
void fill_uniform(float* p, size_t n, uint32_t seed, float lo, float hi);

}  // namespace layertune
