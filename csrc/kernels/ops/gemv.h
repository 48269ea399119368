// A matrix-vector product for layers that are one (or a few) rows: fully-connected layers, 1x1
// convolutions on a handful of pixels, a squeeze-excite's two small layers.
#pragma once
#include <algorithm>
#include <cstring>
#include <vector>

#include "layertune/aligned_buffer.h"
#include "layertune/simd.h"
#include "layertune/thread_pool.h"

namespace layertune {

// y[r] = clamp(x[r] W + b) for a few rows r, with W (in, out) row-major: streams W once per row,
// vectorized over the outputs. For fully-connected layers and 1x1 convolutions on a handful of
// pixels, where a GEMM register tile would compute mostly padding.
struct Gemv {
  AlignedBuffer weights;  // (in, out): a copy, since the engine releases the plan's constants once prepared
  std::vector<float> bias;
  int64_t in = 0, out = 0;
  float lo = 0, hi = 0;

  void set_weights(const float* w) {  // after in and out
    weights.resize(size_t(in * out));
    std::memcpy(weights.data(), w, size_t(in * out) * sizeof(float));
  }

  void run(const float* x, float* y, int64_t rows, int threads) const {
    using simd::kLanes;
    using simd::vf;
    // Outputs per task: kV vectors of accumulators, held in registers (in memory, every weight
    // cost a load and a store of its accumulator besides its own load: MobileNetV2's classifier
    // streamed its weights at 11 GB/s).
    constexpr int kV = 8;
    constexpr int64_t kBlock = kV * kLanes;
    const int64_t blocks = (out + kBlock - 1) / kBlock;
    ThreadPool::global().parallel_for(threads, blocks * rows, [&](int64_t t, int) {
      const int64_t row = t / blocks, j0 = (t % blocks) * kBlock, n = std::min<int64_t>(kBlock, out - j0);
      const float* xr = x + row * in;
      const float* w = weights.data() + j0;
      float* yr = y + row * out + j0;
      if (n == kBlock) {
        vf acc[kV];
        for (int v = 0; v < kV; ++v) acc[v] = simd::load(bias.data() + j0 + v * kLanes);
        for (int64_t i = 0; i < in; ++i, w += out) {
          const vf xi = simd::splat(xr[i]);
#pragma GCC unroll 8
          for (int v = 0; v < kV; ++v) acc[v] += xi * simd::load(w + v * kLanes);
        }
        const vf vlo = simd::splat(lo), vhi = simd::splat(hi);
        for (int v = 0; v < kV; ++v) simd::store(yr + v * kLanes, simd::clamp(acc[v], vlo, vhi));
        return;
      }
      // The last, partial block: its nv vectors in registers too, the last one masked (a squeeze-
      // excite's reduce layer has 8-48 outputs: this is all of it).
      const int nv = int((n + kLanes - 1) / kLanes);
      vf acc[kV];
      for (int v = 0; v < kV; ++v)
        acc[v] = v < nv ? simd::load_n(bias.data() + j0 + v * kLanes, int(n - v * kLanes)) : simd::splat(0.f);
      for (int64_t i = 0; i < in; ++i, w += out) {
        const vf xi = simd::splat(xr[i]);
#pragma GCC unroll 8
        for (int v = 0; v < kV; ++v)
          if (v < nv) acc[v] += xi * simd::load_n(w + v * kLanes, int(n - v * kLanes));
      }
      const vf vlo = simd::splat(lo), vhi = simd::splat(hi);
      for (int v = 0; v < nv; ++v) simd::store_n(yr + v * kLanes, simd::clamp(acc[v], vlo, vhi), int(n - v * kLanes));
    });
  }
};

}  // namespace layertune
