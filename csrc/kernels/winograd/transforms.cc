#include "transforms.h"

namespace layertune::winograd {

static const double kG2[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
static const double kG4[6][3] = {{1.0 / 4, 0, 0},
                                 {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                 {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                 {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                 {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                 {0, 0, 1}};
static const double kG6[8][3] = {{1, 0, 0},
                                 {-2.0 / 9, -2.0 / 9, -2.0 / 9},
                                 {-2.0 / 9, 2.0 / 9, -2.0 / 9},
                                 {1.0 / 90, 1.0 / 45, 2.0 / 45},
                                 {1.0 / 90, -1.0 / 45, 2.0 / 45},
                                 {1.0 / 45, 1.0 / 90, 1.0 / 180},
                                 {1.0 / 45, -1.0 / 90, 1.0 / 180},
                                 {0, 0, 1}};

void weight_transform(int m, const float* g, long gs_row, long gs_col, float* u) {
  const int a = m + 2;
  const double(*G)[3] = m == 2 ? kG2 : m == 4 ? kG4 : kG6;
  double t[8][3];  // G g
  for (int i = 0; i < a; ++i)
    for (int j = 0; j < 3; ++j) {
      double s = 0;
      for (int k = 0; k < 3; ++k) s += G[i][k] * g[k * gs_row + j * gs_col];
      t[i][j] = s;
    }
  for (int i = 0; i < a; ++i)
    for (int j = 0; j < a; ++j) {
      double s = 0;
      for (int k = 0; k < 3; ++k) s += t[i][k] * G[j][k];
      u[i * a + j] = float(s);
    }
}

}  // namespace layertune::winograd
