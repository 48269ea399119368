#include "layertune/conv_params.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <tuple>

#include "layertune/status.h"

namespace layertune {

Activation parse_activation(const std::string& name) {
  if (name.empty() || name == "none" || name == "linear") return Activation::kNone;
  if (name == "relu") return Activation::kRelu;
  if (name == "relu6") return Activation::kRelu6;
  if (name == "relu_n1_to_1") return Activation::kReluN1To1;
  fail("activation: unknown activation '", name, "' (expected none, relu, relu6 or relu_n1_to_1)");
}

const char* activation_name(Activation a) {
  switch (a) {
    case Activation::kNone: return "none";
    case Activation::kRelu: return "relu";
    case Activation::kRelu6: return "relu6";
    case Activation::kReluN1To1: return "relu_n1_to_1";
  }
  return "none";
}

std::pair<float, float> activation_range(Activation a) {
  const float inf = std::numeric_limits<float>::infinity();
  switch (a) {
    case Activation::kRelu: return {0.f, inf};
    case Activation::kRelu6: return {0.f, 6.f};
    case Activation::kReluN1To1: return {-1.f, 1.f};
    case Activation::kNone: break;
  }
  return {-inf, inf};
}

// In 64 bits: a layer read from a corrupt file may hold any int in every field (validate()
// refuses what does not fit; this must not overflow before it gets there).
static int out_size(int in, int pad_before, int pad_after, int kernel, int stride, int dilation) {
  const int64_t effective = (int64_t(kernel) - 1) * dilation + 1;
  const int64_t span = int64_t(in) + pad_before + pad_after - effective;
  return span < 0 || stride <= 0 ? 0 : int(std::min<int64_t>(span / stride + 1, INT32_MAX));
}

int ConvShape::out_h() const { return out_size(in_h, pad_top, pad_bottom, kernel_h, stride_h, dilation_h); }
int ConvShape::out_w() const { return out_size(in_w, pad_left, pad_right, kernel_w, stride_w, dilation_w); }

int64_t ConvShape::flops() const {
  return 2 * int64_t(batch) * out_h() * out_w() * out_c * kernel_h * kernel_w * in_c_per_group();
}

static std::pair<int, int> same_padding(int in, int kernel, int stride, int dilation) {
  int effective = (kernel - 1) * dilation + 1;
  int out = (in + stride - 1) / stride;
  int total = std::max((out - 1) * stride + effective - in, 0);
  return {total / 2, total - total / 2};
}

void ConvShape::set_padding(const std::string& mode) {
  if (stride_h <= 0 || stride_w <= 0) fail("strides must be positive, got ", stride_h, "x", stride_w);
  if (dilation_h <= 0 || dilation_w <= 0) fail("dilations must be positive, got ", dilation_h, "x", dilation_w);
  if (kernel_h <= 0 || kernel_w <= 0) fail("kernel size must be positive, got ", kernel_h, "x", kernel_w);
  if (mode == "VALID" || mode == "valid") {
    pad_top = pad_bottom = pad_left = pad_right = 0;
  } else if (mode == "SAME" || mode == "same") {
    std::tie(pad_top, pad_bottom) = same_padding(in_h, kernel_h, stride_h, dilation_h);
    std::tie(pad_left, pad_right) = same_padding(in_w, kernel_w, stride_w, dilation_w);
  } else {
    fail("padding: expected 'SAME', 'VALID' or explicit pads, got '", mode, "'");
  }
}

void ConvShape::validate() const {
  auto positive = [](int v, const char* name) {
    if (v <= 0) fail(name, " must be positive, got ", v);
  };
  positive(batch, "batch");
  positive(in_h, "input height");
  positive(in_w, "input width");
  positive(in_c, "input channels");
  positive(out_c, "output channels");
  positive(kernel_h, "kernel height");
  positive(kernel_w, "kernel width");
  positive(stride_h, "strides");
  positive(stride_w, "strides");
  positive(dilation_h, "dilations");
  positive(dilation_w, "dilations");
  positive(groups, "groups");
  if (pad_top < 0 || pad_bottom < 0 || pad_left < 0 || pad_right < 0) fail("padding must not be negative");
  const int field_limit = 1 << 20;  // no real layer comes near it
  for (int v : {kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_bottom, pad_left, pad_right})
    if (v > field_limit) fail("kernel size, strides, dilations and pads must be at most ", field_limit, ", got ", v);
  if (in_c % groups != 0) fail("groups: input channels (", in_c, ") are not divisible by groups (", groups, ")");
  if (out_c % groups != 0) fail("groups: output channels (", out_c, ") are not divisible by groups (", groups, ")");
  if (out_h() <= 0 || out_w() <= 0)
    fail("the kernel (", kernel_h, "x", kernel_w, ", dilation ", dilation_h, "x", dilation_w,
         ") does not fit in the padded input (", in_h, "x", in_w, ")");
  const int64_t limit = int64_t(1) << 31;
  // (the products in double first: in 64-bit integers four 31-bit factors could overflow)
  const double in_elems = double(batch) * in_h * in_w * in_c, out_elems = double(batch) * out_h() * out_w() * out_c;
  const double w_elems = double(kernel_h) * kernel_w * in_c_per_group() * out_c;
  if (in_elems >= double(limit) || out_elems >= double(limit) || w_elems >= double(limit))
    fail("tensor too large: every tensor must have fewer than 2^31 elements");
}

std::string ConvShape::describe() const {
  return cat(batch, "x", in_h, "x", in_w, "x", in_c, " ", kernel_h, "x", kernel_w, "/", stride_h, "x",
             stride_w, " dil ", dilation_h, "x", dilation_w, " pad ", pad_top, ",", pad_bottom, ",", pad_left,
             ",", pad_right, " groups ", groups, " -> ", out_c, " ", activation_name(activation));
}

ConvShape ConvShape::from_fields(const Fields& f, Activation activation, const std::string& padding) {
  ConvShape s;
  int* fields[] = {&s.batch, &s.in_h, &s.in_w, &s.in_c, &s.out_c, &s.kernel_h, &s.kernel_w, &s.stride_h,
                   &s.stride_w, &s.dilation_h, &s.dilation_w, &s.pad_top, &s.pad_bottom, &s.pad_left,
                   &s.pad_right, &s.groups};
  for (size_t i = 0; i < f.size(); ++i) *fields[i] = f[i];
  s.activation = activation;
  if (!padding.empty()) s.set_padding(padding);
  s.validate();
  return s;
}

}  // namespace layertune
