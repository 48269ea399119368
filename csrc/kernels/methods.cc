// The method table (see methods.h). One row per method; each method's kernels live in a folder
// of their own and export one factory, declared here beside its row.
#include "layertune/methods.h"

#include <algorithm>

#include "gemm/gemm.h"
#include "layertune/conv.h"
#include "layertune/json.h"
#include "layertune/status.h"

namespace layertune {

std::unique_ptr<ConvKernel> make_reference_conv(const ConvShape&, const MethodParams&, const float*, const float*);
std::unique_ptr<ConvKernel> make_simple_conv(const ConvShape&, const MethodParams&, const float*, const float*);
std::unique_ptr<ConvKernel> make_unrolled_conv(const ConvShape&, const MethodParams&, const float*, const float*);
std::unique_ptr<ConvKernel> make_winograd_conv(const ConvShape&, const MethodParams&, const float*, const float*);
std::unique_ptr<ConvKernel> make_amx_bf16x3_conv(const ConvShape&, const MethodParams&, const float*, const float*);
std::unique_ptr<ConvKernel> make_amx_bf16x6_conv(const ConvShape&, const MethodParams&, const float*, const float*);
std::string amx_bf16_applies(const ConvShape&);  // kernels/amx/: groups 1
std::string amx_bf16x3_cpu_lacks();              // kernels/amx/: AMX-BF16 and AVX512-BF16
std::string amx_bf16x6_cpu_lacks();
std::unique_ptr<int8::QConvKernel> make_int8_reference_conv(const int8::QuantizedConv&, const MethodParams&);
std::unique_ptr<int8::QConvKernel> make_int8_gemm_conv(const int8::QuantizedConv&, const MethodParams&);
std::unique_ptr<int8::QConvKernel> make_int8_depthwise_conv(const int8::QuantizedConv&, const MethodParams&);

namespace {

std::string everywhere(const ConvShape&) { return ""; }

std::string winograd_applies(const ConvShape& s) {
  if (s.kernel_h != 3 || s.kernel_w != 3) return cat("winograd needs a 3x3 kernel, this layer's is ", s.kernel_h, "x", s.kernel_w);
  if (s.stride_h != 1 || s.stride_w != 1) return cat("winograd needs stride 1, this layer's is ", s.stride_h, "x", s.stride_w);
  if (s.dilation_h != 1 || s.dilation_w != 1)
    return cat("winograd needs dilation 1, this layer's is ", s.dilation_h, "x", s.dilation_w);
  return "";
}

ParamSpec threads_param() {
  ParamSpec p;
  p.name = "threads";
  p.doc = "threads the kernel runs on";
  p.max = 1024;
  p.default_value = 1;
  p.options_key = "threads";
  return p;
}

// A block size: a positive integer, 0 (not set) = chosen from the shape.
ParamSpec block(const char* name, const char* doc, LayerKind layers, const char* options_key) {
  ParamSpec p;
  p.name = name;
  p.doc = doc;
  p.layers = layers;
  p.options_key = options_key;
  return p;
}

MethodSpec row(const char* name, const char* doc, bool tunable, std::vector<ParamSpec> own,
               std::string (*applies)(const ConvShape&), ConvFactory make, std::string (*cpu_lacks)() = nullptr,
               bool approximate = false) {
  MethodSpec m;
  m.name = name;
  m.doc = doc;
  m.tunable = tunable;
  m.params = {threads_param()};
  m.params.insert(m.params.end(), own.begin(), own.end());
  m.applies = applies;
  m.make = make;
  m.cpu_lacks = cpu_lacks;
  m.approximate = approximate;
  return m;
}

MethodSpec int8_row(const char* name, const char* doc, bool tunable, std::vector<ParamSpec> own,
                    std::string (*applies)(const ConvShape&), QConvFactory make) {
  MethodSpec m = row(name, doc, tunable, std::move(own), applies, nullptr);
  m.dtype = "int8";
  m.make_int8 = make;
  return m;
}

std::string int8_gemm_applies(const ConvShape& s) {
  return s.groups == 1 ? "" : cat("int8_gemm computes ungrouped layers only, this layer has ", s.groups, " groups");
}

std::string int8_depthwise_applies(const ConvShape& s) {
  if (!s.is_depthwise()) return "int8_depthwise computes depthwise layers only";
  return s.multiplier() == 1 ? "" : cat("int8_depthwise computes depthwise layers with multiplier 1, this layer's is ", s.multiplier());
}

std::vector<MethodSpec> build_table() {
  ParamSpec tile;
  tile.name = "winograd_tile";
  tile.doc = "output tile: 2 = F(2x2,3x3), 4 = F(4x4,3x3), 6 = F(6x6,3x3)";
  tile.choices = {2, 4, 6};
  tile.default_value = 4;
  tile.options_key = "winograd_tiles";
  tile.sweep = {2, 4, 6};
  ParamSpec gemm_tile;
  gemm_tile.name = "gemm_tile";
  gemm_tile.doc = "GEMM register tile, rows*10 + vectors (62 = 6 rows x 2 SIMD vectors), plus 1000 for A packed (1044); 0 = the tile of this ISA's kShapeTiles (kShapeTilesTwoPipes on a core with two vector FMA pipes) for the layer's shape (gemm.h)";
  gemm_tile.choices = {0};
  for (int code : gemm::kTileCodes) gemm_tile.choices.push_back(code);
  gemm_tile.options_key = "gemm_tiles";
  ParamSpec winograd_gemm_tile = gemm_tile;  // the tile of the alpha^2 GEMMs (m = Winograd tiles)
  winograd_gemm_tile.layers = LayerKind::kRegular;
  winograd_gemm_tile.doc = "register tile of the alpha^2 GEMMs (Winograd tiles x output channels), coded as unrolled's gemm_tile; 0 = of this ISA's kWinogradTiles, the one that pads the product least (gemm.h)";
  ParamSpec tile_rows;
  tile_rows.name = "tile_rows";
  tile_rows.doc = "output pixels per register tile (each times two vectors of 16 channels)";
  tile_rows.choices = {4, 7, 8, 12};
  tile_rows.default_value = 7;  // divides every map of a 224-input network; 7x7 layers 0.88-0.90x the time of 8 rows
  tile_rows.sweep = {4, 7, 8, 12};
  return {
      row("reference", "plain loops with double accumulation: the oracle every variant is checked against", false, {},
          everywhere, make_reference_conv),
      row("simple", "direct convolution vectorized over channels (NHWC); the fast path for depthwise and small layers",
          true, {}, everywhere, make_simple_conv),
      row("unrolled", "im2col + a blocked GEMM with a register-blocked SIMD micro-kernel", true,
          {gemm_tile, block("block_m", "output pixels per GEMM block (at most; blocks are evened out and, on several threads, cut finer)", LayerKind::kAny, ""),
           block("block_k", "reduction depth per GEMM block", LayerKind::kAny, "")},
          everywhere, make_unrolled_conv),
      row("winograd", "Winograd F(2x2,3x3) / F(4x4,3x3) / F(6x6,3x3) for 3x3, stride 1, dilation 1", true,
          {tile, winograd_gemm_tile,
           block("separable_block_depth", "channels per block", LayerKind::kDepthwise, "winograd_parameters"),
           block("nonseparable_filter_block_depth", "output filters per block", LayerKind::kRegular,
                 "winograd_parameters"),
           block("nonseparable_channel_depth", "input channels per block", LayerKind::kRegular, "winograd_parameters")},
          winograd_applies, make_winograd_conv),
      row("amx_bf16x3",
          "im2col + AMX bf16 tiles computing each fp32 product as three bf16 ones (hi*hi + hi*lo + lo*hi): "
          "fp32 to about 1e-5 of max|y|, on x86 CPUs with AMX-BF16 (Sapphire Rapids on)",
          true, {}, amx_bf16_applies, make_amx_bf16x3_conv, amx_bf16x3_cpu_lacks, /*approximate=*/true),
      row("amx_bf16x6",
          "im2col + AMX bf16 tiles computing each fp32 product as six bf16 ones of 24-bit splits: fp32's own "
          "accuracy at twice amx_bf16x3's tile work, on x86 CPUs with AMX-BF16 (Sapphire Rapids on)",
          true, {}, amx_bf16_applies, make_amx_bf16x6_conv, amx_bf16x6_cpu_lacks),
      int8_row("int8_reference", "TFLite's reference integer loops (ConvPerChannel): the oracle of the int8 kernels",
               false, {}, everywhere, make_int8_reference_conv),
      int8_row("int8_gemm",
               "im2col (1x1 stride-1 layers read in place) x int8 weights in a register-tiled GEMM: VNNI's vpdpbusd "
               "where the CPU has it, portable vectors elsewhere",
               true, {tile_rows}, int8_gemm_applies, make_int8_gemm_conv),
      int8_row("int8_depthwise", "depthwise over an indirection buffer, 16 channels per int32 vector", true, {},
               int8_depthwise_applies, make_int8_depthwise_conv),
  };
}

std::string joined_names(const std::vector<ParamSpec>& params) {
  std::string out;
  for (const auto& p : params) out += (out.empty() ? "" : ", ") + p.name;
  return out;
}

}  // namespace

const char* layer_kind_name(LayerKind k) {
  switch (k) {
    case LayerKind::kRegular: return "regular";
    case LayerKind::kDepthwise: return "depthwise";
    case LayerKind::kAny: break;
  }
  return "any";
}

bool layer_is(const ConvShape& s, LayerKind k) {
  switch (k) {
    case LayerKind::kRegular: return !s.is_depthwise();
    case LayerKind::kDepthwise: return s.is_depthwise();
    case LayerKind::kAny: break;
  }
  return true;
}

std::string ParamSpec::check(int value) const {
  if (!choices.empty()) {
    if (std::find(choices.begin(), choices.end(), value) != choices.end()) return "";
    std::string allowed;
    for (int c : choices) allowed += (allowed.empty() ? "" : " or ") + std::to_string(c);
    return cat(name, ": must be ", allowed, ", got ", value);
  }
  if (value < min) return cat(name, ": must be a positive integer, got ", value);
  if (value > max) return cat(name, ": at most ", max, ", got ", value);
  return "";
}

const ParamSpec* MethodSpec::param(const std::string& wanted) const {
  for (const auto& p : params)
    if (p.name == wanted) return &p;
  return nullptr;
}

const std::vector<MethodSpec>& conv_methods() {
  static const std::vector<MethodSpec> table = build_table();
  return table;
}

const MethodSpec& find_method(const std::string& name) {
  std::string known;
  for (const auto& m : conv_methods()) {
    if (m.name == name) return m;
    known += (known.empty() ? "" : ", ") + m.name;
  }
  fail("method: unknown method '", name, "' (expected ", known, ")");
}

int MethodParams::get(const std::string& name) const {
  if (name == "threads") return threads;
  auto it = values.find(name);
  if (it != values.end()) return it->second;
  const ParamSpec* p = find_method(method).param(name);
  return p ? p->default_value : 0;
}

void MethodParams::set(const std::string& name, int value) {
  const MethodSpec& m = find_method(method);
  const ParamSpec* p = m.param(name);
  if (!p) fail(name, ": not a parameter of method '", method, "' (it accepts: ", joined_names(m.params), ")");
  std::string why = p->check(value);
  if (!why.empty()) fail(why);
  if (name == "threads") threads = value;
  else values[name] = value;
}

std::string MethodParams::describe() const {
  std::string s = method + "(";
  for (const auto& p : find_method(method).params) {
    if (p.name == "threads") continue;
    auto it = values.find(p.name);
    if (it != values.end()) s += cat(p.name, "=", it->second, ", ");
    else if (p.default_value) s += cat(p.name, "=", p.default_value, ", ");
  }
  return s + cat("threads=", threads, ")");
}

std::string why_not_applicable(const ConvShape& s, const MethodParams& params, const std::string& dtype) {
  const MethodSpec& m = find_method(params.method);
  if (m.dtype != dtype) return cat("method: ", m.name, " computes ", m.dtype, " layers, this layer is ", dtype);
  std::string why = m.cpu_lacks ? m.cpu_lacks() : "";
  if (why.empty()) why = m.applies(s);
  if (!why.empty()) return "method: " + why;
  for (const auto& [name, value] : params.values) {
    const ParamSpec* p = m.param(name);
    if (!p) return cat(name, ": not a parameter of method '", m.name, "'");
    // (A one-channel layer is depthwise and regular at once: a depthwise block depth is accepted
    // there, with nothing to block; meaningful_params leaves it out of the variants.)
    const bool one_channel = p->layers == LayerKind::kDepthwise && s.in_c_per_group() == 1;
    if (!layer_is(s, p->layers) && !one_channel) {
      std::string instead;
      for (const auto& q : m.params)
        if (q.layers != LayerKind::kAny && layer_is(s, q.layers)) instead += (instead.empty() ? "" : " / ") + q.name;
      return cat(name, ": applies to ", layer_kind_name(p->layers), " layers, this layer is ",
                 s.is_depthwise() ? "depthwise" : "a regular convolution",
                 instead.empty() ? "" : cat(" (use ", instead, ")"));
    }
  }
  return "";
}

std::vector<std::string> meaningful_params(const ConvShape& s, const std::string& method) {
  std::vector<std::string> out;
  for (const auto& p : find_method(method).params)
    if (layer_is(s, p.layers)) out.push_back(p.name);
  return out;
}

void check_applicable(const ConvShape& shape, const MethodParams& params, const std::string& dtype) {
  std::string why = why_not_applicable(shape, params, dtype);
  if (!why.empty()) fail(why);
}

std::string unavailable_methods_json() {
  std::string out = "{";
  for (const auto& m : conv_methods()) {
    const std::string why = m.cpu_lacks ? m.cpu_lacks() : "";
    if (!why.empty()) out += cat(out.size() > 1 ? ", " : "", json_string(m.name), ": ", json_string(why));
  }
  return out + "}";
}

std::string methods_json() {
  auto ints = [](const std::vector<int>& v) {
    std::string out = "[";
    for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + std::to_string(v[i]);
    return out + "]";
  };
  std::string out = "[";
  for (const auto& m : conv_methods()) {
    out += cat(out.size() > 1 ? ", " : "", "{\"name\": ", json_string(m.name), ", \"doc\": ", json_string(m.doc),
               ", \"tunable\": ", m.tunable ? "true" : "false", ", \"dtype\": ", json_string(m.dtype),
               ", \"approximate\": ", m.approximate ? "true" : "false", ", \"params\": [");
    for (size_t i = 0; i < m.params.size(); ++i) {
      const ParamSpec& p = m.params[i];
      out += cat(i ? ", " : "", "{\"name\": ", json_string(p.name), ", \"doc\": ", json_string(p.doc),
                 ", \"choices\": ", ints(p.choices), ", \"min\": ", p.min, ", \"max\": ", p.max,
                 ", \"default\": ", p.default_value, ", \"layers\": ", json_string(layer_kind_name(p.layers)),
                 ", \"options_key\": ", json_string(p.options_key), ", \"sweep\": ", ints(p.sweep), "}");
    }
    out += "]}";
  }
  return out + "]";
}

std::unique_ptr<ConvKernel> make_conv_kernel(const ConvShape& shape, const MethodParams& params,
                                             const float* weights, const float* bias) {
  shape.validate();
  check_applicable(shape, params);
  if (!weights) fail("weights: missing");
  return find_method(params.method).make(shape, params, weights, bias);
}

}  // namespace layertune
