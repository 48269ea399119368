// Element-wise ops: binary with broadcasting (ADD, SUB, MUL, DIV, MAXIMUM, MINIMUM, PRELU,
// SQUARED_DIFFERENCE), unary activations, copies (RESHAPE, SQUEEZE, QUANTIZE, ...), SOFTMAX.
// Quantized models run in float: QUANTIZE / DEQUANTIZE are copies of the real values.
#include <cmath>
#include <cstring>

#include "broadcast.h"
#include "common.h"
#include "layertune/simd.h"
#include "layertune/thread_pool.h"

namespace layertune {
namespace {

enum class Binary { kAdd, kSub, kMul, kDiv, kMax, kMin, kPrelu, kSquaredDiff };

Binary parse_binary(const std::string& op) {
  if (op == "ADD") return Binary::kAdd;
  if (op == "SUB") return Binary::kSub;
  if (op == "MUL") return Binary::kMul;
  if (op == "DIV") return Binary::kDiv;
  if (op == "MAXIMUM") return Binary::kMax;
  if (op == "MINIMUM") return Binary::kMin;
  if (op == "PRELU") return Binary::kPrelu;
  return Binary::kSquaredDiff;
}

// o[i] = f(a[i * sa], b[i * sb]) for i < n, sa and sb 0 (broadcast) or 1.
template <Binary K>
void binary_run(const float* __restrict a, int64_t sa, const float* __restrict b, int64_t sb, float* __restrict o,
                int64_t n) {
  auto f = [](float x, float y) {
    if constexpr (K == Binary::kAdd) return x + y;
    if constexpr (K == Binary::kSub) return x - y;
    if constexpr (K == Binary::kMul) return x * y;
    if constexpr (K == Binary::kDiv) return x / y;
    if constexpr (K == Binary::kMax) return x > y ? x : y;
    if constexpr (K == Binary::kMin) return x < y ? x : y;
    if constexpr (K == Binary::kPrelu) return x >= 0 ? x : x * y;
    return (x - y) * (x - y);
  };
  if (sa == 1 && sb == 1) {
    for (int64_t i = 0; i < n; ++i) o[i] = f(a[i], b[i]);
  } else if (sa == 1) {
    const float y = b[0];
    for (int64_t i = 0; i < n; ++i) o[i] = f(a[i], y);
  } else if (sb == 1) {
    const float x = a[0];
    for (int64_t i = 0; i < n; ++i) o[i] = f(x, b[i]);
  } else {
    const float v = f(a[0], b[0]);
    for (int64_t i = 0; i < n; ++i) o[i] = v;
  }
}

class BinaryOp final : public Op {
 public:
  explicit BinaryOp(const OpContext& ctx)
      : a_(ctx.input(0)), b_(ctx.input(1)), out_(ctx.output(0)), layout_(ctx, a_, b_, out_) {
    kind_ = parse_binary(ctx.node.op);
    std::tie(lo_, hi_) = ops::fused_activation(ctx);
    threads_ = ctx.threads;
  }

  void run(float* const* buf) override {
    const float* a = buf[a_];
    const float* b = buf[b_];
    float* o = buf[out_];
    const int64_t sa = layout_.inner_a(), sb = layout_.inner_b();
    layout_.for_each_piece(threads_, [&](int64_t ia, int64_t ib, int64_t io, int64_t len) {
      float* orow = o + io;
      switch (kind_) {
        case Binary::kAdd: binary_run<Binary::kAdd>(a + ia, sa, b + ib, sb, orow, len); break;
        case Binary::kSub: binary_run<Binary::kSub>(a + ia, sa, b + ib, sb, orow, len); break;
        case Binary::kMul: binary_run<Binary::kMul>(a + ia, sa, b + ib, sb, orow, len); break;
        case Binary::kDiv: binary_run<Binary::kDiv>(a + ia, sa, b + ib, sb, orow, len); break;
        case Binary::kMax: binary_run<Binary::kMax>(a + ia, sa, b + ib, sb, orow, len); break;
        case Binary::kMin: binary_run<Binary::kMin>(a + ia, sa, b + ib, sb, orow, len); break;
        case Binary::kPrelu: binary_run<Binary::kPrelu>(a + ia, sa, b + ib, sb, orow, len); break;
        case Binary::kSquaredDiff: binary_run<Binary::kSquaredDiff>(a + ia, sa, b + ib, sb, orow, len); break;
      }
      ops::clamp_range(orow, len, lo_, hi_);
    });
  }

 private:
  int a_, b_, out_, threads_ = 1;
  ops::Broadcast layout_;
  Binary kind_ = Binary::kAdd;
  float lo_ = 0, hi_ = 0;
};

enum class Unary { kCopy, kRelu, kRelu6, kReluN1To1, kLeakyRelu, kLogistic, kTanh, kHardSwish, kRsqrt, kSqrt };

class UnaryOp final : public Op {
 public:
  explicit UnaryOp(const OpContext& ctx) : in_(ctx.input(0)), out_(ctx.output(0)), n_(ctx.elements(out_)) {
    ops::expect_elements(ctx, in_, out_);
    const std::string& op = ctx.node.op;
    if (op == "RELU") kind_ = Unary::kRelu;
    else if (op == "RELU6") kind_ = Unary::kRelu6;
    else if (op == "RELU_N1_TO_1") kind_ = Unary::kReluN1To1;
    else if (op == "LEAKY_RELU") kind_ = Unary::kLeakyRelu;
    else if (op == "LOGISTIC") kind_ = Unary::kLogistic;
    else if (op == "TANH") kind_ = Unary::kTanh;
    else if (op == "HARD_SWISH") kind_ = Unary::kHardSwish;
    else if (op == "RSQRT") kind_ = Unary::kRsqrt;
    else if (op == "SQRT") kind_ = Unary::kSqrt;
    else kind_ = Unary::kCopy;  // RESHAPE, SQUEEZE, EXPAND_DIMS, QUANTIZE, DEQUANTIZE
    alpha_ = ctx.node.float_attr("alpha", 0.2f);
    threads_ = ctx.threads;
  }

  void run(float* const* b) override {
    const float* x = b[in_];
    float* y = b[out_];
    if (kind_ == Unary::kCopy) {
      if (x != y) std::memcpy(y, x, n_ * sizeof(float));
      return;
    }
    constexpr int64_t kChunk = 1 << 14;
    const int64_t chunks = (n_ + kChunk - 1) / kChunk;
    ThreadPool::global().parallel_for(threads_, chunks, [&](int64_t c, int) {
      const int64_t i0 = c * kChunk, i1 = std::min(n_, i0 + kChunk);
      apply(x + i0, y + i0, i1 - i0);
    });
  }

 private:
  void apply(const float* __restrict x, float* __restrict y, int64_t n) const {
    switch (kind_) {
      case Unary::kRelu: for (int64_t i = 0; i < n; ++i) y[i] = std::max(x[i], 0.f); break;
      case Unary::kRelu6: for (int64_t i = 0; i < n; ++i) y[i] = std::min(std::max(x[i], 0.f), 6.f); break;
      case Unary::kReluN1To1: for (int64_t i = 0; i < n; ++i) y[i] = std::min(std::max(x[i], -1.f), 1.f); break;
      case Unary::kLeakyRelu: for (int64_t i = 0; i < n; ++i) y[i] = x[i] >= 0 ? x[i] : alpha_ * x[i]; break;
      case Unary::kLogistic: logistic(x, y, n); break;
      case Unary::kTanh: for (int64_t i = 0; i < n; ++i) y[i] = std::tanh(x[i]); break;
      case Unary::kHardSwish:
        for (int64_t i = 0; i < n; ++i) y[i] = x[i] * std::min(std::max(x[i] + 3.f, 0.f), 6.f) * (1.f / 6.f);
        break;
      case Unary::kRsqrt: for (int64_t i = 0; i < n; ++i) y[i] = 1.f / std::sqrt(x[i]); break;
      case Unary::kSqrt: for (int64_t i = 0; i < n; ++i) y[i] = std::sqrt(x[i]); break;
      case Unary::kCopy: break;
    }
  }

  static void logistic(const float* x, float* y, int64_t n) {
    using simd::kLanes;
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes) simd::store(y + i, simd::sigmoid(simd::load(x + i)));
    if (i < n) {
      const int rest = int(n - i);
      simd::store_partial(y + i, simd::sigmoid(simd::load_partial(x + i, rest)), rest);
    }
  }

  int in_, out_, threads_ = 1;
  int64_t n_;
  Unary kind_ = Unary::kCopy;
  float alpha_ = 0.2f;
};

// Softmax over the last dimension, exp(beta * (x - max)) / sum.
class SoftmaxOp final : public Op {
 public:
  explicit SoftmaxOp(const OpContext& ctx) : in_(ctx.input(0)), out_(ctx.output(0)) {
    ops::expect_elements(ctx, in_, out_);
    const auto& s = ctx.shape(in_);
    inner_ = s.empty() ? 1 : s.back();
    rows_ = inner_ ? ctx.elements(in_) / inner_ : 0;
    beta_ = ctx.node.float_attr("beta", 1.f);
  }
  void run(float* const* b) override {
    for (int64_t r = 0; r < rows_; ++r) {
      const float* x = b[in_] + r * inner_;
      float* y = b[out_] + r * inner_;
      float m = x[0];
      for (int64_t i = 1; i < inner_; ++i) m = std::max(m, x[i]);
      double sum = 0;
      for (int64_t i = 0; i < inner_; ++i) sum += (y[i] = std::exp(beta_ * (x[i] - m)));
      const float inv = float(1.0 / sum);
      for (int64_t i = 0; i < inner_; ++i) y[i] *= inv;
    }
  }

 private:
  int in_, out_;
  int64_t inner_ = 1, rows_ = 0;
  float beta_ = 1.f;
};

}  // namespace

std::unique_ptr<Op> make_binary_op(const OpContext& ctx) { return std::make_unique<BinaryOp>(ctx); }
std::unique_ptr<Op> make_unary_op(const OpContext& ctx) { return std::make_unique<UnaryOp>(ctx); }
std::unique_ptr<Op> make_softmax_op(const OpContext& ctx) { return std::make_unique<SoftmaxOp>(ctx); }

}  // namespace layertune
