// A float array aligned to 64 bytes (one cache line; one AVX-512 vector); from 2 MiB on, aligned
// to and backed by huge pages where the system has them.
#pragma once
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>
#ifdef __linux__
#include <sys/mman.h>
#endif

namespace layertune {

class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t n) { resize(n); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  AlignedBuffer(AlignedBuffer&& o) noexcept { swap(o); }
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept { swap(o); return *this; }
  ~AlignedBuffer() { std::free(data_); }

  // Resizes to n zero-filled floats (contents are not kept).
  void resize(size_t n) {
    std::free(data_);
    data_ = nullptr;
    size_ = n;
    if (n == 0) return;
    const size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
    // Large buffers (a layer's packed weights, the arena) on 2 MiB pages where the kernel allows
    // them (Linux's transparent huge pages, "madvise" mode): streaming weights crossed a 4 KiB
    // page every 64 lines, each a TLB miss once the weights outgrow the TLB's reach. ResNet50
    // 0.97x the time at one thread (A/B in the model, 15 rounds: 1.031 [1.018, 1.035] without);
    // with every buffer rounded up to whole huge pages 0.957x and 0.946x at two threads, but
    // MobileNetV2's peak memory 0.89x LiteRT's instead of 0.80x. MobileNetV2 and EfficientNetB0
    // within noise. A partial last huge page stays on 4 KiB pages: no memory past the end.
    const bool huge = bytes >= kHugePage;
    void* p = nullptr;
    if (posix_memalign(&p, huge ? kHugePage : 64, bytes) != 0) throw std::bad_alloc();
    data_ = static_cast<float*>(p);
#ifdef __linux__
    if (huge) madvise(data_, bytes, MADV_HUGEPAGE);  // a kernel without them says no: 4 KiB pages then
#endif
    std::memset(data_, 0, bytes);
  }
  AlignedBuffer copy() const {
    AlignedBuffer out(size_);
    if (size_) std::memcpy(out.data_, data_, size_ * sizeof(float));
    return out;
  }
  float* data() { return data_; }
  const float* data() const { return data_; }
  size_t size() const { return size_; }
  float& operator[](size_t i) { return data_[i]; }
  const float& operator[](size_t i) const { return data_[i]; }

 private:
  static constexpr size_t kHugePage = size_t(2) << 20;
  void swap(AlignedBuffer& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
  }
  float* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace layertune
