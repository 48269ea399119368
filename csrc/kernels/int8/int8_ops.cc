// The engine's int8 ops: the nodes of a quantized model whose tensors are int8 (the importer keeps
// them int8 where an op here computes them; graph/precision.py). Arithmetic as TFLite's
// reference kernels: real = scale * (q - zero_point); results rounded and saturated to int8.
#include <array>
#include <cmath>
#include <cstring>
#include <map>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "../../graph/op.h"
#include "../ops/broadcast.h"
#include "../ops/common.h"
#include "layertune/thread_pool.h"
#include "add_arithmetic.h"
#include "qconv.h"

namespace layertune {

namespace int8 {
// TFLite's quantization of reals: x / scale rounded half away from zero, plus the zero point,
// saturated. On 16 lanes at a time (std::round is a library call per element, and GCC does not
// vectorize a truncation): x / scale, held within +-256 (beyond, the result saturates all the
// same), minus its truncation toward zero is exact, so comparing that fraction with 0.5 rounds as
// std::round does.
void quantize_reals(const float* x, int8_t* y, int64_t n, float scale, float zero_point) {
  typedef float f32 __attribute__((vector_size(kLanes * 4)));
  for (int64_t i = 0; i < n; i += kLanes) {
    const int count = int(std::min<int64_t>(kLanes, n - i));
    f32 v{};
    std::memcpy(&v, x + i, size_t(count) * 4);
    f32 q = v / scale;
    q = q < -256.f ? -256.f : q;
    q = q > 256.f ? 256.f : q;
    const v32 t = __builtin_convertvector(q, v32);
    const f32 fraction = q - __builtin_convertvector(t, f32);
    const v32 r = t - v32(fraction >= 0.5f) + v32(fraction <= -0.5f) + int32_t(zero_point);  // a true lane is -1
    narrow_store(y + i, clamp32(r, splat32(-128), splat32(127)), count);
  }
}

}  // namespace int8

namespace {

using int8::Multiplier;

// fn(i0, i1) over [0, n) elements of an elementwise op: one contiguous share per thread (the
// previous op's split of the same tensor, so each thread reads what it wrote), on one thread below
// 8 Ki elements, where waking a helper costs more than it saves. Shares start on 64-element
// boundaries (whole cache lines of int8).
template <class Fn>
void for_each_share(int threads, int64_t n, const Fn& fn) {
  const int64_t shares = n >= (int64_t(1) << 13) ? threads : 1;
  ThreadPool::global().parallel_for(int(shares), shares, [&](int64_t t, int) {
    const int64_t i0 = std::min(n, (n * t / shares + 63) / 64 * 64), i1 = std::min(n, (n * (t + 1) / shares + 63) / 64 * 64);
    if (i0 < i1) fn(i0, i1);
  });
}

struct Quant {
  float scale = 1.f;
  int32_t zero_point = 0;
};

// The node's `requantization` attribute (absent: tflite, as plans were before it).
int8::Requantization requantization_of(const OpContext& ctx) {
  int8::Requantization r = int8::Requantization::kTflite;
  const std::string name = ctx.node.str("requantization", "tflite");
  if (!int8::parse_requantization(name, &r))
    fail(ctx.node.where(), ": requantization must be tflite or xnnpack, got '", name, "'");
  return r;
}

// A tensor's per-tensor quantization (activations).
Quant quant_of(const OpContext& ctx, int t) {
  const PlanTensor& pt = ctx.tensor(t);
  if (pt.scales.size() != 1) fail(ctx.node.where(), ": tensor '", pt.name, "' needs one scale (per-tensor quantization)");
  return {pt.scales[0], pt.zero_points[0]};
}

void expect_dtype(const OpContext& ctx, int t, DType d) {
  if (ctx.tensor(t).dtype != d)
    fail(ctx.node.where(), ": tensor '", ctx.tensor(t).name, "' is ", dtype_name(ctx.tensor(t).dtype), ", expected ",
         dtype_name(d));
}

// An int8 -> int8 op's two tensors checked, and their quantizations.
std::pair<Quant, Quant> int8_in_out(const OpContext& ctx, int in, int out) {
  expect_dtype(ctx, in, DType::kInt8);
  expect_dtype(ctx, out, DType::kInt8);
  return {quant_of(ctx, in), quant_of(ctx, out)};
}
// The same, for an op that moves values without rescaling them (as TFLite requires of it).
Quant same_quant_in_out(const OpContext& ctx, int in, int out) {
  const auto [x, y] = int8_in_out(ctx, in, out);
  if (x.scale != y.scale || x.zero_point != y.zero_point)
    fail(ctx.node.where(), ": int8 ", ctx.node.op, " needs the same quantization on input and output");
  return y;
}

const int8_t* in8(float* const* b, int t) { return reinterpret_cast<const int8_t*>(b[t]); }
int8_t* out8(float* const* b, int t) { return reinterpret_cast<int8_t*>(b[t]); }

// CONV_2D / DEPTHWISE_CONV_2D with per-channel int8 weights and an int32 bias.
class QConvOp final : public Op {
 public:
  explicit QConvOp(const OpContext& ctx) : in_(ctx.input(0)), out_(ctx.output(0)) {
    const int w = ctx.input(1);
    expect_dtype(ctx, in_, DType::kInt8);
    expect_dtype(ctx, out_, DType::kInt8);
    expect_dtype(ctx, w, DType::kInt8);
    int8::QuantizedConv q;
    q.shape = ops::conv_shape(ctx);
    if (ctx.shape(out_) != std::vector<int>{q.shape.batch, q.shape.out_h(), q.shape.out_w(), q.shape.out_c})
      fail(ctx.node.where(), ": output shape does not match the layer (", q.shape.describe(), ")");
    // A fused residual ADD (graph/fusion.py): the node's output is the ADD's; the layer's own
    // output, which the ADD reads, has the quantization the node's attributes keep.
    const std::string epilogue = ctx.node.str("epilogue", "");
    Quant layer_out = quant_of(ctx, out_);
    if (!epilogue.empty()) {
      if (epilogue.rfind("add:", 0) != 0 || epilogue.find(',') != std::string::npos)
        fail(ctx.node.where(), ": an int8 convolution's epilogue can only be one residual add ('add:<activation>'), got '",
             epilogue, "'");
      if (!ctx.has_input(3)) fail(ctx.node.where(), ": the epilogue adds a residual, but the node has no fourth input");
      residual_ = ctx.input(3);
      expect_dtype(ctx, residual_, DType::kInt8);
      if (ctx.shape(residual_) != ctx.shape(out_))
        fail(ctx.node.where(), ": the residual '", ctx.tensor(residual_).name, "' does not have the output's shape");
      if (!ctx.node.has("conv_output_scale") || !ctx.node.has("conv_output_zero_point"))
        fail(ctx.node.where(), ": a fused residual add needs conv_output_scale and conv_output_zero_point");
      layer_out = {ctx.node.float_attr("conv_output_scale", 1.f), int32_t(ctx.node.int_attr("conv_output_zero_point"))};
    } else if (ctx.has_input(3)) {
      fail(ctx.node.where(), ": a fourth input (a residual) without an epilogue that adds it");
    }
    fill_quantized(ctx, w, q, layer_out);
    const MethodParams choice = ops::kernel_choice(ctx, int8::default_method(q.shape), "int8_reference");
    threads_ = choice.threads;
    try {
      kernel_ = int8::make_qconv(q, choice);
    } catch (const InvalidArgument& e) {
      fail(ctx.node.where(), ": ", e.what());
    }
    if (residual_ >= 0) {
      const Quant r = quant_of(ctx, residual_), y = quant_of(ctx, out_);
      Activation act = Activation::kNone;
      try {
        act = parse_activation(epilogue.substr(4));
      } catch (const InvalidArgument& e) {
        fail(ctx.node.where(), ": ", e.what());
      }
      const auto [lo, hi] = int8::activation_bounds(act, y.scale, y.zero_point);
      kernel_->set_residual_add(int8::AddArithmetic(layer_out.scale, layer_out.zero_point, r.scale, r.zero_point, y.scale,
                                                    y.zero_point, lo, hi, q.requantization));
    }
  }
  void run(float* const* b) override {
    kernel_->run(in8(b, in_), out8(b, out_), threads_, residual_ >= 0 ? in8(b, residual_) : nullptr);
  }

  // The weights, bias and requantization of a layer whose output channels are the weights' last
  // dimension (convolutions, and fully-connected layers as 1x1 convolutions), `y` its output's
  // quantization.
  static void fill_quantized(const OpContext& ctx, int w, int8::QuantizedConv& q, Quant y) {
    const PlanTensor& wt = ctx.tensor(w);
    const Quant x = quant_of(ctx, ctx.input(0));
    const int oc = q.shape.out_c;
    if (wt.scales.size() != 1 && wt.scales.size() != size_t(oc))
      fail(ctx.node.where(), ": weights '", wt.name, "' need one scale or one per output channel");
    for (int32_t z : wt.zero_points)
      if (z != 0) fail(ctx.node.where(), ": weights '", wt.name, "' must be symmetric (zero point 0)");
    if (!wt.constant) fail(ctx.node.where(), ": the weights must be a constant");
    const int8_t* wd = ctx.plan.constant_as<int8_t>(w);
    q.weights.assign(wd, wd + wt.elements());
    q.bias.assign(size_t(oc), 0);
    if (ctx.has_input(2)) {
      const int bt = ctx.input(2);
      expect_dtype(ctx, bt, DType::kInt32);
      if (!ctx.tensor(bt).constant || ctx.elements(bt) != oc) fail(ctx.node.where(), ": the bias must be a constant of ", oc, " values");
      const int32_t* bd = ctx.plan.constant_as<int32_t>(bt);
      q.bias.assign(bd, bd + oc);
    }
    q.input_zero_point = x.zero_point;
    q.output_zero_point = y.zero_point;
    q.requantization = requantization_of(ctx);
    q.multipliers.resize(size_t(oc));
    q.scales.resize(size_t(oc));
    for (int c = 0; c < oc; ++c) {
      const double ws = wt.scales.size() == 1 ? wt.scales[0] : wt.scales[c];
      q.multipliers[c] = int8::quantize_multiplier(double(x.scale) * ws / double(y.scale));
      q.scales[c] = int8::fp32_scale(x.scale, float(ws), y.scale);
    }
    std::tie(q.out_min, q.out_max) = int8::activation_bounds(q.shape.activation, y.scale, y.zero_point);
  }

 private:
  int in_, out_, residual_ = -1;
  int threads_ = 1;
  std::unique_ptr<int8::QConvKernel> kernel_;
};

// FULLY_CONNECTED: weights (in, out), rows of the input; computed as a 1x1 convolution.
class QFullyConnectedOp final : public Op {
 public:
  explicit QFullyConnectedOp(const OpContext& ctx) : in_(ctx.input(0)), out_(ctx.output(0)) {
    const int w = ctx.input(1);
    expect_dtype(ctx, in_, DType::kInt8);
    expect_dtype(ctx, out_, DType::kInt8);
    expect_dtype(ctx, w, DType::kInt8);
    ops::expect_rank(ctx, w, 2);
    const auto& ws = ctx.shape(w);
    if (ctx.elements(in_) % ws[0] != 0) fail(ctx.node.where(), ": input size is not a multiple of the weights' rows");
    const int64_t rows = ctx.elements(in_) / ws[0];
    if (ctx.elements(out_) != rows * ws[1]) fail(ctx.node.where(), ": output size does not match the weights");
    int8::QuantizedConv q;
    q.shape = ConvShape::from_fields({int(rows), 1, 1, ws[0], ws[1], 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1},
                                     parse_activation(ctx.node.str("activation", "none")));
    QConvOp::fill_quantized(ctx, w, q, quant_of(ctx, out_));
    threads_ = ctx.threads;
    MethodParams choice;
    choice.method = ctx.reference_kernels ? "int8_reference" : int8::default_method(q.shape);
    kernel_ = int8::make_qconv(q, choice);
  }
  void run(float* const* b) override { kernel_->run(in8(b, in_), out8(b, out_), threads_); }

 private:
  int in_, out_;
  int threads_ = 1;
  std::unique_ptr<int8::QConvKernel> kernel_;
};

// QUANTIZE: real -> int8 (round half away from zero, as TFLite), or int8 -> int8 of another scale.
class QuantizeOp final : public Op {
 public:
  explicit QuantizeOp(const OpContext& ctx) : in_(ctx.input(0)), out_(ctx.output(0)), n_(ctx.elements(out_)) {
    expect_dtype(ctx, out_, DType::kInt8);
    ops::expect_elements(ctx, in_, out_);
    y_ = quant_of(ctx, out_);
    from_int8_ = ctx.tensor(in_).dtype == DType::kInt8;
    if (from_int8_) {
      x_ = quant_of(ctx, in_);
      m_ = int8::quantize_multiplier(double(x_.scale) / double(y_.scale));
    } else {
      expect_dtype(ctx, in_, DType::kFloat32);
    }
    threads_ = ctx.threads;
  }
  void run(float* const* b) override {
    int8_t* y = out8(b, out_);
    for_each_share(threads_, n_, [&](int64_t i0, int64_t i1) {
      if (from_int8_) {
        const int8_t* x = in8(b, in_);
        const int8::RequantLanes m = int8::requant_lanes(m_);
        for (int64_t i = i0; i < i1; i += int8::kLanes) {
          const int n = int(std::min<int64_t>(int8::kLanes, i1 - i));
          int8::narrow_store(y + i, int8::requantize(int8::widen(x + i, n) - x_.zero_point, m) + y_.zero_point, n);
        }
      } else {
        int8::quantize_reals(b[in_] + i0, y + i0, i1 - i0, y_.scale, float(y_.zero_point));
      }
    });
  }

 private:
  int in_, out_;
  int64_t n_;
  Quant x_, y_;
  Multiplier m_;
  bool from_int8_ = false;
  int threads_ = 1;
};

// DEQUANTIZE: int8 -> real.
class DequantizeOp final : public Op {
 public:
  explicit DequantizeOp(const OpContext& ctx) : in_(ctx.input(0)), out_(ctx.output(0)), n_(ctx.elements(out_)) {
    expect_dtype(ctx, in_, DType::kInt8);
    expect_dtype(ctx, out_, DType::kFloat32);
    ops::expect_elements(ctx, in_, out_);
    x_ = quant_of(ctx, in_);
  }
  void run(float* const* b) override {
    const int8_t* x = in8(b, in_);
    float* y = b[out_];
    for (int64_t i = 0; i < n_; ++i) y[i] = x_.scale * float(int32_t(x[i]) - x_.zero_point);
  }

 private:
  int in_, out_;
  int64_t n_;
  Quant x_;
};

// ADD of two same-shaped int8 tensors, in the node's `requantization` arithmetic:
// - tflite: TFLite's integer ADD (both inputs rescaled to twice the larger input scale with 20 bits
//   of headroom, summed, rescaled to the output; three fixed-point requantizations);
// - xnnpack: XNNPACK's (each input's scale over the output's, as multipliers of 21 bits that share
//   one shift; one rounding shift of the sum). Where XNNPACK refuses the scales (a ratio outside
//   [2^-10, 2^8)) LiteRT falls back to TFLite's kernel, and so does this.
class QAddOp final : public Op {
 public:
  explicit QAddOp(const OpContext& ctx) : a_(ctx.input(0)), b_(ctx.input(1)), out_(ctx.output(0)), n_(ctx.elements(out_)) {
    for (int t : {a_, b_, out_}) expect_dtype(ctx, t, DType::kInt8);
    if (ctx.shape(a_) != ctx.shape(out_) || ctx.shape(b_) != ctx.shape(out_))
      fail(ctx.node.where(), ": int8 ADD needs inputs of the output's shape");
    const Quant x1 = quant_of(ctx, a_), x2 = quant_of(ctx, b_), y = quant_of(ctx, out_);
    const auto [lo, hi] = int8::activation_bounds(parse_activation(ctx.node.str("activation", "none")), y.scale, y.zero_point);
    arithmetic_ = int8::AddArithmetic(x1.scale, x1.zero_point, x2.scale, x2.zero_point, y.scale, y.zero_point, lo, hi,
                                      requantization_of(ctx));
    threads_ = ctx.threads;
  }
  void run(float* const* b) override {
    const int8_t *x1 = in8(b, a_), *x2 = in8(b, b_);
    int8_t* y = out8(b, out_);
    const int8::AddArithmetic::Lanes l = arithmetic_.lanes();
    for_each_share(threads_, n_, [&](int64_t i0, int64_t i1) { int8::add_int8(x1 + i0, x2 + i0, y + i0, i1 - i0, l); });
  }

 private:
  int a_, b_, out_;
  int64_t n_;
  int8::AddArithmetic arithmetic_;
  int threads_ = 1;
};

// MUL of two int8 tensors, the second (or the first) broadcast as numpy does (a squeeze-excite
// scale of 1 x 1 x C over H x W x C), in the node's `requantization` arithmetic on the product
// (a - za)(b - zb), exact in int32:
// - tflite: TFLite's integer MUL (the product times the Q31 multiplier of a_scale b_scale / out_scale);
// - xnnpack: XNNPACK's (the product times that ratio in float32, clamped, rounded to nearest even).
//   Where XNNPACK refuses the ratio (outside [2^-16, 2^8)) LiteRT falls back to TFLite's kernel,
//   and so does this.
// The arithmetic of an int8 MUL (its quantizations, activation and requantization), in one place
// for QMulOp's vectors and the SWISH table's scalars.
struct MulArithmetic {
  int32_t za = 0, zb = 0, zo = 0, lo = -128, hi = 127;
  float scale = 0.f;           // a_scale b_scale / out_scale in float32 (XNNPACK's)
  bool xnnpack = false;        // XNNPACK's fp32 arithmetic, else TFLite's fixed point
  Multiplier multiplier;       // TFLite's
  MulArithmetic(const OpContext& ctx, Quant a, Quant b, Quant y) : za(a.zero_point), zb(b.zero_point), zo(y.zero_point) {
    std::tie(lo, hi) = int8::activation_bounds(parse_activation(ctx.node.str("activation", "none")), y.scale, y.zero_point);
    scale = int8::fp32_scale(a.scale, b.scale, y.scale);
    xnnpack = requantization_of(ctx) == int8::Requantization::kXnnpack && scale >= 0x1.0p-16f && scale < 0x1.0p+8f;
    multiplier = int8::quantize_multiplier(double(a.scale) * double(b.scale) / double(y.scale));
  }
  int8_t operator()(int32_t a, int32_t b) const {
    const int32_t product = (a - za) * (b - zb);
    return xnnpack ? int8::requantize_fp32(product, scale, zo, lo, hi)
                   : int8::saturate(int8::multiply(product, multiplier) + zo, lo, hi);
  }
};

class QMulOp final : public Op {
 public:
  explicit QMulOp(const OpContext& ctx)
      : a_(ctx.input(0)), b_(ctx.input(1)), out_(ctx.output(0)), layout_(ctx, a_, b_, out_),
        m_(ctx, quant_of(ctx, a_), quant_of(ctx, b_), quant_of(ctx, out_)) {
    for (int t : {a_, b_, out_}) expect_dtype(ctx, t, DType::kInt8);
    lanes_ = int8::requant_lanes(m_.multiplier);
    threads_ = ctx.threads;
  }
  void run(float* const* b) override {
    const int8_t *x1 = in8(b, a_), *x2 = in8(b, b_);
    int8_t* y = out8(b, out_);
    const int64_t sa = layout_.inner_a(), sb = layout_.inner_b();
    layout_.for_each_piece(threads_, [&](int64_t ia, int64_t ib, int64_t io, int64_t len) {
      if (m_.xnnpack) row<true>(x1 + ia, sa, x2 + ib, sb, y + io, len);
      else row<false>(x1 + ia, sa, x2 + ib, sb, y + io, len);
    });
  }

 private:
  // y[i] = a[i sa] b[i sb] requantized, sa and sb 1 or 0 (that operand one value along the row).
  template <bool Xnnpack>
  void row(const int8_t* a, int64_t sa, const int8_t* b, int64_t sb, int8_t* y, int64_t n) const {
    using int8::v32;
    const v32 zo = int8::splat32(m_.zo), lo = int8::splat32(m_.lo), hi = int8::splat32(m_.hi);
    const int8::v32f scale = int8::splatf(m_.scale), lo_f = int8::splatf(float(m_.lo - m_.zo)),
                     hi_f = int8::splatf(float(m_.hi - m_.zo));
    for (int64_t i = 0; i < n; i += int8::kLanes) {
      const int m = int(std::min<int64_t>(int8::kLanes, n - i));
      const v32 va = sa ? int8::widen(a + i, m) - m_.za : int8::splat32(int32_t(a[0]) - m_.za);
      const v32 vb = sb ? int8::widen(b + i, m) - m_.zb : int8::splat32(int32_t(b[0]) - m_.zb);
      const v32 product = va * vb;
      if constexpr (Xnnpack) {
        const int8::v32f f = __builtin_convertvector(product, int8::v32f) * scale;
        int8::narrow_store(y + i, int8::round_even(int8::minf(int8::maxf(f, lo_f), hi_f)) + zo, m);
      } else {
        int8::narrow_store(y + i, int8::clamp32(int8::requantize(product, lanes_) + zo, lo, hi), m);
      }
    }
  }

  int a_, b_, out_;
  ops::Broadcast layout_;
  MulArithmetic m_;
  int8::RequantLanes lanes_;
  int threads_ = 1;
};

// MEAN over H and W of an NHWC tensor: the sum of (q - zero point) times input scale / (output
// scale x count), rounded (TFLite's fixed point, or XNNPACK's float32 as the node says).
class QMeanOp final : public Op {
 public:
  explicit QMeanOp(const OpContext& ctx) : in_(ctx.input(0)), out_(ctx.output(0)) {
    expect_dtype(ctx, in_, DType::kInt8);
    expect_dtype(ctx, out_, DType::kInt8);
    ops::expect_rank(ctx, in_, 4);
    auto axes = ctx.node.ints("axes");
    std::sort(axes.begin(), axes.end());
    if (axes != std::vector<int64_t>{1, 2}) fail(ctx.node.where(), ": int8 MEAN reduces axes 1 and 2 only");
    shape_ = ctx.shape(in_);
    if (ctx.elements(out_) != int64_t(shape_[0]) * shape_[3]) fail(ctx.node.where(), ": output size does not match");
    const Quant x = quant_of(ctx, in_), y = quant_of(ctx, out_);
    const int64_t count = int64_t(shape_[1]) * shape_[2];
    m_ = int8::quantize_multiplier(double(x.scale) / (double(y.scale) * double(count)));
    // XNNPACK's: the sum times (input scale / output scale) / count, in float32
    xnnpack_ = requantization_of(ctx) == int8::Requantization::kXnnpack;
    scale_ = int8::ieee_div(int8::ieee_div(x.scale, y.scale), float(count));
    zx_ = x.zero_point, zy_ = y.zero_point;
    threads_ = ctx.threads;
  }
  void run(float* const* b) override {
    const int8_t* x = in8(b, in_);
    int8_t* y = out8(b, out_);
    const int64_t hw = int64_t(shape_[1]) * shape_[2], C = shape_[3];
    // On several threads each sums a range of pixels (the rows the layer before it wrote, on the
    // same split) into a partial sum of its own; the partials are added in order (int32: exact).
    const int parts = hw * C >= (1 << 15) ? threads_ : 1;
    partial_.resize(size_t(parts));
    for (int n = 0; n < shape_[0]; ++n) {
      const int8_t* xn = x + n * hw * C;
      ThreadPool::global().parallel_for(parts, parts, [&](int64_t part, int) {
        std::vector<int32_t>& sum = partial_[size_t(part)];
        sum.assign(size_t(C), 0);
        for (int64_t p = hw * part / parts, p1 = hw * (part + 1) / parts; p < p1; ++p)
          for (int64_t c = 0; c < C; ++c) sum[size_t(c)] += xn[p * C + c];
      });
      for (int64_t c = 0; c < C; ++c) {
        int32_t total = -int32_t(hw) * zx_;
        for (const std::vector<int32_t>& sum : partial_) total += sum[size_t(c)];
        y[n * C + c] = xnnpack_ ? int8::requantize_fp32(total, scale_, zy_, -128, 127)
                                : int8::saturate(int8::multiply(total, m_) + zy_, -128, 127);
      }
    }
  }

 private:
  int in_, out_;
  int threads_ = 1;
  std::vector<int> shape_;
  Multiplier m_;
  bool xnnpack_ = false;
  float scale_ = 0.f;
  mutable std::vector<std::vector<int32_t>> partial_;  // per part: its pixels' sums per channel
  int32_t zx_ = 0, zy_ = 0;
};

// AVERAGE_POOL_2D / MAX_POOL_2D (input and output share their quantization, as in TFLite).
class QPoolOp final : public Op {
 public:
  explicit QPoolOp(const OpContext& ctx) : in_(ctx.input(0)), out_(ctx.output(0)) {
    const Quant y = same_quant_in_out(ctx, in_, out_);
    ops::expect_nhwc_pair(ctx, in_, out_);
    max_ = ctx.node.op == "MAX_POOL_2D";
    filter_ = ops::ints_n(ctx, "filter", 2);
    strides_ = ops::ints_n(ctx, "strides", 2);
    pads_ = ops::ints_n(ctx, "pads", 4);
    xs_ = ctx.shape(in_);
    os_ = ctx.shape(out_);
    std::tie(lo_, hi_) = int8::activation_bounds(parse_activation(ctx.node.str("activation", "none")), y.scale, y.zero_point);
    threads_ = ctx.threads;
  }
  void run(float* const* b) override {
    const int8_t* x = in8(b, in_);
    int8_t* y = out8(b, out_);
    const int C = xs_[3];
    ThreadPool::global().parallel_for(threads_, int64_t(os_[0]) * os_[1], [&](int64_t row, int) {
      const int n = int(row / os_[1]), oy = int(row % os_[1]);
      const int iy0 = std::max(oy * int(strides_[0]) - int(pads_[0]), 0);
      const int iy1 = std::min(oy * int(strides_[0]) - int(pads_[0]) + int(filter_[0]), xs_[1]);
      std::vector<int32_t> sum(max_ ? 0 : size_t(C));
      for (int ox = 0; ox < os_[2]; ++ox) {
        const int ix0 = std::max(ox * int(strides_[1]) - int(pads_[2]), 0);
        const int ix1 = std::min(ox * int(strides_[1]) - int(pads_[2]) + int(filter_[1]), xs_[2]);
        const int count = std::max(iy1 - iy0, 0) * std::max(ix1 - ix0, 0);
        const int8_t* window = x + ((int64_t(n) * xs_[1] + iy0) * xs_[2] + ix0) * C;
        const int64_t row_stride = int64_t(xs_[2]) * C;
        int8_t* yp = y + ((int64_t(n) * os_[1] + oy) * os_[2] + ox) * C;
        if (max_) {
          max_window(window, row_stride, iy1 - iy0, ix1 - ix0, C, yp);
          continue;
        }
        std::fill(sum.begin(), sum.end(), 0);
        for (int iy = 0; iy < iy1 - iy0; ++iy)
          for (int ix = 0; ix < ix1 - ix0; ++ix) {
            const int8_t* xp = window + iy * row_stride + int64_t(ix) * C;
            for (int c = 0; c < C; ++c) sum[size_t(c)] += xp[c];
          }
        for (int c = 0; c < C; ++c) {
          int32_t v = sum[size_t(c)];
          if (count) v = v > 0 ? (v + count / 2) / count : (v - count / 2) / count;
          yp[c] = int8::saturate(v, lo_, hi_);
        }
      }
    });
  }

 private:
  // The maximum of a window (rows x cols pixels, clipped to the input), 64 channels at a time in
  // int8 lanes, starting from the activation's lower bound (TFLite starts from -128 and clamps
  // after: the same), then held at its upper bound.
  void max_window(const int8_t* window, int64_t row_stride, int rows, int cols, int C, int8_t* y) const {
    typedef int8_t v8 __attribute__((vector_size(64)));
    for (int c0 = 0; c0 < C; c0 += 64) {
      const size_t nc = size_t(std::min(64, C - c0));
      v8 acc = v8{} + int8_t(lo_);
      for (int iy = 0; iy < rows; ++iy)
        for (int ix = 0; ix < cols; ++ix) {
          v8 v{};
          const int8_t* xp = window + iy * row_stride + int64_t(ix) * C + c0;
          if (nc == 64) std::memcpy(&v, xp, 64);
          else std::memcpy(&v, xp, nc);
          acc = v > acc ? v : acc;
        }
      const v8 hi = v8{} + int8_t(hi_);
      acc = acc > hi ? hi : acc;
      std::memcpy(y + c0, &acc, nc);
    }
  }

  int in_, out_;
  bool max_ = false;
  std::vector<int64_t> filter_, strides_, pads_;
  std::vector<int> xs_, os_;
  int32_t lo_ = -128, hi_ = 127;
  int threads_ = 1;
};

// RESHAPE / SQUEEZE / EXPAND_DIMS: the same bytes.
class QCopyOp final : public Op {
 public:
  explicit QCopyOp(const OpContext& ctx) : in_(ctx.input(0)), out_(ctx.output(0)), n_(ctx.elements(out_)) {
    same_quant_in_out(ctx, in_, out_);
    ops::expect_elements(ctx, in_, out_);
  }
  void run(float* const* b) override {
    if (b[in_] != b[out_]) std::memcpy(b[out_], b[in_], size_t(n_));
  }

 private:
  int in_, out_;
  int64_t n_;
};

// PAD / PADV2 (constant mode): the output's zero point (real 0), or PADV2's value quantized.
class QPadOp final : public Op {
 public:
  explicit QPadOp(const OpContext& ctx) : in_(ctx.input(0)), out_(ctx.output(0)) {
    const Quant y = same_quant_in_out(ctx, in_, out_);
    if (ctx.node.str("mode", "constant") != "constant") fail(ctx.node.where(), ": int8 PAD pads with a constant only");
    value_ = int8::saturate(y.zero_point + int32_t(std::round(ctx.node.float_attr("value", 0.f) / y.scale)), -128, 127);
    xs_ = ctx.shape(in_);
    os_ = ctx.shape(out_);
    pads_ = ctx.node.ints("pads");
    if (pads_.size() != 2 * xs_.size() || os_.size() != xs_.size()) fail(ctx.node.where(), ": pads do not match the rank");
    for (size_t d = 0; d < xs_.size(); ++d)
      if (pads_[2 * d] < 0 || pads_[2 * d + 1] < 0 || xs_[d] + pads_[2 * d] + pads_[2 * d + 1] != os_[d])
        fail(ctx.node.where(), ": output shape does not match the pads");
  }
  void run(float* const* b) override {
    const int8_t* x = in8(b, in_);
    int8_t* y = out8(b, out_);
    std::memset(y, value_, size_t(ops::product(os_)));
    // Copy the innermost dimension's rows of the input into place.
    const size_t rank = xs_.size();
    const int64_t inner = xs_[rank - 1], rows = ops::product(xs_, 0, rank - 1);
    const auto ostr = ops::strides_of(os_), istr = ops::strides_of(xs_);
    for (int64_t r = 0; r < rows; ++r) {
      int64_t rem = r * inner, at = 0;
      for (size_t d = 0; d < rank; ++d) {
        const int64_t i = rem / istr[d];
        rem %= istr[d];
        at += (i + pads_[2 * d]) * ostr[d];
      }
      std::memcpy(y + at, x + r * inner, size_t(inner));
    }
  }

 private:
  int in_, out_;
  int8_t value_ = 0;
  std::vector<int> xs_, os_;
  std::vector<int64_t> pads_;
};

// CONCATENATION: each input's values requantized to the output's scale (TFLite's
// ConcatenationWithScaling), copied when they share it.
class QConcatOp final : public Op {
 public:
  explicit QConcatOp(const OpContext& ctx) : out_(ctx.output(0)) {
    expect_dtype(ctx, out_, DType::kInt8);
    const auto& os = ctx.shape(out_);
    const int axis = int(ctx.node.int_attr("axis"));
    if (axis < 0 || axis >= int(os.size())) fail(ctx.node.where(), ": axis out of range");
    const Quant y = quant_of(ctx, out_);
    outer_ = ops::product(os, 0, size_t(axis));
    for (size_t i = 0; i < ctx.node.inputs.size(); ++i) {
      const int t = ctx.input(i);
      expect_dtype(ctx, t, DType::kInt8);
      const Quant x = quant_of(ctx, t);
      Part p{t, ops::product(ctx.shape(t), size_t(axis)), x.scale / y.scale, x.zero_point, y.zero_point,
             x.scale == y.scale && x.zero_point == y.zero_point};
      parts_.push_back(p);
      row_ += p.inner;
    }
    if (outer_ * row_ != ctx.elements(out_)) fail(ctx.node.where(), ": inputs do not add up to the output");
  }
  void run(float* const* b) override {
    int8_t* y = out8(b, out_);
    for (int64_t o = 0; o < outer_; ++o) {
      int8_t* dst = y + o * row_;
      for (const Part& p : parts_) {
        const int8_t* src = in8(b, p.tensor) + o * p.inner;
        if (p.same) {
          std::memcpy(dst, src, size_t(p.inner));
        } else {
          const float bias = -float(p.zx) * p.scale;
          for (int64_t i = 0; i < p.inner; ++i)
            dst[i] = int8::saturate(int32_t(std::round(float(src[i]) * p.scale + bias)) + p.zy, -128, 127);
        }
        dst += p.inner;
      }
    }
  }

 private:
  struct Part {
    int tensor;
    int64_t inner;
    float scale;
    int32_t zx, zy;
    bool same;
  };
  int out_;
  int64_t outer_ = 1, row_ = 0;
  std::vector<Part> parts_;
};

// SOFTMAX over the last dimension, as LiteRT computes an int8 SOFTMAX on x86 (XNNPACK takes no
// quantized SOFTMAX, so this is TFLite's optimized kernel): a float32 table of
// exp(-input_scale beta d) for the 256 distances d from a row's maximum, the row's sum in element
// order, each entry times 1 / (sum x output_scale) rounded half away from zero plus the zero point.
// The sum and scale go through single IEEE operations (ieee_add / ieee_mul / ieee_div): pi3's
// -funsafe-math-optimizations would otherwise reassociate the sum and give other roundings.
class QSoftmaxOp final : public Op {
 public:
  explicit QSoftmaxOp(const OpContext& ctx) : in_(ctx.input(0)), out_(ctx.output(0)) {
    const auto [x, y] = int8_in_out(ctx, in_, out_);
    ops::expect_elements(ctx, in_, out_);
    const auto& shape = ctx.shape(in_);
    row_ = shape.empty() ? 1 : shape.back();
    rows_ = row_ ? ctx.elements(in_) / row_ : 0;
    const float scale = int8::ieee_mul(-x.scale, ctx.node.float_attr("beta", 1.f));
    for (int d = 0; d < 256; ++d) table_[255 - d] = std::exp(int8::ieee_mul(scale, float(d)));
    out_scale_ = y.scale;
    zo_ = y.zero_point;
    threads_ = rows_ * row_ >= (1 << 13) ? ctx.threads : 1;
  }
  void run(float* const* b) override {
    const int8_t* x = in8(b, in_);
    int8_t* y = out8(b, out_);
    ThreadPool::global().parallel_for(threads_, rows_, [&](int64_t r, int) { row(x + r * row_, y + r * row_); });
  }

 private:
  void row(const int8_t* x, int8_t* y) const {
    int32_t max = -128;
    for (int64_t j = 0; j < row_; ++j) max = std::max(max, int32_t(x[j]));
    const float* exp_of = table_ + 255 - max;  // exp_of[q] for q <= max
    float sum = 0.f;
    for (int64_t j = 0; j < row_; ++j) sum = int8::ieee_add(sum, exp_of[x[j]]);
    const float inverse = int8::ieee_div(1.f, int8::ieee_mul(sum, out_scale_));
    for (int64_t j = 0; j < row_; ++j)
      y[j] = int8::saturate(int32_t(std::round(int8::ieee_mul(exp_of[x[j]], inverse))) + zo_, -128, 127);
  }

  int in_, out_;
  int64_t row_ = 1, rows_ = 0;
  float table_[256] = {};
  float out_scale_ = 1.f;
  int32_t zo_ = 0;
  int threads_ = 1;
};

// What an int8 resize reads of its node: NHWC input and output quantized alike (as TFLite
// requires), their shapes and the coordinate mode.
struct ResizeOf {
  std::vector<int> xs, os;
  bool align, half;
  ResizeOf(const OpContext& ctx, int in, int out) {
    same_quant_in_out(ctx, in, out);
    ops::expect_nhwc_pair(ctx, in, out);
    xs = ctx.shape(in), os = ctx.shape(out);
    align = ctx.node.int_attr("align_corners", 0) != 0;
    half = ctx.node.int_attr("half_pixel_centers", 0) != 0;
  }
};

// RESIZE_NEAREST_NEIGHBOR: each output pixel a copy of its source pixel's bytes.
class QResizeNearestOp final : public Op {
 public:
  explicit QResizeNearestOp(const OpContext& ctx) : in_(ctx.input(0)), out_(ctx.output(0)) {
    const ResizeOf r(ctx, in_, out_);
    xs_ = r.xs, os_ = r.os;
    const bool align = r.align, half = r.half;
    const float sy = ops::resize_scale(xs_[1], os_[1], align), sx = ops::resize_scale(xs_[2], os_[2], align);
    for (int oy = 0; oy < os_[1]; ++oy) src_y_.push_back(ops::nearest_source(oy, sy, xs_[1], align, half));
    for (int ox = 0; ox < os_[2]; ++ox) src_x_.push_back(ops::nearest_source(ox, sx, xs_[2], align, half));
    threads_ = ops::product(os_) >= (1 << 15) ? ctx.threads : 1;
  }
  void run(float* const* b) override {
    const int8_t* x = in8(b, in_);
    int8_t* y = out8(b, out_);
    const int64_t c = xs_[3];
    ThreadPool::global().parallel_for(threads_, int64_t(os_[0]) * os_[1], [&](int64_t row, int) {
      const int64_t n = row / os_[1];
      const int8_t* src_row = x + (n * xs_[1] + src_y_[size_t(row % os_[1])]) * xs_[2] * c;
      int8_t* dst = y + row * os_[2] * c;
      for (int ox = 0; ox < os_[2]; ++ox) std::memcpy(dst + ox * c, src_row + src_x_[size_t(ox)] * c, size_t(c));
    });
  }

 private:
  int in_, out_, threads_ = 1;
  std::vector<int> xs_, os_, src_y_, src_x_;
};

// RESIZE_BILINEAR of int8, in the node's `requantization` arithmetic; each output is the four source pixels' weighted sum:
// - xnnpack (XNNPACK's, which LiteRT runs): the source coordinates in float32 (XNNPACK's, below),
//   their fractions as Q11 weights; the top and bottom pixels interpolated across, then the two
//   down, the Q22 sum rounded half up;
// - tflite (TFLite's reference kernel): the coordinates in Q10, the four products' Q20 sum
//   rounded half away from zero.
// The two differ by up to 2 LSB; each equals its own kernel element for element.
class QResizeBilinearOp final : public Op {
 public:
  explicit QResizeBilinearOp(const OpContext& ctx) : in_(ctx.input(0)), out_(ctx.output(0)) {
    const ResizeOf r(ctx, in_, out_);
    xs_ = r.xs, os_ = r.os;
    const bool align = r.align, half = r.half;
    xnnpack_ = requantization_of(ctx) == int8::Requantization::kXnnpack;
    rows_ = xnnpack_ ? xnnpack_axis(xs_[1], os_[1], align, half) : tflite_axis(xs_[1], os_[1], align, half);
    cols_ = xnnpack_ ? xnnpack_axis(xs_[2], os_[2], align, half) : tflite_axis(xs_[2], os_[2], align, half);
    threads_ = ops::product(os_) >= (1 << 15) ? ctx.threads : 1;
  }
  void run(float* const* b) override {
    const int8_t* x = in8(b, in_);
    int8_t* y = out8(b, out_);
    const int c = xs_[3];
    const int64_t row_bytes = int64_t(xs_[2]) * c;
    ThreadPool::global().parallel_for(threads_, int64_t(os_[0]) * os_[1], [&](int64_t row, int) {
      const int64_t n = row / os_[1];
      const Source& sy = rows_[size_t(row % os_[1])];
      const int8_t* top = x + (n * xs_[1] + sy.lo) * row_bytes;
      const int8_t* bottom = x + (n * xs_[1] + sy.hi) * row_bytes;
      int8_t* dst = y + row * os_[2] * c;
      for (const Source& sx : cols_) {
        const int8_t *tl = top + sx.lo * c, *tr = top + sx.hi * c, *bl = bottom + sx.lo * c, *br = bottom + sx.hi * c;
        if (xnnpack_) xnnpack_pixel(tl, tr, bl, br, sx.weight, sy.weight, c, dst);
        else tflite_pixel(tl, tr, bl, br, sx.weight, sy.weight, c, dst);
        dst += c;
      }
    });
  }

 private:
  // One output index's sources along an axis and the weight of the higher one.
  struct Source {
    int lo, hi;
    int32_t weight;  // xnnpack: Q11 in [0, 2048]; tflite: the Q10 coordinate less 1024 lo (may be < 0)
  };
  // XNNPACK's coordinates: scale = (in - a) / (out - a) with a = 1 for aligned corners (and out > 1);
  // o scale (TensorFlow's legacy mode and aligned corners) or o scale + (scale / 2 - 1/2) (half-pixel
  // centers), clamped to [0, in - 1]; each step one float32 operation, as XNNPACK computes them.
  static std::vector<Source> xnnpack_axis(int in, int out, bool align, bool half) {
    const int adjust = align && out != 1 ? 1 : 0;
    const float scale = int8::ieee_div(float(in - adjust), float(out - adjust));
    const float offset = int8::ieee_add(int8::ieee_mul(0.5f, scale), -0.5f);
    std::vector<Source> axis;
    for (int o = 0; o < out; ++o) {
      float v = int8::ieee_mul(float(o), scale);
      if (half && !align) v = std::max(int8::ieee_add(v, offset), 0.f);
      v = std::min(v, float(in - 1));
      const int lo = int(v);
      axis.push_back({lo, std::min(lo + 1, in - 1), int32_t(std::lrint(int8::ieee_mul(v - float(lo), 2048.f)))});
    }
    return axis;
  }
  // TFLite's: the Q10 scale ((in << 10) / out rounded, or (in - 1) / (out - 1) for aligned corners),
  // the coordinate o scale (plus scale / 2 - 512 for half-pixel centers), divided by 1024 toward
  // zero and clamped.
  static std::vector<Source> tflite_axis(int in, int out, bool align, bool half) {
    const int32_t scale = align && out > 1 ? ((in - 1) * 1024 + (out - 1) / 2) / (out - 1) : (in * 1024 + out / 2) / out;
    std::vector<Source> axis;
    for (int o = 0; o < out; ++o) {
      const int32_t v = half ? o * scale + scale / 2 - 512 : o * scale;
      const int lo = std::max(v / 1024, 0);
      axis.push_back({lo, std::min((v + 1023) / 1024, in - 1), v - 1024 * lo});
    }
    return axis;
  }
  static void xnnpack_pixel(const int8_t* tl, const int8_t* tr, const int8_t* bl, const int8_t* br, int32_t wx,
                            int32_t wy, int c, int8_t* y) {
    using int8::v32;
    for (int i = 0; i < c; i += int8::kLanes) {
      const int n = std::min(int8::kLanes, c - i);
      const v32 a = int8::widen(tl + i, n), b = int8::widen(tr + i, n), d = int8::widen(bl + i, n), e = int8::widen(br + i, n);
      const v32 top = a * 2048 + (b - a) * wx, bottom = d * 2048 + (e - d) * wx;
      int8::narrow_store(y + i, (top * 2048 + (bottom - top) * wy + (1 << 21)) >> 22, n);
    }
  }
  static void tflite_pixel(const int8_t* tl, const int8_t* tr, const int8_t* bl, const int8_t* br, int32_t wx,
                           int32_t wy, int c, int8_t* y) {
    using int8::v32;
    const int32_t w_tl = (1024 - wy) * (1024 - wx), w_tr = (1024 - wy) * wx, w_bl = wy * (1024 - wx), w_br = wy * wx;
    for (int i = 0; i < c; i += int8::kLanes) {
      const int n = std::min(int8::kLanes, c - i);
      const v32 sum = int8::widen(tl + i, n) * w_tl + int8::widen(tr + i, n) * w_tr + int8::widen(bl + i, n) * w_bl +
                      int8::widen(br + i, n) * w_br;  // |sum| < 2^30: int32 holds it
      int8::narrow_store(y + i, (sum + (sum > 0 ? (1 << 19) : -(1 << 19))) / (1 << 20), n);
    }
  }

  int in_, out_, threads_ = 1;
  bool xnnpack_ = true;
  std::vector<int> xs_, os_;
  std::vector<Source> rows_, cols_;
};

// y[i] = table[x[i] + 128] for n bytes: 64 at a time where the CPU has AVX-512 VBMI (two vpermt2b
// over the table's halves, picked by the index's top bit), else byte by byte.
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx512f,avx512bw,avx512vbmi"))) void lookup_vbmi(const int8_t* table, const int8_t* x, int8_t* y,
                                                                         int64_t n) {
  const __m512i t0 = _mm512_loadu_si512(table), t1 = _mm512_loadu_si512(table + 64);
  const __m512i t2 = _mm512_loadu_si512(table + 128), t3 = _mm512_loadu_si512(table + 192);
  const __m512i flip = _mm512_set1_epi8(char(0x80));
  for (int64_t i = 0; i < n; i += 64) {
    const __mmask64 keep = n - i >= 64 ? ~__mmask64(0) : (__mmask64(1) << (n - i)) - 1;
    const __m512i index = _mm512_xor_si512(_mm512_maskz_loadu_epi8(keep, x + i), flip);  // x + 128
    const __m512i low = _mm512_permutex2var_epi8(t0, index, t1), high = _mm512_permutex2var_epi8(t2, index, t3);
    _mm512_mask_storeu_epi8(y + i, keep, _mm512_mask_blend_epi8(_mm512_movepi8_mask(index), low, high));
  }
}
#endif
void lookup_bytes(const int8_t* table, const int8_t* x, int8_t* y, int64_t n) {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool vbmi = __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("avx512bw");
  if (vbmi) return lookup_vbmi(table, x, y, n);
#endif
  for (int64_t i = 0; i < n; ++i) y[i] = table[int32_t(x[i]) + 128];
}

// Element-wise activations as a table of the 256 inputs: q -> quantize(f(dequantize(q))). SWISH,
// layertune's fold of an int8 LOGISTIC and the MUL of its input by it (graph/precision.py), is a
// table too: both steps depend on x alone, so the table holds the MUL's rounding of x times the
// LOGISTIC's rounded output (its quantization in the node's sigmoid_scale / sigmoid_zero_point),
// the two ops' output bit for bit in one pass.
class QLookupOp final : public Op {
 public:
  explicit QLookupOp(const OpContext& ctx) : in_(ctx.input(0)), out_(ctx.output(0)), n_(ctx.elements(out_)) {
    const auto [x, y] = int8_in_out(ctx, in_, out_);
    ops::expect_elements(ctx, in_, out_);
    const std::string& op = ctx.node.op;
    if (op == "SWISH") {
      const Quant sigmoid{ctx.node.float_attr("sigmoid_scale", 0.f), int32_t(ctx.node.int_attr("sigmoid_zero_point", 0))};
      if (!(sigmoid.scale > 0.f)) fail(ctx.node.where(), ": SWISH needs its sigmoid's quantization (sigmoid_scale > 0)");
      const std::array<int8_t, 256> logistic = table_of("LOGISTIC", x, sigmoid, 0.0);
      const MulArithmetic mul(ctx, x, sigmoid, y);
      for (int q = -128; q < 128; ++q) table_[size_t(q + 128)] = mul(q, logistic[q + 128]);
    } else {
      table_ = table_of(op, x, y, ctx.node.float_attr("alpha", 0.2f));
    }
    // Contiguous shares, one a thread: each reads what the layer before it wrote on that core.
    threads_ = n_ >= (1 << 14) ? ctx.threads : 1;
  }
  void run(float* const* b) override {
    const int8_t* x = in8(b, in_);
    int8_t* y = out8(b, out_);
    ThreadPool::global().parallel_for(threads_, threads_, [&](int64_t t, int) {
      const int64_t i0 = n_ * t / threads_, i1 = n_ * (t + 1) / threads_;
      lookup_bytes(table_.data(), x + i0, y + i0, i1 - i0);
    });
  }

 private:
  // The table of an activation from x's quantization to y's.
  static std::array<int8_t, 256> table_of(const std::string& op, Quant x, Quant y, double alpha) {
    std::array<int8_t, 256> table{};
    for (int q = -128; q < 128; ++q) {
      const double v = double(x.scale) * (q - x.zero_point);
      double f = v;
      if (op == "LOGISTIC") f = 1.0 / (1.0 + std::exp(-v));
      else if (op == "TANH") f = std::tanh(v);
      else if (op == "HARD_SWISH") f = v * std::min(std::max(v + 3.0, 0.0), 6.0) / 6.0;
      else if (op == "RELU") f = std::max(v, 0.0);
      else if (op == "RELU6") f = std::min(std::max(v, 0.0), 6.0);
      else if (op == "RELU_N1_TO_1") f = std::min(std::max(v, -1.0), 1.0);
      else if (op == "LEAKY_RELU") f = v >= 0 ? v : alpha * v;
      table[size_t(q + 128)] = int8::saturate(int32_t(std::round(f / double(y.scale))) + y.zero_point, -128, 127);
    }
    return table;
  }

  int in_, out_;
  int64_t n_;
  std::array<int8_t, 256> table_{};
  int threads_ = 1;
};

template <class T>
std::unique_ptr<Op> make(const OpContext& ctx) {
  return std::make_unique<T>(ctx);
}

using Factory = std::unique_ptr<Op> (*)(const OpContext&);
const std::map<std::string, Factory>& int8_registry() {
  static const std::map<std::string, Factory> ops = {
      {"CONV_2D", make<QConvOp>},          {"DEPTHWISE_CONV_2D", make<QConvOp>},
      {"FULLY_CONNECTED", make<QFullyConnectedOp>},
      {"QUANTIZE", make<QuantizeOp>},      {"DEQUANTIZE", make<DequantizeOp>},
      {"ADD", make<QAddOp>},               {"MEAN", make<QMeanOp>},
      {"MUL", make<QMulOp>},               {"SOFTMAX", make<QSoftmaxOp>},
      {"RESIZE_NEAREST_NEIGHBOR", make<QResizeNearestOp>},
      {"RESIZE_BILINEAR", make<QResizeBilinearOp>},
      {"AVERAGE_POOL_2D", make<QPoolOp>},  {"MAX_POOL_2D", make<QPoolOp>},
      {"RESHAPE", make<QCopyOp>},          {"SQUEEZE", make<QCopyOp>},
      {"EXPAND_DIMS", make<QCopyOp>},      {"PAD", make<QPadOp>},
      {"PADV2", make<QPadOp>},             {"CONCATENATION", make<QConcatOp>},
      {"LOGISTIC", make<QLookupOp>},       {"TANH", make<QLookupOp>},
      {"HARD_SWISH", make<QLookupOp>},     {"RELU", make<QLookupOp>},
      {"RELU6", make<QLookupOp>},          {"RELU_N1_TO_1", make<QLookupOp>},
      {"LEAKY_RELU", make<QLookupOp>},     {"SWISH", make<QLookupOp>},
  };
  return ops;
}

}  // namespace

std::unique_ptr<Op> make_int8_op(const OpContext& ctx) {
  auto it = int8_registry().find(ctx.node.op);
  if (it == int8_registry().end()) fail(ctx.node.where(), ": no int8 kernel (its tensors are int8)");
  return it->second(ctx);
}

std::vector<std::string> supported_int8_ops() {
  std::vector<std::string> out;
  for (const auto& kv : int8_registry()) out.push_back(kv.first);
  return out;
}

}  // namespace layertune
