// The channel layout that the depthwise kernels (simple, Winograd) share: output channel
// ch * multiplier + j belongs to input channel ch (tf.nn.depthwise_conv2d); inside the kernels
// values are grouped by multiplier index j, channels contiguous, so that one vector covers
// kLanes input channels.
#pragma once
#include <cstddef>

#include "layertune/simd.h"

namespace layertune::depthwise {

// out[j * stride + ch] = per_output[ch * mult + j] for every input channel ch < c.
inline void group_by_multiplier(const float* per_output, int c, int mult, size_t stride, float* out) {
  for (int j = 0; j < mult; ++j)
    for (int ch = 0; ch < c; ++ch) out[size_t(j) * stride + ch] = per_output[size_t(ch) * mult + j];
}

// Stores the vector y of multiplier index j for input channels [c0, c0 + lanes) into one output
// pixel `o` (its out_c values).
inline void store(float* o, int c0, int j, int mult, simd::vf y, int lanes) {
  if (mult == 1) {
    simd::store_n(o + c0, y, lanes);
  } else {
    for (int l = 0; l < lanes; ++l) o[(c0 + l) * mult + j] = simd::lane(y, l);
  }
}

}  // namespace layertune::depthwise
