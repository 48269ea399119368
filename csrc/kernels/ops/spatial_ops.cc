// NHWC spatial ops: AVERAGE_POOL_2D, MAX_POOL_2D, MEAN, RESIZE_BILINEAR,
// RESIZE_NEAREST_NEIGHBOR, DEPTH_TO_SPACE, SPACE_TO_DEPTH, and the argmax pooling / unpooling pair
// of segmentation models (MediaPipe's MaxPoolingWithArgmax2D / MaxUnpooling2D custom ops).
#include <cmath>
#include <cstring>

#include "common.h"
#include "layertune/thread_pool.h"

namespace layertune {
namespace {

class PoolOp final : public Op {
 public:
  explicit PoolOp(const OpContext& ctx) : in_(ctx.input(0)), out_(ctx.output(0)) {
    ops::expect_nhwc_pair(ctx, in_, out_);
    xs_ = ctx.shape(in_), os_ = ctx.shape(out_);
    auto f = ops::ints_n(ctx, "filter", 2), st = ops::ints_n(ctx, "strides", 2), pads = ops::ints_n(ctx, "pads", 4);
    fh_ = int(f[0]), fw_ = int(f[1]), sh_ = int(st[0]), sw_ = int(st[1]), pt_ = int(pads[0]), pl_ = int(pads[2]);
    if (fh_ <= 0 || fw_ <= 0 || sh_ <= 0 || sw_ <= 0) fail(ctx.node.where(), ": filter and strides must be positive");
    max_ = ctx.node.op == "MAX_POOL_2D";
    std::tie(lo_, hi_) = ops::fused_activation(ctx);
    threads_ = ctx.threads;
  }

  void run(float* const* b) override {
    const int c = xs_[3];
    ThreadPool::global().parallel_for(threads_, int64_t(os_[0]) * os_[1], [&](int64_t row, int) {
      const int n = int(row / os_[1]), oy = int(row % os_[1]);
      const int y0 = std::max(0, oy * sh_ - pt_), y1 = std::min(xs_[1], oy * sh_ - pt_ + fh_);
      std::vector<float> acc(c);
      for (int ox = 0; ox < os_[2]; ++ox) {
        const int x0 = std::max(0, ox * sw_ - pl_), x1 = std::min(xs_[2], ox * sw_ - pl_ + fw_);
        std::fill(acc.begin(), acc.end(), max_ ? -std::numeric_limits<float>::infinity() : 0.f);
        for (int y = y0; y < y1; ++y)
          for (int x = x0; x < x1; ++x) {
            const float* p = b[in_] + ((int64_t(n) * xs_[1] + y) * xs_[2] + x) * c;
            if (max_) for (int i = 0; i < c; ++i) acc[i] = std::max(acc[i], p[i]);
            else for (int i = 0; i < c; ++i) acc[i] += p[i];
          }
        // TFLite averages over the window's elements inside the input only.
        const float scale = max_ ? 1.f : 1.f / float(std::max(1, (y1 - y0) * (x1 - x0)));
        float* o = b[out_] + ((int64_t(n) * os_[1] + oy) * os_[2] + ox) * c;
        for (int i = 0; i < c; ++i) o[i] = std::min(std::max(acc[i] * scale, lo_), hi_);
      }
    });
  }

 private:
  int in_, out_, threads_ = 1;
  std::vector<int> xs_, os_;
  int fh_ = 1, fw_ = 1, sh_ = 1, sw_ = 1, pt_ = 0, pl_ = 0;
  bool max_ = false;
  float lo_ = 0, hi_ = 0;
};

// Mean over the axes in "axes". Contiguous axes reduce as [outer, reduced, inner] (the usual
// global average pool); others take the general path.
class MeanOp final : public Op {
 public:
  explicit MeanOp(const OpContext& ctx) : in_(ctx.input(0)), out_(ctx.output(0)) {
    shape_ = ctx.shape(in_);
    const int rank = int(shape_.size());
    reduce_.assign(rank, false);
    for (int64_t a : ctx.node.ints("axes")) {
      if (a < 0) a += rank;
      if (a < 0 || a >= rank) fail(ctx.node.where(), ": axis out of range");
      reduce_[a] = true;
    }
    int first = rank, last = -1;
    for (int d = 0; d < rank; ++d)
      if (reduce_[d]) first = std::min(first, d), last = d;
    contiguous_ = last >= 0;
    for (int d = first; d <= last; ++d) contiguous_ = contiguous_ && reduce_[d];
    if (last < 0) first = last = 0;
    outer_ = ops::product(shape_, 0, first);
    reduced_ = last >= first ? ops::product(shape_, first, last + 1) : 1;
    inner_ = ops::product(shape_, last + 1);
    count_ = 1;
    for (int d = 0; d < rank; ++d)
      if (reduce_[d]) count_ *= shape_[d];
    if (ctx.elements(out_) * count_ != ctx.elements(in_)) fail(ctx.node.where(), ": output shape does not match the axes");
    threads_ = ctx.threads;
  }

  void run(float* const* b) override {
    const float* x = b[in_];
    float* y = b[out_];
    if (contiguous_) {
      // Tasks: each output row in chunks of kChunk slots (channels, for a spatial mean), each
      // accumulated in double over the reduced rows; two threads only where there is work for them.
      constexpr int64_t kChunk = 64;
      const int64_t chunks = (inner_ + kChunk - 1) / kChunk;
      const int threads = outer_ * reduced_ * inner_ >= (1 << 15) ? threads_ : 1;
      ThreadPool::global().parallel_for(threads, outer_ * chunks, [&](int64_t task, int) {
        const int64_t o = task / chunks, i0 = (task % chunks) * kChunk, n = std::min(kChunk, inner_ - i0);
        double acc[kChunk] = {};
        for (int64_t r = 0; r < reduced_; ++r) {
          const float* p = x + (o * reduced_ + r) * inner_ + i0;
          for (int64_t i = 0; i < n; ++i) acc[i] += p[i];
        }
        for (int64_t i = 0; i < n; ++i) y[o * inner_ + i0 + i] = float(acc[i] / count_);
      });
      return;
    }
    // General: accumulate each input element into its output slot.
    const int rank = int(shape_.size());
    std::vector<int64_t> out_stride(rank, 0);
    int64_t s = 1;
    for (int d = rank - 1; d >= 0; --d)
      if (!reduce_[d]) out_stride[d] = s, s *= shape_[d];
    std::vector<double> acc(size_t(s), 0.0);
    std::vector<int> idx(rank, 0);
    const int64_t n = ops::product(shape_);
    for (int64_t i = 0; i < n; ++i) {
      int64_t o = 0;
      for (int d = 0; d < rank; ++d) o += idx[d] * out_stride[d];
      acc[o] += x[i];
      for (int d = rank - 1; d >= 0 && ++idx[d] == shape_[d]; --d) idx[d] = 0;
    }
    for (int64_t o = 0; o < s; ++o) y[o] = float(acc[o] / count_);
  }

 private:
  int in_, out_;
  std::vector<int> shape_;
  std::vector<bool> reduce_;
  bool contiguous_ = true;
  int64_t outer_ = 1, reduced_ = 1, inner_ = 1, count_ = 1;
  int threads_ = 1;
};

// TFLite's resize semantics (align_corners, half_pixel_centers), bilinear or nearest.
class ResizeOp final : public Op {
 public:
  explicit ResizeOp(const OpContext& ctx) : in_(ctx.input(0)), out_(ctx.output(0)) {
    ops::expect_nhwc_pair(ctx, in_, out_);
    xs_ = ctx.shape(in_), os_ = ctx.shape(out_);
    align_ = ctx.node.int_attr("align_corners", 0) != 0;
    half_ = ctx.node.int_attr("half_pixel_centers", 0) != 0;
    nearest_ = ctx.node.op == "RESIZE_NEAREST_NEIGHBOR";
    threads_ = ctx.threads;
  }

  void run(float* const* b) override {
    const int c = xs_[3];
    const float sy = ops::resize_scale(xs_[1], os_[1], align_), sx = ops::resize_scale(xs_[2], os_[2], align_);
    const int threads = ops::product(os_) >= (1 << 16) ? threads_ : 1;
    ThreadPool::global().parallel_for(threads, int64_t(os_[0]) * os_[1], [&](int64_t row, int) {
      const int n = int(row / os_[1]), oy = int(row % os_[1]);
        for (int ox = 0; ox < os_[2]; ++ox) {
          float* o = b[out_] + ((int64_t(n) * os_[1] + oy) * os_[2] + ox) * c;
          auto in_px = [&](int y, int x) { return b[in_] + ((int64_t(n) * xs_[1] + y) * xs_[2] + x) * c; };
          if (nearest_) {
            std::memcpy(o, in_px(ops::nearest_source(oy, sy, xs_[1], align_, half_), ops::nearest_source(ox, sx, xs_[2], align_, half_)),
                        c * sizeof(float));
            continue;
          }
          auto interp = [&](int o_, float s, int size, int* lo, int* hi, float* t) {
            const float v = half_ ? (o_ + 0.5f) * s - 0.5f : o_ * s;
            *lo = std::max(int(std::floor(v)), 0);
            *hi = std::min(int(std::ceil(v)), size - 1);
            *t = v - float(std::floor(v));
            if (v < 0) *t = v - float(*lo);  // TFLite: weight relative to the clamped low index
          };
          int y0, y1, x0, x1;
          float ty, tx;
          interp(oy, sy, xs_[1], &y0, &y1, &ty);
          interp(ox, sx, xs_[2], &x0, &x1, &tx);
          const float *a = in_px(y0, x0), *bb = in_px(y0, x1), *cc = in_px(y1, x0), *d = in_px(y1, x1);
          for (int i = 0; i < c; ++i)
            o[i] = a[i] * (1 - ty) * (1 - tx) + bb[i] * (1 - ty) * tx + cc[i] * ty * (1 - tx) + d[i] * ty * tx;
        }
    });
  }

 private:
  int in_, out_, threads_ = 1;
  std::vector<int> xs_, os_;
  bool align_ = false, half_ = false, nearest_ = false;
};

class SpaceDepthOp final : public Op {
 public:
  explicit SpaceDepthOp(const OpContext& ctx) : in_(ctx.input(0)), out_(ctx.output(0)) {
    ops::expect_rank(ctx, in_, 4);
    ops::expect_rank(ctx, out_, 4);
    xs_ = ctx.shape(in_), os_ = ctx.shape(out_);
    block_ = int(ctx.node.int_attr("block_size"));
    to_space_ = ctx.node.op == "DEPTH_TO_SPACE";
    const auto& small = to_space_ ? xs_ : os_;  // the low-resolution, deep side
    const auto& big = to_space_ ? os_ : xs_;
    if (block_ <= 0 || big[1] != small[1] * block_ || big[2] != small[2] * block_ || small[3] != big[3] * block_ * block_)
      fail(ctx.node.where(), ": shapes do not match block_size ", block_);
  }
  // DEPTH_TO_SPACE: out[n, h*b + i, w*b + j, c] = in[n, h, w, (i*b + j)*C + c]; SPACE_TO_DEPTH the reverse.
  void run(float* const* b) override {
    const auto& small = to_space_ ? xs_ : os_;
    const int c = (to_space_ ? os_ : xs_)[3];
    for (int n = 0; n < small[0]; ++n)
      for (int h = 0; h < small[1]; ++h)
        for (int w = 0; w < small[2]; ++w)
          for (int i = 0; i < block_; ++i)
            for (int j = 0; j < block_; ++j) {
              const int64_t deep = ((int64_t(n) * small[1] + h) * small[2] + w) * small[3] + (i * block_ + j) * c;
              const int64_t wide = ((int64_t(n) * small[1] * block_ + h * block_ + i) * small[2] * block_ + w * block_ + j) * c;
              if (to_space_) std::memcpy(b[out_] + wide, b[in_] + deep, c * sizeof(float));
              else std::memcpy(b[out_] + deep, b[in_] + wide, c * sizeof(float));
            }
  }

 private:
  int in_, out_, block_ = 1;
  std::vector<int> xs_, os_;
  bool to_space_ = true;
};

// MAX_POOL_WITH_ARGMAX_2D: outputs the window maxima and, as floats, where in the window each
// was: ky * filter_w + kx (the first maximum; window positions in the padding are skipped).
class ArgmaxPoolOp final : public Op {
 public:
  explicit ArgmaxPoolOp(const OpContext& ctx) : in_(ctx.input(0)), out_(ctx.output(0)), index_(ctx.output(1)) {
    ops::expect_nhwc_pair(ctx, in_, out_);
    ops::expect_nhwc_pair(ctx, in_, index_);
    xs_ = ctx.shape(in_), os_ = ctx.shape(out_);
    if (ctx.shape(index_) != os_) fail(ctx.node.where(), ": the index output's shape differs from the values'");
    auto f = ops::ints_n(ctx, "filter", 2), st = ops::ints_n(ctx, "strides", 2), pads = ops::ints_n(ctx, "pads", 4);
    fh_ = int(f[0]), fw_ = int(f[1]), sh_ = int(st[0]), sw_ = int(st[1]), pt_ = int(pads[0]), pl_ = int(pads[2]);
    if (fh_ <= 0 || fw_ <= 0 || sh_ <= 0 || sw_ <= 0) fail(ctx.node.where(), ": filter and strides must be positive");
  }

  void run(float* const* b) override {
    const int c = xs_[3];
    for (int n = 0; n < os_[0]; ++n)
      for (int oy = 0; oy < os_[1]; ++oy)
        for (int ox = 0; ox < os_[2]; ++ox) {
          const int64_t o = ((int64_t(n) * os_[1] + oy) * os_[2] + ox) * c;
          float* value = b[out_] + o;
          float* where = b[index_] + o;
          bool first = true;
          for (int ky = 0; ky < fh_; ++ky)
            for (int kx = 0; kx < fw_; ++kx) {
              const int y = oy * sh_ - pt_ + ky, x = ox * sw_ - pl_ + kx;
              if (y < 0 || y >= xs_[1] || x < 0 || x >= xs_[2]) continue;
              const float* p = b[in_] + ((int64_t(n) * xs_[1] + y) * xs_[2] + x) * c;
              const float k = float(ky * fw_ + kx);
              for (int i = 0; i < c; ++i)
                if (first || p[i] > value[i]) value[i] = p[i], where[i] = k;
              first = false;
            }
        }
  }

 private:
  int in_, out_, index_;
  std::vector<int> xs_, os_;
  int fh_ = 1, fw_ = 1, sh_ = 1, sw_ = 1, pt_ = 0, pl_ = 0;
};

// MAX_UNPOOLING_2D: each value goes back to where in its window the index input says (the
// inverse of MAX_POOL_WITH_ARGMAX_2D with strides equal to the filter); the rest is zero.
class MaxUnpoolOp final : public Op {
 public:
  explicit MaxUnpoolOp(const OpContext& ctx) : in_(ctx.input(0)), index_(ctx.input(1)), out_(ctx.output(0)) {
    ops::expect_nhwc_pair(ctx, in_, out_);
    xs_ = ctx.shape(in_), os_ = ctx.shape(out_);
    if (ctx.shape(index_) != xs_) fail(ctx.node.where(), ": the index input's shape differs from the values'");
    auto f = ops::ints_n(ctx, "filter", 2);
    fh_ = int(f[0]), fw_ = int(f[1]);
    if (fh_ <= 0 || fw_ <= 0 || os_[1] < xs_[1] * fh_ || os_[2] < xs_[2] * fw_ || os_[3] != xs_[3])
      fail(ctx.node.where(), ": the output does not hold every window of the filter");
  }

  void run(float* const* b) override {
    const int c = xs_[3];
    float* y = b[out_];
    std::fill(y, y + int64_t(os_[0]) * os_[1] * os_[2] * c, 0.f);
    for (int n = 0; n < xs_[0]; ++n)
      for (int iy = 0; iy < xs_[1]; ++iy)
        for (int ix = 0; ix < xs_[2]; ++ix) {
          const int64_t i = ((int64_t(n) * xs_[1] + iy) * xs_[2] + ix) * c;
          for (int ch = 0; ch < c; ++ch) {
            const int k = std::min(std::max(int(b[index_][i + ch]), 0), fh_ * fw_ - 1);
            const int oy = iy * fh_ + k / fw_, ox = ix * fw_ + k % fw_;
            y[((int64_t(n) * os_[1] + oy) * os_[2] + ox) * c + ch] = b[in_][i + ch];
          }
        }
  }

 private:
  int in_, index_, out_;
  std::vector<int> xs_, os_;
  int fh_ = 1, fw_ = 1;
};

}  // namespace

std::unique_ptr<Op> make_argmax_pool_op(const OpContext& ctx) { return std::make_unique<ArgmaxPoolOp>(ctx); }
std::unique_ptr<Op> make_max_unpool_op(const OpContext& ctx) { return std::make_unique<MaxUnpoolOp>(ctx); }
std::unique_ptr<Op> make_pool_op(const OpContext& ctx) { return std::make_unique<PoolOp>(ctx); }
std::unique_ptr<Op> make_mean_op(const OpContext& ctx) { return std::make_unique<MeanOp>(ctx); }
std::unique_ptr<Op> make_resize_op(const OpContext& ctx) { return std::make_unique<ResizeOp>(ctx); }
std::unique_ptr<Op> make_space_depth_op(const OpContext& ctx) { return std::make_unique<SpaceDepthOp>(ctx); }

}  // namespace layertune
