// One row of a convolution's im2col matrix: what unrolled and amx_bf16x3 multiply.
#pragma once
#include <cstdint>
#include <cstring>

#include "layertune/conv_params.h"

namespace layertune::gemm {

// Row m (an output pixel, batch-major) of group g's im2col matrix: its kernel_h x kernel_w
// window of the group's input channels, zeros where the window leaves the input.
inline void im2col_row(const ConvShape& s, const float* in, int g, int m, float* row) {
  const int cig = s.in_c_per_group(), oh = s.out_h(), ow = s.out_w();
  const bool whole_rows = s.groups == 1 && s.dilation_w == 1;  // kw adjacent pixels are contiguous
  const int n = m / (oh * ow), oy = (m / ow) % oh, ox = m % ow;
  const int ix0 = ox * s.stride_w - s.pad_left;
  for (int ky = 0; ky < s.kernel_h; ++ky) {
    float* seg = row + ky * s.kernel_w * cig;
    const int iy = oy * s.stride_h - s.pad_top + ky * s.dilation_h;
    if (iy < 0 || iy >= s.in_h) {
      std::memset(seg, 0, size_t(s.kernel_w) * cig * sizeof(float));
      continue;
    }
    const float* src_row = in + (int64_t(n) * s.in_h + iy) * s.in_w * s.in_c + g * cig;
    if (whole_rows && ix0 >= 0 && ix0 + s.kernel_w <= s.in_w) {
      std::memcpy(seg, src_row + int64_t(ix0) * s.in_c, size_t(s.kernel_w) * cig * sizeof(float));
      continue;
    }
    for (int kx = 0; kx < s.kernel_w; ++kx) {
      const int ix = ix0 + kx * s.dilation_w;
      if (ix < 0 || ix >= s.in_w)
        std::memset(seg + kx * cig, 0, cig * sizeof(float));
      else
        std::memcpy(seg + kx * cig, src_row + int64_t(ix) * s.in_c, cig * sizeof(float));
    }
  }
}

}  // namespace layertune::gemm
