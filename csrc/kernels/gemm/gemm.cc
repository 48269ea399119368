#include "gemm.h"

#include <algorithm>
#include <cstring>

namespace layertune::gemm {

using simd::kLanes;
using simd::vf;

void micro_kernel(int kc, const float* __restrict a, ptrdiff_t lda, const float* __restrict b, float* c,
                  ptrdiff_t ldc, int mr, int nr, bool accumulate, const Epilogue* epilogue) {
  alignas(64) float tmp[kMR * kNR];
  const bool full = mr == kMR && nr == kNR;
  float* cp = c;
  ptrdiff_t ldcp = ldc;
  if (!full) {  // partial tile: work on a full-size copy, write back the valid part
    cp = tmp;
    ldcp = kNR;
    if (accumulate) {
      std::memset(tmp, 0, sizeof tmp);
      for (int r = 0; r < mr; ++r) std::memcpy(tmp + r * kNR, c + r * ldc, nr * sizeof(float));
    }
  }

  vf acc[kMR][kNRV];
#pragma GCC unroll 16
  for (int r = 0; r < kMR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < kNRV; ++v) acc[r][v] = accumulate ? simd::load(cp + r * ldcp + v * kLanes) : vf{};

  for (int k = 0; k < kc; ++k) {
    vf bv[kNRV];
#pragma GCC unroll 4
    for (int v = 0; v < kNRV; ++v) bv[v] = simd::load(b + v * kLanes);
    b += kNR;
#pragma GCC unroll 16
    for (int r = 0; r < kMR; ++r) {
      const vf x = simd::splat(a[r * lda]);
#pragma GCC unroll 4
      for (int v = 0; v < kNRV; ++v) acc[r][v] += x * bv[v];
    }
    ++a;
  }

  if (epilogue) {
    const vf lo = simd::splat(epilogue->lo), hi = simd::splat(epilogue->hi);
#pragma GCC unroll 4
    for (int v = 0; v < kNRV; ++v) {
      const vf bias = simd::load(epilogue->bias + v * kLanes);
#pragma GCC unroll 16
      for (int r = 0; r < kMR; ++r) acc[r][v] = simd::clamp(acc[r][v] + bias, lo, hi);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < kMR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < kNRV; ++v) simd::store(cp + r * ldcp + v * kLanes, acc[r][v]);

  if (!full)
    for (int r = 0; r < mr; ++r) std::memcpy(c + r * ldc, tmp + r * kNR, nr * sizeof(float));
}

void pack_b(const float* b, ptrdiff_t ldb, int k, int n, float* packed) {
  const int panels = ceil_div(n, kNR);
  for (int p = 0; p < panels; ++p) {
    const int cols = std::min(kNR, n - p * kNR);
    for (int kk = 0; kk < k; ++kk) {
      float* dst = packed + (size_t(p) * k + kk) * kNR;
      std::memcpy(dst, b + kk * ldb + p * kNR, cols * sizeof(float));
      std::memset(dst + cols, 0, (kNR - cols) * sizeof(float));
    }
  }
}

void pack_groups(const float* w, const float* bias, int k, int out_c, int groups, AlignedBuffer& packed,
                 AlignedBuffer& packed_bias) {
  const int cog = out_c / groups, panels = ceil_div(cog, kNR);
  packed.resize(size_t(groups) * packed_b_size(k, cog));
  packed_bias.resize(size_t(groups) * panels * kNR);
  for (int g = 0; g < groups; ++g) {
    pack_b(w + g * cog, out_c, k, cog, packed.data() + size_t(g) * panels * k * kNR);
    if (bias) std::memcpy(packed_bias.data() + size_t(g) * panels * kNR, bias + g * cog, cog * sizeof(float));
  }
}

}  // namespace layertune::gemm
