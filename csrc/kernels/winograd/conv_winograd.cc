// winograd: F(2x2,3x3) and F(4x4,3x3) for 3x3 / stride 1 / dilation 1 layers.
//
// Regular (and grouped) layers, per task = a block of tiles of one group:
//   1. input transform of the block's tiles: V[e][tile][ci] (e = one of alpha^2 positions)
//   2. for each block of nonseparable_filter_block_depth output filters,
//        for each block of nonseparable_channel_depth input channels,
//          alpha^2 GEMMs  M[e][tile][f] += V[e][tile][c-block] x U[e][c-block][f-block]
//      then the output transform of that filter block (+ bias, activation) into the output.
// Depthwise layers, per task = one row of tiles x one block of separable_block_depth channels:
// input transform, element-wise product with U per channel, output transform, all in registers.
#include <algorithm>
#include <cstring>
#include <vector>

#include "../depthwise_layout.h"
#include "../gemm/gemm.h"
#include "layertune/conv.h"
#include "layertune/thread_pool.h"
#include "transforms.h"

namespace layertune {
namespace {

using gemm::ceil_div;
using gemm::round_up;
using simd::kLanes;
using simd::vf;

// Loads the alpha x alpha input tile whose top-left input pixel is (iy0, ix0), channels
// [c0, c0 + lanes); positions outside the input read as zero (the padding).
template <int A>
inline void load_tile(const float* in_n, int h, int w, ptrdiff_t row_stride, ptrdiff_t px_stride, int iy0,
                      int ix0, int lanes, vf* d) {
  for (int a = 0; a < A; ++a) {
    const int iy = iy0 + a;
    const bool row_in = iy >= 0 && iy < h;
    for (int b = 0; b < A; ++b) {
      const int ix = ix0 + b;
      d[a * A + b] = row_in && ix >= 0 && ix < w ? simd::load_n(in_n + iy * row_stride + ix * px_stride, lanes) : vf{};
    }
  }
}

template <int M>
class WinogradConv final : public ConvKernel {
  static constexpr int A = winograd::Tile<M>::kIn, E = winograd::Tile<M>::kElems;

 public:
  WinogradConv(const ConvShape& s, const MethodParams& p, const float* w, const float* b) : ConvKernel(s, p) {
    cig_ = s.in_c_per_group();
    cog_ = s.out_c_per_group();
    tiles_h_ = ceil_div(s.out_h(), M);
    tiles_w_ = ceil_div(s.out_w(), M);
    const int tiles = s.batch * tiles_h_ * tiles_w_;
    const int tile = p.get("gemm_tile");  // 0: the ISA's tile for alpha^2 GEMMs of this shape
    tile_ = gemm::micro_kernel_for(tile ? tile : gemm::winograd_tile_for_shape(tiles, cog_));
    const int tile_m = tile_.mr, tile_n = tile_.nr;
    panels_ = ceil_div(cog_, tile_n);
    // U[e][g][panel][ci][tile_n]
    u_.resize(size_t(E) * s.groups * panels_ * cig_ * tile_n);
    float tmp[E];
    for (int g = 0; g < s.groups; ++g)
      for (int co = 0; co < cog_; ++co)
        for (int ci = 0; ci < cig_; ++ci) {
          const int oc = g * cog_ + co;
          winograd::weight_transform(M, w + size_t(ci) * s.out_c + oc, 3L * cig_ * s.out_c, long(cig_) * s.out_c, tmp);
          for (int e = 0; e < E; ++e)
            u_[u_index(e, g, co / tile_n, ci) + co % tile_n] = tmp[e];
        }
    bias_.resize(s.out_c + kLanes);
    if (b) std::memcpy(bias_.data(), b, s.out_c * sizeof(float));

    // Tiles per block: V (E x tiles x cig floats) within about 256 KiB, at most 4 rows of register
    // tiles. Every block streams all of U: where U is large (4 MiB and more: ResNet50's 14x14x256
    // in F(2x2) and 7x7x512), blocks of up to 1 MiB of V and 8 rows of tiles, so that U streams
    // once or twice (in the model: 14x14x256 1.14 -> 1.07 ms, 7x7x512 F(2x2) 1.92 -> 1.70 ms; the
    // 28x28 and 56x56 layers, 2.4 MB and 0.6 MB of U, lose 9-13% with the bigger blocks).
    const bool big_u = u_.size() * sizeof(float) >= (size_t(4) << 20);
    const int v_budget = big_u ? 4 * gemm::kBlockFloats : gemm::kBlockFloats, max_rows = big_u ? 8 : 4;
    tile_block_ = std::clamp(v_budget / (E * cig_) / tile_m * tile_m, tile_m, max_rows * tile_m);
    // A last block of one register row or less would stream all of U again for a few tiles (49
    // tiles of a 14x14 map in F(2x2) on 6-row tiles: 48 + 1); the block takes them, V permitting
    // (14x14x256 F(2x2) alone, AMD EPYC, AVX2: two threads 1.31 -> 0.97 ms, one thread no change).
    const int all_tiles = round_up(tiles, tile_m);
    if (all_tiles <= tile_block_ + tile_m && size_t(E) * all_tiles * cig_ <= size_t(v_budget)) tile_block_ = all_tiles;
    tile_block_ = std::min(tile_block_, all_tiles);
    // Enough tasks to balance the threads: smaller tile blocks first, then split the filters. Where
    // U is large and has a weight panel for every task, the filters first, one share a thread:
    // each thread then streams its own share of U once, not all of U per tile block, and
    // transforms the input once (ResNet50's 7x7x512 on two threads: 1.16 -> 1.02 ms with 8
    // shares, 1.08 -> 1.02 with 2 instead of 8). At least two panels a thread: ResNet50's
    // 14x14x256, 4 panels of 64 filters, was 5% slower split by filters on a Zen 4-like core, but
    // on an Intel Xeon (2 MiB L2) its six layers took 7.1 ms on two threads split by tiles (each
    // thread streaming all of U, no faster than one thread) and 4.0 ms split by filters.
    const bool filters_first = big_u && panels_ >= 2 * p.threads;
    const int wanted_tasks = p.threads <= 1 ? 1 : filters_first ? p.threads : 4 * p.threads;
    auto tile_tasks = [&] { return int64_t(ceil_div(tiles, tile_block_)) * s.groups; };
    if (!filters_first)
      while (tile_block_ > tile_m && tile_tasks() < wanted_tasks) tile_block_ -= tile_m;
    tile_blocks_ = ceil_div(tiles, tile_block_);
    // Output filters per block: a multiple of tile_n; by default M (E x tiles x filters) <= 256 KiB.
    const int filter_depth = p.get("nonseparable_filter_block_depth");
    const int fb = filter_depth ? round_up(filter_depth, tile_n)
                                : std::max(tile_n, gemm::kBlockFloats / (E * tile_block_) / tile_n * tile_n);
    filter_block_ = std::min(fb, panels_ * tile_n);
    const int64_t tasks = int64_t(tile_blocks_) * s.groups;
    if (tasks < wanted_tasks) {
      const int splits = int(ceil_div(wanted_tasks, int(tasks)));
      if (!filter_depth)
        filter_block_ = std::min(filter_block_, std::max(tile_n, round_up(ceil_div(cog_, splits), tile_n)));
      filter_splits_ = std::min(splits, panels_);
    }
    const int channel_depth = p.get("nonseparable_channel_depth");
    channel_block_ = std::min(channel_depth ? channel_depth : 128, cig_);
    scratch_v_.resize(p.threads);
    scratch_m_.resize(p.threads);
    held_.resize(p.threads);
    for (int t = 0; t < p.threads; ++t) {
      // V, then (a packed-A default tile) one row block's packed slice of V
      scratch_v_[t].resize(size_t(E) * tile_block_ * cig_ +
                           (tile_.packed_a ? gemm::packed_a_size(channel_block_, tile_m) : 0));
      scratch_m_[t].resize(size_t(E) * tile_block_ * filter_block_);
    }
  }

  // A tile block's filter shares are consecutive tasks, so a thread mostly runs all shares of
  // its blocks: it transforms a block's input once, for its first share, and keeps V for the
  // rest (filter shares then cost no input transforms but at the blocks two threads share).
  void run(const float* in, float* out) override {
    const int64_t tasks = int64_t(shape_.groups) * tile_blocks_ * filter_splits_;
    const uint64_t run = ++runs_;
    ThreadPool::global().parallel_for(params_.threads, tasks, [&](int64_t t, int worker) {
      const int split = int(t % filter_splits_);
      const int64_t key = t / filter_splits_;  // group and tile block
      const int block = int(key % tile_blocks_);
      const int g = int(key / tile_blocks_);
      HeldV& held = held_[worker];
      const bool transform = held.run != run || held.key != key;
      held = {run, key};
      run_block(in, out, g, block, split, scratch_v_[worker].data(), scratch_m_[worker].data(), transform);
    });
  }

 private:
  size_t u_index(int e, int g, int panel, int ci) const {
    return ((size_t(e) * shape_.groups + g) * panels_ + panel) * cig_ * tile_.nr + size_t(ci) * tile_.nr;
  }

  void tile_origin(int tile, int* n, int* ty, int* tx) const {
    *tx = tile % tiles_w_;
    *ty = (tile / tiles_w_) % tiles_h_;
    *n = tile / (tiles_w_ * tiles_h_);
  }

  // Tile block `block` of group g; of the filter blocks, the share `split` of filter_splits_.
  void run_block(const float* in, float* out, int g, int block, int split, float* v, float* mbuf, bool transform) const {
    const ConvShape& s = shape_;
    const int tiles = s.batch * tiles_h_ * tiles_w_;
    const int t0 = block * tile_block_, tn = std::min(tile_block_, tiles - t0);
    const int tb = tile_block_;  // rows of V and M per position e (a multiple of the tile's rows)
    const int tile_m = tile_.mr, tile_n = tile_.nr;
    const ptrdiff_t row_stride = ptrdiff_t(s.in_w) * s.in_c;

    // 1. Input transform: V[e][i][ci] (unless v holds it from this block's last share).
    vf d[E], vt[E];
    for (int i = 0; i < (transform ? tb : 0); ++i) {
      if (i >= tn) {  // rows past the last tile feed the GEMM but are never stored: keep them finite
        for (int e = 0; e < E; ++e) std::memset(v + (size_t(e) * tb + i) * cig_, 0, cig_ * sizeof(float));
        continue;
      }
      int n, ty, tx;
      tile_origin(t0 + i, &n, &ty, &tx);
      const float* in_n = in + int64_t(n) * s.in_h * row_stride + g * cig_;
      for (int c0 = 0; c0 < cig_; c0 += kLanes) {
        const int lanes = std::min(kLanes, cig_ - c0);
        load_tile<A>(in_n + c0, s.in_h, s.in_w, row_stride, s.in_c, ty * M - s.pad_top, tx * M - s.pad_left, lanes, d);
        winograd::input_transform<M>(d, vt);
        for (int e = 0; e < E; ++e) simd::store_n(v + (size_t(e) * tb + i) * cig_ + c0, vt[e], lanes);
      }
    }

    const auto [lo_s, hi_s] = activation_range(s.activation);
    const vf lo = simd::splat(lo_s), hi = simd::splat(hi_s);
    // This split's weight panels, as even a share as whole panels allow (11 panels on 8 splits:
    // 1 or 2 each, 5 and 6 per thread of two), in blocks of filter_block_.
    const int f_begin = split * panels_ / filter_splits_ * tile_n;
    const int f_end = std::min(cog_, (split + 1) * panels_ / filter_splits_ * tile_n);
    for (int fb0 = f_begin; fb0 < f_end; fb0 += filter_block_) {
      const int fbn = std::min(filter_block_, f_end - fb0);
      const int p0 = fb0 / tile_n, p1 = ceil_div(fb0 + fbn, tile_n);
      // 2. alpha^2 GEMMs, reduction over input channels in blocks.
      for (int cb0 = 0; cb0 < cig_; cb0 += channel_block_) {
        const int cbn = std::min(channel_block_, cig_ - cb0);
        for (int e = 0; e < E; ++e) {
          auto gemm_at = [&](int p, int i, const float* a) {
            tile_.run(cbn, a, cig_, u_.data() + u_index(e, g, p, cb0),
                               mbuf + (size_t(e) * tb + i) * filter_block_ + (p - p0) * tile_n, filter_block_, tile_m, tile_n,
                               cb0 > 0, nullptr);
          };
          if (tile_.packed_a) {  // each row block packed once, read by every panel
            float* apack = v + size_t(E) * tb * cig_;
            for (int i = 0; i < tn; i += tile_m) {
              gemm::pack_a(v + (size_t(e) * tb + i) * cig_ + cb0, cig_, tile_m, cbn, tile_m, apack);
              for (int p = p0; p < p1; ++p) gemm_at(p, i, apack);
            }
          } else {
            for (int p = p0; p < p1; ++p)
              for (int i = 0; i < tn; i += tile_m) gemm_at(p, i, v + (size_t(e) * tb + i) * cig_ + cb0);
          }
        }
      }
      // 3. Output transform of this filter block.
      vf mv[E], y[M * M];
      for (int i = 0; i < tn; ++i) {
        int n, ty, tx;
        tile_origin(t0 + i, &n, &ty, &tx);
        const int oy0 = ty * M, ox0 = tx * M, oh = s.out_h(), ow = s.out_w();
        for (int f0 = 0; f0 < fbn; f0 += kLanes) {
          const int lanes = std::min(kLanes, fbn - f0);
          for (int e = 0; e < E; ++e) mv[e] = simd::load(mbuf + (size_t(e) * tb + i) * filter_block_ + f0);
          winograd::output_transform<M>(mv, y);
          const int oc = g * cog_ + fb0 + f0;
          const vf bias = simd::load(bias_.data() + oc);
          for (int a = 0; a < M && oy0 + a < oh; ++a)
            for (int b = 0; b < M && ox0 + b < ow; ++b)
              simd::store_n(out + ((int64_t(n) * oh + oy0 + a) * ow + ox0 + b) * s.out_c + oc,
                            simd::clamp(y[a * M + b] + bias, lo, hi), lanes);
        }
        for (int a = 0; a < M && oy0 + a < oh; ++a)
          finish(out, (int64_t(n) * oh + oy0 + a) * ow + ox0, std::min(M, ow - ox0), g * cog_ + fb0, g * cog_ + fb0 + fbn);
      }
    }
  }

  gemm::MicroKernel tile_;
  int cig_ = 0, cog_ = 0, panels_ = 0, tiles_h_ = 0, tiles_w_ = 0;
  int tile_block_ = 0, tile_blocks_ = 0, filter_block_ = 0, channel_block_ = 0, filter_splits_ = 1;
  AlignedBuffer u_, bias_;
  std::vector<AlignedBuffer> scratch_v_, scratch_m_;
  struct HeldV {  // which run's and tile block's V a worker's scratch_v_ holds
    uint64_t run = 0;
    int64_t key = -1;
  };
  std::vector<HeldV> held_;
  uint64_t runs_ = 0;
};

template <int M>
class WinogradDepthwise final : public ConvKernel {
  static constexpr int A = winograd::Tile<M>::kIn, E = winograd::Tile<M>::kElems;

 public:
  WinogradDepthwise(const ConvShape& s, const MethodParams& p, const float* w, const float* b) : ConvKernel(s, p) {
    const int c = s.in_c, mult = s.multiplier();
    stride_ = round_up(c, kLanes);
    // U[j][e][c], channels contiguous (padded to whole vectors).
    u_.resize(size_t(mult) * E * stride_);
    float tmp[E];
    for (int j = 0; j < mult; ++j)
      for (int ch = 0; ch < c; ++ch) {
        winograd::weight_transform(M, w + size_t(ch) * mult + j, 3L * c * mult, long(c) * mult, tmp);
        for (int e = 0; e < E; ++e) u_[(size_t(j) * E + e) * stride_ + ch] = tmp[e];
      }
    bias_.resize(size_t(mult) * stride_);
    if (b) depthwise::group_by_multiplier(b, c, mult, stride_, bias_.data());
    const int depth = p.get("separable_block_depth");
    channel_block_ = depth ? std::min(round_up(depth, kLanes), stride_) : stride_;
    channel_blocks_ = ceil_div(stride_, channel_block_);
    tiles_h_ = ceil_div(s.out_h(), M);
    tiles_w_ = ceil_div(s.out_w(), M);
  }

  void run(const float* in, float* out) override {
    const int64_t rows = int64_t(shape_.batch) * tiles_h_;
    ThreadPool::global().parallel_for(params_.threads, rows * channel_blocks_, [&](int64_t t, int) {
      run_row(in, out, int(t / channel_blocks_), int(t % channel_blocks_));
    });
  }

 private:
  void run_row(const float* in, float* out, int row, int cblock) const {
    const ConvShape& s = shape_;
    const int c = s.in_c, mult = s.multiplier(), oh = s.out_h(), ow = s.out_w();
    const int n = row / tiles_h_, ty = row % tiles_h_;
    const int c_begin = cblock * channel_block_, c_end = std::min(c, c_begin + channel_block_);
    const ptrdiff_t row_stride = ptrdiff_t(s.in_w) * c;
    const float* in_n = in + int64_t(n) * s.in_h * row_stride;
    const auto [lo_s, hi_s] = activation_range(s.activation);
    const vf lo = simd::splat(lo_s), hi = simd::splat(hi_s);
    vf d[E], v[E], y[M * M];
    const int oy0 = ty * M;
    for (int tx = 0; tx < tiles_w_; ++tx) {
      const int ox0 = tx * M;
      for (int c0 = c_begin; c0 < c_end; c0 += kLanes) {
        const int lanes = std::min(kLanes, c_end - c0);
        load_tile<A>(in_n + c0, s.in_h, s.in_w, row_stride, c, oy0 - s.pad_top, ox0 - s.pad_left, lanes, d);
        winograd::input_transform<M>(d, v);
        for (int j = 0; j < mult; ++j) {
          const float* u = u_.data() + size_t(j) * E * stride_ + c0;
          for (int e = 0; e < E; ++e) d[e] = v[e] * simd::load(u + size_t(e) * stride_);
          winograd::output_transform<M>(d, y);
          const vf bias = simd::load(bias_.data() + size_t(j) * stride_ + c0);
          for (int a = 0; a < M && oy0 + a < oh; ++a)
            for (int b = 0; b < M && ox0 + b < ow; ++b) {
              const vf r = simd::clamp(y[a * M + b] + bias, lo, hi);
              depthwise::store(out + ((int64_t(n) * oh + oy0 + a) * ow + ox0 + b) * s.out_c, c0, j, mult, r, lanes);
            }
        }
      }
    }
    // Output channel c * mult + j belongs to input channel c: this block's are contiguous.
    for (int a = 0; a < M && oy0 + a < oh; ++a)
      finish(out, (int64_t(n) * oh + oy0 + a) * ow, ow, c_begin * mult, c_end * mult);
  }

  int stride_ = 0, channel_block_ = 0, channel_blocks_ = 0, tiles_h_ = 0, tiles_w_ = 0;
  AlignedBuffer u_, bias_;
};

}  // namespace

std::unique_ptr<ConvKernel> make_winograd_conv(const ConvShape& s, const MethodParams& p, const float* w,
                                               const float* b) {
  const int tile = p.get("winograd_tile");
  if (s.is_depthwise()) {
    if (tile == 2) return std::make_unique<WinogradDepthwise<2>>(s, p, w, b);
    if (tile == 6) return std::make_unique<WinogradDepthwise<6>>(s, p, w, b);
    return std::make_unique<WinogradDepthwise<4>>(s, p, w, b);
  }
  if (tile == 2) return std::make_unique<WinogradConv<2>>(s, p, w, b);
  if (tile == 6) return std::make_unique<WinogradConv<6>>(s, p, w, b);
  return std::make_unique<WinogradConv<4>>(s, p, w, b);
}

}  // namespace layertune
