// One portable SIMD vocabulary for every kernel: GCC/Clang vector extensions compile to AVX-512,
// AVX2 or NEON (and to plain VFP code on ARMv6) from the same source.
#pragma once
#include <cstring>
#if defined(__AVX__) || defined(__SSE2__)
#include <immintrin.h>
#elif defined(__ARM_NEON)
#include <arm_neon.h>
#endif

namespace layertune::simd {

#if defined(__AVX512F__)
inline constexpr int kBytes = 64;
#elif defined(__AVX__)
inline constexpr int kBytes = 32;
#elif defined(__arm__) && !defined(__ARM_NEON)
// ARM without NEON (ARMv6, VFP): one float per "vector". GCC lowers wider generic vectors through
// the stack there (tools/arm_codegen.py counted the spills); scalars stay in VFP registers.
inline constexpr int kBytes = 4;
#else
inline constexpr int kBytes = 16;
#endif
inline constexpr int kLanes = kBytes / 4;

#if defined(__arm__) && !defined(__ARM_NEON)
// One lane: plain scalars. (A one-element GCC vector has no machine mode on ARMv6 and lives in
// memory; a float lives in a VFP register.)
using vf = float;
using vi = int;
template <class To, class From>
inline To convert(From v) { return static_cast<To>(v); }
inline float lane(vf v, int) { return v; }
#else
typedef float vf __attribute__((vector_size(kBytes)));
typedef int vi __attribute__((vector_size(kBytes)));
template <class To, class From>
inline To convert(From v) { return __builtin_convertvector(v, To); }
inline float lane(vf v, int l) { return v[l]; }
#endif

inline vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
// x - 0.0f is exact for every x (unlike x + 0.0f, which turns -0 into +0), so compilers emit a
// bare broadcast, fused into FMAs as a memory operand ({1to16} on AVX-512, vld1r/vdup on NEON).
inline vf splat(float x) { return x - vf{}; }
// Tails: the first n (< kLanes) lanes; the rest read as zero / are not written.
inline vf load_partial(const float* p, int n) {
  vf v = vf{};
  std::memcpy(&v, p, static_cast<size_t>(n) * sizeof(float));
  return v;
}
inline void store_partial(float* p, vf v, int n) {
  std::memcpy(p, &v, static_cast<size_t>(n) * sizeof(float));
}
inline vf load_n(const float* p, int n) { return n >= kLanes ? load(p) : load_partial(p, n); }
inline void store_n(float* p, vf v, int n) {
  if (n >= kLanes) store(p, v); else if (n > 0) store_partial(p, v, n);
}
inline vf clamp(vf v, vf lo, vf hi) {
  v = v < lo ? lo : v;
  return v > hi ? hi : v;
}

// e^x, vectorized: x = n ln2 + r, e^r by a degree-5 polynomial fitted for relative error on
// |r| <= ln2/2 (max 1.9e-7 over [-87, 88] in float32; tools/fit_exp.py), then scaled by 2^n.
// Inputs clamped to [-87.3, 88] (2^n stays a normal number). On AVX-512, n is rounded and 2^n
// applied by one instruction each (vrndscaleps, vscalefps); elsewhere n = round(x log2 e) by
// adding 1.5 * 2^23 + 127: the sum's low mantissa bits are then n + 127, the biased exponent of
// 2^n. n is read from those bits, not as sum - (1.5 * 2^23 + 127), which -funsafe-math-
// optimizations (pi3's NEON needs it) would fold back into x log2 e. Sigmoid and swish spend most
// of their time here: Zen 4 issues about one 512-bit multiply-add a cycle, so every instruction
// counts.
inline vf exp(vf x) {
  x = clamp(x, splat(-87.3365f), splat(88.0f));
#if defined(__AVX512F__)
  const vf nf = (vf)_mm512_roundscale_ps((__m512)(x * 1.44269504088896341f), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
  const vf t = x * 1.44269504088896341f + 12583039.0f;  // 1.5 * 2^23 + 127
  vi n;
  std::memcpy(&n, &t, sizeof n);
  n = (n & 0x7FFFFF) - (0x400000 + 127);
  const vf nf = convert<vf>(n);
#endif
  const vf r = x - nf * 0.693359375f - nf * -2.12194440e-4f;
  vf p = splat(8.2924943e-3f);
  p = p * r + 4.1897923e-2f;
  p = p * r + 1.6667600e-1f;
  p = p * r + 4.9999151e-1f;
  p = p * r + 9.9999970e-1f;
  const vf y = p * r + 1.0f;
#if defined(__AVX512F__)
  return (vf)_mm512_scalef_ps((__m512)y, (__m512)nf);
#else
  const vi bits = (n + 127) << 23;
  vf scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return y * scale;
#endif
}

// 1 / x to about float precision: the hardware's estimate refined by Newton steps (a division
// takes 16 cycles a vector on AVX-512; sigmoid and swish are one each), a division where there is
// no estimate.
inline vf reciprocal(vf x) {
#if defined(__AVX512F__)
  const vf e = (vf)_mm512_rcp14_ps((__m512)x);  // 2^-14
  return e * (2.f - x * e);
#elif defined(__AVX__)
  vf e = (vf)_mm256_rcp_ps((__m256)x);  // 2^-12
  e = e * (2.f - x * e);
  return e * (2.f - x * e);
#elif defined(__SSE2__)
  vf e = (vf)_mm_rcp_ps((__m128)x);
  e = e * (2.f - x * e);
  return e * (2.f - x * e);
#elif defined(__ARM_NEON)
  float32x4_t e = vrecpeq_f32((float32x4_t)x);  // 2^-8
  e = vmulq_f32(vrecpsq_f32((float32x4_t)x, e), e);
  e = vmulq_f32(vrecpsq_f32((float32x4_t)x, e), e);
  return (vf)vmulq_f32(vrecpsq_f32((float32x4_t)x, e), e);
#else
  return 1.f / x;
#endif
}

// The logistic function 1 / (1 + e^-x), from e = e^-|x| in (0, 1]: 1 / (1 + e) for x >= 0,
// e / (1 + e) below. The sum stays in [1, 2], so its reciprocal estimate never meets infinity, and
// a large negative x keeps its tiny result instead of rounding 1 + e^-x.
inline vf sigmoid(vf x) {
  const vf e = exp(x < 0.f ? x : -x);
  const vf r = reciprocal(1.f + e);
  return x < 0.f ? e * r : r;
}

// "avx512", "avx2", "neon", ... : the instruction set this build's vectors compile to.
const char* isa_name();

}  // namespace layertune::simd
