// Winograd F(m x m, 3 x 3) transforms for m = 2, 4 and 6 (Lavin & Gray; F6 on the points 0, +-1,
// +-2, +-1/2 and infinity): input B^T d B and output A^T M A, written out as 1-D transforms so that
// no multiply by 0 or 1 is spent and common terms are shared; the weight transform G g G^T runs
// once, at prepare time, in double precision.
#pragma once
#include "layertune/simd.h"

namespace layertune::winograd {

using simd::vf;

template <int M>
struct Tile {
  static constexpr int kIn = M + 2;  // alpha: input tile side
  static constexpr int kElems = kIn * kIn;
};

// 1-D input transform w = B^T d (kIn values at stride s -> kIn values at stride ws).
template <int M>
inline void input_1d(const vf* d, int s, vf* w, int ws);

template <>
inline void input_1d<2>(const vf* d, int s, vf* w, int ws) {
  const vf d0 = d[0], d1 = d[s], d2 = d[2 * s], d3 = d[3 * s];
  w[0] = d0 - d2;
  w[ws] = d1 + d2;
  w[2 * ws] = d2 - d1;
  w[3 * ws] = d1 - d3;
}

template <>
inline void input_1d<4>(const vf* d, int s, vf* w, int ws) {
  const vf d0 = d[0], d1 = d[s], d2 = d[2 * s], d3 = d[3 * s], d4 = d[4 * s], d5 = d[5 * s];
  const vf four = simd::splat(4.f), five = simd::splat(5.f), two = simd::splat(2.f);
  w[0] = four * d0 - five * d2 + d4;
  w[ws] = d4 + d3 - four * (d1 + d2);
  w[2 * ws] = d4 - d3 + four * (d1 - d2);
  w[3 * ws] = d4 - d2 + two * (d3 - d1);
  w[4 * ws] = d4 - d2 - two * (d3 - d1);
  w[5 * ws] = four * d1 - five * d3 + d5;
}

template <>
inline void input_1d<6>(const vf* d, int s, vf* w, int ws) {
  const vf d0 = d[0], d1 = d[s], d2 = d[2 * s], d3 = d[3 * s], d4 = d[4 * s], d5 = d[5 * s], d6 = d[6 * s],
           d7 = d[7 * s];
  const vf k525 = simd::splat(5.25f), k425 = simd::splat(4.25f), k25 = simd::splat(2.5f), k125 = simd::splat(1.25f),
           half = simd::splat(0.5f), quarter = simd::splat(0.25f), two = simd::splat(2.f), four = simd::splat(4.f),
           five = simd::splat(5.f);
  w[0] = d0 - d6 + k525 * (d4 - d2);
  w[7 * ws] = d7 - d1 + k525 * (d3 - d5);
  const vf t1 = d2 + d6 - k425 * d4, t2 = d1 + d5 - k425 * d3;
  w[ws] = t1 + t2;
  w[2 * ws] = t1 - t2;
  const vf t3 = quarter * d2 + d6 - k125 * d4, t4 = half * d1 - k25 * d3 + two * d5;
  w[3 * ws] = t3 + t4;
  w[4 * ws] = t3 - t4;
  const vf t5 = four * d2 + d6 - five * d4, t6 = two * d1 - k25 * d3 + half * d5;
  w[5 * ws] = t5 + t6;
  w[6 * ws] = t5 - t6;
}

// 1-D output transform y = A^T m (kIn values at stride s -> M values at stride ys).
template <int M>
inline void output_1d(const vf* m, int s, vf* y, int ys);

template <>
inline void output_1d<2>(const vf* m, int s, vf* y, int ys) {
  y[0] = m[0] + m[s] + m[2 * s];
  y[ys] = m[s] - m[2 * s] - m[3 * s];
}

template <>
inline void output_1d<4>(const vf* m, int s, vf* y, int ys) {
  const vf m1 = m[s], m2 = m[2 * s], m3 = m[3 * s], m4 = m[4 * s];
  const vf two = simd::splat(2.f), four = simd::splat(4.f), eight = simd::splat(8.f);
  const vf a = m1 + m2, b = m1 - m2, c = m3 + m4, d = m3 - m4;
  y[0] = m[0] + a + c;
  y[ys] = b + two * d;
  y[2 * ys] = a + four * c;
  y[3 * ys] = b + eight * d + m[5 * s];
}

template <>
inline void output_1d<6>(const vf* m, int s, vf* y, int ys) {
  const vf m1 = m[s], m2 = m[2 * s], m3 = m[3 * s], m4 = m[4 * s], m5 = m[5 * s], m6 = m[6 * s];
  const vf a = m1 + m2, b = m1 - m2, c = m3 + m4, e = m3 - m4, f = m5 + m6, h = m5 - m6;
  const vf two = simd::splat(2.f), four = simd::splat(4.f), eight = simd::splat(8.f), k16 = simd::splat(16.f),
           k32 = simd::splat(32.f);
  y[0] = m[0] + a + c + k32 * f;
  y[ys] = b + two * e + k16 * h;
  y[2 * ys] = a + four * c + eight * f;
  y[3 * ys] = b + eight * e + four * h;
  y[4 * ys] = a + k16 * c + two * f;
  y[5 * ys] = b + k32 * e + h + m[7 * s];
}

// v = B^T d B for a kIn x kIn tile (row-major arrays of vectors).
template <int M>
inline void input_transform(const vf* d, vf* v) {
  constexpr int A = Tile<M>::kIn;
  vf t[A * A];
  for (int j = 0; j < A; ++j) input_1d<M>(d + j, A, t + j, A);  // columns
  for (int i = 0; i < A; ++i) input_1d<M>(t + i * A, 1, v + i * A, 1);  // rows
}

// y = A^T m A: kIn x kIn -> M x M.
template <int M>
inline void output_transform(const vf* m, vf* y) {
  constexpr int A = Tile<M>::kIn;
  vf t[M * A];
  for (int j = 0; j < A; ++j) output_1d<M>(m + j, A, t + j, A);
  for (int i = 0; i < M; ++i) output_1d<M>(t + i * A, 1, y + i * M, 1);
}

// U = G g G^T for one 3x3 filter g (row-major, element (i, j) at g[i * gs_row + j * gs_col]).
void weight_transform(int m, const float* g, long gs_row, long gs_col, float* u);

}  // namespace layertune::winograd
