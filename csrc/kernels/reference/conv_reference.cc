// The oracle: plain loops with double accumulation, written to be obviously right. Every other
// method is checked against it, in tests and on the device. Never a tuning candidate.
#include <algorithm>
#include <cmath>
#include <vector>

#include "layertune/conv.h"
#include "layertune/thread_pool.h"

namespace layertune {
namespace {

class ReferenceConv final : public ConvKernel {
 public:
  ReferenceConv(const ConvShape& s, const MethodParams& p, const float* w, const float* b)
      : ConvKernel(s, p), weights_(w, w + s.weight_size()), bias_(s.out_c, 0.f) {
    if (b) bias_.assign(b, b + s.out_c);
  }

  void run(const float* in, float* out) override {
    const ConvShape& s = shape_;
    const int oh = s.out_h(), ow = s.out_w(), cig = s.in_c_per_group(), cog = s.out_c_per_group();
    const auto [lo, hi] = activation_range(s.activation);
    ThreadPool::global().parallel_for(params_.threads, int64_t(s.batch) * oh, [&](int64_t row, int) {
      const int n = int(row / oh), oy = int(row % oh);
      for (int ox = 0; ox < ow; ++ox) {
        for (int oc = 0; oc < s.out_c; ++oc) {
          const int g = oc / cog;
          double acc = bias_[oc];
          for (int ky = 0; ky < s.kernel_h; ++ky) {
            const int iy = oy * s.stride_h - s.pad_top + ky * s.dilation_h;
            if (iy < 0 || iy >= s.in_h) continue;
            for (int kx = 0; kx < s.kernel_w; ++kx) {
              const int ix = ox * s.stride_w - s.pad_left + kx * s.dilation_w;
              if (ix < 0 || ix >= s.in_w) continue;
              const float* x = in + ((int64_t(n) * s.in_h + iy) * s.in_w + ix) * s.in_c + g * cig;
              const float* w = weights_.data() + (int64_t(ky) * s.kernel_w + kx) * cig * s.out_c + oc;
              for (int ci = 0; ci < cig; ++ci) acc += double(x[ci]) * double(w[int64_t(ci) * s.out_c]);
            }
          }
          float v = float(acc);
          v = v < lo ? lo : v;
          v = v > hi ? hi : v;
          const int64_t at = ((int64_t(n) * oh + oy) * ow + ox) * s.out_c + oc;
          out[at] = post_ops().empty() ? v : epilogue(v, at);
        }
      }
    });
  }

 private:
  // The fused tail by its definition, in double (not the kernels' shared vector code, which the
  // reference is there to check).
  float epilogue(double v, int64_t at) const {
    for (const PostOp& op : post_ops()) {
      if (op.kind == PostOp::Kind::kSwish) v = v / (1.0 + std::exp(-v));
      else if (op.kind == PostOp::Kind::kHardSwish) v = v * std::min(std::max(v + 3.0, 0.0), 6.0) / 6.0;
      else v = std::min(std::max(v + double(residual()[at]), double(op.lo)), double(op.hi));
    }
    return float(v);
  }

  std::vector<float> weights_;
  std::vector<float> bias_;
};

}  // namespace

std::unique_ptr<ConvKernel> make_reference_conv(const ConvShape& s, const MethodParams& p, const float* w,
                                                const float* b) {
  return std::make_unique<ReferenceConv>(s, p, w, b);
}

}  // namespace layertune
