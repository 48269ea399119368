// The register-blocked GEMM micro-kernel (unrolled, Winograd) and the weight-panel packing that
// simple, unrolled and Winograd share.
#pragma once
#include <cstddef>

#include "layertune/aligned_buffer.h"
#include "layertune/conv_params.h"
#include "layertune/simd.h"

namespace layertune::gemm {

// Register tiles ("named micro-kernel tiles"): R rows (output pixels / Winograd tiles) x V
// vectors of output channels, coded R*10 + V (62 = 6 rows x 2 vectors = 6x16 floats on AVX2,
// 6x8 on NEON); 1000 + R*10 + V is the same tile reading A packed (pack_a: k-major, R rows
// interleaved), which the caller packs once per row block and k block. Every build has every
// tile; which fit the register file without spilling is the ISA's business, so each ISA has a
// default (the one `gemm_tile` 0 means), picked from the core's measurements on x86 and from
// tools/arm_codegen.py on ARM.
inline constexpr int kTileCodes[] = {21, 22, 41, 42, 43, 61, 62, 64, 71, 72, 74, 81, 82, 83, 122, 142, 1044};
inline constexpr int kPackedA = 1000;
#if defined(__AVX512F__)
inline constexpr int kDefaultTile = 122;  // 24 accumulators of 32 zmm
#elif defined(__AVX__)
inline constexpr int kDefaultTile = 62;  // 12 of 16 ymm
#elif defined(__aarch64__)
inline constexpr int kDefaultTile = 1044;  // arm_codegen's pick: the hand-scheduled packed-A loop
#elif defined(__ARM_NEON)
inline constexpr int kDefaultTile = 42;  // arm_codegen's pick: the hand-scheduled loop, 14 of 16 q registers
#elif defined(__SSE2__)
inline constexpr int kDefaultTile = 62;  // 12 of 16 xmm
#else
inline constexpr int kDefaultTile = 82;  // VFP, one float a vector: 16 of 32 s registers (arm_codegen's pick)
#endif
// The tiles `gemm_tile` 0 chooses among by the layer's shape (tile_for_shape): the first, or a
// later one where K >= kWideTileMinK and it pads the product at most 2% more. On AVX-512, 7x1
// vectors (XNNPACK's tile there): 7 divides the pixel counts of a 224-input network's maps
// (112^2 ... 7^2), where 12 rows left a partial tile (a 7x7 map's 49th pixel took a 12-row tile),
// and one-vector panels pad 16, 24 and 144 output channels least; 7x2 for long K, where two
// vectors halve A's broadcasts per multiply-add. Measured with tools/bench_kernels.py-style loops
// (one thread, GFLOP/s against a 118 peak): 7x7x320->1280 87 -> 101 (12x2 -> 7x1), 112x112x16->96
// 85 -> 92, 7x7x2048->512 59 -> 87 (7x2); whole models 0.92-0.97x the time of the 12x2/6x2/8x1
// choice (interleaved). On ARM the default's hand-scheduled loop wins alone.
// Where the core has two vector FMA pipes (vector_fma_pipes; Intel's AVX-512 server cores), one
// vector of columns leaves half the multiply-adds of a broadcast to the other pipe unused: 7x2
// vectors everywhere. Measured on an Intel Xeon (AVX-512, two pipes), one thread, 7x1 -> 7x2:
// 56x56x64->256 784 -> 627 us, 14x14x112->672 203 -> 169 us, 56x56x144->24 210 -> 169 us; whole
// models 0.89-0.97x (MobileNetV2, EfficientNetB0, ResNet50; 1 and 2 threads). Except where 7x2
// pads the product kNarrowTileMinSaving times 7x1's or more (16 output channels in 32 columns):
// MobileNetV2's 112x112x32->16 took 200 us with 7x2, 119 us with 7x1 (24 outputs, 32 columns
// either way: 7x2 115 us, 7x1 146 us; 144 outputs, 160 columns against 144: 179 against 185 us).
// On AVX2 (16 ymm), 6x2 vectors, or 4x3 where 6x2 pads the product kNarrowTileMinSaving times 4x3's
// or more: 24 output channels fill 4x3's three vectors and pad 6x2's two to 32. Measured on an AMD
// EPYC (Zen 3, AVX2), one thread, GFLOP/s 6x2 -> 4x3: 56x56x96->24 68 -> 90, 56x56x144->24 67 -> 84;
// elsewhere 4x3 was no faster (112x112x16->96 64 / 65, 56x56x24->144 78 / 78) or slower (32 outputs:
// 28x28x144->32 79 -> 60). Against LiteRT's one-layer models: 56x56x96->24 1.47x -> 0.87x its time.
#if defined(__AVX512F__)
inline constexpr int kShapeTiles[] = {71, 72};
inline constexpr int kShapeTilesTwoPipes[] = {72, 71};
inline constexpr bool kWideTileForLongK = true;
inline constexpr double kNarrowTileMinSaving = 1.5;
#elif defined(__AVX__)
inline constexpr int kShapeTiles[] = {62, 43};
inline constexpr int kShapeTilesTwoPipes[] = {62, 43};
inline constexpr bool kWideTileForLongK = false;
inline constexpr double kNarrowTileMinSaving = 1.25;
#else
inline constexpr int kShapeTiles[] = {kDefaultTile};
inline constexpr int kShapeTilesTwoPipes[] = {kDefaultTile};
inline constexpr bool kWideTileForLongK = false;
inline constexpr double kNarrowTileMinSaving = 1.5;
#endif
inline constexpr int kWideTileMinK = 512;
// How many full-width vector multiply-adds the core issues a cycle (1 or 2), measured once per
// process (peak.cc: independent FMA chains, 4 against 12).
int vector_fma_pipes();
// Winograd's alpha^2 GEMMs (m = Winograd tiles, n = output channels, k = input channels): the
// transformed weights are alpha^2/9 of the raw ones and stream once per tile block, so a tile
// reads each loaded weight vector as many times as it can: on AVX-512 7x4 vectors (28 of 32 zmm;
// 7 divides the tile counts of a 224-input network's 3x3 stages, 14^2 and 7^2), or 8x3 where 8
// rows pad less (16 tiles of a 7x7 map in F(2x2), of 14x14 in F(4x4)). Measured on ResNet50's
// 3x3 layers, one thread, against 12x2 (the ISA default): 28x28x128 F(4x4) 0.79 -> 0.68 ms,
// 14x14x256 F(2x2) 1.41 -> 1.01 ms, 7x7x512 F(2x2) 2.86 -> 1.70 ms (8x3).
#if defined(__AVX512F__)
inline constexpr int kWinogradTiles[] = {74, 83};
#else
inline constexpr int kWinogradTiles[] = {kDefaultTile};
#endif
// The order of unrolled's loops over a block of rows: panels outer (each weight panel, kc x the
// tile's columns, read from memory once and used by every micro-row of the block, which rereads its
// slice of A from L2) or micro-rows outer (a micro-row's slice of A in L1, every panel streamed from
// L2 once a micro-row). On AVX-512 (an Intel Xeon, 48 KiB L1, 2 MiB L2) panels outer took, whole
// models interleaved, one thread: MobileNetV2 0.97x, EfficientNetB0 0.96x, ResNet50 0.95x the time
// of micro-rows outer (two threads: 0.97x, 0.95x ResNet50): in a model a layer's weights come from
// L3, once per micro-row before. Elsewhere unmeasured, so as it was. (With the row blocks of
// UnrolledConv::default_block_m, ResNet50 went from 0.77x / 0.77x LiteRT's time at 1 / 2 threads to
// 0.73x / 0.75x, tools/bench_models.py.)
#if defined(__AVX512F__)
inline constexpr bool kPanelsOuter = true;
#else
inline constexpr bool kPanelsOuter = false;
#endif
// The default tile's shape: simple's register block.
inline constexpr int kMR = kDefaultTile % kPackedA / 10, kNRV = kDefaultTile % 10;
inline constexpr int kNR = kNRV * simd::kLanes;

// Applied when a tile is finished: bias (nr readable floats) then clamp to [lo, hi].
struct Epilogue {
  const float* bias;
  float lo, hi;
};

// C[mr x nr] (+)= A[mr x kc] * B[kc x NR] for one register tile (MR x NR, mr <= MR, nr <= NR).
// A is read by rows: row r starts at a + r * lda; MR rows must be readable (rows >= mr are
// computed and dropped); a packed-A tile reads pack_a's buffer instead (lda unused). B is a
// packed panel: kc rows of NR contiguous floats.
// accumulate: add to C instead of overwriting it. epilogue: null, or applied before storing.
using MicroKernelFn = void (*)(int kc, const float* a, ptrdiff_t lda, const float* b, float* c, ptrdiff_t ldc,
                               int mr, int nr, bool accumulate, const Epilogue* epilogue);
struct MicroKernel {
  int mr = 0, nr = 0;  // the tile, in floats
  bool packed_a = false;  // run reads A as pack_a wrote it
  MicroKernelFn run = nullptr;
};
// The micro-kernel of a tile code (0: this ISA's default); InvalidArgument for an unknown code.
MicroKernel micro_kernel_for(int tile_code);
// Of kShapeTiles (kShapeTilesTwoPipes on a core with two vector FMA pipes), the tile for an
// m x k times k x n product (see there; padding counts whole tiles of rows and of columns).
int tile_for_shape(int64_t m, int64_t n, int64_t k);
// Of kWinogradTiles, the one that pads an m x n product least (the first on a tie).
int winograd_tile_for_shape(int64_t m, int64_t n);
// The same for a convolution's im2col GEMM, per group (output pixels x output channels, K = taps x
// input channels): the tile unrolled takes for `gemm_tile` 0, which a strip group fixes from the
// whole layer.
inline int tile_for_conv(const ConvShape& s) {
  return tile_for_shape(int64_t(s.batch) * s.out_h() * s.out_w(), s.out_c_per_group(),
                        int64_t(s.kernel_h) * s.kernel_w * s.in_c_per_group());
}

// Packs rows [0, mr) x columns [0, kc) of A (row r at a + r * lda) k-major for a packed-A tile of
// MR rows: dst[k * MR + r], rows >= mr zero, and four more k of zeros (the ARM loop reads one
// group of four k ahead).
void pack_a(const float* a, ptrdiff_t lda, int mr, int kc, int MR, float* dst);
inline size_t packed_a_size(int kc, int MR) { return size_t(kc + 4) * MR; }

// Packs a K x N row-major matrix B (leading dimension ldb) into ceil(N / nr) panels of
// K x nr, zero-padded: the layout a micro-kernel with that tile width reads.
void pack_b(const float* b, ptrdiff_t ldb, int k, int n, int nr, float* packed);
inline size_t packed_b_size(int k, int n, int nr) { return size_t((n + nr - 1) / nr) * nr * size_t(k); }

// dst = src for `rows` rows of a packed panel (nr floats each, nr a multiple of the vector), row
// r times scale[(k0 + r) % channels]: the rows of an HWIO weight matrix cycle through the input
// channels (ConvKernel::scale_input_channels).
inline void scale_panel_rows(const float* src, float* dst, int rows, int nr, const float* scale, int k0, int channels) {
  int c = k0 % channels;
  for (int r = 0; r < rows; ++r, src += nr, dst += nr) {
    const simd::vf s = simd::splat(scale[c]);
    for (int i = 0; i < nr; i += simd::kLanes) simd::store(dst + i, simd::load(src + i) * s);
    if (++c == channels) c = 0;
  }
}

// Grouped HWIO weights as a K x out_c matrix (group g owns columns [g*cog, (g+1)*cog)) packed
// group by group with pack_b, and the bias (may be null) padded to whole panels per group.
void pack_groups(const float* w, const float* bias, int k, int out_c, int groups, int nr, AlignedBuffer& packed,
                 AlignedBuffer& packed_bias);

// The working set that blocked loops size their blocks to: 64 Ki floats (256 KiB, within L2).
inline constexpr int kBlockFloats = 64 * 1024;

inline int round_up(int v, int m) { return (v + m - 1) / m * m; }
inline int ceil_div(int v, int m) { return (v + m - 1) / m; }

}  // namespace layertune::gemm
