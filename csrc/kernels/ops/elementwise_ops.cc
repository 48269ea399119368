// Element-wise ops: binary with broadcasting (ADD, SUB, MUL, DIV, MAXIMUM, MINIMUM, PRELU,
// SQUARED_DIFFERENCE), unary activations, copies (RESHAPE, SQUEEZE, QUANTIZE, ...), SOFTMAX.
// Quantized models run in float: QUANTIZE / DEQUANTIZE are copies of the real values.
#include <cmath>
#include <cstring>

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
  explicit BinaryOp(const OpContext& ctx) : a_(ctx.input(0)), b_(ctx.input(1)), out_(ctx.output(0)) {
    const auto& os = ctx.shape(out_);
    const size_t rank = os.size();
    auto aligned = [&](int t) {  // the input's shape right-aligned to the output's rank
      const auto& s = ctx.shape(t);
      if (s.size() > rank) fail(ctx.node.where(), ": input rank exceeds the output's");
      std::vector<int> r(rank - s.size(), 1);
      r.insert(r.end(), s.begin(), s.end());
      for (size_t d = 0; d < rank; ++d)
        if (r[d] != os[d] && r[d] != 1) fail(ctx.node.where(), ": inputs do not broadcast to the output shape");
      return r;
    };
    auto as = aligned(a_), bs = aligned(b_);
    // Collapse to [outer dims..., inner]: merge trailing dims while both inputs agree on
    // broadcasting them, so the inner loop is as long as possible.
    std::vector<int> out_dims, a_dims, b_dims;
    for (size_t d = 0; d < rank; ++d) {
      const bool can_merge = !out_dims.empty() && (a_dims.back() == out_dims.back()) == (as[d] == os[d]) &&
                             (b_dims.back() == out_dims.back()) == (bs[d] == os[d]);
      if (can_merge) {
        out_dims.back() *= os[d], a_dims.back() *= as[d], b_dims.back() *= bs[d];
      } else {
        out_dims.push_back(os[d]), a_dims.push_back(as[d]), b_dims.push_back(bs[d]);
      }
    }
    if (out_dims.empty()) out_dims = a_dims = b_dims = {1};
    out_dims_ = out_dims;
    a_strides_ = broadcast_strides(a_dims, out_dims);
    b_strides_ = broadcast_strides(b_dims, out_dims);
    kind_ = parse_binary(ctx.node.op);
    std::tie(lo_, hi_) = ops::fused_activation(ctx);
    threads_ = ctx.threads;
  }

  void run(float* const* buf) override {
    const int rank = int(out_dims_.size());
    const int64_t inner = out_dims_.back();
    const int64_t outer = ops::product(out_dims_, 0, rank - 1);
    const float* a = buf[a_];
    const float* b = buf[b_];
    float* o = buf[out_];
    const int threads = outer * inner >= (1 << 13) ? threads_ : 1;
    // Tasks of about kChunk elements: a long row in chunks (so that even a fully merged shape, one
    // row, splits), short rows in groups (a squeeze-excite MUL has H*W rows of C: one task a row
    // spends more on handing out tasks than on the rows).
    constexpr int64_t kChunk = 1 << 14;
    const int64_t chunks = threads > 1 ? (inner + kChunk - 1) / kChunk : 1;
    const int64_t rows_per_task = threads > 1 && chunks == 1 ? std::max<int64_t>(1, kChunk / std::max<int64_t>(inner, 1)) : 1;
    const int64_t tasks = chunks > 1 ? outer * chunks : (outer + rows_per_task - 1) / rows_per_task;
    ThreadPool::global().parallel_for(threads, tasks, [&](int64_t task, int) {
      if (chunks > 1) {
        run_row(a, b, o, task / chunks, (task % chunks) * kChunk, std::min(kChunk, inner - (task % chunks) * kChunk));
        return;
      }
      const int64_t r1 = std::min(outer, (task + 1) * rows_per_task);
      for (int64_t row = task * rows_per_task; row < r1; ++row) run_row(a, b, o, row, 0, inner);
    });
  }

 private:
  // Elements [c0, c0 + len) of output row `row`.
  void run_row(const float* a, const float* b, float* o, int64_t row, int64_t c0, int64_t len) const {
    const int rank = int(out_dims_.size());
    const int64_t inner = out_dims_.back(), sa = a_strides_.back(), sb = b_strides_.back();
    int64_t ia = c0 * sa, ib = c0 * sb, rem = row;
    for (int d = rank - 2; d >= 0; --d) {
      const int64_t idx = rem % out_dims_[d];
      rem /= out_dims_[d];
      ia += idx * a_strides_[d];
      ib += idx * b_strides_[d];
    }
    float* orow = o + row * inner + c0;
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
  }


  static std::vector<int64_t> broadcast_strides(const std::vector<int>& dims, const std::vector<int>& out) {
    std::vector<int64_t> s = ops::strides_of(dims);
    for (size_t d = 0; d < dims.size(); ++d)
      if (dims[d] == 1 && out[d] != 1) s[d] = 0;
    return s;
  }

  int a_, b_, out_, threads_ = 1;
  Binary kind_ = Binary::kAdd;
  std::vector<int> out_dims_;
  std::vector<int64_t> a_strides_, b_strides_;
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
