// simple: direct convolution, vectorized over output channels (NHWC), no im2col copy.
// Regular / grouped layers: a register tile of kPX output pixels x kNR output channels sums
// over (ky, kx, ci) straight from the input. Depthwise layers: a tile of rows x pixels x one
// channel vector (3x3 and 5x5, multiplier 1: borders read zeros through the same path).
// Interior pixels run without bounds checks; the border goes one pixel at a time.
#include <algorithm>
#include <array>
#include <cstring>
#include <tuple>
#include <utility>
#include <vector>

#include "../depthwise_layout.h"
#include "../gemm/gemm.h"
#include "layertune/conv.h"
#include "layertune/thread_pool.h"

namespace layertune {
namespace {

using gemm::ceil_div;
using gemm::kNR;
using gemm::kNRV;
using simd::kLanes;
using simd::vf;

// Output pixels per register tile.
inline constexpr int kPX = gemm::kMR;

// The output-pixel range [lo, hi) whose taps along one axis all fall inside the input.
inline std::pair<int, int> interior(int in, int out, int k, int stride, int dilation, int pad) {
  int lo = ceil_div(pad, stride);
  int hi_excl = (in - 1 + pad - (k - 1) * dilation);  // need o*stride - pad + (k-1)*dil <= in-1
  int hi = hi_excl < 0 ? 0 : hi_excl / stride + 1;
  lo = std::min(lo, out);
  hi = std::clamp(hi, lo, out);
  return {lo, hi};
}

// The taps [k0, k1) of one axis whose input coordinate origin + k * dilation lies in [0, in).
inline std::pair<int, int> taps_inside(int origin, int kernel, int dilation, int in) {
  const int k0 = std::min(kernel, origin >= 0 ? 0 : ceil_div(-origin, dilation));
  int k1 = 0;
  while (k1 < kernel && origin + k1 * dilation < in) ++k1;
  return {k0, std::max(k0, k1)};
}

class SimpleConv final : public ConvKernel {
 public:
  SimpleConv(const ConvShape& s, const MethodParams& p, const float* w, const float* b) : ConvKernel(s, p) {
    const int cig = s.in_c_per_group(), cog = s.out_c_per_group();
    panels_ = ceil_div(cog, kNR);
    taps_ = s.kernel_h * s.kernel_w;
    // [group][panel][ky][kx][ci][kNR]
    gemm::pack_groups(w, b, taps_ * cig, s.out_c, s.groups, kNR, packed_, bias_);
  }

  bool keep_unscaled_weights() override {
    unscaled_ = packed_.copy();
    return true;
  }

  // packed = unscaled with each row (ky, kx, ci) of every panel times scale[its input channel].
  void scale_input_channels(const float* scale) override {
    const int cig = shape_.in_c_per_group(), k = taps_ * cig;
    ThreadPool::global().parallel_for(params_.threads, int64_t(shape_.groups) * panels_, [&](int64_t t, int) {
      const size_t at = size_t(t) * k * kNR;
      gemm::scale_panel_rows(unscaled_.data() + at, packed_.data() + at, k, kNR, scale + (t / panels_) * cig, 0, cig);
    });
  }

  void run(const float* in, float* out) override {
    const ConvShape& s = shape_;
    const int64_t rows = int64_t(s.batch) * s.out_h();
    ThreadPool::global().parallel_for(params_.threads, rows * s.groups, [&](int64_t t, int) {
      const int row = int(t % rows), g = int(t / rows);
      run_row(in, out, row, g);
      finish(out, int64_t(row) * s.out_w(), s.out_w(), g * s.out_c_per_group(), (g + 1) * s.out_c_per_group());
    });
  }

 private:
  // Not inlined: as a function of its own the PX x kNRV accumulators get registers.
  template <int PX>
  __attribute__((noinline)) void tile(const float* in_row0, int ky0, int ky1, int kx0, int kx1, const float* w,
                                      const float* bias, float* out, int nr) const {
    const ConvShape& s = shape_;
    const int cig = s.in_c_per_group();
    const ptrdiff_t px_stride = ptrdiff_t(s.stride_w) * s.in_c;
    const auto [lo_s, hi_s] = activation_range(s.activation);
    vf acc[PX][kNRV];
#pragma GCC unroll 4
    for (int v = 0; v < kNRV; ++v) {
      const vf bv = simd::load(bias + v * kLanes);
#pragma GCC unroll 16
      for (int p = 0; p < PX; ++p) acc[p][v] = bv;
    }
    // With one group and no x-dilation, the (kx, ci) taps of a kernel row are contiguous both in
    // the NHWC input and in the packed weights: one flat loop instead of two nested ones.
    const bool flat = s.groups == 1 && s.dilation_w == 1;
    const int run_len = flat ? (kx1 - kx0) * cig : cig;
    for (int ky = ky0; ky < ky1; ++ky) {
      for (int kx = kx0; kx < (flat ? kx0 + 1 : kx1); ++kx) {
        const float* a = in_row0 + ptrdiff_t(ky) * s.dilation_h * s.in_w * s.in_c + ptrdiff_t(kx) * s.dilation_w * s.in_c;
        const float* wk = w + size_t(ky * s.kernel_w + kx) * cig * kNR;
        for (int ci = 0; ci < run_len; ++ci) {
          vf bv[kNRV];
#pragma GCC unroll 4
          for (int v = 0; v < kNRV; ++v) bv[v] = simd::load(wk + ci * kNR + v * kLanes);
#pragma GCC unroll 16
          for (int p = 0; p < PX; ++p) {
            const vf x = simd::splat(a[p * px_stride + ci]);
#pragma GCC unroll 4
            for (int v = 0; v < kNRV; ++v) acc[p][v] += x * bv[v];
          }
        }
      }
    }
    const vf lo = simd::splat(lo_s), hi = simd::splat(hi_s);
#pragma GCC unroll 16
    for (int p = 0; p < PX; ++p)
#pragma GCC unroll 4
      for (int v = 0; v < kNRV; ++v)
        simd::store_n(out + ptrdiff_t(p) * s.out_c + v * kLanes, simd::clamp(acc[p][v], lo, hi), nr - v * kLanes);
  }

  void run_row(const float* in, float* out, int row, int g) const {
    const ConvShape& s = shape_;
    const int oh = s.out_h(), ow = s.out_w(), cig = s.in_c_per_group(), cog = s.out_c_per_group();
    const int n = row / oh, oy = row % oh;
    const int iy0 = oy * s.stride_h - s.pad_top;
    int ky0, ky1;  // (plain ints: the lambdas below capture them)
    std::tie(ky0, ky1) = taps_inside(iy0, s.kernel_h, s.dilation_h, s.in_h);
    const auto [x_lo, x_hi] = interior(s.in_w, ow, s.kernel_w, s.stride_w, s.dilation_w, s.pad_left);
    const float* in_n = in + int64_t(n) * s.in_h * s.in_w * s.in_c + g * cig;
    float* out_row = out + (int64_t(n) * oh + oy) * ow * s.out_c + g * cog;

    for (int p = 0; p < panels_; ++p) {
      const float* w = packed_.data() + (size_t(g) * panels_ + p) * taps_ * cig * kNR;
      const float* bias = bias_.data() + (size_t(g) * panels_ + p) * kNR;
      const int nr = std::min(kNR, cog - p * kNR);
      auto origin = [&](int ox) {  // input address of tap (0, 0) for output pixel ox
        return in_n + int64_t(iy0) * s.in_w * s.in_c + int64_t(ox * s.stride_w - s.pad_left) * s.in_c;
      };
      auto border_pixel = [&](int ox) {
        const auto [kx0, kx1] = taps_inside(ox * s.stride_w - s.pad_left, s.kernel_w, s.dilation_w, s.in_w);
        tile<1>(origin(ox), ky0, ky1, kx0, kx1, w, bias, out_row + int64_t(ox) * s.out_c + p * kNR, nr);
      };
      for (int ox = 0; ox < x_lo; ++ox) border_pixel(ox);
      int ox = x_lo;
      for (; ox + kPX <= x_hi; ox += kPX)
        tile<kPX>(origin(ox), ky0, ky1, 0, s.kernel_w, w, bias, out_row + int64_t(ox) * s.out_c + p * kNR, nr);
      for (; ox + 4 <= x_hi; ox += 4)
        tile<4>(origin(ox), ky0, ky1, 0, s.kernel_w, w, bias, out_row + int64_t(ox) * s.out_c + p * kNR, nr);
      for (; ox < x_hi; ++ox)
        tile<1>(origin(ox), ky0, ky1, 0, s.kernel_w, w, bias, out_row + int64_t(ox) * s.out_c + p * kNR, nr);
      for (ox = std::max(x_hi, x_lo); ox < ow; ++ox) border_pixel(ox);
    }
  }

  int panels_ = 0, taps_ = 0;
  AlignedBuffer packed_, bias_;
  AlignedBuffer unscaled_;  // packed_ before scale_input_channels (kept only when asked)
};

// Depthwise: output channel c*m + j = sum over taps of input channel c x weight (ky, kx, c, j).
class SimpleDepthwise final : public ConvKernel {
 public:
  SimpleDepthwise(const ConvShape& s, const MethodParams& p, const float* w, const float* b) : ConvKernel(s, p) {
    const int c = s.in_c, m = s.multiplier(), taps = s.kernel_h * s.kernel_w;
    // [j][tap][c]: for one multiplier index, contiguous over channels.
    weights_.resize(size_t(m) * taps * c + kLanes);
    bias_.resize(size_t(m) * c + kLanes);
    for (int j = 0; j < m; ++j)
      for (int t = 0; t < taps; ++t)
        for (int ch = 0; ch < c; ++ch) weights_[(size_t(j) * taps + t) * c + ch] = w[(size_t(t) * c + ch) * m + j];
    if (b) depthwise::group_by_multiplier(b, c, m, c, bias_.data());
    if (fast_rows_) zeros_.resize(size_t(c) + kLanes);  // what an input column outside the image reads
  }

  void run(const float* in, float* out) override {
    const ConvShape& s = shape_;
    const int oh = s.out_h(), ow = s.out_w(), m = s.multiplier();
    // Tasks: bands of output rows (one row each but on the fast path), times channel parts.
    const int bands = fast_rows_ ? bands_per_image_ : oh;
    const int64_t tasks = int64_t(s.batch) * bands;
    ThreadPool::global().parallel_for(params_.threads, tasks * row_parts_, [&](int64_t t, int) {
      // part-major: a thread's share of the tasks covers one channel part of every band
      const int64_t band = t % tasks;
      const auto [c0, c1] = channel_part(int(t / tasks));
      const int n = int(band / bands), b = int(band % bands);
      const int r0 = int(int64_t(b) * oh / bands), r1 = int(int64_t(b + 1) * oh / bands);
      if (fast_rows_) {
        const float* in_n = in + int64_t(n) * s.in_h * s.in_w * s.in_c;
        float* out_n = out + int64_t(n) * oh * ow * s.out_c;
        for (int r = r0; r < r1; r += kBandRows) {
          const int ry = std::min(kBandRows, r1 - r);
          (this->*fast_rows_[ry - 1])(in_n, r * s.stride_h - s.pad_top, out_n + int64_t(r) * ow * s.out_c, c0, c1);
        }
      } else {
        for (int r = r0; r < r1; ++r) run_row(in, out, n * oh + r, c0, c1);
      }
      finish(out, (int64_t(n) * oh + r0) * ow, int64_t(r1 - r0) * ow, c0 * m, c1 * m);
    });
  }

 private:
  static constexpr int kDPX = 4;  // output pixels per register tile

  // PX pixels starting at output column ox; taps [ky0,ky1) x [kx0,kx1) are all inside the input.
  template <int PX>
  void tile(const float* in_n, int iy0, int ox, int ky0, int ky1, int kx0, int kx1, float* out_row, int c_begin = 0,
            int c_end = -1) const {
    const ConvShape& s = shape_;
    const int c = s.in_c, m = s.multiplier(), taps = s.kernel_h * s.kernel_w;
    if (c_end < 0) c_end = c;
    const auto [lo_s, hi_s] = activation_range(s.activation);
    const vf lo = simd::splat(lo_s), hi = simd::splat(hi_s);
    const int ix0 = ox * s.stride_w - s.pad_left;
    for (int j = 0; j < m; ++j) {
      const float* wj = weights_.data() + size_t(j) * taps * c;
      for (int c0 = c_begin; c0 < c_end; c0 += kLanes) {
        const int lanes = std::min(kLanes, c_end - c0);
        vf acc[PX];
        const vf bv = simd::load(bias_.data() + size_t(j) * c + c0);
        for (int p = 0; p < PX; ++p) acc[p] = bv;
        for (int ky = ky0; ky < ky1; ++ky) {
          const float* row = in_n + (int64_t(iy0 + ky * s.dilation_h) * s.in_w) * c + c0;
          for (int kx = kx0; kx < kx1; ++kx) {
            const vf wv = simd::load(wj + size_t(ky * s.kernel_w + kx) * c + c0);
            const float* x = row + int64_t(ix0 + kx * s.dilation_w) * c;
#pragma GCC unroll 8
            for (int p = 0; p < PX; ++p) acc[p] += simd::load_n(x + int64_t(p) * s.stride_w * c, lanes) * wv;
          }
        }
        for (int p = 0; p < PX; ++p) {
          depthwise::store(out_row + int64_t(ox + p) * s.out_c, c0, j, m, simd::clamp(acc[p], lo, hi), lanes);
        }
      }
    }
  }

  // RY whole output rows for multiplier 1, dilation 1 and a kernel size and stride known at
  // compile time: RY rows x PX pixels x one channel vector per register tile, each input vector
  // under a tile loaded once for all the taps (of all RY rows) that read it: a tile of one row
  // of 8 loaded 3.75 input vectors per output vector (3x3), one of 4 x 4 loads 2.25. Each input
  // column is read through a pointer that points at a row of zeros outside the image, so border
  // pixels take the same path, and the last tile of a row computes PX pixels and stores the
  // ones that exist.
  template <int K, int S, int RY, int PX>
  void fast_rows(const float* in_n, int iy0, float* out_rows, int c_begin, int c_end) const {
    constexpr int NX = (PX - 1) * S + K, NY = (RY - 1) * S + K;  // input columns and rows under a tile
    const ConvShape& s = shape_;
    const int c = s.in_c, ow = s.out_w(), c_full = c_begin + (c_end - c_begin) / kLanes * kLanes;
    const int64_t out_ld = int64_t(ow) * c;  // between output rows
    for (int ox = 0; ox < ow; ox += PX) {
      const int px = std::min(PX, ow - ox);
      const float* cols[NY * NX];
      for (int ky = 0; ky < NY; ++ky) {
        const int iy = iy0 + ky;
        for (int i = 0; i < NX; ++i) {
          const int ix = ox * S - s.pad_left + i;
          const bool inside = iy >= 0 && iy < s.in_h && ix >= 0 && ix < s.in_w;
          cols[ky * NX + i] = inside ? in_n + (int64_t(iy) * s.in_w + ix) * c : zeros_.data();
        }
      }
      float* o = out_rows + int64_t(ox) * c;
      if (px == PX) {
        channel_tiles<K, S, RY, PX, true>(cols, o, out_ld, PX, c_begin, c_full, kLanes);
      } else {
        channel_tiles<K, S, RY, PX, false>(cols, o, out_ld, px, c_begin, c_full, kLanes);
      }
      if (c_full < c_end) channel_tiles<K, S, RY, PX, false>(cols, o, out_ld, px, c_full, c_end, c_end - c_full);
    }
  }

  // Channel vectors [c_begin, c_end) (step kLanes, `lanes` of each) of an RY x PX tile whose
  // input vectors are `cols` ([NY][NX]); the first `px` pixels of each row are stored (all PX
  // when kAllPixels).
  template <int K, int S, int RY, int PX, bool kAllPixels>
  void channel_tiles(const float* const* cols, float* out, int64_t out_ld, int px, int c_begin, int c_end,
                     int lanes) const {
    constexpr int NX = (PX - 1) * S + K, NY = (RY - 1) * S + K;
    const int c = shape_.in_c;
    const auto [lo_s, hi_s] = activation_range(shape_.activation);
    const vf lo = simd::splat(lo_s), hi = simd::splat(hi_s);
    for (int c0 = c_begin; c0 < c_end; c0 += kLanes) {
      vf acc[RY][PX];
      const vf bv = simd::load(bias_.data() + c0);
      for (int r = 0; r < RY; ++r)
        for (int p = 0; p < PX; ++p) acc[r][p] = bv;
#pragma GCC unroll 16
      for (int iy = 0; iy < NY; ++iy) {
        vf xv[NX];
#pragma GCC unroll 16
        for (int i = 0; i < NX; ++i) {
          xv[i] = kAllPixels ? simd::load(cols[iy * NX + i] + c0) : simd::load_n(cols[iy * NX + i] + c0, lanes);
        }
#pragma GCC unroll 4
        for (int r = 0; r < RY; ++r) {
          const int ky = iy - r * S;
          if (ky < 0 || ky >= K) continue;
          const float* w = weights_.data() + size_t(ky) * K * c + c0;
#pragma GCC unroll 5
          for (int kx = 0; kx < K; ++kx) {
            const vf wv = simd::load(w + size_t(kx) * c);
#pragma GCC unroll 8
            for (int p = 0; p < PX; ++p) acc[r][p] += xv[p * S + kx] * wv;
          }
        }
      }
      for (int r = 0; r < RY; ++r) {
        float* o = out + r * out_ld + c0;
        if (kAllPixels) {
#pragma GCC unroll 8
          for (int p = 0; p < PX; ++p) simd::store(o + int64_t(p) * c, simd::clamp(acc[r][p], lo, hi));
        } else {
          for (int p = 0; p < px; ++p) simd::store_n(o + int64_t(p) * c, simd::clamp(acc[r][p], lo, hi), lanes);
        }
      }
    }
  }

  // Register tile: kBandRows x kTilePX output pixels; with 32 vector registers (AVX-512) 4 x 4
  // (16 accumulators, up to 11 input vectors), else one row of 4.
  static constexpr int kBandRows = simd::kBytes == 64 ? 4 : 1;
  static constexpr int kTilePX = 4;

  using FastRows = void (SimpleDepthwise::*)(const float*, int, float*, int, int) const;
  using FastRowsByHeight = std::array<FastRows, kBandRows>;  // [ry - 1]: a band of ry rows

  template <int K, int S, size_t... R>
  static FastRowsByHeight heights(std::index_sequence<R...>) {
    return {&SimpleDepthwise::fast_rows<K, S, int(R) + 1, kTilePX>...};
  }

  // The fast path's kernels by band height, or nullptr when it does not apply.
  FastRows const* pick_fast_rows() const {
    const ConvShape& s = shape_;
    if (s.multiplier() != 1 || s.dilation_h != 1 || s.dilation_w != 1 || s.kernel_h != s.kernel_w ||
        s.stride_h != s.stride_w)
      return nullptr;
    static const FastRowsByHeight k3s1 = heights<3, 1>(std::make_index_sequence<kBandRows>());
    static const FastRowsByHeight k3s2 = heights<3, 2>(std::make_index_sequence<kBandRows>());
    static const FastRowsByHeight k5s1 = heights<5, 1>(std::make_index_sequence<kBandRows>());
    static const FastRowsByHeight k5s2 = heights<5, 2>(std::make_index_sequence<kBandRows>());
    const int k = s.kernel_h, st = s.stride_w;
    if (k == 3 && st == 1) return k3s1.data();
    if (k == 3 && st == 2) return k3s2.data();
    if (k == 5 && st == 1) return k5s1.data();
    if (k == 5 && st == 2) return k5s2.data();
    return nullptr;
  }

  // Bands of output rows per image, at most kBandRows rows each; when the rows are split among
  // threads (one image, no channel parts), a multiple of the thread count.
  static int bands_per_image(const ConvShape& s, int threads, int parts) {
    const int oh = s.out_h(), per = parts > 1 || s.batch > 1 ? 1 : std::max(1, threads);
    return std::min(oh, per * gemm::ceil_div(oh, per * kBandRows));
  }

  // Tasks are output rows (bands of them on the fast path), or those x channel parts when the
  // rows do not divide among the threads and are few (7x7 layers: 7 rows split 4 + 3 capped two
  // threads at 1.75x). Parts of channels, not of pixels: a 7-pixel row cut in two runs in narrow
  // tiles that load each input vector for one or two pixels (measured: 1.43x on two threads).
  // Two parts a thread, so that one can take over part of a slower one's share (7x7x960 in the
  // model on two threads: 0.92x the time of one part a thread).
  static int row_parts(const ConvShape& s, int threads) {
    const int64_t rows = int64_t(s.batch) * s.out_h();
    if (threads <= 1 || rows % threads == 0 || rows >= 16 * threads) return 1;
    return std::max(1, std::min(2 * threads, s.in_c / kLanes));
  }

  // Input channels [begin, end) of a row part: whole vectors, but for the last part's tail.
  std::pair<int, int> channel_part(int part) const {
    const int c = shape_.in_c;
    auto edge = [&](int p) { return p == row_parts_ ? c : p * c / row_parts_ / kLanes * kLanes; };
    return {edge(part), edge(part + 1)};
  }

  // Input channels [c_begin, c_end) (with their multiplier outputs) of one output row.
  void run_row(const float* in, float* out, int row, int c_begin, int c_end) const {
    const ConvShape& s = shape_;
    const int oh = s.out_h(), ow = s.out_w();
    const int n = row / oh, oy = row % oh;
    const int iy0 = oy * s.stride_h - s.pad_top;
    int ky0, ky1;  // (plain ints: the lambdas below capture them)
    std::tie(ky0, ky1) = taps_inside(iy0, s.kernel_h, s.dilation_h, s.in_h);
    const auto [x_lo, x_hi] = interior(s.in_w, ow, s.kernel_w, s.stride_w, s.dilation_w, s.pad_left);
    const float* in_n = in + int64_t(n) * s.in_h * s.in_w * s.in_c;
    float* out_row = out + (int64_t(n) * oh + oy) * ow * s.out_c;
    auto border_pixel = [&](int ox) {
      const auto [kx0, kx1] = taps_inside(ox * s.stride_w - s.pad_left, s.kernel_w, s.dilation_w, s.in_w);
      tile<1>(in_n, iy0, ox, ky0, ky1, kx0, kx1, out_row, c_begin, c_end);
    };
    for (int ox = 0; ox < x_lo; ++ox) border_pixel(ox);
    int ox = x_lo;
    for (; ox + kDPX <= x_hi; ox += kDPX) tile<kDPX>(in_n, iy0, ox, ky0, ky1, 0, s.kernel_w, out_row, c_begin, c_end);
    for (; ox < x_hi; ++ox) tile<1>(in_n, iy0, ox, ky0, ky1, 0, s.kernel_w, out_row, c_begin, c_end);
    for (ox = std::max(x_hi, x_lo); ox < ow; ++ox) border_pixel(ox);
  }

  FastRows const* fast_rows_ = pick_fast_rows();
  int row_parts_ = row_parts(shape_, params_.threads);
  int bands_per_image_ = bands_per_image(shape_, params_.threads, row_parts_);
  AlignedBuffer weights_, bias_, zeros_;
};

}  // namespace

std::unique_ptr<ConvKernel> make_simple_conv(const ConvShape& s, const MethodParams& p, const float* w,
                                             const float* b) {
  if (s.is_depthwise()) return std::make_unique<SimpleDepthwise>(s, p, w, b);
  return std::make_unique<SimpleConv>(s, p, w, b);
}

}  // namespace layertune
