// The fused tails of convolutions (PostOps): parsed from a node's `epilogue` attribute, applied by
// each kernel to the output blocks it finishes (ConvKernel::finish), so that the elementwise ops a
// fusion absorbed read the output while it is in cache instead of from memory, one op later.
#include <algorithm>
#include <sstream>
#include <tuple>

#include "layertune/conv.h"
#include "layertune/simd.h"
#include "layertune/status.h"

namespace layertune {

PostOps parse_post_ops(const std::string& text) {
  PostOps ops;
  std::stringstream in(text);
  std::string step;
  while (std::getline(in, step, ',')) {
    if (step.empty()) continue;
    PostOp op;
    if (step == "swish") {
      op.kind = PostOp::Kind::kSwish;
    } else if (step == "hard_swish") {
      op.kind = PostOp::Kind::kHardSwish;
    } else if (step.rfind("add", 0) == 0 && (step.size() == 3 || step[3] == ':')) {
      op.kind = PostOp::Kind::kAdd;
      const std::string act = step.size() > 4 ? step.substr(4) : "none";
      try {
        std::tie(op.lo, op.hi) = activation_range(parse_activation(act));
      } catch (const InvalidArgument& e) {
        fail("epilogue step '", step, "': ", e.what());
      }
    } else {
      fail("epilogue: unknown step '", step, "' (expected swish, hard_swish or add:<activation>)");
    }
    ops.push_back(op);
  }
  return ops;
}

bool post_ops_need_residual(const PostOps& ops) {
  for (const PostOp& op : ops)
    if (op.kind == PostOp::Kind::kAdd) return true;
  return false;
}

namespace {
using simd::vf;

// The same arithmetic as the unfused ops (LOGISTIC then MUL, HARD_SWISH, ADD with its clamp).
template <PostOp::Kind K>
inline vf apply_step(const PostOp& op, vf y, const float* residual, int n) {
  if constexpr (K == PostOp::Kind::kSwish) return y * simd::sigmoid(y);
  if constexpr (K == PostOp::Kind::kHardSwish)
    return y * simd::clamp(y + 3.f, simd::splat(0.f), simd::splat(6.f)) * (1.f / 6.f);
  // kAdd: run(input, output, residual) checked that there is one
  return simd::clamp(y + simd::load_n(residual, n), simd::splat(op.lo), simd::splat(op.hi));
}

inline vf apply_any(const PostOp& op, vf y, const float* residual, int n) {
  switch (op.kind) {
    case PostOp::Kind::kSwish: return apply_step<PostOp::Kind::kSwish>(op, y, residual, n);
    case PostOp::Kind::kHardSwish: return apply_step<PostOp::Kind::kHardSwish>(op, y, residual, n);
    case PostOp::Kind::kAdd: return apply_step<PostOp::Kind::kAdd>(op, y, residual, n);
  }
  return y;
}

// One step over n floats, the step's kind known at compile time (the common case: a group of two).
template <PostOp::Kind K>
void apply_one(const PostOp& op, float* y, const float* residual, int64_t n) {
  using simd::kLanes;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    simd::store(y + i, apply_step<K>(op, simd::load(y + i), residual ? residual + i : nullptr, kLanes));
  if (i < n) {
    const int rest = int(n - i);
    simd::store_partial(y + i, apply_step<K>(op, simd::load_partial(y + i, rest), residual ? residual + i : nullptr, rest), rest);
  }
}
}  // namespace

void apply_post_ops(const PostOps& ops, float* y, const float* residual, int64_t n) {
  using simd::kLanes;
  if (ops.size() == 1) {
    switch (ops[0].kind) {
      case PostOp::Kind::kSwish: return apply_one<PostOp::Kind::kSwish>(ops[0], y, residual, n);
      case PostOp::Kind::kHardSwish: return apply_one<PostOp::Kind::kHardSwish>(ops[0], y, residual, n);
      case PostOp::Kind::kAdd: return apply_one<PostOp::Kind::kAdd>(ops[0], y, residual, n);
    }
  }
  for (int64_t i = 0; i < n; i += kLanes) {
    const int lanes = int(std::min<int64_t>(kLanes, n - i));
    vf v = simd::load_n(y + i, lanes);
    for (const PostOp& op : ops) v = apply_any(op, v, residual ? residual + i : nullptr, lanes);
    simd::store_n(y + i, v, lanes);
  }
}

void ConvKernel::finish_block(float* output, int64_t pixel0, int64_t pixels, int c0, int c1) const {
  const int64_t ld = shape_.out_c;
  const float* res = residual_ ? residual_ + pixel0 * ld + c0 : nullptr;
  if (c0 == 0 && c1 == ld) {  // whole pixels: one contiguous run
    apply_post_ops(post_, output + pixel0 * ld, res, pixels * ld);
    return;
  }
  for (int64_t p = 0; p < pixels; ++p)
    apply_post_ops(post_, output + (pixel0 + p) * ld + c0, res ? res + p * ld : nullptr, c1 - c0);
}

}  // namespace layertune
