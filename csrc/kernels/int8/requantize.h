// The two arithmetics that requantize a quantized layer's int32 sums to its int8 output:
// - tflite, TFLite's reference kernels' fixed point: a real multiplier as a Q31 fixed-point multiplier and
//   a power-of-two shift, and the rounding of MultiplyByQuantizedMultiplier (gemmlowp's
//   SaturatingRoundingDoublingHighMul, then RoundingDivideByPOT);
// - xnnpack, XNNPACK's fp32 (what LiteRT runs by default on a CPU): the sum times the real multiplier in
//   float32, clamped to the output's bounds, rounded to nearest even. A few instructions instead of
//   a dozen, which in layers of few input channels is most of their time.
// The scalar functions are the definitions the reference kernels use; the vector functions are the
// same arithmetic on int32 lanes, bit for bit, for the optimized kernels.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>
#if defined(__AVX512F__)
#include <immintrin.h>
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

namespace layertune::int8 {

struct Multiplier {
  int32_t m = 0;  // in [2^30, 2^31): the real multiplier is m * 2^(shift - 31)
  int shift = 0;
};

// TFLite's QuantizeMultiplier.
inline Multiplier quantize_multiplier(double real) {
  Multiplier q;
  if (real == 0.0) return q;
  int shift = 0;
  const double fraction = std::frexp(real, &shift);
  int64_t m = static_cast<int64_t>(std::round(fraction * double(int64_t(1) << 31)));
  if (m == (int64_t(1) << 31)) {
    m /= 2;
    ++shift;
  }
  if (shift < -31) {
    shift = 0;
    m = 0;
  }
  q.m = int32_t(m);
  q.shift = shift;
  return q;
}

inline int32_t saturating_rounding_doubling_high_mul(int32_t a, int32_t b) {
  if (a == b && a == std::numeric_limits<int32_t>::min()) return std::numeric_limits<int32_t>::max();
  const int64_t ab = int64_t(a) * int64_t(b);
  const int64_t nudge = ab >= 0 ? (int64_t(1) << 30) : (1 - (int64_t(1) << 30));
  return int32_t((ab + nudge) / (int64_t(1) << 31));
}

inline int32_t rounding_divide_by_pot(int32_t x, int exponent) {
  const int32_t mask = int32_t((int64_t(1) << exponent) - 1);
  const int32_t remainder = x & mask;
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

// TFLite's MultiplyByQuantizedMultiplier: x * real, rounded.
inline int32_t multiply(int32_t x, Multiplier q) {
  const int left = q.shift > 0 ? q.shift : 0, right = q.shift > 0 ? 0 : -q.shift;
  return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(int32_t(uint32_t(x) << left), q.m), right);
}

inline int8_t saturate(int32_t v, int32_t lo, int32_t hi) { return int8_t(std::min(std::max(v, lo), hi)); }

enum class Requantization { kTflite, kXnnpack };
// "tflite" / "xnnpack" (the plan attribute `requantization`'s values) -> *out; false for another name.
bool parse_requantization(const std::string& name, Requantization* out);

// a * b and a / b rounded as one IEEE float32 operation each, also under pi3's
// -funsafe-math-optimizations: there GCC hoisted 1 / output_scale out of the loop over channels
// and multiplied by it (-freciprocal-math), and a scale 1 ulp off moved an output across a
// rounding boundary. Through volatile operands, each is one operation it cannot rewrite.
inline float ieee_mul(float a, float b) {
  volatile float x = a, y = b;
  return x * y;
}
inline float ieee_add(float a, float b) {
  volatile float x = a, y = b;
  return x + y;
}
inline float ieee_div(float a, float b) {
  volatile float x = a, y = b;
  return x / y;
}
// XNNPACK's scale of an output channel: computed in float32, in this order.
inline float fp32_scale(float input_scale, float weight_scale, float output_scale) {
  return ieee_div(ieee_mul(input_scale, weight_scale), output_scale);
}
// XNNPACK's fp32 requantization of one sum (TFLite's reference has no such kernel: this is its
// definition here): zero_point + round-to-nearest-even(clamp(acc * scale, lo - zp, hi - zp)).
inline int8_t requantize_fp32(int32_t acc, float scale, int32_t zero_point, int32_t lo, int32_t hi) {
  const float f = std::min(std::max(float(acc) * scale, float(lo - zero_point)), float(hi - zero_point));
  return int8_t(int32_t(std::nearbyint(f)) + zero_point);
}

// Vectors of int32 lanes (GCC vector extensions; 16 lanes on AVX-512, split into the ISA's
// registers elsewhere).
inline constexpr int kLanes = 16;
typedef int32_t v32 __attribute__((vector_size(kLanes * 4)));
typedef uint32_t vu32 __attribute__((vector_size(kLanes * 4)));
typedef int8_t v8 __attribute__((vector_size(kLanes)));
typedef float v32f __attribute__((vector_size(kLanes * 4)));
inline v32f loadf(const float* p) {
  v32f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline v32f splatf(float x) { return x - v32f{}; }
// Round to nearest, ties to even (the default rounding mode). Not through adding and subtracting
// 1.5 x 2^23: ARM's -funsafe-math-optimizations folds that away.
inline v32 round_even(v32f f) {
#if defined(__AVX512F__)
  return v32(_mm512_cvtps_epi32(__m512(f)));
#elif defined(__aarch64__)
  // fcvtns: to nearest, ties to even, in one instruction per four lanes (rintf lane by lane moved
  // every lane out to a scalar register and back: most of a requantization on a Cortex-A53).
  v32 r;
  for (int i = 0; i < kLanes; i += 4) {
    float32x4_t x;
    std::memcpy(&x, reinterpret_cast<const float*>(&f) + i, sizeof x);
    const int32x4_t y = vcvtnq_s32_f32(x);
    std::memcpy(reinterpret_cast<int32_t*>(&r) + i, &y, sizeof y);
  }
  return r;
#else
  for (int i = 0; i < kLanes; ++i) f[i] = __builtin_rintf(f[i]);
  return __builtin_convertvector(f, v32);
#endif
}
#if defined(__aarch64__)
// op on each four lanes of a and b as NEON registers: GCC lowers a comparison and select of its
// 16-lane generic vectors to a compare and a select per lane (fcmpe / fcsel, 32 instructions).
template <class Op>
inline v32f by_quarters(v32f a, v32f b, Op op) {
  v32f r;
  for (int i = 0; i < kLanes; i += 4) {
    float32x4_t x, y;
    std::memcpy(&x, reinterpret_cast<const float*>(&a) + i, sizeof x);
    std::memcpy(&y, reinterpret_cast<const float*>(&b) + i, sizeof y);
    const float32x4_t z = op(x, y);
    std::memcpy(reinterpret_cast<float*>(&r) + i, &z, sizeof z);
  }
  return r;
}
inline v32f minf(v32f a, v32f b) { return by_quarters(a, b, [](float32x4_t x, float32x4_t y) { return vminq_f32(x, y); }); }
inline v32f maxf(v32f a, v32f b) { return by_quarters(a, b, [](float32x4_t x, float32x4_t y) { return vmaxq_f32(x, y); }); }
#else
inline v32f minf(v32f a, v32f b) { return a < b ? a : b; }
inline v32f maxf(v32f a, v32f b) { return a > b ? a : b; }
#endif

inline v32 load32(const int32_t* p) {
  v32 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline v32 splat32(int32_t x) { return x - v32{}; }

// 16 int8 -> int32 lanes (n < 16: the first n, the rest 0), and back (saturating; n lanes written).
inline v32 widen(const int8_t* p, int n = kLanes) {
#if defined(__AVX512F__)
  const __m128i b = n == kLanes ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(p))
                                : _mm_maskz_loadu_epi8(__mmask16((1u << n) - 1), p);
  return v32(_mm512_cvtepi8_epi32(b));
#elif defined(__aarch64__)
  // sxtl twice (GCC converted the generic vectors lane by lane through scalar registers)
  int8x16_t b;
  if (n == kLanes) {
    b = vld1q_s8(p);
  } else {
    int8_t tmp[kLanes] = {};
    std::memcpy(tmp, p, size_t(n));
    b = vld1q_s8(tmp);
  }
  const int16x8_t lo = vmovl_s8(vget_low_s8(b)), hi = vmovl_s8(vget_high_s8(b));
  const int32x4_t q[4] = {vmovl_s16(vget_low_s16(lo)), vmovl_s16(vget_high_s16(lo)), vmovl_s16(vget_low_s16(hi)),
                          vmovl_s16(vget_high_s16(hi))};
  v32 v;
  std::memcpy(&v, q, sizeof v);
  return v;
#else
  v8 b{};
  std::memcpy(&b, p, size_t(n));
  return __builtin_convertvector(b, v32);
#endif
}
inline void narrow_store(int8_t* p, v32 v, int n = kLanes) {
#if defined(__AVX512F__)
  // vpmovsdb to a register, then a plain store: its memory form is microcoded on AMD's Zen 4.
  const __m128i b = _mm512_cvtsepi32_epi8(__m512i(v));
  if (n == kLanes) _mm_storeu_si128(reinterpret_cast<__m128i*>(p), b);
#if defined(__AVX512BW__) && defined(__AVX512VL__)
  else _mm_mask_storeu_epi8(p, __mmask16((1u << n) - 1), b);
#else  // a byte-masked 128-bit store needs BW and VL; the memory form needs only AVX512F
  else _mm512_mask_cvtsepi32_storeu_epi8(p, __mmask16((1u << n) - 1), __m512i(v));
#endif
#elif defined(__aarch64__)
  // Saturating narrows, int32 -> int16 -> int8 (sqxtn / vqmovn), as vpmovsdb saturates.
  int32x4_t q[4];
  std::memcpy(q, &v, sizeof v);
  const int16x8_t lo = vcombine_s16(vqmovn_s32(q[0]), vqmovn_s32(q[1])), hi = vcombine_s16(vqmovn_s32(q[2]), vqmovn_s32(q[3]));
  const int8x16_t b = vcombine_s8(vqmovn_s16(lo), vqmovn_s16(hi));
  if (n == kLanes) {
    vst1q_s8(p, b);
  } else {
    int8_t tmp[kLanes];
    vst1q_s8(tmp, b);
    std::memcpy(p, tmp, size_t(n));
  }
#else
  // Saturated first, as vpmovsdb does: a plain conversion keeps the low byte (300 became 44), and
  // the kernels leave the clamp to this store where the bounds are int8's own.
  v = v < -128 ? -128 : v;
  v = v > 127 ? 127 : v;
  const v8 b = __builtin_convertvector(v, v8);
  std::memcpy(p, &b, size_t(n));
#endif
}

// min(max(v, lo), hi) per lane.
inline v32 clamp32(v32 v, v32 lo, v32 hi) {
#if defined(__AVX512F__)
  return v32(_mm512_min_epi32(_mm512_max_epi32(__m512i(v), __m512i(lo)), __m512i(hi)));
#else
  v = v < lo ? lo : v;
  return v > hi ? hi : v;
#endif
}

// What `requantize` needs of 16 channels' multipliers, prepared once for all the vectors of those
// channels: the multiplier (and for AVX-512's odd lanes a copy in the low halves), the shift split
// as in `multiply`, the rounding's mask and half, and whether any lane shifts left at all.
struct RequantLanes {
  v32 m, m_odd, left, right, mask, half;
  bool any_left = true;
};
inline RequantLanes requant_lanes(v32 m, v32 left, v32 right) {
  RequantLanes l;
  l.m = l.m_odd = m;
#if defined(__AVX512F__)
  l.m_odd = v32(_mm512_srli_epi64(__m512i(m), 32));
#endif
  l.left = left;
  l.right = right;
  l.mask = (splat32(1) << right) - 1;
  l.half = l.mask >> 1;
  l.any_left = false;
  for (int i = 0; i < kLanes; ++i) l.any_left |= left[i] != 0;
  return l;
}

// Per-lane multiply(x, {m, shift}): the high-mul as (x*m + 2^30) >> 31 in 64 bits — the same as
// gemmlowp's nudge-and-truncate for every product (m is never INT32_MIN, so no saturation) —
// then the rounding right shift: +1 where the remainder exceeds half (half + 1 below zero).
inline v32 requantize(v32 x, const RequantLanes& l) {
  if (l.any_left) x = v32(vu32(x) << vu32(l.left));
  v32 r;
#if defined(__AVX512F__)
  const __m512i xv = __m512i(x), nudge = _mm512_set1_epi64(int64_t(1) << 30);
  const __m512i even = _mm512_add_epi64(_mm512_mul_epi32(xv, __m512i(l.m)), nudge);
  const __m512i odd = _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(xv, 32), __m512i(l.m_odd)), nudge);
  // bits 31..62 of each product: the low half of even >> 31, the high half of odd << 1
  r = v32(_mm512_mask_blend_epi32(__mmask16(0xAAAA), _mm512_srli_epi64(even, 31), _mm512_add_epi64(odd, odd)));
#else
  for (int i = 0; i < kLanes; ++i) r[i] = int32_t((int64_t(x[i]) * l.m[i] + (int64_t(1) << 30)) >> 31);
#endif
  const v32 threshold = l.half - (r >> 31);  // r >> 31 is -1 below zero
  return (r >> l.right) - ((r & l.mask) > threshold);  // a true comparison is -1
}
// The lanes of one multiplier for every lane (a per-tensor requantization).
inline RequantLanes requant_lanes(Multiplier q) {
  return requant_lanes(splat32(q.m), splat32(std::max(q.shift, 0)), splat32(std::max(-q.shift, 0)));
}

}  // namespace layertune::int8
