// amx_bf16x3 and amx_bf16x6: a regular convolution's im2col GEMM on Intel AMX's bf16 tiles.
// Each float v is split into bf16 parts: v0 = bf16(v), v1 = bf16(v - v0) (and v2 = bf16(v - v0 -
// v1)), and a product a*b is summed from some of the parts' products, the terms (Terms below):
//   x3: a0*b0 + a0*b1 + a1*b0. What is left out (a1*b1, and a1's own rounding) is below 2^-16 of
//       the product: the output is within about 1e-5 of max|y| (an approximate method: the tuner
//       gates it, tuner/accuracy.py).
//   x6: the x3 terms + a0*b2 + a1*b1 + a2*b0. The parts hold 24 bits, as fp32; what is left out is
//       below 2^-24 of the product: fp32's own accuracy, at twice x3's tile work.
// tdpbf16ps sums in fp32. A row of A becomes its parts per k block of 32 (A', split per task: 32
// output pixels' rows of the input itself for a 1x1 stride-1 layer, else im2col rows), the weights
// their parts (B', packed at prepare time), each stored once; a term reads its two parts' tiles.
// Two blocks of 16 channels at a time (tiles 0-3 the sums, 4-5 A, 6-7 B, as int8_gemm's AMX path).
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

namespace {

// Why this CPU cannot run `method` ("" when it can).
std::string amx_bf16_cpu_lacks(const char* method) {
#if LAYERTUNE_X86_AMX
  // asked at every applicability check: the CPU is looked at once
  static const std::string why = !amx::usable(amx::Unit::kBf16) ? "needs Intel AMX-BF16 tiles, which this CPU lacks"
                                 : !__builtin_cpu_supports("avx512bf16") ? "needs AVX512-BF16, which this CPU lacks"
                                                                         : "";
  return why.empty() ? why : cat(method, " ", why);
#else
  return cat(method, " needs Intel AMX-BF16 tiles (x86-64 only)");
#endif
}

}  // namespace

std::string amx_bf16x3_cpu_lacks() { return amx_bf16_cpu_lacks("amx_bf16x3"); }
std::string amx_bf16x6_cpu_lacks() { return amx_bf16_cpu_lacks("amx_bf16x6"); }

std::string amx_bf16_applies(const ConvShape& s) {
  return s.groups == 1 ? "" : cat("amx_bf16x3 and amx_bf16x6 compute ungrouped layers only, this layer has ", s.groups, " groups");
}

#if LAYERTUNE_X86_AMX
namespace {

using gemm::ceil_div;

constexpr int kRows = 32;   // output pixels a task: two 16-row A tiles
constexpr int kBlock = 16;  // output channels a B tile
constexpr int kDepth = 32;  // bf16 values of K a tile row
constexpr int kTileElems = 16 * kDepth;
constexpr size_t kSharedBytes = size_t(2) << 20;  // the A' one run_shared shares: an AMX core's L2

// The bf16 terms of a product: term t multiplies A's part a[t] by B's part b[t].
struct Terms {
  int parts, count;
  int a[6], b[6];
};
constexpr Terms kX3{2, 3, {0, 0, 1}, {0, 1, 0}};
constexpr Terms kX6{3, 6, {0, 0, 1, 0, 1, 2}, {0, 1, 0, 2, 1, 0}};

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

class AmxBf16Conv final : public ConvKernel {
 public:
  AmxBf16Conv(const ConvShape& s, const MethodParams& p, const float* w, const float* b, const Terms& terms)
      : ConvKernel(s, p), terms_(terms) {
    k_ = s.kernel_h * s.kernel_w * s.in_c;
    k_blocks_ = ceil_div(k_, kDepth);
    blocks_ = ceil_div(s.out_c, kBlock);
    pairs_ = ceil_div(blocks_, 2);
    lda_ = terms_.parts * k_blocks_ * kDepth;
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

  // B' tiles: for block nb, per k block its parts' tiles (16 rows of K pairs x 16 channels x 2,
  // tdpbf16ps's pair layout), each stored once (the weights take 2 bytes a part a value; a layer
  // reads them from memory at every run); the bias padded to whole blocks.
  void pack_weights(const float* w, const float* b) {
    const int out_c = shape_.out_c, parts = terms_.parts;
    packed_.resize(size_t(blocks_) * parts * k_blocks_ * kTileElems / 2);
    for (int nb = 0; nb < blocks_; ++nb)
      for (int kb = 0; kb < k_blocks_; ++kb) {
        uint16_t* tiles = bf16(packed_) + (size_t(nb) * parts * k_blocks_ + size_t(parts) * kb) * kTileElems;
        for (int kk = 0; kk < kDepth; ++kk)
          for (int c = 0; c < kBlock; ++c) {
            const int k = kb * kDepth + kk, n = nb * kBlock + c;
            float rest = k < k_ && n < out_c ? w[size_t(k) * out_c + n] : 0.f;
            const size_t at = (kk / 2) * 2 * kBlock + c * 2 + (kk & 1);
            for (int part = 0; part < parts; ++part) {
              const uint16_t h = bf16_nearest(rest);
              tiles[part * kTileElems + at] = h;
              rest -= bf16_value(h);
            }
          }
      }
    bias_.resize(size_t(blocks_) * kBlock);
    if (b) std::copy(b, b + out_c, bias_.data());
  }

  // One row of A (k_ floats) as A': its parts per k block of 32; K past k_ is zero.
  __attribute__((target("avx512f,avx512bw,avx512bf16"))) void split_row(const float* src, uint16_t* dst) const {
    const int parts = terms_.parts;
    for (int kb = 0; kb < k_blocks_; ++kb) {
      const int k0 = kb * kDepth, nk = std::min(kDepth, k_ - k0);
      const __mmask16 m0 = nk >= 16 ? 0xffff : __mmask16((1u << nk) - 1);
      const __mmask16 m1 = nk <= 16 ? 0 : nk >= 32 ? 0xffff : __mmask16((1u << (nk - 16)) - 1);
      __m512 x0 = _mm512_maskz_loadu_ps(m0, src + k0), x1 = _mm512_maskz_loadu_ps(m1, src + k0 + 16);
      uint16_t* d = dst + size_t(parts) * kb * kDepth;
      for (int part = 0; part < parts; ++part) {
        const __m512i h = __m512i(_mm512_cvtne2ps_pbh(x1, x0));
        _mm512_storeu_si512(d + part * kDepth, h);
        if (part + 1 == parts) break;
        // what the part left: exact in fp32
        x0 = _mm512_sub_ps(x0, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(h)), 16)));
        x1 = _mm512_sub_ps(x1, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(h, 1)), 16)));
      }
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
    const int stride = lda_ * int(sizeof(uint16_t));
    const int pair0 = chunk * pairs_ / col_chunks_, pair1 = (chunk + 1) * pairs_ / col_chunks_;
    for (int pair = pair0; pair < pair1; ++pair) {
      const int nb = 2 * pair;
      const bool two = nb + 1 < blocks_;
      const uint16_t* b0 = bf16(packed_) + size_t(nb) * terms_.parts * k_blocks_ * kTileElems;
      const uint16_t* b1 = b0 + size_t(terms_.parts) * k_blocks_ * kTileElems;
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      for (int kb = 0; kb < k_blocks_; ++kb)
        for (int t = 0; t < terms_.count; ++t) {
          const uint16_t* at = a + size_t(terms_.parts * kb + terms_.a[t]) * kDepth;
          const size_t bt = size_t(terms_.parts * kb + terms_.b[t]) * kTileElems;
          amx::dot_2x2<true>(at, at + 16 * lda_, stride, b0 + bt, b1 + bt, two);
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

  const Terms& terms_;
  int k_ = 0, k_blocks_ = 0, blocks_ = 0, pairs_ = 0, lda_ = 0, m_blocks_ = 0, col_chunks_ = 1;
  bool direct_ = false, shared_ = false;
  AlignedBuffer packed_;  // B' tiles (bf16)
  AlignedBuffer bias_;
  std::vector<Scratch> scratch_;
};

}  // namespace
#endif

namespace {

// The kernel with x3's or x6's terms, or this CPU's reason why not.
std::unique_ptr<ConvKernel> make_amx_bf16(const ConvShape& s, const MethodParams& p, const float* w, const float* b,
                                          bool six) {
#if LAYERTUNE_X86_AMX
  return std::make_unique<AmxBf16Conv>(s, p, w, b, six ? kX6 : kX3);
#else
  (void)s, (void)p, (void)w, (void)b;
  fail(six ? amx_bf16x6_cpu_lacks() : amx_bf16x3_cpu_lacks());
#endif
}

}  // namespace

std::unique_ptr<ConvKernel> make_amx_bf16x3_conv(const ConvShape& s, const MethodParams& p, const float* w,
                                                 const float* b) {
  return make_amx_bf16(s, p, w, b, false);
}

std::unique_ptr<ConvKernel> make_amx_bf16x6_conv(const ConvShape& s, const MethodParams& p, const float* w,
                                                 const float* b) {
  return make_amx_bf16(s, p, w, b, true);
}

}  // namespace layertune
