// Intel AMX, shared by the int8 GEMM (tdpbusd) and the bf16x3 convolution (tdpbf16ps): whether
// this CPU and kernel let the process use the tiles, and the one tile layout both use.
#pragma once
#if defined(__x86_64__) && defined(__GNUC__)
#define LAYERTUNE_X86_AMX 1
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>

namespace layertune::amx {

// All eight tiles 16 rows of 64 bytes (palette 1); loaded per task with _tile_loadconfig.
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {64, 64, 64, 64, 64, 64, 64, 64};
  uint8_t rows[16] = {16, 16, 16, 16, 16, 16, 16, 16};
};

enum class Unit : unsigned { kInt8 = 25, kBf16 = 22 };  // CPUID leaf 7 EDX: AMX-INT8, AMX-BF16

// AMX-TILE (CPUID leaf 7 EDX bit 24) and `unit`, and the kernel's leave to use the tile data
// (Linux asks a process to request it: arch_prctl ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA; it
// holds for every thread of the process).
inline bool usable(Unit unit) {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) || !(edx & (1u << 24)) ||
      !(edx & (1u << unsigned(unit))))
    return false;
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  static const bool permitted = syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  return permitted;
}

// One k step of the 2 x 2 tile block both kernels use: tiles 4-5 take A's two 16-row halves
// (a0, a1; `stride` bytes a row), 6-7 B's blocks b0 and (when `two`) b1, and 0-3 add the products
// (0: a0 x b0, 1: a1 x b0, 2: a0 x b1, 3: a1 x b1) with tdpbf16ps (Bf16) or tdpbusd. (GCC's
// tile intrinsics are macros that paste the tile numbers into the assembly: they must be literals,
// hence the two spelled-out branches.)
template <bool Bf16>
__attribute__((target("amx-tile,amx-int8,amx-bf16"))) inline void dot_2x2(const void* a0, const void* a1, long stride,
                                                                           const void* b0, const void* b1, bool two) {
  _tile_loadd(4, a0, stride);
  _tile_loadd(5, a1, stride);
  _tile_loadd(6, b0, 64);
  if constexpr (Bf16) {
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 5, 6);
  } else {
    _tile_dpbusd(0, 4, 6);
    _tile_dpbusd(1, 5, 6);
  }
  if (!two) return;
  _tile_loadd(7, b1, 64);
  if constexpr (Bf16) {
    _tile_dpbf16ps(2, 4, 7);
    _tile_dpbf16ps(3, 5, 7);
  } else {
    _tile_dpbusd(2, 4, 7);
    _tile_dpbusd(3, 5, 7);
  }
}

}  // namespace layertune::amx
#endif
