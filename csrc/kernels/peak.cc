// The CPU's measured fp32 peak: independent FMA chains that live in registers, so the loop is
// bound by FMA throughput only. Benchmarks quote kernels as a % of this figure.
#include <algorithm>
#include <atomic>
#include <chrono>

#include "gemm/gemm.h"
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
// > FMA latency x FMA pipes on every target we know, and with the two constants within the vector
// registers: 16 chains on a 16-register ISA (AVX2, SSE, armv7) spilled to the stack, and the loop
// measured half the peak (AMD EPYC, Zen 3: 59 GFLOP/s on one thread; 12 chains: 104).
#if defined(__AVX512F__) || defined(__aarch64__)
constexpr int kChains = 16;
#else
constexpr int kChains = 12;
#endif

// Runs `iters` rounds of Chains dependent-free FMAs; returns a value so nothing is elided.
template <int Chains = kChains>
__attribute__((noinline)) float fma_loop(long iters, float seed) {
  vf acc[Chains];
  for (int i = 0; i < Chains; ++i) acc[i] = simd::splat(seed + i * 1e-3f);
  const vf mul = simd::splat(0.999999f), add = simd::splat(1e-7f);
  for (long it = 0; it < iters; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < Chains; ++i) acc[i] = acc[i] * mul + add;
  }
  vf sum = vf{};
  for (int i = 0; i < Chains; ++i) sum += acc[i];
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
  fma_loop<>(iters / 10, 1.f);  // warm-up (and clock ramp-up)
  double best = 0;
  const auto start = std::chrono::steady_clock::now();
  do {
    const auto t0 = std::chrono::steady_clock::now();
    ThreadPool::global().parallel_for(threads, threads, [&](int64_t, int) {
      float expected = sink.load(), got = fma_loop<>(iters, 1.f);
      sink.compare_exchange_strong(expected, expected + got);
    });
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, flops_per_call * threads / dt / 1e9);
  } while (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < seconds);
  return best;
}

namespace gemm {

// 4 chains keep one pipe of latency-4 FMAs busy; 12 keep two. The best of 7 tries of each (a
// preempted try only looks slower); a ratio of 1.6 or more is a second pipe (2.0 on this
// project's Intel Xeon with AVX-512, 1.0 on Zen 4, whose 512-bit FMAs take its two 256-bit pipes).
static int measure_vector_fma_pipes() {
  constexpr long kIters = 20000;
  volatile float sink = fma_loop<4>(kIters, 1.f) + fma_loop<12>(kIters, 1.f);  // warm-up; volatile: the loops stay
  double best4 = 1e30, best12 = 1e30;
  for (int i = 0; i < 7; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    sink = sink + fma_loop<4>(kIters, 1.f);
    auto t1 = std::chrono::steady_clock::now();
    sink = sink + fma_loop<12>(kIters, 1.f);
    auto t2 = std::chrono::steady_clock::now();
    best4 = std::min(best4, std::chrono::duration<double>(t1 - t0).count() / 4);
    best12 = std::min(best12, std::chrono::duration<double>(t2 - t1).count() / 12);
  }
  return best4 / best12 >= 1.6 ? 2 : 1;
}

int vector_fma_pipes() {
  static const int pipes = measure_vector_fma_pipes();
  return pipes;
}

}  // namespace gemm

}  // namespace layertune
