// The arithmetic of an int8 ADD of two tensors of one shape, in one place for the ADD op and for a
// convolution that adds a residual in its epilogue (graph/fusion.py's `add` form on int8 layers):
// the fused form computes the convolution's int8 output in registers and then exactly this, so
// the two agree bit for bit.
// - tflite: TFLite's reference kernel (each input left-shifted 20 bits and rescaled by its Q31
//   multiplier to twice the larger scale, summed, rescaled to the output);
// - xnnpack: XNNPACK's (each input times an integer multiplier, 2^shift times its scale ratio to the
//   output; the sum shifted right, rounded half up). Where XNNPACK refuses the ratios (outside
//   [2^-10, 2^8)) LiteRT falls back to TFLite's kernel, and so does this.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "requantize.h"

namespace layertune::int8 {

class AddArithmetic {
 public:
  AddArithmetic() = default;
  // Inputs (scale, zero point) 1 and 2, the output's, its activation bounds (the output's
  // integers), and the arithmetic the model asks for.
  AddArithmetic(float s1, int32_t z1, float s2, int32_t z2, float so, int32_t zo, int32_t lo, int32_t hi,
                Requantization requantization)
      : z1_(z1), z2_(z2), zo_(zo), lo_(lo), hi_(hi) {
    const double twice_max = 2.0 * std::max(s1, s2);
    m1_ = quantize_multiplier(s1 / twice_max);
    m2_ = quantize_multiplier(s2 / twice_max);
    mo_ = quantize_multiplier(twice_max / (double(1 << kLeftShift) * so));
    xnnpack_ = requantization == Requantization::kXnnpack && xnnpack_multipliers(ieee_div(s1, so), ieee_div(s2, so));
  }

  // What `of` needs, as vectors: built once per loop (kept in registers across its int8 stores).
  struct Lanes {
    bool xnnpack;
    v32 z1, z2, zo, lo, hi;           // tflite: bounds in the output's integers
    RequantLanes m1, m2, mo;
    v32 xm1, xm2, xbias, xlo, xhi;    // xnnpack: bounds less the zero point
    int shift;
  };
  Lanes lanes() const {
    return {xnnpack_, splat32(z1_), splat32(z2_), splat32(zo_), splat32(lo_), splat32(hi_),
            requant_lanes(m1_), requant_lanes(m2_), requant_lanes(mo_), splat32(xm1_), splat32(xm2_),
            splat32(xbias_), splat32(lo_ - zo_), splat32(hi_ - zo_), shift_};
  }
  // The output lanes (in its bounds) of inputs x1 and x2 (int8 values as int32 lanes).
  __attribute__((always_inline)) static inline v32 of(v32 x1, v32 x2, const Lanes& l) {
    return l.xnnpack ? of_xnnpack(x1, x2, l) : of_tflite(x1, x2, l);
  }
  // Each arithmetic alone (a kernel that knows which at compile time).
  __attribute__((always_inline)) static inline v32 of_xnnpack(v32 x1, v32 x2, const Lanes& l) {
    return clamp32((l.xbias + x1 * l.xm1 + x2 * l.xm2) >> l.shift, l.xlo, l.xhi) + l.zo;
  }
  __attribute__((always_inline)) static inline v32 of_tflite(v32 x1, v32 x2, const Lanes& l) {
    const v32 s1 = requantize((x1 - l.z1) << kLeftShift, l.m1);
    const v32 s2 = requantize((x2 - l.z2) << kLeftShift, l.m2);
    return clamp32(requantize(s1 + s2, l.mo) + l.zo, l.lo, l.hi);
  }

 private:
  static constexpr int kLeftShift = 20;

  // XNNPACK's multipliers: the larger ratio's exponent e sets the shift 20 - e, and each ratio
  // times 2^shift, rounded to nearest even, is its multiplier. False where XNNPACK refuses.
  bool xnnpack_multipliers(float r1, float r2) {
    for (float r : {r1, r2})
      if (!(r >= 0x1.0p-10f && r < 0x1.0p+8f)) return false;
    int exponent = 0;
    std::frexp(std::max(r1, r2), &exponent);  // max = f 2^exponent, f in [0.5, 1)
    shift_ = 20 - (exponent - 1);
    xm1_ = int32_t(std::nearbyint(std::ldexp(r1, shift_)));
    xm2_ = int32_t(std::nearbyint(std::ldexp(r2, shift_)));
    xbias_ = (int32_t(1) << (shift_ - 1)) - xm1_ * z1_ - xm2_ * z2_;
    return true;
  }

  bool xnnpack_ = false;
  int shift_ = 0;
  int32_t xm1_ = 0, xm2_ = 0, xbias_ = 0;
  Multiplier m1_, m2_, mo_;
  int32_t z1_ = 0, z2_ = 0, zo_ = 0, lo_ = -128, hi_ = 127;
};

// y[i] = ADD(x1[i], x2[i]) for i < n (y may be x1: a fused ADD over outputs already stored).
inline void add_int8(const int8_t* x1, const int8_t* x2, int8_t* y, int64_t n, const AddArithmetic::Lanes& lanes) {
  const AddArithmetic::Lanes l = lanes;  // a copy: in locals, not reloaded after each int8 store
  for (int64_t i = 0; i < n; i += kLanes) {
    const int c = int(std::min<int64_t>(kLanes, n - i));
    narrow_store(y + i, AddArithmetic::of(widen(x1 + i, c), widen(x2 + i, c), l), c);
  }
}

}  // namespace layertune::int8
