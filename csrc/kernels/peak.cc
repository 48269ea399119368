// The CPU's measured fp32 peak: independent FMA chains that live in registers, so the loop is
// bound by FMA throughput only. Benchmarks quote kernels as a % of this figure.
#include <algorithm>
#include <atomic>
#include <chrono>

#include "layertune/conv.h"
#include "layertune/simd.h"
#include "layertune/thread_pool.h"

namespace layertune {

namespace simd {
const char* isa_name() {
#if defined(__AVX512F__)
  return "avx512";
#elif defined(__AVX2__)
  return "avx2";
#elif defined(__AVX__)
  return "avx";
#elif defined(__aarch64__)
  return "neon-aarch64";
#elif defined(__ARM_NEON)
  return "neon-armv7";
#elif defined(__arm__)
  return "arm-vfp";
#else
  return "generic";
#endif
}
}  // namespace simd

namespace {

using simd::vf;
constexpr int kChains = 16;  // > FMA latency x FMA pipes on every target we know

// Runs `iters` rounds of kChains dependent-free FMAs; returns a value so nothing is elided.
__attribute__((noinline)) float fma_loop(long iters, float seed) {
  vf acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = simd::splat(seed + i * 1e-3f);
  const vf mul = simd::splat(0.999999f), add = simd::splat(1e-7f);
  for (long it = 0; it < iters; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < kChains; ++i) acc[i] = acc[i] * mul + add;
  }
  vf sum = vf{};
  for (int i = 0; i < kChains; ++i) sum += acc[i];
  float s = 0;
  for (int l = 0; l < simd::kLanes; ++l) s += simd::lane(sum, l);
  return s;
}

}  // namespace

double measure_peak_gflops(int threads, double seconds) {
  threads = std::max(threads, 1);
  const long iters = 2'000'000;
  const double flops_per_call = double(iters) * kChains * simd::kLanes * 2;
  std::atomic<float> sink{0};
  fma_loop(iters / 10, 1.f);  // warm-up (and clock ramp-up)
  double best = 0;
  const auto start = std::chrono::steady_clock::now();
  do {
    const auto t0 = std::chrono::steady_clock::now();
    ThreadPool::global().parallel_for(threads, threads, [&](int64_t, int) {
      float expected = sink.load(), got = fma_loop(iters, 1.f);
      sink.compare_exchange_strong(expected, expected + got);
    });
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, flops_per_call * threads / dt / 1e9);
  } while (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < seconds);
  return best;
}

}  // namespace layertune
