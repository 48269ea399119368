#include "qconv.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "layertune/aligned_buffer.h"
#include "layertune/methods.h"
#include "layertune/status.h"
#include "layertune/thread_pool.h"
#include "qgemm_tiles.h"
#include "../amx/amx.h"
#if defined(__aarch64__)
#include <sys/auxv.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define LAYERTUNE_X86_VNNI 1
#endif

namespace layertune::int8 {

std::pair<int32_t, int32_t> activation_bounds(Activation a, float scale, int32_t zero_point) {
  auto quantize = [&](float f) { return zero_point + int32_t(std::round(f / scale)); };
  int32_t lo = -128, hi = 127;
  if (a == Activation::kRelu || a == Activation::kRelu6) lo = std::max(lo, quantize(0.f));
  if (a == Activation::kRelu6) hi = std::min(hi, quantize(6.f));
  if (a == Activation::kReluN1To1) {
    lo = std::max(lo, quantize(-1.f));
    hi = std::min(hi, quantize(1.f));
  }
  return {lo, hi};
}

namespace {

// TFLite's reference_integer_ops::ConvPerChannel / DepthwiseConvPerChannel, as one grouped loop
// (with XNNPACK's fp32 requantization when the layer asks for it).
class ReferenceQConv : public QConvKernel {
 public:
  explicit ReferenceQConv(const QuantizedConv& q) : QConvKernel(q), w_(q.weights) {}
  const char* name() const override { return "int8_reference"; }

  void run(const int8_t* x, int8_t* y, int, const int8_t* residual) const override {
    const ConvShape& s = q_.shape;
    const int oh = s.out_h(), ow = s.out_w(), cig = s.in_c_per_group(), cog = s.out_c_per_group();
    for (int n = 0; n < s.batch; ++n)
      for (int oy = 0; oy < oh; ++oy)
        for (int ox = 0; ox < ow; ++ox)
          for (int oc = 0; oc < s.out_c; ++oc) {
            const int g = oc / cog;
            int32_t acc = 0;
            for (int ky = 0; ky < s.kernel_h; ++ky) {
              const int iy = oy * s.stride_h - s.pad_top + ky * s.dilation_h;
              if (iy < 0 || iy >= s.in_h) continue;
              for (int kx = 0; kx < s.kernel_w; ++kx) {
                const int ix = ox * s.stride_w - s.pad_left + kx * s.dilation_w;
                if (ix < 0 || ix >= s.in_w) continue;
                const int8_t* xp = x + ((int64_t(n) * s.in_h + iy) * s.in_w + ix) * s.in_c + g * cig;
                const int8_t* wp = w_.data() + (int64_t(ky) * s.kernel_w + kx) * cig * s.out_c + oc;
                for (int ic = 0; ic < cig; ++ic)
                  acc += (int32_t(xp[ic]) - q_.input_zero_point) * int32_t(wp[int64_t(ic) * s.out_c]);
              }
            }
            acc += q_.bias[oc];
            y[((int64_t(n) * oh + oy) * ow + ox) * s.out_c + oc] =
                q_.requantization == Requantization::kXnnpack
                    ? requantize_fp32(acc, q_.scales[oc], q_.output_zero_point, q_.out_min, q_.out_max)
                    : saturate(multiply(acc, q_.multipliers[oc]) + q_.output_zero_point, q_.out_min, q_.out_max);
          }
    if (residual) add_residual(y, residual, int64_t(s.batch) * oh * ow * s.out_c);
  }

 private:
  std::vector<int8_t> w_;
};

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Per-channel requantization, prepared per 16 channels (padded to whole vectors): the bias, the
// multipliers' lanes (RequantLanes) or fp32 scales, the output's zero point and the activation's
// bounds. A loop keeps a block's lanes in registers for all the pixels it stores.
struct Requant {
  struct Lanes {
    v32 bias, zero_point, lo, hi;
    RequantLanes rq;     // fixed point
    v32f scale, lo_f, hi_f;  // fp32: the scales, and the bounds less the zero point
    bool fp32;
    bool clamps;  // fixed point: the bounds are narrower than int8's (which the narrowing store saturates to)
  };
  std::vector<Lanes> blocks;

  void init(const QuantizedConv& q, int64_t padded, const std::vector<int32_t>& bias_of_channel) {
    std::vector<int32_t> bias(size_t(padded), 0), m(size_t(padded), 0), left(size_t(padded), 0), right(size_t(padded), 0);
    std::vector<float> scale(size_t(padded), 0.f);
    const bool fp32 = q.requantization == Requantization::kXnnpack;
    for (int c = 0; c < q.shape.out_c; ++c) {
      bias[c] = bias_of_channel[c];
      m[c] = q.multipliers[c].m;
      left[c] = std::max(q.multipliers[c].shift, 0);
      right[c] = std::max(-q.multipliers[c].shift, 0);
      if (fp32) scale[c] = q.scales[c];
    }
    blocks.clear();
    for (int64_t c0 = 0; c0 < padded; c0 += kLanes)
      blocks.push_back({load32(&bias[c0]), splat32(q.output_zero_point), splat32(q.out_min), splat32(q.out_max),
                        requant_lanes(load32(&m[c0]), load32(&left[c0]), load32(&right[c0])), loadf(&scale[c0]),
                        splatf(float(q.out_min - q.output_zero_point)), splatf(float(q.out_max - q.output_zero_point)),
                        fp32, q.out_min > -128 || q.out_max < 127});
  }
  const Lanes& lanes(int64_t c0) const { return blocks[size_t(c0 / kLanes)]; }
  // acc (16 channels from c0) -> int8 at y (n <= 16 of them written).
  void store(v32 acc, int64_t c0, int8_t* y, int n) const { store(acc, lanes(c0), y, n); }
  static void store(v32 acc, const Lanes& l, int8_t* y, int n) { narrow_store(y, value(acc, l), n); }
  // The same, then a fused residual ADD (AddArithmetic) of the layer's output (in its bounds) and
  // the residual's bytes at y's place.
  static void store_add(v32 acc, const Lanes& l, int8_t* y, int n, const int8_t* residual, const AddArithmetic::Lanes& add) {
    const v32 out = l.fp32 ? layer_output<true>(acc + l.bias, l) : layer_output<false>(acc + l.bias, l);
    narrow_store(y, AddArithmetic::of(out, widen(residual, n), add), n);
  }
  // The layer's output lanes of a sum with its bias, in its bounds (the fp32 arithmetic clamps
  // before it rounds), as a fused ADD reads them.
  template <bool Fp32>
  static v32 layer_output(v32 sum, const Lanes& l) {
    return Fp32 ? of_sum<true>(sum, l) : clamp32(of_sum<false>(sum, l), l.lo, l.hi);
  }
  // The output as int32 lanes, before the narrowing (which saturates to int8).
  static v32 value(v32 acc, const Lanes& l) { return l.fp32 ? of_sum<true>(acc + l.bias, l) : of_sum<false>(acc + l.bias, l); }
  // The same of a sum that has its bias (the arithmetic known at compile time).
  template <bool Fp32>
  static v32 of_sum(v32 sum, const Lanes& l) {
    if constexpr (Fp32) {
      const v32f f = __builtin_convertvector(sum, v32f) * l.scale;
      return round_even(minf(maxf(f, l.lo_f), l.hi_f)) + l.zero_point;
    }
    v32 r = requantize(sum, l.rq) + l.zero_point;
    return l.clamps ? clamp32(r, l.lo, l.hi) : r;
  }
};

// GEMM over the layer's im2col rows: A (pixels x K, unsigned bytes: input + 128) times B (K x out_c,
// int8, packed in blocks of 16 channels in the CPU's register tile's operand layout: 4 k of a
// channel together for VNNI's vpdpbusd, which multiplies four unsigned bytes by four signed bytes
// into each int32 lane; see qgemm_tiles.h for the others). The +128 is undone through the bias:
// sum((x + 128) w) - (128 + input_zero_point) sum(w) = sum((x - input_zero_point) w); padding
// reads input_zero_point, so it adds nothing. A 1x1 layer of stride 1 whose channels are a
// multiple of 4 (most of a MobileNet) reads its rows straight from the input, the tile adding the
// 128 as it reads them; other layers pack their rows per task (im2col). Each tile's sums are
// requantized and stored from its registers.
class GemmQConv : public QConvKernel {
 public:
  static constexpr int kBlock = 16;    // channels per B block (one vector of int32 lanes)

  GemmQConv(const QuantizedConv& q, int tile_rows) : QConvKernel(q), rows_(tile_rows), isa_(qgemm_isa_in_use()) {
    const ConvShape& s = q.shape;
    // AMX: rows packed for every layer (A tiles of 64 bytes: K padded to 64 in A and B), 32 rows
    // (two A tiles) a step.
    amx_ = isa_ == QGemmIsa::kAvx512Amx;
    if (amx_) rows_ = kAmxRows;
    k_ = int64_t(s.kernel_h) * s.kernel_w * s.in_c;
    kp_ = round_up(k_, amx_ ? 64 : 4);
    direct_ = !amx_ && s.kernel_h == 1 && s.kernel_w == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_top == 0 &&
              s.pad_bottom == 0 && s.pad_left == 0 && s.pad_right == 0 && s.in_c % 4 == 0;
    blocks_ = (s.out_c + kBlock - 1) / kBlock;
    // B per block of 16 channels in the ISA's tile operand: k_group consecutive k of a channel
    // together (qgemm_tiles.h). A's bytes are x + 128 (x itself for the dot-product tile): the
    // bias takes the offset's and the zero point's products with the weights' sums.
    const int g = k_group(isa_);
    const int32_t offset = (signed_a(isa_) ? 0 : 128) + q.input_zero_point;
    b_.assign(size_t(blocks_ * kp_ * kBlock), 0);
    std::vector<int32_t> bias(size_t(s.out_c));
    for (int c = 0; c < s.out_c; ++c) {
      int32_t sum = 0;
      for (int64_t k = 0; k < k_; ++k) {
        const int8_t w = q.weights[size_t(k * s.out_c + c)];
        sum += w;
        const int64_t block = c / kBlock, lane = c % kBlock;
        b_[size_t(block * kp_ * kBlock + (k / g) * kBlock * g + lane * g + k % g)] = w;
      }
      bias[c] = q.bias[c] - offset * sum;
    }
    rq_.init(q, blocks_ * kBlock, bias);
#if LAYERTUNE_X86_VNNI
    if (isa_ == QGemmIsa::kAvx512Vnni) vnni_kernel_ = vnni_kernel<kNoAdd>();
#endif
    pad_ = uint8_t(q.input_zero_point + 128);
    rows_per_task_ = int(std::clamp<int64_t>(round_up(std::max<int64_t>(32768 / kp_, 1), rows_), rows_, round_up(64, rows_)));
  }
  const char* name() const override { return "int8_gemm"; }
  void set_residual_add(const AddArithmetic& add) override {
    QConvKernel::set_residual_add(add);
#if LAYERTUNE_X86_VNNI
    if (isa_ == QGemmIsa::kAvx512Vnni) vnni_add_kernel_ = add_lanes_.xnnpack ? vnni_kernel<kAddXnnpack>() : vnni_kernel<kAddTflite>();
#endif
  }

  void run(const int8_t* x, int8_t* y, int threads, const int8_t* residual) const override {
    const ConvShape& s = q_.shape;
    const int64_t pixels = int64_t(s.batch) * s.out_h() * s.out_w();
    const int64_t pairs = (blocks_ + 1) / 2;
    int64_t row_tasks = (pixels + rows_per_task_ - 1) / rows_per_task_;
    // A layer with few row tasks (a 7x7 map is one) also splits its channel blocks, so that every
    // thread has work; on one thread that would only pack the rows again.
    int64_t groups = threads > 1 ? std::min<int64_t>(pairs, (int64_t(threads) * 4 + row_tasks - 1) / row_tasks) : 1;
    // Tasks run row-major (each thread's share of the tasks is its share of the rows, the rows the
    // next layer's same split reads), except on a tiny map (at most two row tasks per thread): there
    // the tasks are each pair of channel blocks over a share of the rows (one share per thread),
    // pair-major, so that a thread takes half of the pairs over every row. Row-major, uneven row
    // tasks (49 pixels: 35 + 14) fell to one thread each; 8 groups of 5 pairs were 3 + 2.
    bool group_major = groups > 1 && row_tasks < int64_t(threads) * 2;
    const bool amx_split = amx_ && threads > 1;
    if (amx_split) {
      // AMX computes 32 rows a step: rows split finer only pack the same rows again (a 3x3 layer's
      // 7x7 map: its 49 rows 16 times over), and a few steps do not split evenly (a 14x14 map's 7:
      // 4 + 3). Fewer than 4 steps a thread: one share of the channel pairs a thread over all the
      // rows, each packing them once; else the rows.
      const bool by_channels = (pixels + kAmxRows - 1) / kAmxRows < int64_t(threads) * 4;
      groups = by_channels ? std::min<int64_t>(pairs, threads) : 1;
      group_major = by_channels;
    }
    if (group_major && !amx_split) {
      row_tasks = std::max(row_tasks, std::min<int64_t>(threads, (pixels + rows_ - 1) / rows_));
      groups = pairs;
    }
    // Row tasks evened out in whole register tiles (196 pixels in tasks of 56 were 56 + 56 + 56 + 28).
    const int64_t task_rows = round_up((pixels + row_tasks - 1) / row_tasks, rows_);
    const int64_t tasks = row_tasks * groups;
    threads = int(std::min<int64_t>(threads, tasks));
    if (int(scratch_.size()) < threads) scratch_.resize(size_t(threads));
    ThreadPool::global().parallel_for(threads, tasks, [&](int64_t task, int worker) {
      const int64_t row_task = group_major ? task % row_tasks : task / groups;
      const int64_t group = group_major ? task / row_tasks : task % groups;
      const int64_t p0 = row_task * task_rows, rows = std::min<int64_t>(task_rows, pixels - p0);
      const int64_t nb0 = group * pairs / groups * 2, nb1 = std::min(blocks_, (group + 1) * pairs / groups * 2);
      const uint8_t* a;
      if (direct_) {
        a = reinterpret_cast<const uint8_t*>(x + p0 * kp_);  // signed bytes: the tile adds the 128
      } else {
        AlignedBuffer& buf = scratch_[size_t(worker)];
        const size_t floats = size_t(rows_per_task_ * kp_ / 4) + kSpanSlack / 4;
        if (buf.size() < floats) buf.resize(floats);
        pack_rows(x, p0, rows, reinterpret_cast<uint8_t*>(buf.data()));
        a = reinterpret_cast<const uint8_t*>(buf.data());
      }
#if LAYERTUNE_X86_AMX
      if (amx_) return amx_rows(a, rows, nb0, nb1, y + p0 * s.out_c, residual ? residual + p0 * s.out_c : nullptr);
#endif
      for (int64_t r0 = 0; r0 < rows; r0 += rows_) {
        const int nr = int(std::min<int64_t>(rows_, rows - r0));
#if LAYERTUNE_X86_VNNI
        if (isa_ == QGemmIsa::kAvx512Vnni) {
          const int64_t at = (p0 + r0) * s.out_c;
          (residual ? vnni_add_kernel_ : vnni_kernel_)(a + r0 * kp_, kp_, nr, b_.data(), kp_ * kBlock, kp_ / 4, rq_, nb0,
                                                      nb1, blocks_, s.out_c, y + at, residual ? residual + at : nullptr,
                                                      add_lanes_);
          continue;
        }
#endif
        for (int64_t nb = nb0; nb < nb1; nb += 2)
          tile(a + r0 * kp_, nr, nb, nb + 1 < blocks_ ? 2 : 1, y + (p0 + r0) * s.out_c,
               residual ? residual + (p0 + r0) * s.out_c : nullptr);
      }
    });
  }

 private:
  // The im2col rows of pixels [p0, p0 + rows) as uint8 (x + 128), each kp_ long (zeros past k_).
  void pack_rows(const int8_t* x, int64_t p0, int64_t rows, uint8_t* a) const {
    // The layer's numbers as locals: every byte stored may alias the kernel's fields, so read
    // through `this` they were reloaded after each span.
    const ConvShape& s = q_.shape;
    const int8_t* const x_end = x + s.input_size();
    const int oh = s.out_h(), ow = s.out_w(), ci = s.in_c, in_h = s.in_h, in_w = s.in_w;
    const int kh = s.kernel_h, kw = s.kernel_w, sh = s.stride_h, sw = s.stride_w, dh = s.dilation_h, dw = s.dilation_w;
    const int pad_top = s.pad_top, pad_left = s.pad_left, span = kw * ci;
    const int64_t kp = kp_, tail = kp_ - k_;
    const uint8_t pad = pad_;
    const int64_t plane = int64_t(oh) * ow;
    // A first layer's rows (3 channels: each kernel row a span of at most 16 bytes) whose taps all
    // lie inside the input take one 16-byte move per kernel row and a 4-byte zero over the tail,
    // with no test per tap: the general loop below, its counters kept on the stack by the
    // task's register pressure, took half of MobileNetV2's first layer.
    const bool short_spans = dw == 1 && span <= kSpanSlack;
    const int64_t row_step = int64_t(dh) * in_w * ci;
    const int8_t* const last_start = x_end - kSpanSlack - (kh - 1) * row_step;  // a span may read 16 bytes
    int n = int(p0 / plane), oy = int(p0 / ow % oh), ox = int(p0 % ow);
    for (int64_t r = 0; r < rows; ++r) {
      uint8_t* dst = a + r * kp;
      const int ix0 = ox * sw - pad_left;
      const int iy0 = oy * sh - pad_top;
      if (short_spans && ix0 >= 0 && ix0 + kw <= in_w && iy0 >= 0 && iy0 + (kh - 1) * dh < in_h) {
        const int8_t* src = x + ((int64_t(n) * in_h + iy0) * in_w + ix0) * ci;
        if (src <= last_start) {
          for (int ky = 0; ky < kh; ++ky) flip_short_span(src + ky * row_step, dst + ky * span);
          if (tail) std::memset(dst + kp - tail, 0, 4);  // tail < 4; the bytes past it are the next row's
          if (++ox == ow) {
            ox = 0;
            if (++oy == oh) oy = 0, ++n;
          }
          continue;
        }
      }
      const bool row_inside = dw == 1 && ix0 >= 0 && ix0 + kw <= in_w;
      for (int ky = 0; ky < kh; ++ky) {
        const int iy = oy * sh - pad_top + ky * dh;
        if (row_inside && iy >= 0 && iy < in_h) {
          // The kernel row lies inside the input: its taps are one contiguous span.
          const int8_t* src = x + ((int64_t(n) * in_h + iy) * in_w + ix0) * ci;
          if (span <= kSpanSlack && src + kSpanSlack <= x_end) flip_short_span(src, dst);
          else flip_signs(src, dst, span);
          dst += span;
          continue;
        }
        for (int kx = 0; kx < kw; ++kx, dst += ci) {
          const int ix = ix0 + kx * dw;
          if (iy < 0 || iy >= in_h || ix < 0 || ix >= in_w) std::memset(dst, pad, size_t(ci));
          else flip_signs(x + ((int64_t(n) * in_h + iy) * in_w + ix) * ci, dst, ci);
        }
      }
      std::memset(dst, 0, size_t(tail));
      if (++ox == ow) {
        ox = 0;
        if (++oy == oh) oy = 0, ++n;
      }
    }
  }
  // A span of at most 16 bytes (a first layer's kernel row: 3 taps of 3 channels) as one 16-byte
  // move: the bytes past it are garbage that the next span, the row's zero tail or the next row
  // overwrites (the buffer has kSpanSlack bytes past its last row). A masked move per span, its mask
  // computed each time, took most of MobileNetV2's first layer.
  static constexpr int kSpanSlack = 16;
  static void flip_short_span(const int8_t* src, uint8_t* dst) {
#if defined(__SSE2__)
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm_xor_si128(v, _mm_set1_epi8(char(0x80))));
#else
    uint8_t tmp[kSpanSlack];
    std::memcpy(tmp, src, kSpanSlack);
    for (int c = 0; c < kSpanSlack; ++c) tmp[c] ^= 0x80;
    std::memcpy(dst, tmp, kSpanSlack);
#endif
  }
  // dst = src + 128 as unsigned bytes. Through restrict pointers and a local count: a byte store may
  // alias anything, and with the layer's fields in reach the compiler kept this loop scalar.
  static void flip_signs(const int8_t* __restrict src, uint8_t* __restrict dst, int count) {
#if defined(__AVX512BW__)
    // Short spans (3 channels, a 3-tap row of them) are the common case of a first layer: masked
    // moves instead of a scalar tail.
    const __m512i sign = _mm512_set1_epi8(char(0x80));
    for (int c = 0; c < count; c += 64) {
      const __mmask64 keep = count - c >= 64 ? ~__mmask64(0) : (__mmask64(1) << (count - c)) - 1;
      _mm512_mask_storeu_epi8(dst + c, keep, _mm512_xor_si512(_mm512_maskz_loadu_epi8(keep, src + c), sign));
    }
#else
    for (int c = 0; c < count; ++c) dst[c] = uint8_t(src[c]) ^ 0x80;
#endif
  }

  // y (rows of out_c) for A rows [0, nr) x B blocks nb, nb + nv (nv = 1 or 2), requantized (and
  // added to `residual`, at y's place, when not null): the tiles of qgemm_tiles.h (VNNI's computes
  // a row tile's every block in one call, tile_vnni).
  void tile(const uint8_t* a, int nr, int64_t nb, int nv, int8_t* y, const int8_t* residual) const {
    const int8_t* b = b_.data() + nb * kp_ * kBlock;
    const int out_c = q_.shape.out_c;
    const int step = tile_rows_of(isa_);
    for (int v = 0; v < nv; ++v) {
      const int64_t c0 = (nb + v) * kBlock;
      const Requant::Lanes& lanes = rq_.lanes(c0);
      const int nc = int(std::min<int64_t>(kBlock, out_c - c0));
      for (int r0 = 0; r0 < nr; r0 += step) {
        const int64_t at = int64_t(r0) * out_c + c0;
        // Two instantiations of the tile: a branch in one store lambda made armv7's NEON tile spill.
        if (residual) {
          const auto store = [&](int r, v32 sums) {
            Requant::store_add(sums, lanes, y + at + r * out_c, nc, residual + at + r * out_c, add_lanes_);
          };
          isa_tile(a + r0 * kp_, std::min(step, nr - r0), b + v * kp_ * kBlock, store);
        } else {
          const auto store = [&](int r, v32 sums) { Requant::store(sums, lanes, y + at + r * out_c, nc); };
          isa_tile(a + r0 * kp_, std::min(step, nr - r0), b + v * kp_ * kBlock, store);
        }
      }
    }
  }
  // One ISA tile of qgemm_tiles.h (up to tile_rows_of(isa_) rows, one block). Rows read in place
  // are flipped to x + 128 as they are read; the dot-product tile flips packed rows back to x.
  template <class Store>
  void isa_tile(const uint8_t* a, int nr, const int8_t* b, const Store& store) const {
    const bool flip = signed_a(isa_) ? !direct_ : direct_;
    switch (isa_) {
#if defined(__ARM_NEON)
#if defined(__aarch64__)
      case QGemmIsa::kNeonDot:
        return flip ? tiles::neon_dot<4, true>(a, kp_, nr, b, kp_, store) : tiles::neon_dot<4, false>(a, kp_, nr, b, kp_, store);
      case QGemmIsa::kNeon:
        return flip ? tiles::neon<4, true>(a, kp_, nr, b, kp_, store) : tiles::neon<4, false>(a, kp_, nr, b, kp_, store);
#else
      case QGemmIsa::kNeon:
        return flip ? tiles::neon<2, true>(a, kp_, nr, b, kp_, store) : tiles::neon<2, false>(a, kp_, nr, b, kp_, store);
#endif
#endif
#if LAYERTUNE_INT8_AVX2
      case QGemmIsa::kAvx2:
        return flip ? tiles::avx2<4, true>(a, kp_, nr, b, kp_, store) : tiles::avx2<4, false>(a, kp_, nr, b, kp_, store);
#endif
      default:
        return flip ? tiles::portable<true>(a, kp_, nr, b, kp_, store) : tiles::portable<false>(a, kp_, nr, b, kp_, store);
    }
  }

#if LAYERTUNE_X86_VNNI
  // acc += a (unsigned bytes) x b (signed bytes), four at a time per int32 lane. As one instruction
  // of inline assembly: through _mm512_dpbusd_epi32, GCC copied all 16 accumulators to other
  // registers and back around every k step (and spilled two), 32 moves to 16 multiplies.
  // (By value: a reference made the accumulator array addressable, and it went to the stack.)
  __attribute__((target("avx512f,avx512vnni"), always_inline)) static inline __m512i dpbusd(__m512i acc, __m512i a,
                                                                                            __m512i b) {
    asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
    return acc;
  }

  // The VNNI tile: kRows rows of A times B's blocks [nb0, nb1), two at a time (kRows x 2 vectors of
  // 16 channels in registers), every block of the row tile in one call. The sums start from the
  // bias; each block's are requantized straight from the registers in the layer's arithmetic (a
  // template parameter: no branch per vector).
  // (The residual and the ADD's lanes: a fused residual ADD's, in Add's arithmetic.)
  static constexpr int kNoAdd = 0, kAddXnnpack = 1, kAddTflite = 2;
  using VnniKernel = void (*)(const uint8_t*, int64_t, int, const int8_t*, int64_t, int64_t, const Requant&, int64_t,
                              int64_t, int64_t, int, int8_t*, const int8_t*, const AddArithmetic::Lanes&);
  template <int kRows, bool Flip, bool Fp32, int Add>
  __attribute__((target("avx512f,avx512bw,avx512vnni"))) static void tile_vnni(
      const uint8_t* a, int64_t a_stride, int nr, const int8_t* b, int64_t b_stride, int64_t k4, const Requant& rq,
      int64_t nb0, int64_t nb1, int64_t blocks, int out_c, int8_t* y, const int8_t* residual,
      const AddArithmetic::Lanes& add) {
    const uint8_t* ar[kRows];
    for (int r = 0; r < kRows; ++r) ar[r] = a + std::min(r, nr - 1) * a_stride;
    for (int64_t nb = nb0; nb < nb1; nb += 2) {
      if (nb + 1 < blocks)
        vnni_blocks<kRows, 2, Flip, Fp32, Add>(ar, nr, b + nb * b_stride, b_stride, k4, rq, nb * kBlock, out_c, y, residual, add);
      else
        vnni_blocks<kRows, 1, Flip, Fp32, Add>(ar, nr, b + nb * b_stride, b_stride, k4, rq, nb * kBlock, out_c, y, residual, add);
    }
  }
  template <int R, int Add>
  VnniKernel vnni_kernel_of() const {
    const bool fp32 = q_.requantization == Requantization::kXnnpack;
    return direct_ ? (fp32 ? tile_vnni<R, true, true, Add> : tile_vnni<R, true, false, Add>)
                   : (fp32 ? tile_vnni<R, false, true, Add> : tile_vnni<R, false, false, Add>);
  }
  template <int Add>
  VnniKernel vnni_kernel() const {
    switch (rows_) {
      case 4: return vnni_kernel_of<4, Add>();
      case 7: return vnni_kernel_of<7, Add>();
      case 12: return vnni_kernel_of<12, Add>();
      default: return vnni_kernel_of<8, Add>();
    }
  }
  template <int kRows, int NV, bool Flip, bool Fp32, int Add>
  __attribute__((target("avx512f,avx512bw,avx512vnni"), always_inline)) static inline void vnni_blocks(
      const uint8_t* const* ar, int nr, const int8_t* b, int64_t b_stride, int64_t k4, const Requant& rq, int64_t c0,
      int out_c, int8_t* y, const int8_t* residual, const AddArithmetic::Lanes& add) {
    __m512i c[kRows][NV];
    const Requant::Lanes* lanes[NV];
    for (int v = 0; v < NV; ++v) lanes[v] = &rq.lanes(c0 + v * kBlock);
    for (int r = 0; r < kRows; ++r)
      for (int v = 0; v < NV; ++v) c[r][v] = __m512i(lanes[v]->bias);
    const __m512i flip = _mm512_set1_epi32(int32_t(0x80808080u));
    for (int64_t k = 0; k < k4; ++k) {
      __m512i w[NV];
      for (int v = 0; v < NV; ++v) w[v] = _mm512_loadu_si512(b + v * b_stride + k * 64);
      for (int r = 0; r < kRows; ++r) {
        int32_t four;
        std::memcpy(&four, ar[r] + k * 4, 4);
        __m512i xr = _mm512_set1_epi32(four);
        if (Flip) xr = _mm512_xor_si512(xr, flip);
        for (int v = 0; v < NV; ++v) c[r][v] = dpbusd(c[r][v], xr, w[v]);
      }
    }
    for (int v = 0; v < NV; ++v) {
      const int64_t cv = c0 + v * kBlock;
      const int nc = int(std::min<int64_t>(kBlock, out_c - cv));
      const int8_t* rv = Add ? residual + cv : nullptr;
      if (v == 0) store_rows<kRows, NV, 0, Fp32, Add>(c, nr, *lanes[0], y + cv, out_c, nc, rv, add, std::make_integer_sequence<int, kRows>{});
      else store_rows<kRows, NV, NV - 1, Fp32, Add>(c, nr, *lanes[NV - 1], y + cv, out_c, nc, rv, add, std::make_integer_sequence<int, kRows>{});
    }
  }
  // Column v of the accumulators, row by row with compile-time indices (a loop over the rows put
  // every accumulator on the stack to index it).
  template <int kRows, int NV, int V, bool Fp32, int Add, int... R>
  __attribute__((target("avx512f,avx512bw,avx512vnni"), always_inline)) static inline void store_rows(
      const __m512i (&c)[kRows][NV], int nr, const Requant::Lanes& l, int8_t* y, int out_c, int nc,
      const int8_t* residual, const AddArithmetic::Lanes& add, std::integer_sequence<int, R...>) {
    const auto added = [&](v32 x1, v32 x2) {
      return Add == kAddXnnpack ? AddArithmetic::of_xnnpack(x1, x2, add) : AddArithmetic::of_tflite(x1, x2, add);
    };
    if constexpr (Add != kNoAdd)
      ((R < nr ? narrow_store(y + R * out_c, added(Requant::layer_output<Fp32>(v32(c[R][V]), l), widen(residual + R * out_c, nc)), nc)
               : void()),
       ...);
    else
      ((R < nr ? narrow_store(y + R * out_c, Requant::of_sum<Fp32>(v32(c[R][V]), l), nc) : void()), ...);
  }
#endif

#if LAYERTUNE_X86_AMX
  // AMX's tile registers: 0-3 the sums of 32 rows x 2 blocks of 16 channels, 4-5 A's two 16-row
  // tiles, 6-7 B's two blocks; every tile 16 rows of 64 bytes.
  // Rows [0, rows) of packed A (kp_ bytes each, readable up to a whole 32 rows) times B's blocks
  // [nb0, nb1), two at a time: the int32 sums go through a 4 KiB buffer to the same requantizing
  // stores as the other tiles (bias, arithmetic, fused residual ADD).
  __attribute__((target("amx-tile,amx-int8,amx-bf16,avx512f,avx512bw"))) void amx_rows(
      const uint8_t* a, int64_t rows, int64_t nb0, int64_t nb1, int8_t* y, const int8_t* residual) const {
    static const amx::TileConfig config;
    _tile_loadconfig(&config);
    alignas(64) int32_t sums[kAmxRows * 2 * kBlock];
    const int out_c = q_.shape.out_c;
    const int64_t kp = kp_;
    for (int64_t r0 = 0; r0 < rows; r0 += kAmxRows) {
      const int nr = int(std::min<int64_t>(kAmxRows, rows - r0));
      const uint8_t* ar = a + r0 * kp;
      for (int64_t nb = nb0; nb < nb1; nb += 2) {
        const bool two = nb + 1 < blocks_;
        const int8_t* b0 = b_.data() + nb * kp * kBlock;
        const int8_t* b1 = b0 + kp * kBlock;
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        for (int64_t k = 0; k < kp; k += 64)
          amx::dot_2x2<false>(ar + k, ar + 16 * kp + k, kp, b0 + k * kBlock, b1 + k * kBlock, two);
        constexpr int kLd = 2 * kBlock * 4;  // bytes per row of `sums`
        _tile_stored(0, sums, kLd);
        _tile_stored(1, sums + 16 * 2 * kBlock, kLd);
        _tile_stored(2, sums + kBlock, kLd);
        _tile_stored(3, sums + 16 * 2 * kBlock + kBlock, kLd);
        for (int v = 0; v < (two ? 2 : 1); ++v) {
          const int64_t c0 = (nb + v) * kBlock;
          const Requant::Lanes& lanes = rq_.lanes(c0);
          const int nc = int(std::min<int64_t>(kBlock, out_c - c0));
          for (int r = 0; r < nr; ++r) {
            const v32 acc = load32(sums + r * 2 * kBlock + v * kBlock);
            const int64_t at = (r0 + r) * out_c + c0;
            if (residual) Requant::store_add(acc, lanes, y + at, nc, residual + at, add_lanes_);
            else Requant::store(acc, lanes, y + at, nc);
          }
        }
      }
    }
    _tile_release();
  }
#endif
  static constexpr int kAmxRows = 32;
#if LAYERTUNE_X86_VNNI
  VnniKernel vnni_kernel_ = nullptr, vnni_add_kernel_ = nullptr;
#endif
  bool amx_ = false;
  int64_t k_ = 0, kp_ = 0, blocks_ = 0;
  bool direct_ = false;  // A is the input itself (1x1, stride 1, no padding, channels a multiple of 4)
  int rows_ = 8;  // tile_rows
  QGemmIsa isa_;  // whose tile computes the layer
  int rows_per_task_ = 8;
  uint8_t pad_ = 128;
  std::vector<int8_t> b_;
  Requant rq_;
  mutable std::vector<AlignedBuffer> scratch_;  // per worker: packed A rows
};

// Depthwise, multiplier 1, through an indirection buffer: each output pixel of a row gets one
// input pointer per tap, and a tap that falls outside the input points at a row of the input's
// zero point, which contributes (zero_point - zero_point) w = 0 like TFLite's skipped taps. With
// -zero_point x sum(w) folded into the bias, border and interior pixels are one loop: per chunk of
// 16 channels (weights and requantization lanes in registers), every pixel of the row.
class DepthwiseQConv : public QConvKernel {
 public:
  explicit DepthwiseQConv(const QuantizedConv& q) : QConvKernel(q) {
    const ConvShape& s = q.shape;
    cp_ = round_up(s.out_c, kLanes);
    taps_ = s.kernel_h * s.kernel_w;
    w_.assign(size_t(taps_ * cp_), 0);
#if defined(__ARM_NEON)
    w16_.assign(size_t(taps_ * cp_), 0);
#endif
    std::vector<int32_t> bias = q.bias;
    for (int t = 0; t < taps_; ++t)
      for (int c = 0; c < s.out_c; ++c) {
        w_[size_t(t * cp_ + c)] = q.weights[size_t(t * s.out_c + c)];
#if defined(__ARM_NEON)
        w16_[size_t(t * cp_ + c)] = q.weights[size_t(t * s.out_c + c)];
#endif
        bias[size_t(c)] -= q.input_zero_point * q.weights[size_t(t * s.out_c + c)];
      }
    rq_.init(q, cp_, bias);
    zero_row_.assign(size_t(cp_), int8_t(q.input_zero_point));
    // A row whose taps all lie inside the input vertically has the same pointers relative to
    // its first input row: each tap's offset from there, or -1 outside the input horizontally.
    const int ow = s.out_w();
    row_offsets_.resize(size_t(ow) * taps_);
    for (int ox = 0, i = 0; ox < ow; ++ox)
      for (int ky = 0; ky < s.kernel_h; ++ky)
        for (int kx = 0; kx < s.kernel_w; ++kx, ++i) {
          const int ix = ox * s.stride_w - s.pad_left + kx * s.dilation_w;
          row_offsets_[size_t(i)] = ix < 0 || ix >= s.in_w ? -1 : (int64_t(ky) * s.dilation_h * s.in_w + ix) * s.in_c;
        }
  }
  const char* name() const override { return "int8_depthwise"; }

  void run(const int8_t* x, int8_t* y, int threads, const int8_t* residual) const override {
    const ConvShape& s = q_.shape;
    const int oh = s.out_h(), ow = s.out_w();
    const int64_t rows = int64_t(s.batch) * oh;
    threads = int(std::min<int64_t>(threads, rows));
    if (int(scratch_.size()) < threads) scratch_.resize(size_t(threads));
    ThreadPool::global().parallel_for(threads, rows, [&](int64_t row, int worker) {
      std::vector<const int8_t*>& ptrs = scratch_[size_t(worker)];
      ptrs.resize(size_t(ow) * taps_);
      const int n = int(row / oh), oy = int(row % oh), iy0 = oy * s.stride_h - s.pad_top;
      if (iy0 >= 0 && iy0 + (s.kernel_h - 1) * s.dilation_h < s.in_h) {
        const int8_t* base = x + (int64_t(n) * s.in_h + iy0) * s.in_w * s.in_c;
        for (size_t i = 0; i < ptrs.size(); ++i)
          ptrs[i] = row_offsets_[i] < 0 ? zero_row_.data() : base + row_offsets_[i];
      } else {
        for (int ox = 0, i = 0; ox < ow; ++ox)
          for (int ky = 0; ky < s.kernel_h; ++ky)
            for (int kx = 0; kx < s.kernel_w; ++kx, ++i) {
              const int iy = iy0 + ky * s.dilation_h;
              const int ix = ox * s.stride_w - s.pad_left + kx * s.dilation_w;
              ptrs[size_t(i)] = iy < 0 || iy >= s.in_h || ix < 0 || ix >= s.in_w
                                    ? zero_row_.data()
                                    : x + ((int64_t(n) * s.in_h + iy) * s.in_w + ix) * s.in_c;
            }
      }
      int8_t* yr = y + row * ow * s.out_c;
      if (taps_ == 9) pixels<9>(ptrs.data(), ow, yr);
      else if (taps_ == 25) pixels<25>(ptrs.data(), ow, yr);
      else pixels<0>(ptrs.data(), ow, yr);
      if (residual) add_residual(yr, residual + row * ow * s.out_c, int64_t(ow) * s.out_c);
    });
  }

 private:
  // One output row of ow pixels from their tap pointers (kTaps: the count when known at compile time).
  template <int kTaps>
  void pixels(const int8_t* const* ptrs, int ow, int8_t* y) const {
    const int taps = kTaps ? kTaps : taps_, C = q_.shape.out_c;
    for (int64_t c0 = 0; c0 < C; c0 += kLanes) {
      const int nc = int(std::min<int64_t>(kLanes, C - c0));
      const Requant::Lanes lanes = rq_.lanes(c0);  // a copy: in locals, not reloaded after each int8 store
#if defined(__ARM_NEON)
      if (nc == kLanes) {
        for (int ox = 0; ox < ow; ++ox)
          Requant::store(neon_taps<kTaps>(ptrs + int64_t(ox) * taps, taps, c0), lanes, y + int64_t(ox) * C + c0, nc);
        continue;
      }
#endif
      v32 w[kTaps ? kTaps : 1];
      if (kTaps)
        for (int t = 0; t < kTaps; ++t) w[t] = load32(&w_[size_t(t * cp_ + c0)]);
      for (int ox = 0; ox < ow; ++ox) {
        const int8_t* const* p = ptrs + int64_t(ox) * taps;
        v32 acc{};
        if (nc == kLanes)
          for (int t = 0; t < taps; ++t) acc += widen(p[t] + c0) * (kTaps ? w[t] : load32(&w_[size_t(t * cp_ + c0)]));
        else
          for (int t = 0; t < taps; ++t) acc += widen(p[t] + c0, nc) * load32(&w_[size_t(t * cp_ + c0)]);
        Requant::store(acc, lanes, y + int64_t(ox) * C + c0, nc);
      }
    }
  }

#if defined(__ARM_NEON)
  // 16 channels' sum over the taps on NEON: bytes and weights as int16, multiplied and accumulated
  // into int32 (smlal / vmlal.s16), the weights read from L1 per tap. The generic int32 vectors
  // (16 lanes: four q registers) kept nine taps' weights live, 36 registers, and spilled most of
  // them: tools/arm_codegen.py modelled that loop at 3% of the MAC peak on a Cortex-A53.
  template <int kTaps>
  v32 neon_taps(const int8_t* const* p, int taps, int64_t c0) const {
    int32x4_t acc[4] = {vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0)};
    const int16_t* w = w16_.data() + c0;
    for (int t = 0; t < (kTaps ? kTaps : taps); ++t, w += cp_) {
      const int8x16_t x = vld1q_s8(p[t] + c0);
      const int16x8_t lo = vmovl_s8(vget_low_s8(x)), hi = vmovl_s8(vget_high_s8(x));
      const int16x8_t wl = vld1q_s16(w), wh = vld1q_s16(w + 8);
      acc[0] = vmlal_s16(acc[0], vget_low_s16(lo), vget_low_s16(wl));
      acc[1] = vmlal_s16(acc[1], vget_high_s16(lo), vget_high_s16(wl));
      acc[2] = vmlal_s16(acc[2], vget_low_s16(hi), vget_low_s16(wh));
      acc[3] = vmlal_s16(acc[3], vget_high_s16(hi), vget_high_s16(wh));
    }
    return tiles::to_v32(acc);
  }
  std::vector<int16_t> w16_;  // the weights as int16, laid out as w_
#endif
  int64_t cp_ = 0;
  int taps_ = 0;
  std::vector<int32_t> w_;           // (taps, channels padded to whole vectors), widened to int32
  std::vector<int8_t> zero_row_;     // what a tap outside the input reads: the input's zero point
  std::vector<int64_t> row_offsets_;  // (ow, taps): a row's tap offsets from its first input row, -1 outside
  Requant rq_;                       // its bias holds -input_zero_point x the sum of each channel's weights
  mutable std::vector<std::vector<const int8_t*>> scratch_;  // per worker: a row's tap pointers
};

}  // namespace

namespace {

const char* isa_name(QGemmIsa isa) {
  switch (isa) {
    case QGemmIsa::kAvx512Vnni: return "avx512vnni";
    case QGemmIsa::kAvx512Amx: return "avx512amx";
    case QGemmIsa::kAvx2: return "avx2";
    case QGemmIsa::kNeonDot: return "neon_dot";
    case QGemmIsa::kNeon: return "neon";
    default: return "portable";
  }
}


// The int8 tiles this CPU can run, best last: detected at run time on x86 (a host build must not
// fault on a CPU without VNNI) and for aarch64's dot product (HWCAP_ASIMDDP); NEON is the build's.
std::vector<QGemmIsa> isas_of_this_cpu() {
  std::vector<QGemmIsa> isas = {QGemmIsa::kPortable};
#if LAYERTUNE_INT8_AVX2
  if (__builtin_cpu_supports("avx2")) isas.push_back(QGemmIsa::kAvx2);
#endif
#if LAYERTUNE_X86_VNNI
  if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw")) {
    isas.push_back(QGemmIsa::kAvx512Vnni);
#if LAYERTUNE_X86_AMX
    if (amx::usable(amx::Unit::kInt8)) isas.push_back(QGemmIsa::kAvx512Amx);
#endif
  }
#endif
#if defined(__ARM_NEON)
  isas.push_back(QGemmIsa::kNeon);
#endif
#if LAYERTUNE_NEON_DOT
  constexpr unsigned long kHwcapAsimdDp = 1ul << 20;  // asm/hwcap.h's HWCAP_ASIMDDP
  if (getauxval(AT_HWCAP) & kHwcapAsimdDp) isas.push_back(QGemmIsa::kNeonDot);
#endif
  return isas;
}

}  // namespace

QGemmIsa qgemm_isa_in_use() {
  // LAYERTUNE_INT8_ISA names another tile this CPU can run (how the tests check, on one machine,
  // the code that CPUs without VNNI or without the dot product run); unset, the best.
  static const QGemmIsa isa = [] {
    const std::vector<QGemmIsa> isas = isas_of_this_cpu();
    const char* forced = std::getenv("LAYERTUNE_INT8_ISA");
    if (!forced || !*forced) return isas.back();
    std::string names;
    for (QGemmIsa i : isas) {
      if (std::strcmp(forced, isa_name(i)) == 0) return i;
      names += std::string(names.empty() ? "" : ", ") + isa_name(i);
    }
    throw InvalidArgument(cat("LAYERTUNE_INT8_ISA=", forced, ": this CPU's int8 GEMM tiles are ", names));
  }();
  return isa;
}

const char* qgemm_isa() { return isa_name(qgemm_isa_in_use()); }

bool parse_requantization(const std::string& name, Requantization* out) {
  if (name == "xnnpack") *out = Requantization::kXnnpack;
  else if (name == "tflite") *out = Requantization::kTflite;
  else return false;
  return true;
}

std::string default_method(const ConvShape& s) {
  // The first tunable int8 method of the table that computes the layer (Python's
  // methods.default_int8_method asks the same of the same table).
  for (const MethodSpec& m : conv_methods())
    if (m.dtype == "int8" && m.tunable && m.applies(s).empty()) return m.name;
  return "int8_reference";
}

std::unique_ptr<QConvKernel> make_qconv(const QuantizedConv& q, const MethodParams& params) {
  q.shape.validate();
  if (q.requantization == Requantization::kXnnpack && q.scales.size() != size_t(q.shape.out_c))
    throw InvalidArgument(cat("xnnpack requantization needs one scale per output channel (", q.shape.out_c, "), got ", q.scales.size()));
  check_applicable(q.shape, params, "int8");
  return find_method(params.method).make_int8(q, params);
}

}  // namespace layertune::int8

namespace layertune {

// The int8 rows' factories (methods.cc).
std::unique_ptr<int8::QConvKernel> make_int8_reference_conv(const int8::QuantizedConv& q, const MethodParams&) {
  return std::make_unique<int8::ReferenceQConv>(q);
}
std::unique_ptr<int8::QConvKernel> make_int8_gemm_conv(const int8::QuantizedConv& q, const MethodParams& p) {
  return std::make_unique<int8::GemmQConv>(q, p.get("tile_rows"));
}
std::unique_ptr<int8::QConvKernel> make_int8_depthwise_conv(const int8::QuantizedConv& q, const MethodParams&) {
  return std::make_unique<int8::DepthwiseQConv>(q);
}

}  // namespace layertune
