// The convolution kernel interface: prepare once (pack / transform the weights, choose block
// sizes), run many times.
#pragma once
#include <memory>

#include "layertune/conv_params.h"
#include "layertune/methods.h"

namespace layertune {

class ConvKernel {
 public:
  ConvKernel(const ConvShape& shape, const MethodParams& params) : shape_(shape), params_(params) {}
  virtual ~ConvKernel() = default;
  ConvKernel(const ConvKernel&) = delete;
  ConvKernel& operator=(const ConvKernel&) = delete;

  // output (N, OH, OW, OC) = conv(input (N, H, W, C)). Uses the kernel's own scratch, so one
  // kernel object must not run on two threads at once.
  virtual void run(const float* input, float* output) = 0;

  const ConvShape& shape() const { return shape_; }
  const MethodParams& params() const { return params_; }

 protected:
  ConvShape shape_;
  MethodParams params_;
};

// Validates shape and parameters, then prepares the kernel with the method table's factory. Weights are HWIO
// (kh, kw, in_c / groups, out_c); bias (out_c) may be null.
std::unique_ptr<ConvKernel> make_conv_kernel(const ConvShape& shape, const MethodParams& params,
                                             const float* weights, const float* bias);

// Measured fp32 peak of this CPU: a register-resident FMA loop on `threads` threads.
double measure_peak_gflops(int threads, double seconds);

}  // namespace layertune
