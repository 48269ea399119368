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
  // Outputs per task: kV vectors of accumulators, held in registers (in memory, every weight cost
  // a load and a store of its accumulator besides its own load: MobileNetV2's classifier streamed
  // its weights at 11 GB/s).
  static constexpr int kV = 8;
  static constexpr int64_t kBlock = kV * simd::kLanes;

  // W packed at prepare time in column panels of kBlock outputs (the last one as wide as its
  // outputs rounded up to a vector, zero-padded): panel b is (in, width) row-major and contiguous,
  // so that a task streams one block of memory. Read in place, (in, out) row-major, a task read
  // kBlock floats from every row, one 4 KiB page apart for a 1000-output classifier: the
  // prefetchers stop at page boundaries.
  AlignedBuffer weights;
  std::vector<float> bias;
  int64_t in = 0, out = 0;
  float lo = 0, hi = 0;

  int64_t blocks() const { return (out + kBlock - 1) / kBlock; }
  int64_t panel_offset(int64_t b) const { return b * in * kBlock; }  // every panel before b is full
  int64_t panel_width(int64_t b) const {
    return std::min(kBlock, (out - b * kBlock + simd::kLanes - 1) / simd::kLanes * simd::kLanes);
  }

  void set_weights(const float* w) {  // (in, out) row-major; after in and out are set
    weights.resize(blocks() ? size_t(panel_offset(blocks() - 1) + in * panel_width(blocks() - 1)) : 0);
    for (int64_t b = 0; b < blocks(); ++b) {
      const int64_t j0 = b * kBlock, n = std::min(kBlock, out - j0), width = panel_width(b);
      float* panel = weights.data() + panel_offset(b);
      for (int64_t i = 0; i < in; ++i) {
        std::memcpy(panel + i * width, w + i * out + j0, size_t(n) * sizeof(float));
        std::fill(panel + i * width + n, panel + (i + 1) * width, 0.f);
      }
    }
  }

  void run(const float* x, float* y, int64_t rows, int threads) const {
    using simd::kLanes;
    using simd::vf;
    const int64_t nblocks = blocks();
    ThreadPool::global().parallel_for(threads, nblocks * rows, [&](int64_t t, int) {
      const int64_t row = t / nblocks, b = t % nblocks, j0 = b * kBlock, n = std::min<int64_t>(kBlock, out - j0);
      const float* xr = x + row * in;
      const float* w = weights.data() + panel_offset(b);
      float* yr = y + row * out + j0;
      const vf vlo = simd::splat(lo), vhi = simd::splat(hi);
      if (n == kBlock) {
        vf acc[kV];
        for (int v = 0; v < kV; ++v) acc[v] = simd::load(bias.data() + j0 + v * kLanes);
        for (int64_t i = 0; i < in; ++i, w += kBlock) {
          const vf xi = simd::splat(xr[i]);
#pragma GCC unroll 8
          for (int v = 0; v < kV; ++v) acc[v] += xi * simd::load(w + v * kLanes);
        }
        for (int v = 0; v < kV; ++v) simd::store(yr + v * kLanes, simd::clamp(acc[v], vlo, vhi));
        return;
      }
      // The last, partial block: its nv vectors in registers too (a squeeze-excite's reduce layer
      // has 8-48 outputs: this is all of it); the panel is padded to whole vectors.
      const int nv = int((n + kLanes - 1) / kLanes);
      const int64_t width = panel_width(b);
      vf acc[kV];
      for (int v = 0; v < kV; ++v)
        acc[v] = v < nv ? simd::load_n(bias.data() + j0 + v * kLanes, int(n - v * kLanes)) : simd::splat(0.f);
      for (int64_t i = 0; i < in; ++i, w += width) {
        const vf xi = simd::splat(xr[i]);
#pragma GCC unroll 8
        for (int v = 0; v < kV; ++v)
          if (v < nv) acc[v] += xi * simd::load(w + v * kLanes);
      }
      for (int v = 0; v < nv; ++v) simd::store_n(yr + v * kLanes, simd::clamp(acc[v], vlo, vhi), int(n - v * kLanes));
    });
  }
};

}  // namespace layertune
