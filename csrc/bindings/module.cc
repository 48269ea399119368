// The one thin pybind11 file: numpy arrays in and out; all validation and computing is in the
// C++ core (InvalidArgument -> ValueError via std::invalid_argument).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <string_view>

#include "layertune/conv.h"
#include "layertune/engine.h"
#include "layertune/plan_format.h"
#include "layertune/measure.h"
#include "layertune/simd.h"
#include "layertune/status.h"
#include "../graph/op.h"
#include "../kernels/gemm/gemm.h"
#include "../kernels/int8/qconv.h"

namespace py = pybind11;
using namespace layertune;

namespace {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

ConvShape conv_shape(std::tuple<int, int, int, int> input, int kernel_h, int kernel_w, int out_c,
                     std::tuple<int, int> strides, std::tuple<int, int> dilations, std::tuple<int, int, int, int> pads,
                     int groups, const std::string& activation) {
  const auto [n, h, w, c] = input;
  const auto [sh, sw] = strides;
  const auto [dh, dw] = dilations;
  const auto [pt, pb, pl, pr] = pads;
  return ConvShape::from_fields({n, h, w, c, out_c, kernel_h, kernel_w, sh, sw, dh, dw, pt, pb, pl, pr, groups},
                                parse_activation(activation));
}

MethodParams method_params(const std::string& method, const std::map<std::string, int>& params) {
  MethodParams p;
  p.method = find_method(method).name;
  for (const auto& [name, value] : params) p.set(name, value);
  return p;
}

class PyConvKernel {
 public:
  PyConvKernel(std::tuple<int, int, int, int> input_shape, FloatArray weights, std::optional<FloatArray> bias,
               std::tuple<int, int> strides, std::tuple<int, int> dilations, std::tuple<int, int, int, int> pads,
               int groups, const std::string& activation, const std::string& method,
               const std::map<std::string, int>& params, const std::string& epilogue) {
    if (weights.ndim() != 4) fail("w: expected a 4-D array (kh, kw, in_c/groups, out_c)");
    const ConvShape s = conv_shape(input_shape, int(weights.shape(0)), int(weights.shape(1)), int(weights.shape(3)),
                                   strides, dilations, pads, groups, activation);
    if (weights.shape(2) * groups != s.in_c)
      fail("w: shape[2] x groups (", weights.shape(2), " x ", groups, ") must equal the input channels (", s.in_c, ")");
    if (bias && (bias->ndim() != 1 || bias->shape(0) != s.out_c))
      fail("bias: expected shape (", s.out_c, ",)");
    const MethodParams p = method_params(method, params);
    kernel_ = make_conv_kernel(s, p, weights.data(), bias ? bias->data() : nullptr);
    kernel_->set_post_ops(parse_post_ops(epilogue));
  }

  FloatArray run(FloatArray x, std::optional<FloatArray> residual) {
    const float* in = checked_input(x);
    FloatArray out = make_output();
    const float* res = nullptr;
    if (residual) {
      auto [n, h, w, c] = output_shape();
      if (residual->ndim() != 4 || residual->shape(0) != n || residual->shape(1) != h || residual->shape(2) != w ||
          residual->shape(3) != c)
        fail("residual: expected the output's shape (", n, ", ", h, ", ", w, ", ", c, ")");
      res = residual->data();
    }
    {
      py::gil_scoped_release release;
      kernel_->run(in, out.mutable_data(), res);
    }
    return out;
  }

  // Seconds per run: warm-up runs, then `repeats` timed runs of the kernel alone.
  std::vector<double> time(FloatArray x, int warmup, int repeats) {
    const float* in = checked_input(x);
    FloatArray out = make_output();
    float* o = out.mutable_data();
    // an epilogue that adds a residual is timed adding zeros
    std::vector<float> zeros(post_ops_need_residual(kernel_->post_ops()) ? kernel_->shape().output_size() : 0);
    const float* res = zeros.empty() ? nullptr : zeros.data();
    py::gil_scoped_release release;
    return time_repeated([&] { kernel_->run(in, o, res); }, warmup, repeats);
  }

  std::tuple<int, int, int, int> output_shape() const {
    const ConvShape& s = kernel_->shape();
    return {s.batch, s.out_h(), s.out_w(), s.out_c};
  }
  int64_t flops() const { return kernel_->shape().flops(); }
  std::string describe() const { return kernel_->params().describe() + " on " + kernel_->shape().describe(); }

 private:
  const float* checked_input(const FloatArray& x) const {
    const ConvShape& s = kernel_->shape();
    if (x.ndim() != 4 || x.shape(0) != s.batch || x.shape(1) != s.in_h || x.shape(2) != s.in_w || x.shape(3) != s.in_c)
      fail("x: expected shape (", s.batch, ", ", s.in_h, ", ", s.in_w, ", ", s.in_c, ")");
    return x.data();
  }
  FloatArray make_output() const {
    auto [n, h, w, c] = output_shape();
    return FloatArray({n, h, w, c});
  }
  std::unique_ptr<ConvKernel> kernel_;
};

Plan plan_from_bytes(const py::bytes& data) {
  std::string_view view = data;
  return parse_plan(reinterpret_cast<const uint8_t*>(view.data()), view.size());
}

// The parsed plan as Python data: the one C++ reader serves Python's load() too.
py::dict describe_plan(const Plan& plan) {
  py::list tensors, nodes;
  for (size_t t = 0; t < plan.tensors.size(); ++t) {
    const PlanTensor& pt = plan.tensors[t];
    py::object data = py::none();
    if (pt.constant) {
      const std::vector<py::ssize_t> shape(pt.shape.begin(), pt.shape.end());
      py::array a = pt.dtype == DType::kInt8    ? py::array(py::array_t<int8_t>(shape))
                    : pt.dtype == DType::kInt32 ? py::array(py::array_t<int32_t>(shape))
                                                : py::array(FloatArray(shape));
      std::memcpy(a.mutable_data(), plan.constant(int(t)), pt.nbytes);
      data = a;
    }
    py::object quant = py::none();
    if (!pt.quant_dtype.empty())
      quant = py::make_tuple(pt.quant_dtype, py::cast(pt.scales), py::cast(pt.zero_points), pt.quant_axis);
    tensors.append(py::make_tuple(pt.name, py::tuple(py::cast(pt.shape)), data, dtype_name(pt.dtype), quant));
  }
  for (const PlanNode& n : plan.nodes) {
    py::dict attrs;
    for (const auto& [key, a] : n.attrs) {
      if (a.kind == PlanAttr::kInts) attrs[py::str(key)] = py::cast(a.ints);
      else if (a.kind == PlanAttr::kFloats) attrs[py::str(key)] = py::cast(a.floats);
      else attrs[py::str(key)] = py::str(a.str);
    }
    nodes.append(py::make_tuple(n.op, n.name, py::cast(n.inputs), py::cast(n.outputs), attrs));
  }
  py::dict d;
  d["name"] = plan.name;
  d["version"] = plan.version;
  d["tensors"] = tensors;
  d["nodes"] = nodes;
  d["inputs"] = py::cast(plan.inputs);
  d["outputs"] = py::cast(plan.outputs);
  return d;
}

class PyEngine {
 public:
  PyEngine(const py::bytes& plan, int threads, bool reference_kernels)
      : engine_(plan_from_bytes(plan), threads, reference_kernels) {}

  py::list run(const std::vector<py::array>& inputs) {
    auto [in, kept, outs, out_ptrs] = prepare(inputs);
    {
      py::gil_scoped_release release;
      engine_.run(in, out_ptrs);
    }
    return as_list(outs);
  }
  py::tuple run_profiled(const std::vector<py::array>& inputs) {
    auto [in, kept, outs, out_ptrs] = prepare(inputs);
    std::vector<double> seconds;
    {
      py::gil_scoped_release release;
      seconds = engine_.run_profiled(in, out_ptrs);
    }
    return py::make_tuple(as_list(outs), seconds);
  }
  std::vector<double> time(const std::vector<py::array>& inputs, int warmup, int repeats) {
    auto [in, kept, outs, out_ptrs] = prepare(inputs);
    py::gil_scoped_release release;
    return time_repeated([&] { engine_.run(in, out_ptrs); }, warmup, repeats);
  }
  size_t arena_bytes() const { return engine_.arena_bytes(); }
  size_t weight_bytes() const { return engine_.weight_bytes(); }

 private:
  // The engine's inputs: an int8 array for an int8 input tensor as its bytes, anything else as
  // float32 (real values; the engine quantizes them for an int8 input). The arrays it views are
  // returned too, to be kept alive while it runs.
  std::tuple<std::vector<Engine::Input>, std::vector<py::array>, std::vector<FloatArray>, std::vector<float*>> prepare(
      const std::vector<py::array>& inputs) {
    const Plan& plan = engine_.plan();
    if (inputs.size() != plan.inputs.size()) fail("expected ", plan.inputs.size(), " inputs, got ", inputs.size());
    std::vector<Engine::Input> in;
    std::vector<py::array> kept;
    for (size_t i = 0; i < inputs.size(); ++i) {
      const PlanTensor& t = plan.tensors[plan.inputs[i]];
      if (inputs[i].size() != t.elements())
        fail("input ", i, " ('", t.name, "'): expected ", t.elements(), " values, got ", inputs[i].size());
      if (t.dtype == DType::kInt8 && inputs[i].dtype().is(py::dtype::of<int8_t>())) {
        auto bytes = py::array_t<int8_t, py::array::c_style | py::array::forcecast>::ensure(inputs[i]);
        in.emplace_back(bytes.data(), true);
        kept.push_back(std::move(bytes));
      } else {
        auto reals = FloatArray::ensure(inputs[i]);
        if (!reals) fail("input ", i, " ('", t.name, "'): not convertible to float32");
        in.emplace_back(reals.data());
        kept.push_back(std::move(reals));
      }
    }
    std::vector<FloatArray> outs;
    std::vector<float*> ptrs;
    for (int o : plan.outputs) {
      const auto& shape = plan.tensors[o].shape;
      outs.emplace_back(std::vector<py::ssize_t>(shape.begin(), shape.end()));
      ptrs.push_back(outs.back().mutable_data());
    }
    return {in, kept, outs, ptrs};
  }
  static py::list as_list(const std::vector<FloatArray>& arrays) {
    py::list l;
    for (const auto& a : arrays) l.append(a);
    return l;
  }
  Engine engine_;
};

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "layertune's C++ convolution kernels";
  py::class_<PyConvKernel>(m, "ConvKernel")
      .def(py::init<std::tuple<int, int, int, int>, FloatArray, std::optional<FloatArray>, std::tuple<int, int>,
                    std::tuple<int, int>, std::tuple<int, int, int, int>, int, const std::string&, const std::string&,
                    const std::map<std::string, int>&, const std::string&>(),
           py::arg("input_shape"), py::arg("weights"), py::arg("bias"), py::arg("strides"), py::arg("dilations"),
           py::arg("pads"), py::arg("groups"), py::arg("activation"), py::arg("method"), py::arg("params"),
           py::arg("epilogue") = "")
      .def("run", &PyConvKernel::run, py::arg("x"), py::arg("residual") = py::none())
      .def("time", &PyConvKernel::time, py::arg("x"), py::arg("warmup"), py::arg("repeats"))
      .def_property_readonly("output_shape", &PyConvKernel::output_shape)
      .def_property_readonly("flops", &PyConvKernel::flops)
      .def("__repr__", &PyConvKernel::describe);

  py::class_<PyEngine>(m, "Engine")
      .def(py::init<const py::bytes&, int, bool>(), py::arg("plan"), py::arg("threads") = 1,
           py::arg("reference_kernels") = false)
      .def("run", &PyEngine::run, py::arg("inputs"))
      .def("run_profiled", &PyEngine::run_profiled, py::arg("inputs"))
      .def("time", &PyEngine::time, py::arg("inputs"), py::arg("warmup"), py::arg("repeats"))
      .def_property_readonly("arena_bytes", &PyEngine::arena_bytes)
      .def_property_readonly("weight_bytes", &PyEngine::weight_bytes);
  m.def("parse_plan", [](const py::bytes& data) { return describe_plan(plan_from_bytes(data)); });
  m.def("supported_ops", &supported_ops);
  m.def("supported_int8_ops", &supported_int8_ops);
  m.def("int8_gemm_isa", &int8::qgemm_isa);
  m.attr("PLAN_VERSION") = kPlanVersion;

  m.def("methods_json", &methods_json);
  m.def("unavailable_methods_json", &unavailable_methods_json);
  // "" when the method (with these parameters) can compute the layer, else why not; no weights
  // are packed. The layer is given as ConvKernel's arguments, with the kernel's (kh, kw, out_c).
  m.def("why_not_applicable",
        [](std::tuple<int, int, int, int> input, std::tuple<int, int, int> kernel, std::tuple<int, int> strides,
           std::tuple<int, int> dilations, std::tuple<int, int, int, int> pads, int groups,
           const std::string& activation, const std::string& method, const std::map<std::string, int>& params,
           const std::string& dtype) {
          const auto [kh, kw, out_c] = kernel;
          return why_not_applicable(
              conv_shape(input, kh, kw, out_c, strides, dilations, pads, groups, activation),
              method_params(method, params), dtype);
        },
        py::arg("input_shape"), py::arg("kernel"), py::arg("strides"), py::arg("dilations"), py::arg("pads"),
        py::arg("groups"), py::arg("activation"), py::arg("method"), py::arg("params"), py::arg("dtype") = "float32");
  m.def("meaningful_params",
        [](std::tuple<int, int, int, int> input, std::tuple<int, int, int> kernel, std::tuple<int, int> strides,
           std::tuple<int, int> dilations, std::tuple<int, int, int, int> pads, int groups,
           const std::string& activation, const std::string& method) {
          const auto [kh, kw, out_c] = kernel;
          return meaningful_params(conv_shape(input, kh, kw, out_c, strides, dilations, pads, groups, activation),
                                   method);
        },
        py::arg("input_shape"), py::arg("kernel"), py::arg("strides"), py::arg("dilations"), py::arg("pads"),
        py::arg("groups"), py::arg("activation"), py::arg("method"));
  m.def("same_padding", [](int in, int kernel, int stride, int dilation) {
    const ConvShape s = ConvShape::from_fields({1, in, in, 1, 1, kernel, kernel, stride, stride, dilation, dilation,
                                                0, 0, 0, 0, 1}, Activation::kNone, "SAME");
    return std::make_tuple(s.pad_top, s.pad_bottom);
  });
  m.def("peak_gflops", &measure_peak_gflops, py::arg("threads") = 1, py::arg("seconds") = 0.5,
        py::call_guard<py::gil_scoped_release>());
  m.def("isa", [] { return std::string(simd::isa_name()); });
  // The register tile `gemm_tile` 0 gives an m x n GEMM (unrolled: m output pixels, n output channels).
  m.def("gemm_tile_for_shape", &gemm::tile_for_shape, py::arg("m"), py::arg("n"), py::arg("k"));
  m.def("vector_fma_pipes", &gemm::vector_fma_pipes);
  // Winograd's `gemm_tile` 0 for its alpha^2 GEMMs (m Winograd tiles, n output channels).
  m.def("winograd_gemm_tile_for_shape", &gemm::winograd_tile_for_shape, py::arg("m"), py::arg("n"));
  m.def("simd_lanes", [] { return simd::kLanes; });
}
