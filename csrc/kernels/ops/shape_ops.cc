// Data movement: CONCATENATION / PACK, PAD / PADV2 / MIRROR_PAD, STRIDED_SLICE / SLICE
// (normalized to begin / stride / size per input dimension at import), TRANSPOSE.
#include <cstring>

#include "common.h"
#include "layertune/thread_pool.h"

namespace layertune {
namespace {

// Concatenation along "axis" of the output. PACK is the same copy: its inputs lack the axis.
class ConcatOp final : public Op {
 public:
  explicit ConcatOp(const OpContext& ctx) : out_(ctx.output(0)) {
    const auto& os = ctx.shape(out_);
    int axis = int(ctx.node.int_attr("axis"));
    if (axis < 0) axis += int(os.size());
    if (axis < 0 || axis >= int(os.size())) fail(ctx.node.where(), ": axis out of range");
    outer_ = ops::product(os, 0, axis);
    int64_t total = 0;
    for (size_t i = 0; i < ctx.node.inputs.size(); ++i) {
      const int t = ctx.input(i);
      inputs_.push_back(t);
      chunks_.push_back(ctx.elements(t) / std::max<int64_t>(outer_, 1));
      total += chunks_.back();
    }
    if (total * outer_ != ctx.elements(out_)) fail(ctx.node.where(), ": input sizes do not add up to the output");
    std::tie(lo_, hi_) = ops::fused_activation(ctx);
    row_ = total;
    threads_ = ctx.threads;
  }
  void run(float* const* b) override {
    // Tasks of whole output rows, about kTask floats each (a channel concat has one short row a pixel).
    constexpr int64_t kTask = 1 << 14;
    const int64_t rows_per_task = std::max<int64_t>(1, kTask / std::max<int64_t>(row_, 1));
    const int threads = outer_ * row_ >= 4 * kTask ? threads_ : 1;
    ThreadPool::global().parallel_for(threads, (outer_ + rows_per_task - 1) / rows_per_task, [&](int64_t t, int) {
      const int64_t r0 = t * rows_per_task, r1 = std::min(outer_, r0 + rows_per_task);
      float* o = b[out_] + r0 * row_;
      for (int64_t r = r0; r < r1; ++r)
        for (size_t i = 0; i < inputs_.size(); ++i) {
          std::memcpy(o, b[inputs_[i]] + r * chunks_[i], chunks_[i] * sizeof(float));
          o += chunks_[i];
        }
      ops::clamp_range(b[out_] + r0 * row_, (r1 - r0) * row_, lo_, hi_);
    });
  }

 private:
  int out_, threads_ = 1;
  int64_t row_ = 0;  // floats per output row (the sum of the inputs' chunks)
  std::vector<int> inputs_;
  std::vector<int64_t> chunks_;
  int64_t outer_ = 1;
  float lo_ = 0, hi_ = 0;
};

class PadOp final : public Op {
 public:
  explicit PadOp(const OpContext& ctx) : in_(ctx.input(0)), out_(ctx.output(0)) {
    xs_ = ctx.shape(in_), os_ = ctx.shape(out_);
    const size_t rank = xs_.size();
    if (os_.size() != rank) fail(ctx.node.where(), ": output rank differs from the input's");
    auto pads = ops::ints_n(ctx, "pads", 2 * rank);
    for (size_t d = 0; d < rank; ++d) {
      before_.push_back(int(pads[2 * d]));
      if (pads[2 * d] < 0 || pads[2 * d + 1] < 0 || xs_[d] + pads[2 * d] + pads[2 * d + 1] != os_[d])
        fail(ctx.node.where(), ": pads do not match the output shape");
    }
    const std::string mode = ctx.node.str("mode", "constant");
    mode_ = mode == "reflect" ? 1 : mode == "symmetric" ? 2 : 0;
    if (mode_ == 0 && mode != "constant") fail(ctx.node.where(), ": unknown pad mode '", mode, "'");
    if (mode_ == 1)
      for (size_t d = 0; d < rank; ++d)
        if (before_[d] >= xs_[d] || os_[d] - xs_[d] - before_[d] >= xs_[d])
          fail(ctx.node.where(), ": REFLECT padding must be smaller than the dimension");
    value_ = ctx.node.float_attr("value", 0.f);
    in_strides_ = ops::strides_of(xs_);
    out_strides_ = ops::strides_of(os_);
    threads_ = ctx.threads;
  }

  void run(float* const* b) override {
    const float* x = b[in_];
    float* y = b[out_];
    if (os_.size() < 3 || threads_ <= 1 || ops::product(os_) < (1 << 16)) {
      copy(0, x, y, true);
      return;
    }
    // In parallel: one task per index pair of the first two dimensions (an NHWC image's rows).
    ThreadPool::global().parallel_for(threads_, int64_t(os_[0]) * os_[1], [&](int64_t t, int) {
      const int o0 = int(t / os_[1]), o1 = int(t % os_[1]);
      const int i0 = source(0, o0), i1 = source(1, o1);
      float* yo = y + o0 * out_strides_[0] + o1 * out_strides_[1];
      if (i0 < 0 || i1 < 0) std::fill(yo, yo + out_strides_[1], value_);
      else copy(2, x + i0 * in_strides_[0] + i1 * in_strides_[1], yo, true);
    });
  }

 private:
  // Source index along d for output index o, or -1 for the constant.
  int source(size_t d, int o) const {
    int i = o - before_[d];
    const int n = xs_[d];
    if (i >= 0 && i < n) return i;
    if (mode_ == 0) return -1;
    if (i < 0) return mode_ == 1 ? -i : -i - 1;
    return mode_ == 1 ? 2 * n - 2 - i : 2 * n - 1 - i;
  }
  void copy(size_t d, const float* x, float* y, bool inside) const {
    const int n = os_[d];
    if (mode_ == 0 && d + 1 == os_.size()) {  // constant padding: one row = fill, copy, fill
      const int before = before_[d], len = xs_[d];
      std::fill(y, y + before, value_);
      std::memcpy(y + before, x, len * sizeof(float));
      std::fill(y + before + len, y + n, value_);
      return;
    }
    for (int o = 0; o < n; ++o) {
      const int i = source(d, o);
      float* yo = y + o * out_strides_[d];
      if (i < 0 || !inside) {  // constant region: fill the whole sub-block
        std::fill(yo, yo + out_strides_[d], value_);
        continue;
      }
      if (d + 1 == os_.size()) *yo = x[i];
      else copy(d + 1, x + i * in_strides_[d], yo, true);
    }
  }

  int in_, out_, threads_ = 1;
  std::vector<int> xs_, os_, before_;
  std::vector<int64_t> in_strides_, out_strides_;
  int mode_ = 0;
  float value_ = 0.f;
};

// Output = input[begin[d] + k * stride[d]] for k < size[d] in every input dimension (the
// output's rank may differ: shrunk or new axes change no data order).
class StridedSliceOp final : public Op {
 public:
  explicit StridedSliceOp(const OpContext& ctx) : in_(ctx.input(0)), out_(ctx.output(0)) {
    xs_ = ctx.shape(in_);
    const size_t rank = xs_.size();
    auto begin = ops::ints_n(ctx, "begin", rank), stride = ops::ints_n(ctx, "stride", rank), size = ops::ints_n(ctx, "size", rank);
    int64_t count = 1;
    for (size_t d = 0; d < rank; ++d) {
      if (size[d] < 0 || (size[d] > 0 && (begin[d] < 0 || begin[d] >= xs_[d] || begin[d] + (size[d] - 1) * stride[d] < 0 ||
                                          begin[d] + (size[d] - 1) * stride[d] >= xs_[d])))
        fail(ctx.node.where(), ": slice out of range in dimension ", d);
      count *= size[d];
    }
    if (count != ctx.elements(out_)) fail(ctx.node.where(), ": slice size does not match the output");
    begin_.assign(begin.begin(), begin.end());
    stride_.assign(stride.begin(), stride.end());
    size_.assign(size.begin(), size.end());
    in_strides_ = ops::strides_of(xs_);
  }
  void run(float* const* b) override {
    float* y = b[out_];
    if (!xs_.empty()) copy(0, b[in_], &y);
    else *y = *b[in_];
  }

 private:
  void copy(size_t d, const float* x, float** y) const {
    const float* p = x + begin_[d] * in_strides_[d];
    if (d + 1 == xs_.size()) {
      for (int64_t k = 0; k < size_[d]; ++k) *(*y)++ = p[k * stride_[d]];
      return;
    }
    for (int64_t k = 0; k < size_[d]; ++k) copy(d + 1, p + k * stride_[d] * in_strides_[d], y);
  }
  int in_, out_;
  std::vector<int> xs_;
  std::vector<int64_t> begin_, stride_, size_, in_strides_;
};

class TransposeOp final : public Op {
 public:
  explicit TransposeOp(const OpContext& ctx) : in_(ctx.input(0)), out_(ctx.output(0)) {
    const auto& xs = ctx.shape(in_);
    os_ = ctx.shape(out_);
    auto perm = ops::ints_n(ctx, "perm", xs.size());
    auto in_strides = ops::strides_of(xs);
    std::vector<bool> seen(xs.size(), false);
    for (size_t d = 0; d < perm.size(); ++d) {
      if (perm[d] < 0 || perm[d] >= int64_t(xs.size()) || seen[perm[d]] || os_.size() != xs.size() || os_[d] != xs[perm[d]])
        fail(ctx.node.where(), ": perm does not match the shapes");
      seen[perm[d]] = true;
      strides_.push_back(in_strides[perm[d]]);
    }
  }
  void run(float* const* b) override {
    float* y = b[out_];
    if (os_.empty()) *y = *b[in_];
    else copy(0, b[in_], &y);
  }

 private:
  void copy(size_t d, const float* x, float** y) const {
    if (d + 1 == os_.size()) {
      for (int k = 0; k < os_[d]; ++k) *(*y)++ = x[k * strides_[d]];
      return;
    }
    for (int k = 0; k < os_[d]; ++k) copy(d + 1, x + k * strides_[d], y);
  }
  int in_, out_;
  std::vector<int> os_;
  std::vector<int64_t> strides_;
};

}  // namespace

std::unique_ptr<Op> make_concat_op(const OpContext& ctx) { return std::make_unique<ConcatOp>(ctx); }
std::unique_ptr<Op> make_pad_op(const OpContext& ctx) { return std::make_unique<PadOp>(ctx); }
std::unique_ptr<Op> make_strided_slice_op(const OpContext& ctx) { return std::make_unique<StridedSliceOp>(ctx); }
std::unique_ptr<Op> make_transpose_op(const OpContext& ctx) { return std::make_unique<TransposeOp>(ctx); }

}  // namespace layertune
