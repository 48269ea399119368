// Denormal floats flushed to zero while layertune computes. An operation on a denormal (a float
// below 1.2e-38) takes a microcode assist of about a hundred cycles on x86, and random-weight or
// badly scaled models produce them by the million (x * sigmoid(x) for x below about -87, say):
// EfficientNetB0 on images in [0, 255] ran 4x slower than LiteRT. XNNPACK runs its operators
// with denormals off (pthreadpool's PTHREADPOOL_FLAG_DISABLE_DENORMALS); so does layertune: the
// pool's helpers for good, the calling thread for the length of a parallel_for or an engine run,
// its own setting restored afterwards.
#pragma once
#include <cstdint>

#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#endif

namespace layertune {

class DenormalsFlushed {
 public:
  DenormalsFlushed() : saved_(read()) { write(flushed(saved_)); }
  ~DenormalsFlushed() { write(saved_); }
  DenormalsFlushed(const DenormalsFlushed&) = delete;
  DenormalsFlushed& operator=(const DenormalsFlushed&) = delete;

  // For a thread that only ever runs layertune's work (the pool's helpers).
  static void flush_for_good() { write(flushed(read())); }

 private:
#if defined(__SSE__) || defined(__x86_64__)
  // MXCSR: FTZ (results flushed, bit 15) and DAZ (inputs read as zero, bit 6).
  static uint64_t read() { return _mm_getcsr(); }
  static void write(uint64_t v) { _mm_setcsr(unsigned(v)); }
  static uint64_t flushed(uint64_t v) { return v | 0x8040u; }
#elif defined(__aarch64__)
  // FPCR.FZ (bit 24) flushes both inputs and results.
  static uint64_t read() {
    uint64_t v;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(v));
    return v;
  }
  static void write(uint64_t v) { __asm__ __volatile__("msr fpcr, %0" : : "r"(v)); }
  static uint64_t flushed(uint64_t v) { return v | (uint64_t(1) << 24); }
#elif defined(__arm__) && defined(__ARM_FP) && __ARM_FP
  // FPSCR.FZ (bit 24) for VFP; NEON on armv7 flushes always.
  static uint64_t read() {
    uint32_t v;
    __asm__ __volatile__("vmrs %0, fpscr" : "=r"(v));
    return v;
  }
  static void write(uint64_t v) { __asm__ __volatile__("vmsr fpscr, %0" : : "r"(uint32_t(v))); }
  static uint64_t flushed(uint64_t v) { return v | (uint64_t(1) << 24); }
#else
  static uint64_t read() { return 0; }
  static void write(uint64_t) {}
  static uint64_t flushed(uint64_t v) { return v; }
#endif
  uint64_t saved_;
};

}  // namespace layertune
