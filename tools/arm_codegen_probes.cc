// Entry points for tools/arm_codegen.py: the Winograd transforms are inlined into the kernels'
// loops, so they are compiled here, with the core's own flags, as functions of their own whose
// bodies are exactly the transform (one tile of one channel vector). Not part of the build.
#include "../csrc/kernels/winograd/transforms.h"

using layertune::simd::vf;
namespace wg = layertune::winograd;

// flatten: the transform inlined, as it is in the kernels' loops.
#define PROBE extern "C" __attribute__((flatten))
PROBE void probe_winograd_input_2(const vf* d, vf* v) { wg::input_transform<2>(d, v); }
PROBE void probe_winograd_input_4(const vf* d, vf* v) { wg::input_transform<4>(d, v); }
PROBE void probe_winograd_output_2(const vf* m, vf* y) { wg::output_transform<2>(m, y); }
PROBE void probe_winograd_output_4(const vf* m, vf* y) { wg::output_transform<4>(m, y); }
PROBE void probe_winograd_input_6(const vf* d, vf* v) { wg::input_transform<6>(d, v); }
PROBE void probe_winograd_output_6(const vf* m, vf* y) { wg::output_transform<6>(m, y); }
