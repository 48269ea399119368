// What a convolution layer is (ConvShape) and how to compute it (MethodParams; what each method
// and parameter is lives in the method table, methods.h).
#pragma once
#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace layertune {

enum class Activation { kNone, kRelu, kRelu6, kReluN1To1 };

Activation parse_activation(const std::string& name);  // "none", "relu", "relu6", "relu_n1_to_1"
const char* activation_name(Activation a);
// The fused activation as a clamp [lo, hi] applied after the bias.
std::pair<float, float> activation_range(Activation a);

// A 2-D convolution in NHWC with TensorFlow's conventions. Depthwise layers are grouped
// convolutions with one input channel per group (groups == in_c); their output channel
// c * multiplier + j belongs to input channel c, as in tf.nn.depthwise_conv2d.
struct ConvShape {
  int batch = 1, in_h = 0, in_w = 0, in_c = 0;
  int out_c = 0;
  int kernel_h = 0, kernel_w = 0;
  int stride_h = 1, stride_w = 1;
  int dilation_h = 1, dilation_w = 1;
  int pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;
  int groups = 1;
  Activation activation = Activation::kNone;

  int out_h() const;
  int out_w() const;
  int in_c_per_group() const { return in_c / groups; }
  int out_c_per_group() const { return out_c / groups; }
  int multiplier() const { return out_c / in_c; }  // depthwise only
  bool is_depthwise() const { return groups > 1 && groups == in_c; }
  int64_t input_size() const { return int64_t(batch) * in_h * in_w * in_c; }
  int64_t output_size() const { return int64_t(batch) * out_h() * out_w() * out_c; }
  int64_t weight_size() const { return int64_t(kernel_h) * kernel_w * in_c_per_group() * out_c; }
  // Multiply-adds x 2 of the direct algorithm: the figure GFLOP/s are quoted against.
  int64_t flops() const;
  // Sets the four pads from "SAME" / "VALID" (TensorFlow's rule: SAME puts the odd pixel last).
  void set_padding(const std::string& mode);
  // Throws InvalidArgument naming the first field that is not a valid layer.
  void validate() const;
  std::string describe() const;  // "1x56x56x64 3x3/1 pad 1,1,1,1 -> 64 ..."

  // The 16 integers of a layer in the order every caller writes them (the profiler's job file,
  // its command line, the bindings, the engine): batch, in_h, in_w, in_c, out_c, kernel_h,
  // kernel_w, stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_bottom, pad_left,
  // pad_right, groups. Validated; a `padding` mode ("SAME" / "VALID") replaces the four pads.
  using Fields = std::array<int, 16>;
  static ConvShape from_fields(const Fields& fields, Activation activation, const std::string& padding = "");
};

// How to compute a layer: a method of the method table (methods.h) and its parameters.
struct MethodParams {
  std::string method = "unrolled";
  int threads = 1;                    // every method's parameter, kept apart for the hot path
  std::map<std::string, int> values;  // the method's parameters that were set explicitly

  // The value set for `name`, else the table's default (0 in a block parameter: chosen from
  // the shape).
  int get(const std::string& name) const;
  // Sets one named parameter; InvalidArgument for a name the method does not take or a value
  // out of the table's range.
  void set(const std::string& name, int value);
  std::string describe() const;  // "winograd(winograd_tile=4, ..., threads=1)"
};

}  // namespace layertune
