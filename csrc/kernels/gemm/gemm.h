// The register-blocked GEMM micro-kernel (unrolled, Winograd) and the weight-panel packing that
// simple, unrolled and Winograd share.
#pragma once
#include <cstddef>

#include "layertune/aligned_buffer.h"
#include "layertune/simd.h"

namespace layertune::gemm {

// Register tiles ("named micro-kernel tiles"): R rows (output pixels / Winograd tiles) x V
// vectors of output channels, coded R*10 + V (62 = 6 rows x 2 vectors = 6x16 floats on AVX2,
// 6x8 on NEON). Every build has every tile; which fit the register file without spilling is the
// ISA's business, so each ISA has a default (the one that tile is chosen from when `gemm_tile` is
// not set), picked from the core's measurements on x86 and from tools/arm_codegen.py on ARM.
inline constexpr int kTileCodes[] = {21, 22, 41, 42, 43, 61, 62, 64, 81, 82, 83, 122};
#if defined(__AVX512F__)
inline constexpr int kMR = 12, kNRV = 2;  // 24 accumulators of 32 zmm
#elif defined(__AVX__)
inline constexpr int kMR = 6, kNRV = 2;  // 12 of 16 ymm
#elif defined(__aarch64__)
inline constexpr int kMR = 4, kNRV = 3;  // arm_codegen's pick (8x3 spilled)
#elif defined(__ARM_NEON)
inline constexpr int kMR = 6, kNRV = 1;  // arm_codegen's pick: 16 q registers (6x2 spilled)
#elif defined(__SSE2__)
inline constexpr int kMR = 6, kNRV = 2;  // 12 of 16 xmm
#else
inline constexpr int kMR = 8, kNRV = 2;  // VFP, one float a vector: 16 of 32 s registers (arm_codegen's pick)
#endif
inline constexpr int kNR = kNRV * simd::kLanes;
inline constexpr int kDefaultTile = kMR * 10 + kNRV;

// Applied when a tile is finished: bias (nr readable floats) then clamp to [lo, hi].
struct Epilogue {
  const float* bias;
  float lo, hi;
};

// C[mr x nr] (+)= A[mr x kc] * B[kc x NR] for one register tile (MR x NR, mr <= MR, nr <= NR).
// A is read by rows: row r starts at a + r * lda; MR rows must be readable (rows >= mr are
// computed and dropped). B is a packed panel: kc rows of NR contiguous floats.
// accumulate: add to C instead of overwriting it. epilogue: null, or applied before storing.
using MicroKernelFn = void (*)(int kc, const float* a, ptrdiff_t lda, const float* b, float* c, ptrdiff_t ldc,
                               int mr, int nr, bool accumulate, const Epilogue* epilogue);
struct MicroKernel {
  int mr = 0, nr = 0;  // the tile, in floats
  MicroKernelFn run = nullptr;
};
// The micro-kernel of a tile code (0: this ISA's default); InvalidArgument for an unknown code.
MicroKernel micro_kernel_for(int tile_code);

// The default tile's micro-kernel, for kernels that don't tune the tile.
void micro_kernel(int kc, const float* a, ptrdiff_t lda, const float* b, float* c, ptrdiff_t ldc, int mr,
                  int nr, bool accumulate, const Epilogue* epilogue);

// Packs a K x N row-major matrix B (leading dimension ldb) into ceil(N / nr) panels of
// K x nr, zero-padded: the layout a micro-kernel with that tile width reads.
void pack_b(const float* b, ptrdiff_t ldb, int k, int n, int nr, float* packed);
inline size_t packed_b_size(int k, int n, int nr) { return size_t((n + nr - 1) / nr) * nr * size_t(k); }

// Grouped HWIO weights as a K x out_c matrix (group g owns columns [g*cog, (g+1)*cog)) packed
// group by group with pack_b, and the bias (may be null) padded to whole panels per group.
void pack_groups(const float* w, const float* bias, int k, int out_c, int groups, int nr, AlignedBuffer& packed,
                 AlignedBuffer& packed_bias);

// The working set that blocked loops size their blocks to: 64 Ki floats (256 KiB, within L2).
inline constexpr int kBlockFloats = 64 * 1024;

inline int round_up(int v, int m) { return (v + m - 1) / m * m; }
inline int ceil_div(int v, int m) { return (v + m - 1) / m; }

}  // namespace layertune::gemm
