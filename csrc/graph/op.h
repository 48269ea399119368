// One executable node of a plan. Ops are built once (weights packed, shapes checked) and then
// run on the engine's tensor buffers.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "layertune/plan_format.h"

namespace layertune {

class Op {
 public:
  virtual ~Op() = default;
  // buffers[t] is tensor t's data (constants included).
  virtual void run(float* const* buffers) = 0;
};

struct OpContext {
  const Plan& plan;
  const PlanNode& node;
  int threads;
  bool reference_kernels;  // every convolution by the reference kernel (for checking a plan)

  const std::vector<int>& shape(int tensor) const { return plan.tensors[tensor].shape; }
  const PlanTensor& tensor(int t) const { return plan.tensors[t]; }
  int64_t elements(int tensor) const { return plan.tensors[tensor].elements(); }
  int input(size_t i) const;   // i-th input tensor id; throws if absent
  int output(size_t i) const;  // i-th output tensor id
  bool has_input(size_t i) const { return i < node.inputs.size() && node.inputs[i] >= 0; }
  const float* constant(int tensor) const;  // throws unless the tensor is a constant
};

// An op whose input 0 or output 0 is int8 is built by the int8 registry (kernels/int8/).
std::unique_ptr<Op> make_op(const OpContext& ctx);  // throws InvalidArgument for an unknown op
std::vector<std::string> supported_ops();
std::vector<std::string> supported_int8_ops();  // the ops with int8 kernels
std::unique_ptr<Op> make_int8_op(const OpContext& ctx);  // kernels/int8/int8_ops.cc

// The op factories, by family (kernels/ops/*.cc).
std::unique_ptr<Op> make_conv_op(const OpContext&);            // CONV_2D, DEPTHWISE_CONV_2D
std::unique_ptr<Op> make_transpose_conv_op(const OpContext&);  // TRANSPOSE_CONV
std::unique_ptr<Op> make_fully_connected_op(const OpContext&); // FULLY_CONNECTED
std::unique_ptr<Op> make_binary_op(const OpContext&);          // ADD SUB MUL DIV MAXIMUM MINIMUM PRELU SQUARED_DIFFERENCE
std::unique_ptr<Op> make_unary_op(const OpContext&);           // activations, copies
std::unique_ptr<Op> make_softmax_op(const OpContext&);
std::unique_ptr<Op> make_pool_op(const OpContext&);            // AVERAGE_POOL_2D, MAX_POOL_2D
std::unique_ptr<Op> make_mean_op(const OpContext&);
std::unique_ptr<Op> make_concat_op(const OpContext&);          // CONCATENATION, PACK
std::unique_ptr<Op> make_pad_op(const OpContext&);             // PAD, PADV2, MIRROR_PAD
std::unique_ptr<Op> make_strided_slice_op(const OpContext&);   // STRIDED_SLICE, SLICE
std::unique_ptr<Op> make_transpose_op(const OpContext&);
std::unique_ptr<Op> make_space_depth_op(const OpContext&);     // DEPTH_TO_SPACE, SPACE_TO_DEPTH
std::unique_ptr<Op> make_resize_op(const OpContext&);          // RESIZE_BILINEAR, RESIZE_NEAREST_NEIGHBOR
std::unique_ptr<Op> make_argmax_pool_op(const OpContext&);     // MAX_POOL_WITH_ARGMAX_2D
std::unique_ptr<Op> make_max_unpool_op(const OpContext&);      // MAX_UNPOOLING_2D

// An inverted-residual strip group (kernels/ops/strip_group.cc): a node with `strip_rows` and the
// two nodes after it (depthwise, project) computed by one op in row strips; the two others' ops
// are no-ops. The reference engine runs the three nodes on their own.
bool starts_strip_group(const PlanNode& node);
constexpr size_t kStripGroupNodes = 3;
std::unique_ptr<Op> make_strip_group_op(const Plan& plan, size_t first, int threads);
// A squeeze-excite group (kernels/ops/squeeze_excite.cc): a MEAN with `se_nodes` (5 or 6) and the
// nodes after it up to the MUL, computed by one op; 0 for any other node.
size_t squeeze_excite_nodes(const PlanNode& node);
std::unique_ptr<Op> make_squeeze_excite_op(const Plan& plan, size_t first, int threads);
std::unique_ptr<Op> make_no_op();

// How many nodes, from this one, one fused op computes (1: the node alone).
inline size_t fused_group_nodes(const PlanNode& node) {
  if (starts_strip_group(node)) return kStripGroupNodes;
  if (const size_t n = squeeze_excite_nodes(node)) return n;
  return 1;
}
constexpr size_t kMaxGroupNodes = 6;

}  // namespace layertune
