// amx_bf16x3: a regular convolution's im2col GEMM on Intel AMX's bf16 tiles, near fp32 accuracy.
// Each float v is split into hi = bf16(v) and lo = bf16(v - hi); a product a*b is computed as
// hi_a*hi_b + hi_a*lo_b + lo_a*hi_b. What is left out (lo_a*lo_b, and lo's own rounding) is
// below 2^-16 of the product, and tdpbf16ps sums in fp32, so the output is within about 1e-5 of
// max|y| (tests/test_kernels.py states the tolerance). A k block of 32 becomes three 32-deep
// bf16 blocks, A' = [Ah Ah Al] per row against B' [Bh; Bl; Bh] (Bh stored once, its tile read
// twice), and the layer is one bf16 GEMM of depth 3K: each task converts 32 output pixels' rows of A (the input itself for a 1x1 stride-1
// layer, else im2col rows) and multiplies them by B' panels packed at prepare time, two blocks of
// 16 channels at a time (tiles 0-3 the sums, 4-5 A, 6-7 B, as int8_gemm's AMX path).
#include <algorithm>
#include <cstring>
#include <mutex>
#include <vector>

#include "../gemm/gemm.h"
#include "../gemm/im2col.h"
#include "amx.h"
#include "layertune/conv.h"
#include "layertune/thread_pool.h"

namespace layertune {

std::string amx_bf16x3_cpu_lacks() {
#if LAYERTUNE_X86_AMX
  // asked at every applicability check: the CPU is looked at once
  static const std::string why = !amx::usable(amx::Unit::kBf16) ? "amx_bf16x3 needs Intel AMX-BF16 tiles, which this CPU lacks"
                                 : !__builtin_cpu_supports("avx512bf16") ? "amx_bf16x3 needs AVX512-BF16, which this CPU lacks"
                                                                         : "";
  return why;
#else
  return "amx_bf16x3 needs Intel AMX-BF16 tiles (x86-64 only)";
#endif
}

std::string amx_bf16x3_applies(const ConvShape& s) {
  return s.groups == 1 ? "" : cat("amx_bf16x3 computes ungrouped layers only, this layer has ", s.groups, " groups");
}

#if LAYERTUNE_X86_AMX
namespace {

using gemm::ceil_div;

constexpr int kRows = 32;   // output pixels a task: two 16-row A tiles
constexpr int kBlock = 16;  // output channels a B tile
constexpr int kDepth = 32;  // bf16 values of K a tile row
constexpr int kTileElems = 16 * kDepth;
constexpr size_t kSharedBytes = size_t(2) << 20;  // the A' one run_shared shares: an AMX core's L2

uint16_t bf16_nearest(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fff + ((u >> 16) & 1);
  return uint16_t(u >> 16);
}

// bf16 values kept in a 64-byte aligned float buffer, two a float.
uint16_t* bf16(AlignedBuffer& b) { return reinterpret_cast<uint16_t*>(b.data()); }
const uint16_t* bf16(const AlignedBuffer& b) { return reinterpret_cast<const uint16_t*>(b.data()); }

float bf16_value(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Buffers lent to one run at a time. The layers of a model run one after another, so one buffer
// (grown to the largest need) serves every layer of the process instead of one per layer; runs
// that overlap (engines on several threads) each get their own.
class SharedScratch {
 public:
  class Lease {
   public:
    explicit Lease(size_t floats) : buffer(take(floats)) {}
    ~Lease() { give(std::move(buffer)); }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    AlignedBuffer buffer;
  };

 private:
  static AlignedBuffer take(size_t floats) {
    AlignedBuffer b;
    {
      std::lock_guard<std::mutex> lock(mutex());
      if (!free_list().empty()) {
        b = std::move(free_list().back());
        free_list().pop_back();
      }
    }
    if (b.size() < floats) b.resize(floats);
    return b;
  }
  static void give(AlignedBuffer b) {
    std::lock_guard<std::mutex> lock(mutex());
    free_list().push_back(std::move(b));
  }
  static std::mutex& mutex() {
    static std::mutex m;
    return m;
  }
  static std::vector<AlignedBuffer>& free_list() {
    static std::vector<AlignedBuffer> buffers;
    return buffers;
  }
};

class AmxBf16x3Conv final : public ConvKernel {
 public:
  AmxBf16x3Conv(const ConvShape& s, const MethodParams& p, const float* w, const float* b) : ConvKernel(s, p) {
    k_ = s.kernel_h * s.kernel_w * s.in_c;
    k_blocks_ = ceil_div(k_, kDepth);
    blocks_ = ceil_div(s.out_c, kBlock);
    pairs_ = ceil_div(blocks_, 2);
    lda_ = 3 * k_blocks_ * kDepth;
    direct_ = s.kernel_h == 1 && s.kernel_w == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_top == 0 &&
              s.pad_bottom == 0 && s.pad_left == 0 && s.pad_right == 0;
    pack_weights(w, b);
    const int m = s.batch * s.out_h() * s.out_w();
    m_blocks_ = ceil_div(m, kRows);
    // Fewer pixel blocks than threads: split the channel pairs too; the blocks' A' is then split
    // once, into a buffer all chunks read (run_shared), where it stays in a core's L2 (beyond, each
    // chunk splitting its block's A' again measured faster: 14x14 maps, K = 2304, 3.1 MB of A').
    // Only then: with a block per thread or more, an uneven count of blocks (14x14: 7 on two
    // threads) beat chunks that even the work out, 0.57-0.94x their time, 1x1 and 3x3 layers
    // alike (chunks read A' another core wrote, or split it again).
    col_chunks_ = m_blocks_ >= p.threads ? 1 : std::min(pairs_, ceil_div(p.threads, m_blocks_));
    shared_ = col_chunks_ > 1 && size_t(m_blocks_) * kRows * lda_ * sizeof(uint16_t) <= kSharedBytes;
    scratch_.resize(p.threads);
    for (auto& sc : scratch_) {
      sc.a.resize(size_t(kRows) * lda_ / 2);  // bf16 pairs (lda_ is even)
      sc.row.resize(direct_ ? 0 : k_);
    }
  }

  void run(const float* in, float* out) override {
    if (shared_) return run_shared(in, out);
    ThreadPool::global().parallel_for(params_.threads, int64_t(m_blocks_) * col_chunks_, [&](int64_t t, int worker) {
      Scratch& sc = scratch_[worker];
      split_block(in, int(t / col_chunks_), bf16(sc.a), sc);
      compute_block(out, int(t / col_chunks_), int(t % col_chunks_), bf16(sc.a));
    });
  }

 private:
  struct Scratch {
    AlignedBuffer a;    // kRows rows of A' (lda_ bf16 each; aligned, so that a tile row is one cache line)
    AlignedBuffer row;        // one im2col row (not for direct layers)
  };

  // A small map on several threads: every block's A' split once (in parallel over the blocks) into a
  // buffer lent for the run, then the (block, channel chunk) tasks read it. Splitting per task
  // instead repeated the split (im2col and bf16 conversion of K values per row) for every chunk:
  // 7x7x960 -> 160 on two threads ran slower than on one.
  void run_shared(const float* in, float* out) {
    const size_t block = size_t(kRows) * lda_;  // bf16 values
    SharedScratch::Lease lease(block * m_blocks_ / 2);
    uint16_t* a = bf16(lease.buffer);
    ThreadPool& pool = ThreadPool::global();
    pool.parallel_for(params_.threads, m_blocks_, [&](int64_t t, int worker) {
      split_block(in, int(t), a + size_t(t) * block, scratch_[worker]);
    });
    pool.parallel_for(params_.threads, int64_t(m_blocks_) * col_chunks_, [&](int64_t t, int) {
      const int mb = int(t / col_chunks_);
      compute_block(out, mb, int(t % col_chunks_), a + size_t(mb) * block);
    });
  }

  // B' tiles: for block nb, per k block its hi and lo tiles (16 rows of K pairs x 16 channels x 2,
  // tdpbf16ps's pair layout); the bias padded to whole blocks. The third product (Al x Bh) reads the
  // hi tile again rather than a stored copy: the weights then take 4 bytes a value, as fp32's do
  // (a model's layers read their weights from memory at every run).
  void pack_weights(const float* w, const float* b) {
    const int out_c = shape_.out_c;
    packed_.resize(size_t(blocks_) * 2 * k_blocks_ * kTileElems / 2);
    for (int nb = 0; nb < blocks_; ++nb)
      for (int kb = 0; kb < k_blocks_; ++kb)
        for (int kk = 0; kk < kDepth; ++kk)
          for (int c = 0; c < kBlock; ++c) {
            const int k = kb * kDepth + kk, n = nb * kBlock + c;
            const float v = k < k_ && n < out_c ? w[size_t(k) * out_c + n] : 0.f;
            const uint16_t hi = bf16_nearest(v), lo = bf16_nearest(v - bf16_value(hi));
            const size_t at = (kk / 2) * 2 * kBlock + c * 2 + (kk & 1);
            uint16_t* tiles = bf16(packed_) + (size_t(nb) * 2 * k_blocks_ + 2 * kb) * kTileElems;
            tiles[at] = hi;
            tiles[kTileElems + at] = lo;
          }
    bias_.resize(size_t(blocks_) * kBlock);
    if (b) std::copy(b, b + out_c, bias_.data());
  }

  // One row of A (k_ floats) as A' = [Ah Ah Al] per k block of 32; K past k_ is zero.
  __attribute__((target("avx512f,avx512bw,avx512bf16"))) void split_row(const float* src, uint16_t* dst) const {
    for (int kb = 0; kb < k_blocks_; ++kb) {
      const int k0 = kb * kDepth, nk = std::min(kDepth, k_ - k0);
      const __mmask16 m0 = nk >= 16 ? 0xffff : __mmask16((1u << nk) - 1);
      const __mmask16 m1 = nk <= 16 ? 0 : nk >= 32 ? 0xffff : __mmask16((1u << (nk - 16)) - 1);
      const __m512 x0 = _mm512_maskz_loadu_ps(m0, src + k0), x1 = _mm512_maskz_loadu_ps(m1, src + k0 + 16);
      const __m512i hi = __m512i(_mm512_cvtne2ps_pbh(x1, x0));
      const __m512 h0 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(hi)), 16));
      const __m512 h1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(hi, 1)), 16));
      const __m512i lo = __m512i(_mm512_cvtne2ps_pbh(_mm512_sub_ps(x1, h1), _mm512_sub_ps(x0, h0)));
      uint16_t* d = dst + 3 * kb * kDepth;
      _mm512_storeu_si512(d, hi);
      _mm512_storeu_si512(d + kDepth, hi);
      _mm512_storeu_si512(d + 2 * kDepth, lo);
    }
  }

  // Block mb's kRows rows of A' into `a` (rows past the map zero).
  void split_block(const float* in, int mb, uint16_t* a, Scratch& sc) const {
    const ConvShape& s = shape_;
    const int m0 = mb * kRows, rows = std::min(kRows, s.batch * s.out_h() * s.out_w() - m0);
    for (int r = 0; r < kRows; ++r) {
      uint16_t* dst = a + size_t(r) * lda_;
      if (r >= rows) {
        std::memset(dst, 0, size_t(lda_) * sizeof(uint16_t));
      } else if (direct_) {
        split_row(in + int64_t(m0 + r) * s.in_c, dst);
      } else {
        gemm::im2col_row(s, in, 0, m0 + r, sc.row.data());
        split_row(sc.row.data(), dst);
      }
    }
  }

  // Block mb's output channels of chunk `chunk` from its A' (`a`), with the epilogue.
  __attribute__((target("amx-tile,amx-int8,amx-bf16,avx512f,avx512bw,avx512bf16"))) void compute_block(
      float* out, int mb, int chunk, const uint16_t* a) const {
    const ConvShape& s = shape_;
    const int m0 = mb * kRows, rows = std::min(kRows, s.batch * s.out_h() * s.out_w() - m0);
    static const amx::TileConfig config;
    _tile_loadconfig(&config);
    const auto [lo, hi] = activation_range(s.activation);
    const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
    alignas(64) float sums[kRows * 2 * kBlock];
    const int depth = 3 * k_blocks_;
    const int stride = lda_ * int(sizeof(uint16_t));
    const int pair0 = chunk * pairs_ / col_chunks_, pair1 = (chunk + 1) * pairs_ / col_chunks_;
    for (int pair = pair0; pair < pair1; ++pair) {
      const int nb = 2 * pair;
      const bool two = nb + 1 < blocks_;
      const uint16_t* b0 = bf16(packed_) + size_t(nb) * 2 * k_blocks_ * kTileElems;
      const uint16_t* b1 = b0 + size_t(2) * k_blocks_ * kTileElems;
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      for (int j = 0; j < depth; ++j) {  // A' sub-block j % 3 (Ah, Ah, Al) against B' hi, lo, hi
        const size_t bt = size_t(2 * (j / 3) + (j % 3 == 1)) * kTileElems;
        amx::dot_2x2<true>(a + j * kDepth, a + 16 * lda_ + j * kDepth, stride, b0 + bt, b1 + bt, two);
      }
      constexpr int kLd = 2 * kBlock * sizeof(float);
      _tile_stored(0, sums, kLd);
      _tile_stored(1, sums + 16 * 2 * kBlock, kLd);
      _tile_stored(2, sums + kBlock, kLd);
      _tile_stored(3, sums + 16 * 2 * kBlock + kBlock, kLd);
      for (int v = 0; v < (two ? 2 : 1); ++v) {
        const int c0 = (nb + v) * kBlock, nc = std::min(kBlock, s.out_c - c0);
        const __mmask16 mask = nc == kBlock ? 0xffff : __mmask16((1u << nc) - 1);
        const __m512 bias = _mm512_loadu_ps(bias_.data() + c0);
        for (int r = 0; r < rows; ++r) {
          const __m512 y = _mm512_add_ps(_mm512_load_ps(sums + r * 2 * kBlock + v * kBlock), bias);
          _mm512_mask_storeu_ps(out + int64_t(m0 + r) * s.out_c + c0, mask, _mm512_min_ps(_mm512_max_ps(y, vlo), vhi));
        }
      }
    }
    _tile_release();
    finish(out, m0, rows, pair0 * 2 * kBlock, std::min(s.out_c, pair1 * 2 * kBlock));
  }

  int k_ = 0, k_blocks_ = 0, blocks_ = 0, pairs_ = 0, lda_ = 0, m_blocks_ = 0, col_chunks_ = 1;
  bool direct_ = false, shared_ = false;
  AlignedBuffer packed_;  // B' tiles (bf16)
  AlignedBuffer bias_;
  std::vector<Scratch> scratch_;
};

}  // namespace
#endif

std::unique_ptr<ConvKernel> make_amx_bf16x3_conv(const ConvShape& s, const MethodParams& p, const float* w,
                                                 const float* b) {
#if LAYERTUNE_X86_AMX
  return std::make_unique<AmxBf16x3Conv>(s, p, w, b);
#else
  (void)s, (void)p, (void)w, (void)b;
  fail(amx_bf16x3_cpu_lacks());
#endif
}

}  // namespace layertune
