// The method table: the one place that says what each convolution method is — its parameters
// (range, default, which layers they apply to, where an options file gives their values), where
// it applies, and its factory. The kernel check, the profiler's arguments, the Python variants
// and the options documentation are all derived from it; a new method is one kernel folder
// and one row in csrc/kernels/methods.cc.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "layertune/conv_params.h"

namespace layertune {

class ConvKernel;
namespace int8 {
struct QuantizedConv;
class QConvKernel;
}  // namespace int8

// Which layers a parameter means something for.
enum class LayerKind { kAny, kRegular, kDepthwise };
const char* layer_kind_name(LayerKind k);  // "any", "regular", "depthwise"
bool layer_is(const ConvShape& s, LayerKind k);

struct ParamSpec {
  std::string name;
  std::string doc;
  std::vector<int> choices;  // the allowed values; empty: any integer in [min, max]
  int min = 1, max = 1 << 20;
  int default_value = 0;  // the value when not set; 0 in a block parameter = chosen from the shape
  LayerKind layers = LayerKind::kAny;
  // Where an options file lists the values to tune (ELL's and layertune's list keys, e.g.
  // "winograd_parameters"); empty: only "<method>_parameters": {"<name>": [...]}.
  std::string options_key;
  std::vector<int> sweep;  // values tuned when the options file names none (empty: not tuned)

  // "" when `value` is allowed, else why not (naming the parameter).
  std::string check(int value) const;
};

using ConvFactory = std::unique_ptr<ConvKernel> (*)(const ConvShape&, const MethodParams&, const float* weights,
                                                   const float* bias);
// An int8 method's factory: the layer with its int8 weights, int32 bias and requantization.
using QConvFactory = std::unique_ptr<int8::QConvKernel> (*)(const int8::QuantizedConv&, const MethodParams&);

struct MethodSpec {
  std::string name;
  std::string doc;
  bool tunable = true;           // false: the reference oracle, never a tuning candidate
  std::vector<ParamSpec> params;  // "threads" first, then the method's own
  std::string (*applies)(const ConvShape&) = nullptr;  // "" when the method can compute the layer
  // "" when this CPU can run the method at all (null: every CPU can), else why not; the profiler's
  // `info` lists the methods a device lacks, and the tuner leaves them out there.
  std::string (*cpu_lacks)() = nullptr;
  std::string dtype = "float32";  // what its layers compute in: "float32" or "int8" (kernels/int8/)
  // Less accurate than the dtype's own arithmetic (amx_bf16x3: bf16 products): the tuner keeps
  // such layers only while the whole model's output stays within the options' max_output_error.
  bool approximate = false;
  ConvFactory make = nullptr;       // float32 methods
  QConvFactory make_int8 = nullptr;  // int8 methods

  const ParamSpec* param(const std::string& name) const;
};

// Every method, in table order.
const std::vector<MethodSpec>& conv_methods();
// The method called `name`; InvalidArgument listing the known ones otherwise.
const MethodSpec& find_method(const std::string& name);

// "" when the method and every explicitly set parameter can compute this layer (whose tensors
// are `dtype`: a float32 layer takes float32 methods, an int8 layer int8 ones), else why not.
std::string why_not_applicable(const ConvShape& shape, const MethodParams& params, const std::string& dtype = "float32");
// The methods this CPU cannot run, with the reason (MethodSpec::cpu_lacks), as a JSON object.
std::string unavailable_methods_json();
// The table as JSON (a list of methods with their parameters): what the bindings and the
// profiler's `methods` command report.
std::string methods_json();

// The method's parameters that mean something for this layer (its layer kind): what variants are
// made of.
std::vector<std::string> meaningful_params(const ConvShape& shape, const std::string& method);

// InvalidArgument with why_not_applicable's reason.
void check_applicable(const ConvShape& shape, const MethodParams& params, const std::string& dtype = "float32");

}  // namespace layertune
