// Helpers shared by the graph ops.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "../../graph/op.h"
#include "layertune/conv_params.h"
#include "layertune/methods.h"
#include "layertune/simd.h"
#include "layertune/status.h"

namespace layertune::ops {

// The kernel choice stored in a convolution node ("kernel.method", "kernel.<param>", checked against
// the method table): `fallback` when the node names no method, `reference` on the reference engine.
inline MethodParams kernel_choice(const OpContext& ctx, const std::string& fallback, const std::string& reference) {
  MethodParams p;
  p.method = ctx.reference_kernels ? reference : ctx.node.str("kernel.method", fallback);
  p.threads = ctx.threads;
  if (ctx.reference_kernels) return p;
  for (const auto& [key, attr] : ctx.node.attrs) {
    if (key.rfind("kernel.", 0) != 0 || key == "kernel.method") continue;
    try {
      p.set(key.substr(7), int(ctx.node.int_attr(key)));
    } catch (const InvalidArgument& e) {
      fail(ctx.node.where(), ": ", e.what());
    }
  }
  return p;
}

inline std::pair<float, float> fused_activation(const OpContext& ctx) {
  return activation_range(parse_activation(ctx.node.str("activation", "none")));
}

inline void clamp_range(float* p, int64_t n, float lo, float hi) {
  if (lo == -std::numeric_limits<float>::infinity() && hi == std::numeric_limits<float>::infinity()) return;
  for (int64_t i = 0; i < n; ++i) p[i] = std::min(std::max(p[i], lo), hi);
}

// y = clamp(x * scale, lo, hi) over pixels [p0, p1) of `channels` floats each, one scale a
// channel (a squeeze-excite gate: its op's MUL, or a convolution's input scale).
inline void scale_channels(const float* x, const float* scale, float* y, int64_t p0, int64_t p1, int64_t channels,
                           float lo, float hi) {
  using simd::kLanes;
  const simd::vf vlo = simd::splat(lo), vhi = simd::splat(hi);
  const int rest = int(channels % kLanes);
  for (int64_t p = p0; p < p1; ++p) {
    const float* xp = x + p * channels;
    float* yp = y + p * channels;
    int64_t ch = 0;
    for (; ch + kLanes <= channels; ch += kLanes)
      simd::store(yp + ch, simd::clamp(simd::load(xp + ch) * simd::load(scale + ch), vlo, vhi));
    if (rest)
      simd::store_partial(yp + ch, simd::clamp(simd::load_partial(xp + ch, rest) * simd::load_partial(scale + ch, rest), vlo, vhi), rest);
  }
}

// Product of shape[from:to] (to clipped to the rank).
inline int64_t product(const std::vector<int>& shape, size_t from = 0, size_t to = SIZE_MAX) {
  const auto end = shape.begin() + std::min(to, shape.size());
  int64_t n = 1;
  for (auto it = shape.begin() + std::min(from, shape.size()); it < end; ++it) n *= *it;
  return n;
}

inline void expect_rank(const OpContext& ctx, int tensor, size_t rank) {
  if (ctx.shape(tensor).size() != rank)
    fail(ctx.node.where(), ": tensor '", ctx.plan.tensors[tensor].name, "' must have rank ", rank);
}

inline void expect_elements(const OpContext& ctx, int a, int b) {
  if (ctx.elements(a) != ctx.elements(b))
    fail(ctx.node.where(), ": '", ctx.plan.tensors[a].name, "' and '", ctx.plan.tensors[b].name,
         "' must have the same number of elements");
}

// Two NHWC tensors with the same batch and channels (pooling, resizing).
inline void expect_nhwc_pair(const OpContext& ctx, int in, int out) {
  expect_rank(ctx, in, 4);
  expect_rank(ctx, out, 4);
  const auto &xs = ctx.shape(in), &os = ctx.shape(out);
  if (xs[0] != os[0] || xs[3] != os[3]) fail(ctx.node.where(), ": output shape does not match the input");
}

// An attribute holding exactly n integers.
inline std::vector<int64_t> ints_n(const OpContext& ctx, const char* key, size_t n) {
  auto v = ctx.node.ints(key);
  if (v.size() != n) fail(ctx.node.where(), ": attribute '", key, "' must hold ", n, " integers");
  return v;
}

// The layer a CONV_2D / DEPTHWISE_CONV_2D node computes: input 0 (NHWC), HWIO weights input 1,
// its strides / dilations / pads / groups / activation; InvalidArgument naming the node otherwise.
inline ConvShape conv_shape(const OpContext& ctx) {
  const int in = ctx.input(0), w = ctx.input(1);
  expect_rank(ctx, in, 4);
  expect_rank(ctx, w, 4);
  const auto& xs = ctx.shape(in);
  const auto& ws = ctx.shape(w);
  auto st = ints_n(ctx, "strides", 2), dil = ints_n(ctx, "dilations", 2), pads = ints_n(ctx, "pads", 4);
  const ConvShape::Fields fields = {xs[0], xs[1], xs[2], xs[3], ws[3], ws[0], ws[1], int(st[0]), int(st[1]),
                                    int(dil[0]), int(dil[1]), int(pads[0]), int(pads[1]), int(pads[2]),
                                    int(pads[3]), int(ctx.node.int_attr("groups", 1))};
  try {
    ConvShape s = ConvShape::from_fields(fields, parse_activation(ctx.node.str("activation", "none")));
    if (ws[2] * s.groups != s.in_c) fail("weights do not match the input channels and groups");
    return s;
  } catch (const InvalidArgument& e) {
    fail(ctx.node.where(), ": ", e.what());
  }
}

// Row-major strides of a shape.
// RESIZE_*'s source step per output pixel along an axis of `in` pixels resized to `out`.
inline float resize_scale(int in, int out, bool align_corners) {
  return align_corners && out > 1 ? float(in - 1) / float(out - 1) : float(in) / float(out);
}
// RESIZE_NEAREST_NEIGHBOR's source index of output index o (TFLite's rounding for each mode).
inline int nearest_source(int o, float scale, int size, bool align_corners, bool half_pixel_centers) {
  const float v = (float(o) + (half_pixel_centers ? 0.5f : 0.f)) * scale;
  const int i = std::min(align_corners ? int(std::round(v)) : int(std::floor(v)), size - 1);
  return half_pixel_centers ? std::max(0, i) : i;
}

inline std::vector<int64_t> strides_of(const std::vector<int>& shape) {
  std::vector<int64_t> s(shape.size(), 1);
  for (int i = int(shape.size()) - 2; i >= 0; --i) s[i] = s[i + 1] * shape[i + 1];
  return s;
}

}  // namespace layertune::ops
