#include "gemm.h"

#include <algorithm>
#include <cstring>
#include <iterator>
#include <limits>
#include <utility>

#include "layertune/status.h"

#if defined(__ARM_NEON)
#include <arm_neon.h>

#include "gemm_asm.inc"
#endif

namespace layertune::gemm {

using simd::kLanes;
using simd::vf;

namespace {

#if defined(__ARM_NEON)
// acc[r][v] += lane L of av[r] * bv[v], A's value never leaving its vector: fmla by element on
// aarch64; on armv7, which has no fused multiply-add by scalar, vmla by scalar (a d-register lane).
template <int L>
inline float32x4_t mla_lane(float32x4_t acc, float32x4_t b, float32x4_t a) {
#if defined(__aarch64__)
  return vfmaq_laneq_f32(acc, b, a, L);
#else
  return L < 2 ? vmlaq_lane_f32(acc, b, vget_low_f32(a), L & 1) : vmlaq_lane_f32(acc, b, vget_high_f32(a), L & 1);
#endif
}

template <int MR, int NRV, int L>
inline void fma_lane(vf (&acc)[MR][NRV], const float32x4_t (&av)[MR], const float32x4_t* bv) {
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NRV; ++v) acc[r][v] = vf(mla_lane<L>(float32x4_t(acc[r][v]), bv[v], av[r]));
}

// One k: its NRV vectors of B loaded, then lane L of A.
template <int MR, int NRV, int L>
inline void step_lane(vf (&acc)[MR][NRV], const float32x4_t (&av)[MR], const float* b) {
  float32x4_t bv[NRV];
#pragma GCC unroll 4
  for (int v = 0; v < NRV; ++v) bv[v] = vld1q_f32(b + v * kLanes);
  fma_lane<MR, NRV, L>(acc, av, bv);
}
#endif

// The hand-scheduled loops (gemm_asm.inc) take the accumulators through memory, in and out once
// per call: a few dozen loads and stores against the thousands of multiply-accumulates of a k block.
template <int MR, int NRV>
inline void spill(const vf (&acc)[MR][NRV], float* buf) {
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NRV; ++v) simd::store(buf + (r * NRV + v) * kLanes, acc[r][v]);
}
template <int MR, int NRV>
inline void reload(vf (&acc)[MR][NRV], const float* buf) {
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NRV; ++v) acc[r][v] = simd::load(buf + (r * NRV + v) * kLanes);
}

// PackedA: A as pack_a wrote it (element r, k at a[k * MR + r]); otherwise by rows (a[r * lda + k]).
template <int MR, int NRV, bool PackedA>
void tile_kernel(int kc, const float* __restrict a, ptrdiff_t lda, const float* __restrict b, float* c,
                 ptrdiff_t ldc, int mr, int nr, bool accumulate, const Epilogue* epilogue) {
  constexpr int NR = NRV * kLanes;
  alignas(64) float tmp[MR * NR];
  const bool full = mr == MR && nr == NR;
  float* cp = c;
  ptrdiff_t ldcp = ldc;
  if (!full) {  // partial tile: work on a full-size copy, write back the valid part
    cp = tmp;
    ldcp = NR;
    if (accumulate) {
      std::memset(tmp, 0, sizeof tmp);
      for (int r = 0; r < mr; ++r) std::memcpy(tmp + r * NR, c + r * ldc, nr * sizeof(float));
    }
  }

  // A tile computed in one pass (no accumulation) starts from the bias: the epilogue then only
  // clamps, and not at all without an activation (lo, hi infinite): fewer instructions a tile where
  // K is short (16-96 in MobileNetV2's 1x1 layers); measured on AVX2 within noise but for
  // 56x56x24->144, 0.91x [0.87, 0.99] the time.
  const bool bias_first = epilogue && !accumulate;
  vf acc[MR][NRV];
#pragma GCC unroll 4
  for (int v = 0; v < NRV; ++v) {
    const vf init = bias_first ? simd::load(epilogue->bias + v * kLanes) : vf{};
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) acc[r][v] = accumulate ? simd::load(cp + r * ldcp + v * kLanes) : init;
  }

  int k = 0;
  if constexpr (PackedA) {
#if defined(__aarch64__)
    if constexpr (MR == 4 && NRV == 4) {
      // The hand-scheduled loop: 16 k an iteration, kc > 16 * iters (it reads one row of B ahead).
      if (const long iters = (kc - 1) / 16; iters > 0) {
        alignas(16) float buf[MR * NRV * kLanes];
        spill(acc, buf);
        loop_4x4_packed(buf, a, b, iters);
        reload(acc, buf);
        k = int(16 * iters);
      }
      for (; k < kc; ++k) {  // the rest: one k, all four rows of A in one vector
        const float32x4_t av = vld1q_f32(a + k * MR);
        const float* bk = b + k * NRV * kLanes;
        const float32x4_t bv[NRV] = {vld1q_f32(bk), vld1q_f32(bk + 4), vld1q_f32(bk + 8), vld1q_f32(bk + 12)};
#pragma GCC unroll 4
        for (int v = 0; v < NRV; ++v) {
          acc[0][v] = vf(vfmaq_laneq_f32(float32x4_t(acc[0][v]), bv[v], av, 0));
          acc[1][v] = vf(vfmaq_laneq_f32(float32x4_t(acc[1][v]), bv[v], av, 1));
          acc[2][v] = vf(vfmaq_laneq_f32(float32x4_t(acc[2][v]), bv[v], av, 2));
          acc[3][v] = vf(vfmaq_laneq_f32(float32x4_t(acc[3][v]), bv[v], av, 3));
        }
      }
    }
#endif
    for (; k < kc; ++k) {
      vf bv[NRV];
#pragma GCC unroll 4
      for (int v = 0; v < NRV; ++v) bv[v] = simd::load(b + size_t(k) * NR + v * kLanes);
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        const vf x = simd::splat(a[k * MR + r]);
#pragma GCC unroll 4
        for (int v = 0; v < NRV; ++v) acc[r][v] += x * bv[v];
      }
    }
  } else {
#if defined(__ARM_NEON) && !defined(__aarch64__)
    if constexpr (MR == 4 && NRV == 2) {
      // armv7's hand-scheduled loop: four k an iteration.
      if (const int iters = kc / kLanes; iters > 0) {
        alignas(16) float buf[MR * NRV * kLanes];
        spill(acc, buf);
        loop_4x2_rows(buf, a, a + lda, a + 2 * lda, a + 3 * lda, b, iters);
        reload(acc, buf);
        k = kLanes * iters;
        a += k;
        b += size_t(k) * NR;
      }
    }
#endif
#if defined(__ARM_NEON)
    // Four k at a time: one vector load brings four k of a row, and each multiply-accumulate takes
    // its lane, so A costs MR loads per 4 * MR * NRV of them instead of one load per row and k.
    for (; k + kLanes <= kc; k += kLanes) {
      float32x4_t av[MR];
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) av[r] = vld1q_f32(a + r * lda);
#if defined(__aarch64__)
      float32x4_t bv[kLanes * NRV];
#pragma GCC unroll 16
      for (int v = 0; v < kLanes * NRV; ++v) bv[v] = vld1q_f32(b + v * kLanes);
      // Every load and pointer step before the first FMA: an in-order core (Cortex-A53) stalls an
      // instruction issued behind a long-latency FMA until it would finish after it, so the compiler
      // must not interleave them (the empty asm is the fence; it emits nothing). 32 registers hold it.
      a += kLanes;
      b += kLanes * NR;
      asm volatile("" : "+r"(a), "+r"(b) : : "memory");
      fma_lane<MR, NRV, 0>(acc, av, bv);
      fma_lane<MR, NRV, 1>(acc, av, bv + NRV);
      fma_lane<MR, NRV, 2>(acc, av, bv + 2 * NRV);
      fma_lane<MR, NRV, 3>(acc, av, bv + 3 * NRV);
#else
      // armv7 has 16 q registers: B one k at a time.
      step_lane<MR, NRV, 0>(acc, av, b);
      step_lane<MR, NRV, 1>(acc, av, b + NR);
      step_lane<MR, NRV, 2>(acc, av, b + 2 * NR);
      step_lane<MR, NRV, 3>(acc, av, b + 3 * NR);
      a += kLanes;
      b += kLanes * NR;
#endif
    }
#endif
    for (; k < kc; ++k) {
      vf bv[NRV];
#pragma GCC unroll 4
      for (int v = 0; v < NRV; ++v) bv[v] = simd::load(b + v * kLanes);
      b += NR;
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        const vf x = simd::splat(a[r * lda]);
#pragma GCC unroll 4
        for (int v = 0; v < NRV; ++v) acc[r][v] += x * bv[v];
      }
      ++a;
    }
  }

  if (epilogue && !bias_first) {
#pragma GCC unroll 4
    for (int v = 0; v < NRV; ++v) {
      const vf bias = simd::load(epilogue->bias + v * kLanes);
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) acc[r][v] += bias;
    }
  }
  if (epilogue && (epilogue->lo > -std::numeric_limits<float>::infinity() ||
                   epilogue->hi < std::numeric_limits<float>::infinity())) {
    const vf lo = simd::splat(epilogue->lo), hi = simd::splat(epilogue->hi);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
      for (int v = 0; v < NRV; ++v) acc[r][v] = simd::clamp(acc[r][v], lo, hi);
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NRV; ++v) simd::store(cp + r * ldcp + v * kLanes, acc[r][v]);

  if (!full)
    for (int r = 0; r < mr; ++r) std::memcpy(c + r * ldc, tmp + r * NR, nr * sizeof(float));
}

template <int Code>
MicroKernel tile_entry() {
  constexpr bool packed = Code >= kPackedA;
  constexpr int rows = Code % kPackedA / 10, vectors = Code % 10;
  return {rows, vectors * kLanes, packed, &tile_kernel<rows, vectors, packed>};
}

template <size_t... I>
MicroKernel lookup(int code, std::index_sequence<I...>) {
  MicroKernel found;
  ((kTileCodes[I] == code ? (void)(found = tile_entry<kTileCodes[I]>()) : (void)0), ...);
  return found;
}

}  // namespace

MicroKernel micro_kernel_for(int tile_code) {
  const int code = tile_code ? tile_code : kDefaultTile;
  MicroKernel k = lookup(code, std::make_index_sequence<std::size(kTileCodes)>{});
  if (!k.run) fail("gemm_tile: no register tile ", tile_code);
  return k;
}

namespace {
// The m x n product rounded up to whole tiles of a tile code.
double padded_product(int code, int64_t m, int64_t n) {
  const int64_t mr = code % kPackedA / 10, nr = int64_t(code % 10) * kLanes;
  return double((m + mr - 1) / mr * mr) * double((n + nr - 1) / nr * nr);
}

// The first of `tiles`, unless a later one pads the product kNarrowTileMinSaving times less.
template <size_t N>
int least_padding_tile(const int (&tiles)[N], int64_t m, int64_t n) {
  int best = tiles[0];
  for (int code : tiles)
    if (padded_product(tiles[0], m, n) >= kNarrowTileMinSaving * padded_product(code, m, n)) best = code;
  return best;
}
}  // namespace

int tile_for_shape(int64_t m, int64_t n, int64_t k) {
  if (vector_fma_pipes() >= 2) return least_padding_tile(kShapeTilesTwoPipes, m, n);
  if (!kWideTileForLongK) return least_padding_tile(kShapeTiles, m, n);
  int best = kShapeTiles[0];  // the first, or a later one that pads at most 2% more where K is long
  if (k >= kWideTileMinK)
    for (int code : kShapeTiles)
      if (padded_product(code, m, n) <= 1.02 * padded_product(kShapeTiles[0], m, n)) best = code;
  return best;
}

int winograd_tile_for_shape(int64_t m, int64_t n) {
  int best = kWinogradTiles[0];
  for (int code : kWinogradTiles)
    if (padded_product(code, m, n) < padded_product(best, m, n)) best = code;
  return best;
}

void pack_a(const float* a, ptrdiff_t lda, int mr, int kc, int MR, float* dst) {
  for (int k = 0; k < kc; ++k)
    for (int r = 0; r < MR; ++r) dst[k * MR + r] = r < mr ? a[r * lda + k] : 0.0f;
  std::memset(dst + size_t(kc) * MR, 0, size_t(4) * MR * sizeof(float));
}

void pack_b(const float* b, ptrdiff_t ldb, int k, int n, int nr, float* packed) {
  const int panels = ceil_div(n, nr);
  for (int p = 0; p < panels; ++p) {
    const int cols = std::min(nr, n - p * nr);
    for (int kk = 0; kk < k; ++kk) {
      float* dst = packed + (size_t(p) * k + kk) * nr;
      std::memcpy(dst, b + kk * ldb + p * nr, cols * sizeof(float));
      std::memset(dst + cols, 0, (nr - cols) * sizeof(float));
    }
  }
}

void pack_groups(const float* w, const float* bias, int k, int out_c, int groups, int nr, AlignedBuffer& packed,
                 AlignedBuffer& packed_bias) {
  const int cog = out_c / groups, panels = ceil_div(cog, nr);
  packed.resize(size_t(groups) * packed_b_size(k, cog, nr));
  packed_bias.resize(size_t(groups) * panels * nr);
  for (int g = 0; g < groups; ++g) {
    pack_b(w + g * cog, out_c, k, cog, nr, packed.data() + size_t(g) * panels * k * nr);
    if (bias) std::memcpy(packed_bias.data() + size_t(g) * panels * nr, bias + g * cog, cog * sizeof(float));
  }
}

}  // namespace layertune::gemm
