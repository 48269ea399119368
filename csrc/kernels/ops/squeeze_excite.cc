// A squeeze-and-excite group (graph/fusion.py, form `squeeze_excite`): MEAN over height and width,
// an optional RESHAPE, two 1x1 CONV_2D on the 1x1 map (reduce, expand), LOGISTIC and the MUL of
// the block's tensor by that gate, computed by one op. Unfused these are five or six nodes, two of
// them passes over the whole tensor (MEAN, MUL) that each wake the thread pool, and four that do
// almost nothing (EfficientNet-B0 has 16 such blocks). Here the two passes split the pixels the
// same way, so each thread multiplies the rows it has just summed, still in its cache; the small
// matrix-vector products in between run on the calling thread.
// Where the convolution after the MUL takes the gate as its input scale (fusion form input_scale,
// conv_ops.cc), the group ends at the LOGISTIC and writes only the gate.
#include <cstring>

#include "common.h"
#include "gemv.h"
#include "layertune/conv.h"
#include "layertune/simd.h"
#include "layertune/thread_pool.h"

namespace layertune {
namespace {

using simd::kLanes;
using simd::vf;

// One 1x1 convolution on a 1x1 map: the GEMV on one row, then the fused tail of its epilogue.
struct SmallDense {
  Gemv gemv;
  PostOps post;

  void run(const float* x, float* y, int threads) const {
    gemv.run(x, y, 1, threads);
    if (!post.empty()) apply_post_ops(post, y, nullptr, gemv.out);
  }
};

class SqueezeExciteOp final : public Op {
 public:
  SqueezeExciteOp(const Plan& plan, size_t first, size_t count, int threads) : threads_(threads) {
    const PlanNode& mean = plan.nodes[first];
    auto where = [&] { return mean.where() + ": squeeze-excite group"; };
    size_t k = first + 1;
    if (k < first + count && plan.nodes[k].op == "RESHAPE") ++k;
    // Without the MUL the group's output is the gate itself, which a convolution takes as its
    // input scale (fusion form input_scale).
    has_mul_ = first + count == k + 4;
    if ((!has_mul_ && first + count != k + 3) || plan.nodes[k].op != "CONV_2D" || plan.nodes[k + 1].op != "CONV_2D" ||
        plan.nodes[k + 2].op != "LOGISTIC" || (has_mul_ && plan.nodes[k + 3].op != "MUL"))
      fail(where(), ": its ", count, " nodes must be MEAN, [RESHAPE,] CONV_2D, CONV_2D, LOGISTIC[, MUL]");
    const OpContext cm{plan, mean, 1, false}, c1{plan, plan.nodes[k], 1, false}, c2{plan, plan.nodes[k + 1], 1, false};
    in_ = cm.input(0);
    ops::expect_rank(cm, in_, 4);
    const auto& xs = cm.shape(in_);
    batch_ = xs[0], pixels_ = int64_t(xs[1]) * xs[2], channels_ = xs[3];
    auto axes = mean.ints("axes");
    for (auto& a : axes) a = a < 0 ? a + 4 : a;
    std::sort(axes.begin(), axes.end());
    if (axes != std::vector<int64_t>{1, 2}) fail(where(), ": the MEAN must reduce height and width (axes 1, 2)");
    // The chain: each node reads the one before it.
    int tensor = cm.output(0);
    for (size_t j = first + 1; j < k + 3; ++j) {
      if (plan.nodes[j].inputs.empty() || plan.nodes[j].inputs[0] != tensor)
        fail(where(), ": '", plan.nodes[j].name, "' must read the output of the node before it");
      tensor = plan.nodes[j].outputs.at(0);
    }
    const int gate = tensor;
    if (has_mul_) {
      const OpContext cx{plan, plan.nodes[k + 3], 1, false};
      const auto& mul_in = plan.nodes[k + 3].inputs;
      if (mul_in.size() != 2 || !((mul_in[0] == in_ && mul_in[1] == gate) || (mul_in[1] == in_ && mul_in[0] == gate)))
        fail(where(), ": the MUL must multiply the MEAN's input by the LOGISTIC's output");
      out_ = cx.output(0);
      if (cx.shape(out_) != xs) fail(where(), ": the MUL's output must have the MEAN's input's shape");
      std::tie(lo_, hi_) = ops::fused_activation(cx);
    } else {
      out_ = gate;
      if (cm.elements(gate) != int64_t(batch_) * channels_)
        fail(where(), ": the LOGISTIC's output must have one value per image and channel");
    }
    dense(c1, channels_, reduce_, where);
    dense(c2, int(reduce_.gemv.out), expand_, where);
    if (expand_.gemv.out != channels_) fail(where(), ": the expand convolution must give ", channels_, " channels");
    scratch_.resize(size_t(channels_) * 2 + reduce_.gemv.out);
    // Pixel chunks: enough for the threads, each summed in float vectors (at most kChunk pixels)
    // and the chunks' sums added in double, as the MEAN op accumulates. Small tensors stay on one
    // thread (waking the other costs more than it saves).
    constexpr int64_t kChunk = 256;
    if (pixels_ * channels_ < (1 << 15)) threads_ = 1;
    chunks_ = std::max<int64_t>((pixels_ + kChunk - 1) / kChunk, threads_);
    partial_.resize(size_t(chunks_ * channels_));
  }

  void run(float* const* b) override {
    const float* x = b[in_];
    float* y = b[out_];
    const int64_t chunks = chunks_;
    float* mean = scratch_.data();
    float* hidden = mean + channels_;
    for (int n = 0; n < batch_; ++n) {
      const float* xn = x + n * pixels_ * channels_;
      float* scale = has_mul_ ? hidden + reduce_.gemv.out : y + n * channels_;
      ThreadPool::global().parallel_for(threads_, chunks, [&](int64_t c, int) {
        sum_pixels(xn, c * pixels_ / chunks, (c + 1) * pixels_ / chunks, partial_.data() + c * channels_);
      });
      for (int ch = 0; ch < channels_; ++ch) {
        double s = 0;
        for (int64_t c = 0; c < chunks; ++c) s += partial_[size_t(c * channels_ + ch)];
        mean[ch] = float(s / double(pixels_));
      }
      reduce_.run(mean, hidden, 1);
      expand_.run(hidden, scale, threads_);  // (hidden, channels) weights: 221 KB in EfficientNet's last blocks
      int ch = 0;
      for (; ch + kLanes <= channels_; ch += kLanes) simd::store(scale + ch, simd::sigmoid(simd::load(scale + ch)));
      if (ch < channels_) {
        const int rest = channels_ - ch;
        simd::store_partial(scale + ch, simd::sigmoid(simd::load_partial(scale + ch, rest)), rest);
      }
      if (!has_mul_) continue;
      float* yn = y + n * pixels_ * channels_;
      ThreadPool::global().parallel_for(threads_, chunks, [&](int64_t c, int) {
        ops::scale_channels(xn, scale, yn, c * pixels_ / chunks, (c + 1) * pixels_ / chunks, channels_, lo_, hi_);
      });
    }
  }

 private:
  // The sums over pixels [p0, p1) of each channel, into out (channels_ floats): blocks of up to
  // kBlock vectors of channels held in registers while the pixels stream by.
  void sum_pixels(const float* x, int64_t p0, int64_t p1, float* out) const {
    constexpr int kBlock = 8;
    const int64_t c = channels_;
    for (int64_t c0 = 0; c0 < c; c0 += kBlock * kLanes) {
      const int64_t n = std::min<int64_t>(kBlock * kLanes, c - c0);
      const int full = int(n / kLanes), rest = int(n % kLanes);
      vf acc[kBlock + 1];
      for (auto& a : acc) a = simd::splat(0.f);
      for (int64_t p = p0; p < p1; ++p) {
        const float* xp = x + p * c + c0;
        for (int v = 0; v < full; ++v) acc[v] += simd::load(xp + v * kLanes);
        if (rest) acc[full] += simd::load_partial(xp + full * kLanes, rest);
      }
      for (int v = 0; v < full; ++v) simd::store(out + c0 + v * kLanes, acc[v]);
      if (rest) simd::store_partial(out + c0 + full * kLanes, acc[full], rest);
    }
  }

  // A 1x1 CONV_2D on a 1x1 map with `in` input channels, its weights copied (the engine releases
  // the plan's constants once prepared).
  template <class Where>
  static void dense(const OpContext& ctx, int in, SmallDense& d, const Where& where) {
    const ConvShape s = ops::conv_shape(ctx);
    if (s.kernel_h != 1 || s.kernel_w != 1 || s.groups != 1 || s.out_h() != 1 || s.out_w() != 1 || s.in_c != in)
      fail(where(), ": '", ctx.node.name, "' must be a 1x1 convolution of ", in, " channels on a 1x1 map");
    Gemv& g = d.gemv;
    g.in = s.in_c, g.out = s.out_c;
    g.set_weights(ctx.constant(ctx.input(1)));  // HWIO (1, 1, in, out) is the (in, out) matrix
    g.bias.assign(size_t(g.out), 0.f);
    if (ctx.has_input(2)) std::memcpy(g.bias.data(), ctx.constant(ctx.input(2)), size_t(g.out) * sizeof(float));
    std::tie(g.lo, g.hi) = activation_range(s.activation);
    try {
      d.post = parse_post_ops(ctx.node.str("epilogue", ""));
    } catch (const InvalidArgument& e) {
      fail(ctx.node.where(), ": ", e.what());
    }
    if (post_ops_need_residual(d.post)) fail(where(), ": '", ctx.node.name, "' may not add a residual");
  }

  int threads_ = 1;
  int in_ = -1, out_ = -1;
  int batch_ = 1, channels_ = 0;
  int64_t pixels_ = 0, chunks_ = 1;
  bool has_mul_ = true;
  float lo_ = 0, hi_ = 0;  // the MUL's fused activation
  SmallDense reduce_, expand_;
  AlignedBuffer scratch_;  // mean, hidden, scale
  AlignedBuffer partial_;       // per chunk: channel sums
};

}  // namespace

size_t squeeze_excite_nodes(const PlanNode& node) {
  return node.op == "MEAN" && node.has("se_nodes") ? size_t(node.int_attr("se_nodes")) : 0;
}

std::unique_ptr<Op> make_squeeze_excite_op(const Plan& plan, size_t first, int threads) {
  const size_t count = squeeze_excite_nodes(plan.nodes[first]);
  if (count < 4 || count > 6 || first + count > plan.nodes.size())
    fail(plan.nodes[first].where(), ": squeeze-excite group: se_nodes must be 4 to 6 nodes within the plan, got ", count);
  return std::make_unique<SqueezeExciteOp>(plan, first, count, threads);
}

}  // namespace layertune
