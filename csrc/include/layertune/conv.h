// The convolution kernel interface: prepare once (pack / transform the weights, choose block
// sizes), run many times.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "layertune/conv_params.h"
#include "layertune/methods.h"
#include "layertune/status.h"

namespace layertune {

// One step of a fused group's elementwise tail (graph/fusion.py writes the steps into the
// convolution's node as its `epilogue`): applied after bias and activation, by every kernel, to
// each block of the output it finishes while that block is still in cache.
struct PostOp {
  enum class Kind { kSwish, kHardSwish, kAdd };  // x*sigmoid(x); x*relu6(x+3)/6; x + residual
  Kind kind = Kind::kSwish;
  float lo = 0, hi = 0;  // kAdd: the clamp of the ADD's own fused activation
};
using PostOps = std::vector<PostOp>;
// "swish", "hard_swish", "add:<activation>", comma-separated in order ("" is none);
// InvalidArgument naming the step it cannot read.
PostOps parse_post_ops(const std::string& text);
bool post_ops_need_residual(const PostOps& ops);
// Applies the steps to n contiguous floats y (residual: the same n floats of the residual tensor,
// or null when no step adds one).
void apply_post_ops(const PostOps& ops, float* y, const float* residual, int64_t n);

class ConvKernel {
 public:
  ConvKernel(const ConvShape& shape, const MethodParams& params) : shape_(shape), params_(params) {}
  virtual ~ConvKernel() = default;
  ConvKernel(const ConvKernel&) = delete;
  ConvKernel& operator=(const ConvKernel&) = delete;

  // output (N, OH, OW, OC) = conv(input (N, H, W, C)). Uses the kernel's own scratch, so one
  // kernel object must not run on two threads at once.
  virtual void run(const float* input, float* output) = 0;
  // The same with the residual tensor (the output's shape) that an `add` step of the epilogue
  // adds; InvalidArgument when the epilogue and the residual do not go together.
  void run(const float* input, float* output, const float* residual) {
    if (post_ops_need_residual(post_) != (residual != nullptr))
      throw InvalidArgument(residual ? "a residual was given to a convolution whose epilogue adds none"
                                     : "the convolution's epilogue adds a residual, and none was given");
    residual_ = residual;
    run(input, output);
    residual_ = nullptr;
  }
  // y = conv(x * scale), one scale per input channel (a squeeze-excite gate that a project
  // convolution takes, graph/fusion.py's `input_scale`). A kernel that can rescale its packed
  // weights per run keeps an unscaled copy when asked (keep_unscaled_weights returns true) and then
  // takes each run's scale with scale_input_channels before run; the others leave the scale to
  // the op, which multiplies the input.
  virtual bool keep_unscaled_weights() { return false; }
  virtual void scale_input_channels(const float* scale) { (void)scale; }

  // The fused tail every run applies (set once, before running).
  void set_post_ops(PostOps ops) { post_ = std::move(ops); }
  const PostOps& post_ops() const { return post_; }

  const ConvShape& shape() const { return shape_; }
  const MethodParams& params() const { return params_; }

 protected:
  // Called by each kernel for every block of the output it has finished: output pixels
  // [pixel0, pixel0 + pixels) (rows of out_c floats), channels [c0, c1).
  void finish(float* output, int64_t pixel0, int64_t pixels, int c0, int c1) const {
    if (!post_.empty()) finish_block(output, pixel0, pixels, c0, c1);
  }

  const float* residual() const { return residual_; }  // during run: the residual of an `add` step

  ConvShape shape_;
  MethodParams params_;

 private:
  void finish_block(float* output, int64_t pixel0, int64_t pixels, int c0, int c1) const;
  PostOps post_;
  const float* residual_ = nullptr;
};

// Validates shape and parameters, then prepares the kernel with the method table's factory. Weights are HWIO
// (kh, kw, in_c / groups, out_c); bias (out_c) may be null.
std::unique_ptr<ConvKernel> make_conv_kernel(const ConvShape& shape, const MethodParams& params,
                                             const float* weights, const float* bias);

// Measured fp32 peak of this CPU: a register-resident FMA loop on `threads` threads.
double measure_peak_gflops(int threads, double seconds);

}  // namespace layertune
