#include <map>

#include "layertune/status.h"
#include "op.h"

namespace layertune {

namespace {
using Factory = std::unique_ptr<Op> (*)(const OpContext&);
const std::map<std::string, Factory>& registry() {
  static const std::map<std::string, Factory> ops = {
      {"CONV_2D", make_conv_op},
      {"DEPTHWISE_CONV_2D", make_conv_op},
      {"TRANSPOSE_CONV", make_transpose_conv_op},
      {"FULLY_CONNECTED", make_fully_connected_op},
      {"ADD", make_binary_op},
      {"SUB", make_binary_op},
      {"MUL", make_binary_op},
      {"DIV", make_binary_op},
      {"MAXIMUM", make_binary_op},
      {"MINIMUM", make_binary_op},
      {"PRELU", make_binary_op},
      {"SQUARED_DIFFERENCE", make_binary_op},
      {"RELU", make_unary_op},
      {"RELU6", make_unary_op},
      {"RELU_N1_TO_1", make_unary_op},
      {"LEAKY_RELU", make_unary_op},
      {"LOGISTIC", make_unary_op},
      {"TANH", make_unary_op},
      {"HARD_SWISH", make_unary_op},
      {"RSQRT", make_unary_op},
      {"SQRT", make_unary_op},
      {"QUANTIZE", make_unary_op},
      {"DEQUANTIZE", make_unary_op},
      {"RESHAPE", make_unary_op},
      {"SQUEEZE", make_unary_op},
      {"EXPAND_DIMS", make_unary_op},
      {"SOFTMAX", make_softmax_op},
      {"AVERAGE_POOL_2D", make_pool_op},
      {"MAX_POOL_2D", make_pool_op},
      {"MEAN", make_mean_op},
      {"CONCATENATION", make_concat_op},
      {"PACK", make_concat_op},
      {"PAD", make_pad_op},
      {"PADV2", make_pad_op},
      {"MIRROR_PAD", make_pad_op},
      {"STRIDED_SLICE", make_strided_slice_op},
      {"SLICE", make_strided_slice_op},
      {"TRANSPOSE", make_transpose_op},
      {"DEPTH_TO_SPACE", make_space_depth_op},
      {"SPACE_TO_DEPTH", make_space_depth_op},
      {"RESIZE_BILINEAR", make_resize_op},
      {"RESIZE_NEAREST_NEIGHBOR", make_resize_op},
      {"MAX_POOL_WITH_ARGMAX_2D", make_argmax_pool_op},
      {"MAX_UNPOOLING_2D", make_max_unpool_op},
  };
  return ops;
}
}  // namespace

int OpContext::input(size_t i) const {
  if (!has_input(i)) fail(node.where(), ": missing input ", i);
  return node.inputs[i];
}
int OpContext::output(size_t i) const {
  if (i >= node.outputs.size()) fail(node.where(), ": missing output ", i);
  return node.outputs[i];
}
const float* OpContext::constant(int tensor) const {
  if (!plan.tensors[tensor].constant) fail(node.where(), ": input '", plan.tensors[tensor].name, "' must be a constant");
  return plan.constant(tensor);
}

std::unique_ptr<Op> make_op(const OpContext& ctx) {
  const auto& t = ctx.plan.tensors;
  bool quantized = false;
  for (const std::vector<int>* ids : {&ctx.node.inputs, &ctx.node.outputs})
    for (int id : *ids)
      if (id >= 0 && t[id].dtype != DType::kFloat32) quantized = true;
  if (quantized) return make_int8_op(ctx);
  auto it = registry().find(ctx.node.op);
  if (it == registry().end()) fail(ctx.node.where(), ": unsupported op");
  return it->second(ctx);
}

std::vector<std::string> supported_ops() {
  std::vector<std::string> out;
  for (const auto& kv : registry()) out.push_back(kv.first);
  return out;
}

}  // namespace layertune
