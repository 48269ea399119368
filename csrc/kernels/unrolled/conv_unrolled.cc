// unrolled: im2col + blocked GEMM. Each task takes block_m output pixels of one group, builds
// their im2col rows (block_m x K, in L2) and multiplies them, block_k columns at a time,
// with the weight panels packed at prepare time. 1x1 / stride 1 / unpadded layers skip im2col:
// the input already is the A matrix.
#include <algorithm>
#include <cstring>
#include <vector>

#include "../gemm/gemm.h"
#include "../gemm/im2col.h"
#include "layertune/conv.h"
#include "layertune/thread_pool.h"

namespace layertune {
namespace {

using gemm::ceil_div;
using gemm::round_up;

class UnrolledConv final : public ConvKernel {
 public:
  UnrolledConv(const ConvShape& s, const MethodParams& p, const float* w, const float* b) : ConvKernel(s, p) {
    const int cig = s.in_c_per_group(), cog = s.out_c_per_group();
    k_ = s.kernel_h * s.kernel_w * cig;
    const int tile = p.get("gemm_tile");  // 0: the ISA's tile for this layer's shape
    tile_ = gemm::micro_kernel_for(tile ? tile : gemm::tile_for_conv(s));
    const int tile_m = tile_.mr, tile_n = tile_.nr;
    panels_ = ceil_div(cog, tile_n);
    direct_ = s.kernel_h == 1 && s.kernel_w == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_top == 0 &&
              s.pad_bottom == 0 && s.pad_left == 0 && s.pad_right == 0;
    // Weights HWIO = a K x out_c matrix; group g owns columns [g*cog, (g+1)*cog).
    const int m = s.batch * s.out_h() * s.out_w();
    const int block_m = p.get("block_m"), block_k = p.get("block_k");
    block_k_ = block_k ? block_k : 256;
    block_m_ = block_m ? round_up(block_m, tile_m) : default_block_m();
    block_m_ = std::min(block_m_, round_up(m, tile_m));
    gemm::pack_groups(w, b, k_, s.out_c, s.groups, tile_n, packed_, bias_);
    packed_ = k_blocks_outer(packed_, s.groups, tile_n);
    m_blocks_ = ceil_div(m, block_m_);
    // Too few pixel blocks to keep every thread busy: also split the output channels; if there
    // are too few weight panels for that as well, cut the pixels finer, down to one micro-row a
    // block, so that the threads' contiguous shares of the tasks come out even. Where that would
    // leave one micro-row a block (7x7x960 -> 160: 5 panels of 32 channels, 7 micro-rows), every
    // task would read its panel's K x 32 weights from L2 for a single micro-row: instead one block
    // per thread, panel-major (a thread takes whole panels and half of one, each k block reused
    // from L1 across its rows): that layer 0.86x the time on two threads, a 7x7 two-block stage
    // 0.95x (the threads' shares 18 + 17 tiles, where row halves panel-minor would give 20 + 15).
    const int target = 4 * p.threads;
    const int64_t blocks = int64_t(m_blocks_) * s.groups;
    col_chunks_ = blocks >= target ? 1 : std::min(panels_, ceil_div(target, int(blocks)));
    if (p.threads > 1 && blocks * col_chunks_ < target) {
      const int micro_rows = ceil_div(m, tile_m);
      m_blocks_ = std::min(micro_rows, ceil_div(4 * target, s.groups * col_chunks_));
      if (blocks == 1 && col_chunks_ == panels_ && panels_ % p.threads != 0 && m_blocks_ == micro_rows) {
        m_blocks_ = p.threads;
        chunk_major_ = true;
      }
    }
    // That many blocks, as even as the tile allows: 196 pixels in 112 + 84 would give one of two
    // threads 57% of the work; 98 + 98 gives each half.
    block_m_ = round_up(ceil_div(m, m_blocks_), tile_m);
    m_blocks_ = ceil_div(m, block_m_);
    scratch_.resize(p.threads);
    // im2col rows (or the direct path's tail rows), then a packed-A tile's packed slice of A
    a_floats_ = direct_ ? size_t(tile_m) * k_ : size_t(block_m_) * k_;
    const size_t packed_a = tile_.packed_a ? gemm::packed_a_size(std::min(block_k_, k_), tile_m) : 0;
    for (auto& buf : scratch_) buf.resize(a_floats_ + packed_a);
  }

  void run(const float* in, float* out) override {
    const int64_t tasks = int64_t(shape_.groups) * m_blocks_ * col_chunks_;
    ThreadPool::global().parallel_for(params_.threads, tasks, [&](int64_t t, int worker) {
      const int chunk = chunk_major_ ? int((t / m_blocks_) % col_chunks_) : int(t % col_chunks_);
      const int mb = chunk_major_ ? int(t % m_blocks_) : int((t / col_chunks_) % m_blocks_);
      const int g = int(t / (int64_t(col_chunks_) * m_blocks_));
      run_block(in, out, g, mb, chunk, scratch_[worker].data());
    });
  }

  bool keep_unscaled_weights() override {
    unscaled_ = packed_.copy();
    return true;
  }

  // packed = unscaled with each row k of every panel times scale[its input channel].
  void scale_input_channels(const float* scale) override {
    const int cig = shape_.in_c_per_group(), tile_n = tile_.nr;
    const size_t group_floats = size_t(panels_) * k_ * tile_n;
    ThreadPool::global().parallel_for(params_.threads, int64_t(shape_.groups) * panels_, [&](int64_t t, int) {
      const int g = int(t / panels_), p = int(t % panels_);
      for (int k0 = 0; k0 < k_; k0 += block_k_) {
        const int kc = std::min(block_k_, k_ - k0);
        const size_t at = g * group_floats + (size_t(k0) * panels_ + size_t(p) * kc) * tile_n;
        gemm::scale_panel_rows(unscaled_.data() + at, packed_.data() + at, kc, tile_n, scale + g * cig, k0, cig);
      }
    });
  }

 private:
  // pack_groups' panels (each K x tile_n) reordered k block by k block: [block][panel][kc][tile_n].
  // A k block's pass over the panels then reads one contiguous stream, which the hardware
  // prefetcher follows; panel by panel it read kc x tile_n pieces a panel apart and stalled on
  // memory in a whole model (ResNet50's 7x7x512 3x3: 2.17 ms with the weights in cache, 2.59 ms
  // after they had left).
  AlignedBuffer k_blocks_outer(const AlignedBuffer& panel_major, int groups, int tile_n) const {
    AlignedBuffer out(panel_major.size());
    const size_t group_floats = size_t(panels_) * k_ * tile_n;
    for (int g = 0; g < groups; ++g) {
      const float* src = panel_major.data() + g * group_floats;
      float* dst = out.data() + g * group_floats;
      for (int k0 = 0; k0 < k_; k0 += block_k_) {
        const int kc = std::min(block_k_, k_ - k0);
        for (int p = 0; p < panels_; ++p)
          std::memcpy(dst + (size_t(k0) * panels_ + size_t(p) * kc) * tile_n, src + (size_t(p) * k_ + k0) * tile_n,
                      size_t(kc) * tile_n * sizeof(float));
      }
    }
    return out;
  }

  int default_block_m() const {
    const int tile_m = tile_.mr;
    // Panels outer (gemm.h) with K of a k block or more: a row block needs only one k block of A
    // in L1 / L2 (block_m x block_k floats) while each block streams every weight panel once, so
    // rows up to kBlockFloats / block_k, and an im2col block (block_m x K floats) of at most 1 MiB
    // of L2. In the model, against 16-tile blocks (<= 256 KiB of im2col): ResNet50 (1x1 layers, K
    // 64-2048) 0.93x the time at one thread, 0.97x at two; its stride-2 1x1 layers 0.98x at one
    // thread; 7x7x512 3x3 (K 4608) one block of 49 rows instead of four, which streamed its 9.4 MB
    // of weights four times. Shorter K (MobileNetV2's expansions) keeps the rule below (a third
    // more rows there: 1.02x).
    if (gemm::kPanelsOuter && !tile_.packed_a && k_ >= block_k_) {
      int rows = gemm::kBlockFloats / block_k_;
      if (!direct_) rows = std::min(rows, 4 * gemm::kBlockFloats / k_);
      return std::max(tile_m, rows / tile_m * tile_m);
    }
    // Keep the im2col block (block_m x K floats) within about 256 KiB of L2.
    const int rows = gemm::kBlockFloats / std::max(k_, 1);
    return std::clamp(rows / tile_m * tile_m, tile_m, 16 * tile_m);
  }

  void run_block(const float* in, float* out, int g, int mb, int chunk, float* scratch) const {
    const ConvShape& s = shape_;
    const int cig = s.in_c_per_group(), cog = s.out_c_per_group();
    const int m_total = s.batch * s.out_h() * s.out_w();
    const int m0 = mb * block_m_, mc = std::min(block_m_, m_total - m0);
    const int p_begin = chunk * panels_ / col_chunks_, p_end = (chunk + 1) * panels_ / col_chunks_;
    const auto [lo, hi] = activation_range(s.activation);
    const int tile_m = tile_.mr, tile_n = tile_.nr;

    const float* a;
    ptrdiff_t lda;
    if (direct_) {
      a = in + int64_t(m0) * s.in_c + g * cig;
      lda = s.in_c;
    } else {
      im2col(in, g, m0, mc, scratch);
      a = scratch;
      lda = k_;
    }
    const float* packed = packed_.data() + size_t(g) * panels_ * k_ * tile_n;  // k-block-major (k_blocks_outer)
    const int cols0 = g * cog + p_begin * tile_n, cols1 = g * cog + std::min(cog, p_end * tile_n);
    // One tile: rows [i, i + mr) of the block, panel p, k block [k0, k0 + kc); arow: A's slice.
    const auto tile = [&](int i, int mr, int p, int k0, int kc, const float* arow, ptrdiff_t arow_ld) {
      const gemm::Epilogue ep{bias_.data() + (size_t(g) * panels_ + p) * tile_n, lo, hi};
      tile_.run(kc, arow, arow_ld, packed + (size_t(k0) * panels_ + size_t(p) * kc) * tile_n,
                out + int64_t(m0 + i) * s.out_c + g * cog + p * tile_n, s.out_c, mr,
                std::min(tile_n, cog - p * tile_n), k0 > 0, k0 + kc == k_ ? &ep : nullptr);
    };
    if (gemm::kPanelsOuter && !tile_.packed_a) {  // see gemm.h
      const int tail = mc % tile_m;  // the input has no readable rows past the end: copy the tail
      if (tail && direct_) copy_tail_rows(a + (mc - tail) * lda, lda, tail, scratch);
      const int micro_rows = ceil_div(mc, tile_m);
      for (int k0 = 0; k0 < k_; k0 += block_k_) {
        const int kc = std::min(block_k_, k_ - k0);
        for (int p = p_begin; p < p_end; ++p) {
          // The weights the next panel reads, asked into L2 a share per micro-row while this
          // panel computes: the first micro-row under a panel otherwise waits on them from L3
          // (a 7x7 map's layers: 49 rows a panel; ResNet50 at one thread 0.955x the time,
          // MobileNetV2's 7x7 stage 0.95x; at two threads no difference).
          const float* next = nullptr;  // the next panel: of this k block, or the next k block's first
          int next_kc = kc;
          if (p + 1 < p_end) {
            next = packed + (size_t(k0) * panels_ + size_t(p + 1) * kc) * tile_n;
          } else if (k0 + kc < k_) {
            next_kc = std::min(block_k_, k_ - k0 - kc);
            next = packed + (size_t(k0 + kc) * panels_ + size_t(p_begin) * next_kc) * tile_n;
          }
          constexpr int kLineFloats = 16;  // floats in a 64-byte cache line
          const int next_lines = next ? next_kc * tile_n / kLineFloats : 0, share = ceil_div(next_lines, micro_rows);
          for (int i = 0; i < mc; i += tile_m) {
            const int mr = std::min(tile_m, mc - i);
            const int l0 = i / tile_m * share, l1 = std::min(next_lines, l0 + share);
            for (int l = l0; l < l1; ++l) __builtin_prefetch(next + size_t(l) * kLineFloats, 0, 2);
            if (mr < tile_m && direct_) tile(i, mr, p, k0, kc, scratch + k0, k_);
            else tile(i, mr, p, k0, kc, a + i * lda + k0, lda);
          }
        }
      }
      finish(out, m0, mc, cols0, cols1);
      return;
    }
    for (int k0 = 0; k0 < k_; k0 += block_k_) {
      const int kc = std::min(block_k_, k_ - k0);
      const bool last = k0 + kc == k_;
      // Micro-rows outer, weight panels inner: the tile-rows x kc slice of A stays in L1 while the
      // panels stream from L2.
      for (int i = 0; i < mc; i += tile_m) {
        const int mr = std::min(tile_m, mc - i);
        const float* arow = a + i * lda + k0;
        ptrdiff_t arow_ld = lda;
        if (tile_.packed_a) {  // packed once, read by every panel
          float* apack = scratch + a_floats_;
          gemm::pack_a(arow, arow_ld, mr, kc, tile_m, apack);
          arow = apack;
        } else if (mr < tile_m && direct_) {  // the input has no readable rows past the end: copy the tail
          if (k0 == 0) copy_tail_rows(a + i * lda, lda, mr, scratch);
          arow = scratch + k0;
          arow_ld = k_;
        }
        for (int p = p_begin; p < p_end; ++p) tile(i, mr, p, k0, kc, arow, arow_ld);
        if (last) finish(out, m0 + i, mr, cols0, cols1);
      }
    }
  }

  void copy_tail_rows(const float* a, ptrdiff_t lda, int rows, float* dst) const {
    std::memset(dst, 0, size_t(tile_.mr) * k_ * sizeof(float));
    for (int r = 0; r < rows; ++r) std::memcpy(dst + size_t(r) * k_, a + r * lda, k_ * sizeof(float));
  }

  // Rows m0..m0+mc of the im2col matrix of group g; rows up to the next multiple of the tile's rows are zero.
  void im2col(const float* in, int g, int m0, int mc, float* dst) const {
    for (int i = 0; i < mc; ++i) gemm::im2col_row(shape_, in, g, m0 + i, dst + size_t(i) * k_);
    const int padded = std::min(round_up(mc, tile_.mr), block_m_);
    if (padded > mc) std::memset(dst + size_t(mc) * k_, 0, size_t(padded - mc) * k_ * sizeof(float));
  }

  gemm::MicroKernel tile_;
  int k_ = 0, panels_ = 0, block_m_ = 0, block_k_ = 0, m_blocks_ = 0, col_chunks_ = 1;
  size_t a_floats_ = 0;
  bool direct_ = false;
  bool chunk_major_ = false;  // tasks panel-major: consecutive tasks share a weight panel
  AlignedBuffer packed_, bias_;
  AlignedBuffer unscaled_;  // packed_ before scale_input_channels (kept only when asked)
  std::vector<AlignedBuffer> scratch_;
};

}  // namespace

std::unique_ptr<ConvKernel> make_unrolled_conv(const ConvShape& s, const MethodParams& p, const float* w,
                                               const float* b) {
  return std::make_unique<UnrolledConv>(s, p, w, b);
}

}  // namespace layertune
