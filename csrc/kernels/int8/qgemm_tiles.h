// The int8 GEMM's register tiles for CPUs without AVX-512 VNNI (whose tile, inline assembly around
// vpdpbusd, lives in qconv.cc): NEON's widening multiply-accumulate by lane (armv7 and aarch64),
// aarch64's dot product (sdot, where the core has it: not the Pi 3's Cortex-A53), AVX2's vpmaddwd,
// and plain code (ARMv6, and the oracle of the others' layout).
//
// Every tile computes the int32 sums of up to R rows of A (`a_stride` bytes apart, kp bytes each, kp
// a multiple of 4) with one block of 16 output channels of B, and hands each row's 16 sums to
// `store(row, sums)`. A holds unsigned bytes x + 128 (the GEMM folds the 128 into the bias); with
// Flip the tile XORs each byte with 0x80 as it reads it (a row read in place from the signed input).
// The dot-product tile multiplies signed bytes instead: it reads x (Flip then turns packed x + 128
// back into x), and its bias folds in only the input's zero point (`signed_a`).
//
// B's layout is the tile's operand: `k_group` consecutive k of a channel side by side, 16 channels
// a group — byte (k / g) * 16 g + channel * g + k % g of a block (g = 4: sdot's four bytes a lane;
// g = 2: vpmaddwd's pair of words; g = 1: one k's 16 channels, widened once and used by every row).
#pragma once
#include <cstdint>
#include <cstring>
#include <utility>

#include "requantize.h"
#if defined(__ARM_NEON)
#include <arm_neon.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

namespace layertune::int8 {

// kAvx512Amx: Intel's AMX tiles (tdpbusd: 16 rows x 64 bytes of A times 16 x 16 x 4 of B, 16 x 16
// int32 sums a step), whose B tile is VNNI's layout; its GEMM lives in qconv.cc.
enum class QGemmIsa { kPortable, kNeon, kNeonDot, kAvx2, kAvx512Vnni, kAvx512Amx };

inline int k_group(QGemmIsa isa) {
  return isa == QGemmIsa::kAvx512Vnni || isa == QGemmIsa::kAvx512Amx || isa == QGemmIsa::kNeonDot ? 4
         : isa == QGemmIsa::kAvx2                                                                  ? 2
                                                                                                   : 1;
}
inline bool signed_a(QGemmIsa isa) { return isa == QGemmIsa::kNeonDot; }
// Rows a tile computes at once (the accumulators fill the ISA's registers: armv7 has 16 q registers,
// aarch64 32, AVX2 16 ymm).
inline int tile_rows_of(QGemmIsa isa) {
#if defined(__aarch64__)
  return isa == QGemmIsa::kPortable ? 1 : 4;
#else
  return isa == QGemmIsa::kNeon ? 2 : isa == QGemmIsa::kAvx2 ? 4 : 1;
#endif
}

namespace tiles {

inline uint32_t load4(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// One row, plain code: B one k at a time, 16 channels widened.
template <bool Flip, class Store>
inline void portable(const uint8_t* a, int64_t, int, const int8_t* b, int64_t kp, Store&& store) {
  v32 sum{};
  for (int64_t k = 0; k < kp; ++k) sum += int32_t(a[k] ^ (Flip ? 0x80 : 0)) * widen(b + k * kLanes);
  store(0, sum);
}

#if defined(__ARM_NEON)
// 16 lanes of four int32x4 registers -> the requantization's vector.
inline v32 to_v32(const int32x4_t (&c)[4]) {
  int32_t s[kLanes];
  for (int i = 0; i < 4; ++i) vst1q_s32(s + 4 * i, c[i]);
  v32 v;
  std::memcpy(&v, s, sizeof v);
  return v;
}

// k step J of eight: B's 16 channels at that k widened to int16 once, then per row four widening
// multiply-accumulates by lane J of the row's eight A values (smlal / vmlal.s16 by element).
template <int R, int J>
inline void neon_step(int32x4_t (&c)[R][4], const int16x8_t (&x)[R], const int8_t* bk) {
  const int8x16_t w = vld1q_s8(bk + J * kLanes);
  const int16x8_t lo = vmovl_s8(vget_low_s8(w)), hi = vmovl_s8(vget_high_s8(w));
  for (int r = 0; r < R; ++r) {
    const int16x4_t xr = J < 4 ? vget_low_s16(x[r]) : vget_high_s16(x[r]);
    c[r][0] = vmlal_lane_s16(c[r][0], vget_low_s16(lo), xr, J % 4);
    c[r][1] = vmlal_lane_s16(c[r][1], vget_high_s16(lo), xr, J % 4);
    c[r][2] = vmlal_lane_s16(c[r][2], vget_low_s16(hi), xr, J % 4);
    c[r][3] = vmlal_lane_s16(c[r][3], vget_high_s16(hi), xr, J % 4);
  }
}
template <int R, int... J>
inline void neon_steps(int32x4_t (&c)[R][4], const int16x8_t (&x)[R], const int8_t* bk, std::integer_sequence<int, J...>) {
  (neon_step<R, J>(c, x, bk), ...);
}

// R rows x 16 channels, eight k an iteration (A: eight bytes a row, widened to int16; the products
// of a byte and an int8 weight fit int16 x int16 -> int32 exactly).
template <int R, bool Flip, class Store>
inline void neon(const uint8_t* a, int64_t a_stride, int nr, const int8_t* b, int64_t kp, Store&& store) {
  int32x4_t c[R][4];
  const uint8_t* ar[R];
  for (int r = 0; r < R; ++r) {
    ar[r] = a + (r < nr ? r : nr - 1) * a_stride;
    for (int i = 0; i < 4; ++i) c[r][i] = vdupq_n_s32(0);
  }
  const uint8x8_t flip = vdup_n_u8(Flip ? 0x80 : 0);
  int16x8_t x[R];
  int64_t k = 0;
  for (; k + 8 <= kp; k += 8) {
    for (int r = 0; r < R; ++r) x[r] = vreinterpretq_s16_u16(vmovl_u8(veor_u8(vld1_u8(ar[r] + k), flip)));
    neon_steps<R>(c, x, b + k * kLanes, std::make_integer_sequence<int, 8>{});
  }
  if (k < kp) {  // four k left (kp is a multiple of 4); a row may end there, so four bytes are read
    for (int r = 0; r < R; ++r) x[r] = vreinterpretq_s16_u16(vmovl_u8(veor_u8(vcreate_u8(load4(ar[r] + k)), flip)));
    neon_steps<R>(c, x, b + k * kLanes, std::make_integer_sequence<int, 4>{});
  }
  for (int r = 0; r < nr; ++r) store(r, to_v32(c[r]));
}
#endif

#if defined(__aarch64__) && defined(__ARM_NEON)
#define LAYERTUNE_NEON_DOT 1
// Group G of four k: four sdot per row, each four channels x four k against the row's bytes 4G..4G+3.
template <int R, int G>
__attribute__((target("arch=armv8.2-a+dotprod"), always_inline)) inline void dot_group(int32x4_t (&c)[R][4],
                                                                                       const int8x16_t (&x)[R],
                                                                                       const int8_t* bg) {
  int8x16_t w[4];
  for (int i = 0; i < 4; ++i) w[i] = vld1q_s8(bg + G * 64 + i * 16);
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < 4; ++i) c[r][i] = vdotq_laneq_s32(c[r][i], w[i], x[r], G);
}

// R rows x 16 channels, sixteen k an iteration (A: sixteen signed bytes a row).
template <int R, bool Flip, class Store>
__attribute__((target("arch=armv8.2-a+dotprod"))) void neon_dot(const uint8_t* a, int64_t a_stride, int nr,
                                                                 const int8_t* b, int64_t kp, Store&& store) {
  int32x4_t c[R][4];
  const int8_t* ar[R];
  for (int r = 0; r < R; ++r) {
    ar[r] = reinterpret_cast<const int8_t*>(a) + (r < nr ? r : nr - 1) * a_stride;
    for (int i = 0; i < 4; ++i) c[r][i] = vdupq_n_s32(0);
  }
  const int8x16_t flip = vdupq_n_s8(Flip ? -128 : 0);
  int8x16_t x[R];
  int64_t k = 0;
  for (; k + 16 <= kp; k += 16) {
    for (int r = 0; r < R; ++r) x[r] = veorq_s8(vld1q_s8(ar[r] + k), flip);
    const int8_t* bk = b + k * kLanes;
    dot_group<R, 0>(c, x, bk);
    dot_group<R, 1>(c, x, bk);
    dot_group<R, 2>(c, x, bk);
    dot_group<R, 3>(c, x, bk);
  }
  if (k < kp) {  // 4, 8 or 12 k left: the row's last bytes, zero-extended to sixteen
    const int64_t left = kp - k;
    for (int r = 0; r < R; ++r) {
      int8_t tail[16] = {};
      std::memcpy(tail, ar[r] + k, size_t(left));
      x[r] = veorq_s8(vld1q_s8(tail), flip);
    }
    const int8_t* bk = b + k * kLanes;
    dot_group<R, 0>(c, x, bk);
    if (left > 4) dot_group<R, 1>(c, x, bk);
    if (left > 8) dot_group<R, 2>(c, x, bk);
  }
  for (int r = 0; r < nr; ++r) store(r, to_v32(c[r]));
}
#endif

#if defined(__x86_64__) && defined(__GNUC__)
#define LAYERTUNE_INT8_AVX2 1
// R rows x 16 channels, four k an iteration: B's two pairs of k sign-extended to words (channels
// 0-7 and 8-15 of each pair), each row's four bytes zero-extended and broadcast a pair at a time,
// vpmaddwd summing each pair into the channel's int32 lane. (vpmaddubsw would take the bytes as they
// are, but saturates its int16 pair sums: 255 x 127 x 2 does not fit.)
template <int R, bool Flip, class Store>
__attribute__((target("avx2"))) void avx2(const uint8_t* a, int64_t a_stride, int nr, const int8_t* b, int64_t kp,
                                          Store&& store) {
  __m256i c[R][2];
  const uint8_t* ar[R];
  for (int r = 0; r < R; ++r) {
    ar[r] = a + (r < nr ? r : nr - 1) * a_stride;
    c[r][0] = c[r][1] = _mm256_setzero_si256();
  }
  for (int64_t k = 0; k < kp; k += 4) {
    const int8_t* bk = b + k * kLanes;
    const __m256i w00 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bk)));
    const __m256i w01 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bk + 16)));
    const __m256i w10 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bk + 32)));
    const __m256i w11 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bk + 48)));
    for (int r = 0; r < R; ++r) {
      const __m128i words = _mm_cvtepu8_epi16(_mm_cvtsi32_si128(int(load4(ar[r] + k) ^ (Flip ? 0x80808080u : 0u))));
      const __m256i x0 = _mm256_broadcastd_epi32(words), x1 = _mm256_broadcastd_epi32(_mm_srli_si128(words, 4));
      c[r][0] = _mm256_add_epi32(c[r][0], _mm256_add_epi32(_mm256_madd_epi16(x0, w00), _mm256_madd_epi16(x1, w10)));
      c[r][1] = _mm256_add_epi32(c[r][1], _mm256_add_epi32(_mm256_madd_epi16(x0, w01), _mm256_madd_epi16(x1, w11)));
    }
  }
  for (int r = 0; r < nr; ++r) {
    v32 v;
    std::memcpy(&v, &c[r][0], 32);
    std::memcpy(reinterpret_cast<char*>(&v) + 32, &c[r][1], 32);
    store(r, v);
  }
}
#endif

}  // namespace tiles
}  // namespace layertune::int8
