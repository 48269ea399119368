// CONV_2D / DEPTHWISE_CONV_2D (through the tuned kernels), FULLY_CONNECTED, TRANSPOSE_CONV.
#include <cstring>
#include <limits>

#include "common.h"
#include "gemv.h"
#include "layertune/conv.h"
#include "layertune/simd.h"
#include "layertune/thread_pool.h"

namespace layertune {
namespace {

using ops::fused_activation;

constexpr int64_t kGemvMaxRows = 4;

// A layer that is a matrix product on its last dimension: computed by the GEMV when it has only
// a few rows, else by a prepared convolution kernel.
class GemvOrKernelOp : public Op {
 public:
  explicit GemvOrKernelOp(const OpContext& ctx) : in_(ctx.input(0)), out_(ctx.output(0)) {}
  void run(float* const* b) override {
    const float* residual = residual_ >= 0 ? b[residual_] : nullptr;
    const float* x = scale_ >= 0 ? scaled_input(b[in_], b[scale_]) : b[in_];
    if (kernel_) {
      kernel_->run(x, b[out_], residual);
    } else {
      gemv_.run(x, b[out_], rows_, threads_);
      if (!post_.empty()) apply_post_ops(post_, b[out_], residual, rows_ * gemv_.out);
    }
  }

 protected:
  // The fused tail of the node's `epilogue` attribute (graph/fusion.py), and its residual
  // tensor (the node's fourth input) when a step adds one.
  void read_epilogue(const OpContext& ctx) {
    try {
      post_ = parse_post_ops(ctx.node.str("epilogue", ""));
    } catch (const InvalidArgument& e) {
      fail(ctx.node.where(), ": ", e.what());
    }
    if (post_ops_need_residual(post_)) {
      residual_ = ctx.input(3);
      if (ctx.shape(residual_) != ctx.shape(out_))
        fail(ctx.node.where(), ": the residual '", ctx.plan.tensors[residual_].name, "' does not have the output's shape");
    } else if (ctx.has_input(3)) {
      fail(ctx.node.where(), ": a fourth input (a residual) without an epilogue that adds it");
    }
    if (kernel_) kernel_->set_post_ops(post_);
  }

  // The node's fifth input, one scale per image and input channel that its input is multiplied
  // by first (graph/fusion.py's input_scale: a squeeze-excite gate). Folded into the kernel's
  // packed weights per run where the kernel can and the weights are fewer than the input's
  // elements (both ways read and write that many floats a run); else the input is scaled into
  // a buffer of the op's own.
  void read_input_scale(const OpContext& ctx, const ConvShape& s) {
    if (!ctx.has_input(4)) return;
    scale_ = ctx.input(4);
    if (s.groups != 1) fail(ctx.node.where(), ": an input scale needs a convolution of one group");
    if (ctx.elements(scale_) != int64_t(s.batch) * s.in_c)
      fail(ctx.node.where(), ": the input scale '", ctx.plan.tensors[scale_].name, "' must have one value per image and input channel (",
           s.batch * s.in_c, "), not ", ctx.elements(scale_));
    pixels_ = int64_t(s.in_h) * s.in_w, channels_ = s.in_c, batch_ = s.batch;
    const int64_t weights = int64_t(s.kernel_h) * s.kernel_w * s.in_c * s.out_c;
    fold_ = kernel_ && s.batch == 1 && weights <= pixels_ * channels_ && kernel_->keep_unscaled_weights();
    if (!fold_) scaled_.resize(size_t(s.batch * pixels_ * channels_));
  }

  const float* scaled_input(const float* x, const float* scale) {
    if (fold_) {
      kernel_->scale_input_channels(scale);
      return x;
    }
    constexpr float kInf = std::numeric_limits<float>::infinity();
    const int64_t chunk = std::max<int64_t>(1, 8192 / channels_);
    const int threads = kernel_ ? kernel_->params().threads : threads_;
    for (int n = 0; n < batch_; ++n) {
      const int64_t at = n * pixels_ * channels_;
      ThreadPool::global().parallel_for(threads, (pixels_ + chunk - 1) / chunk, [&](int64_t t, int) {
        ops::scale_channels(x + at, scale + n * channels_, scaled_.data() + at, t * chunk,
                            std::min(pixels_, (t + 1) * chunk), channels_, -kInf, kInf);
      });
    }
    return scaled_.data();
  }

  int in_, out_, threads_ = 1, residual_ = -1;
  int scale_ = -1, batch_ = 1;
  int64_t pixels_ = 0, channels_ = 0;
  bool fold_ = false;
  AlignedBuffer scaled_;
  PostOps post_;
  int64_t rows_ = 0;
  std::unique_ptr<ConvKernel> kernel_;  // null: computed by gemv_
  Gemv gemv_;
};

class ConvOp final : public GemvOrKernelOp {
 public:
  explicit ConvOp(const OpContext& ctx) : GemvOrKernelOp(ctx) {
    const int w = ctx.input(1);
    const float* bias = ctx.has_input(2) ? ctx.constant(ctx.input(2)) : nullptr;
    const ConvShape s = ops::conv_shape(ctx);
    try {
      const MethodParams choice = ops::kernel_choice(ctx, "unrolled", "reference");
      rows_ = int64_t(s.batch) * s.out_h() * s.out_w();
      if (choice.method != "reference" && rows_ <= kGemvMaxRows && s.kernel_h == 1 && s.kernel_w == 1 &&
          s.groups == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_top + s.pad_bottom + s.pad_left + s.pad_right == 0) {
        gemv_.in = s.in_c, gemv_.out = s.out_c;
        gemv_.set_weights(ctx.constant(w));  // HWIO (1, 1, in, out) is the (in, out) matrix
        gemv_.bias.assign(s.out_c, 0.f);
        if (bias) std::copy(bias, bias + s.out_c, gemv_.bias.begin());
        std::tie(gemv_.lo, gemv_.hi) = activation_range(s.activation);
        threads_ = choice.threads;
      } else {
        kernel_ = make_conv_kernel(s, choice, ctx.constant(w), bias);
      }
    } catch (const InvalidArgument& e) {
      fail(ctx.node.where(), ": ", e.what());
    }
    const auto& os = ctx.shape(out_);
    if (os != std::vector<int>{s.batch, s.out_h(), s.out_w(), s.out_c})
      fail(ctx.node.where(), ": output shape does not match the layer (", s.describe(), ")");
    read_epilogue(ctx);
    read_input_scale(ctx, s);
  }
};

// y = x W + b with W stored (in, out): a few rows by the GEMV, more rows by the unrolled GEMM
// kernel as a 1x1 convolution.
class FullyConnectedOp final : public GemvOrKernelOp {
 public:
  explicit FullyConnectedOp(const OpContext& ctx) : GemvOrKernelOp(ctx) {
    const int w = ctx.input(1);
    ops::expect_rank(ctx, w, 2);
    gemv_.in = ctx.shape(w)[0];
    gemv_.out = ctx.shape(w)[1];
    if (gemv_.in == 0 || ctx.elements(in_) % gemv_.in != 0)
      fail(ctx.node.where(), ": input size is not a multiple of the weights' ", gemv_.in, " input features");
    rows_ = ctx.elements(in_) / gemv_.in;
    if (ctx.elements(out_) != rows_ * gemv_.out) fail(ctx.node.where(), ": output shape does not match");
    std::tie(gemv_.lo, gemv_.hi) = fused_activation(ctx);
    gemv_.bias.assign(gemv_.out, 0.f);
    if (ctx.has_input(2)) std::memcpy(gemv_.bias.data(), ctx.constant(ctx.input(2)), gemv_.out * sizeof(float));
    threads_ = ctx.threads;
    if (rows_ <= kGemvMaxRows && !ctx.reference_kernels) {
      gemv_.set_weights(ctx.constant(w));
    } else {
      const ConvShape s = ConvShape::from_fields({int(rows_), 1, 1, int(gemv_.in), int(gemv_.out), 1, 1, 1, 1, 1, 1,
                                                  0, 0, 0, 0, 1}, parse_activation(ctx.node.str("activation", "none")));
      MethodParams p;
      p.method = ctx.reference_kernels ? "reference" : "unrolled";
      p.threads = ctx.threads;
      kernel_ = make_conv_kernel(s, p, ctx.constant(w), gemv_.bias.data());
    }
  }
};

// Transposed convolution: every input pixel scatters kh x kw x out_c contributions.
// Weights (kh, kw, in_c, out_c); pads as the matching forward convolution's (top, left).
class TransposeConvOp final : public Op {
 public:
  explicit TransposeConvOp(const OpContext& ctx) : in_(ctx.input(0)), out_(ctx.output(0)) {
    const int w = ctx.input(1);
    ops::expect_rank(ctx, in_, 4);
    ops::expect_rank(ctx, w, 4);
    ops::expect_rank(ctx, out_, 4);
    xs_ = ctx.shape(in_);
    os_ = ctx.shape(out_);
    ws_ = ctx.shape(w);
    if (ws_[2] != xs_[3] || ws_[3] != os_[3] || xs_[0] != os_[0]) fail(ctx.node.where(), ": weights do not match the tensors");
    auto st = ops::ints_n(ctx, "strides", 2), pads = ops::ints_n(ctx, "pads", 2);
    stride_h_ = int(st[0]), stride_w_ = int(st[1]), pad_top_ = int(pads[0]), pad_left_ = int(pads[1]);
    if (stride_h_ <= 0 || stride_w_ <= 0) fail(ctx.node.where(), ": strides must be positive");
    // copies: the engine releases the plan's constants once prepared
    const float* weights = ctx.constant(w);
    weights_.assign(weights, weights + ctx.elements(w));
    if (ctx.has_input(2)) bias_.assign(ctx.constant(ctx.input(2)), ctx.constant(ctx.input(2)) + ws_[3]);
    std::tie(lo_, hi_) = fused_activation(ctx);
  }

  void run(float* const* b) override {
    const float* x = b[in_];
    float* y = b[out_];
    const int oc = os_[3], ic = xs_[3];
    const int64_t out_pixels = int64_t(os_[0]) * os_[1] * os_[2];
    for (int64_t p = 0; p < out_pixels; ++p)
      for (int c = 0; c < oc; ++c) y[p * oc + c] = bias_.empty() ? 0.f : bias_[c];
    for (int n = 0; n < xs_[0]; ++n)
      for (int iy = 0; iy < xs_[1]; ++iy)
        for (int ix = 0; ix < xs_[2]; ++ix) {
          const float* xp = x + ((int64_t(n) * xs_[1] + iy) * xs_[2] + ix) * ic;
          for (int ky = 0; ky < ws_[0]; ++ky) {
            const int oy = iy * stride_h_ + ky - pad_top_;
            if (oy < 0 || oy >= os_[1]) continue;
            for (int kx = 0; kx < ws_[1]; ++kx) {
              const int ox = ix * stride_w_ + kx - pad_left_;
              if (ox < 0 || ox >= os_[2]) continue;
              float* yp = y + ((int64_t(n) * os_[1] + oy) * os_[2] + ox) * oc;
              const float* wp = weights_.data() + (int64_t(ky) * ws_[1] + kx) * ic * oc;
              for (int ci = 0; ci < ic; ++ci) {
                const float xv = xp[ci];
                const float* wr = wp + int64_t(ci) * oc;
                for (int c = 0; c < oc; ++c) yp[c] += xv * wr[c];
              }
            }
          }
        }
    ops::clamp_range(y, out_pixels * oc, lo_, hi_);
  }

 private:
  int in_, out_;
  std::vector<int> xs_, os_, ws_;
  int stride_h_ = 1, stride_w_ = 1, pad_top_ = 0, pad_left_ = 0;
  std::vector<float> weights_, bias_;
  float lo_ = 0, hi_ = 0;
};

}  // namespace

std::unique_ptr<Op> make_conv_op(const OpContext& ctx) { return std::make_unique<ConvOp>(ctx); }
std::unique_ptr<Op> make_fully_connected_op(const OpContext& ctx) { return std::make_unique<FullyConnectedOp>(ctx); }
std::unique_ptr<Op> make_transpose_conv_op(const OpContext& ctx) { return std::make_unique<TransposeConvOp>(ctx); }

}  // namespace layertune
