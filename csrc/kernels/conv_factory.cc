#include "layertune/conv.h"
#include "layertune/status.h"

namespace layertune {

std::unique_ptr<ConvKernel> make_conv_kernel(const ConvShape& shape, const MethodParams& params,
                                             const float* weights, const float* bias) {
  shape.validate();
  check_applicable(shape, params);
  if (!weights) fail("weights: missing");
  switch (params.method) {
    case Method::kReference: return make_reference_conv(shape, params, weights, bias);
    case Method::kSimple: return make_simple_conv(shape, params, weights, bias);
    case Method::kUnrolled: return make_unrolled_conv(shape, params, weights, bias);
    case Method::kWinograd: return make_winograd_conv(shape, params, weights, bias);
  }
  fail("method: unknown");
}

}  // namespace layertune
