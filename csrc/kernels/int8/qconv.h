// Quantized convolutions: int8 activations and per-channel int8 weights, int32 accumulation,
// requantized in TFLite's fixed point or XNNPACK's fp32 arithmetic (requantize.h; the layer says which). A simple reference that
// follows TFLite's reference kernel line by line (the oracle), and the optimized kernels under it:
// a GEMM over int8 micro-kernel tiles (1x1 directly, others through an im2col of their rows) and
// a depthwise kernel vectorized over channels.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "add_arithmetic.h"
#include "layertune/conv_params.h"
#include "requantize.h"

namespace layertune::int8 {

// What, besides its shape, a quantized layer is.
struct QuantizedConv {
  ConvShape shape;
  int32_t input_zero_point = 0, output_zero_point = 0;
  int32_t out_min = -128, out_max = 127;        // the fused activation, in the output's integers
  Requantization requantization = Requantization::kTflite;
  std::vector<Multiplier> multipliers;           // per output channel: input scale x weight scale / output scale
  std::vector<float> scales;                     // the same in float32 (fp32_scale): kFp32's
  std::vector<int8_t> weights;                   // HWIO (depthwise: (kh, kw, 1, C x multiplier)), zero point 0
  std::vector<int32_t> bias;                     // per output channel (zeros when the layer has none)
};

class QConvKernel {
 public:
  explicit QConvKernel(const QuantizedConv& q) : q_(q) { q_.weights.clear(); }
  virtual ~QConvKernel() = default;
  // `residual` (the output's shape) is the tensor a fused residual ADD adds (set_residual_add);
  // null without one.
  virtual void run(const int8_t* input, int8_t* output, int threads, const int8_t* residual = nullptr) const = 0;
  virtual const char* name() const = 0;
  const QuantizedConv& conv() const { return q_; }
  // The layer's output then goes through this ADD with the residual (the output is input 1, the
  // residual input 2) before it is stored: graph/fusion.py's `add` form.
  virtual void set_residual_add(const AddArithmetic& add) { add_lanes_ = add.lanes(); }

 protected:
  // y[i] = ADD(y[i], residual[i]) for i < n: the fused ADD over outputs already stored (the
  // reference kernel, and kernels that store a row before adding to it).
  void add_residual(int8_t* y, const int8_t* residual, int64_t n) const { add_int8(y, residual, y, n, add_lanes_); }

  QuantizedConv q_;  // without the weights: each kernel keeps them in its own layout
  AddArithmetic::Lanes add_lanes_{};  // the fused residual ADD's
};

// The int8 methods are rows of the method table (methods.cc: int8_reference, the oracle;
// int8_gemm; int8_depthwise). The one a layer gets when it names none:
std::string default_method(const ConvShape& s);
// The kernel of `params` (an int8 method of the table) for the layer; InvalidArgument saying why
// not when it cannot compute it.
std::unique_ptr<QConvKernel> make_qconv(const QuantizedConv& q, const MethodParams& params);
// The activation bounds in a tensor's integers (TFLite's CalculateActivationRangeQuantized).
std::pair<int32_t, int32_t> activation_bounds(Activation a, float scale, int32_t zero_point);
// Real values -> int8 as TFLite's QUANTIZE (round half away from zero, saturate): the QUANTIZE op's
// arithmetic, and the engine's for real values given to an int8 input.
void quantize_reals(const float* x, int8_t* y, int64_t n, float scale, float zero_point);
// Which GEMM micro-kernel tiles this CPU runs (qgemm_tiles.h): "avx512vnni", "avx2", "neon_dot",
// "neon" or "portable"; LAYERTUNE_INT8_ISA may name a lesser one the CPU can run.
enum class QGemmIsa;
QGemmIsa qgemm_isa_in_use();
const char* qgemm_isa();

}  // namespace layertune::int8
