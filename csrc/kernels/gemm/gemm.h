// The register-blocked GEMM micro-kernel (unrolled, Winograd) and the weight-panel packing that
// simple, unrolled and Winograd share.
#pragma once
#include <cstddef>

#include "layertune/aligned_buffer.h"
#include "layertune/simd.h"

namespace layertune::gemm {

// Register tile: kMR rows (output pixels / tiles) x kNR columns (output channels), sized to
// the register file: 12x32 of 32 zmm (AVX-512), 6x16 of 16 ymm (AVX2), 8x12 of 32 q (aarch64),
// 6x8 of 16 q (armv7 / generic).
#if defined(__AVX512F__)
inline constexpr int kMR = 12, kNRV = 2;
#elif defined(__AVX__)
inline constexpr int kMR = 6, kNRV = 2;
#elif defined(__aarch64__)
inline constexpr int kMR = 8, kNRV = 3;
#else
inline constexpr int kMR = 6, kNRV = 2;
#endif
inline constexpr int kNR = kNRV * simd::kLanes;

// Applied when a tile is finished: bias (kNR readable floats) then clamp to [lo, hi].
struct Epilogue {
  const float* bias;
  float lo, hi;
};

// C[mr x nr] (+)= A[mr x kc] * B[kc x kNR].
// A is read by rows: row r starts at a + r * lda; kMR rows must be readable (rows >= mr are
// computed and dropped). B is a packed panel: kc rows of kNR contiguous floats.
// accumulate: add to C instead of overwriting it. epilogue: null, or applied before storing.
void micro_kernel(int kc, const float* a, ptrdiff_t lda, const float* b, float* c, ptrdiff_t ldc, int mr,
                  int nr, bool accumulate, const Epilogue* epilogue);

// Packs a K x N row-major matrix B (leading dimension ldb) into ceil(N / kNR) panels of
// K x kNR, zero-padded: the layout micro_kernel reads.
void pack_b(const float* b, ptrdiff_t ldb, int k, int n, float* packed);
inline size_t packed_b_size(int k, int n) { return size_t((n + kNR - 1) / kNR) * kNR * size_t(k); }

// Grouped HWIO weights as a K x out_c matrix (group g owns columns [g*cog, (g+1)*cog)) packed
// group by group with pack_b, and the bias (may be null) padded to whole panels per group.
void pack_groups(const float* w, const float* bias, int k, int out_c, int groups, AlignedBuffer& packed,
                 AlignedBuffer& packed_bias);

// The working set that blocked loops size their blocks to: 64 Ki floats (256 KiB, within L2).
inline constexpr int kBlockFloats = 64 * 1024;

inline int round_up(int v, int m) { return (v + m - 1) / m * m; }
inline int ceil_div(int v, int m) { return (v + m - 1) / m; }

}  // namespace layertune::gemm
