// The one thin pybind11 file: numpy arrays in and out; all validation and computing is in the
// C++ core (InvalidArgument -> ValueError via std::invalid_argument).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "layertune/conv.h"
#include "layertune/measure.h"
#include "layertune/simd.h"
#include "layertune/status.h"

namespace py = pybind11;
using namespace layertune;

namespace {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

class PyConvKernel {
 public:
  PyConvKernel(std::tuple<int, int, int, int> input_shape, FloatArray weights, std::optional<FloatArray> bias,
               std::tuple<int, int> strides, std::tuple<int, int> dilations, std::tuple<int, int, int, int> pads,
               int groups, const std::string& activation, const std::string& method,
               const std::map<std::string, int>& params) {
    ConvShape s;
    std::tie(s.batch, s.in_h, s.in_w, s.in_c) = input_shape;
    if (weights.ndim() != 4) fail("w: expected a 4-D array (kh, kw, in_c/groups, out_c)");
    s.kernel_h = int(weights.shape(0));
    s.kernel_w = int(weights.shape(1));
    s.out_c = int(weights.shape(3));
    std::tie(s.stride_h, s.stride_w) = strides;
    std::tie(s.dilation_h, s.dilation_w) = dilations;
    std::tie(s.pad_top, s.pad_bottom, s.pad_left, s.pad_right) = pads;
    s.groups = groups;
    s.activation = parse_activation(activation);
    s.validate();
    if (weights.shape(2) * groups != s.in_c)
      fail("w: shape[2] x groups (", weights.shape(2), " x ", groups, ") must equal the input channels (", s.in_c, ")");
    if (bias && (bias->ndim() != 1 || bias->shape(0) != s.out_c))
      fail("bias: expected shape (", s.out_c, ",)");
    MethodParams p;
    p.method = parse_method(method);
    for (const auto& [name, value] : params) p.set(name, value);
    kernel_ = make_conv_kernel(s, p, weights.data(), bias ? bias->data() : nullptr);
  }

  FloatArray run(FloatArray x) {
    const float* in = checked_input(x);
    FloatArray out = make_output();
    {
      py::gil_scoped_release release;
      kernel_->run(in, out.mutable_data());
    }
    return out;
  }

  // Seconds per run: warm-up runs, then `repeats` timed runs of the kernel alone.
  std::vector<double> time(FloatArray x, int warmup, int repeats) {
    const float* in = checked_input(x);
    FloatArray out = make_output();
    float* o = out.mutable_data();
    py::gil_scoped_release release;
    return time_repeated([&] { kernel_->run(in, o); }, warmup, repeats);
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

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "layertune's C++ convolution kernels";
  py::class_<PyConvKernel>(m, "ConvKernel")
      .def(py::init<std::tuple<int, int, int, int>, FloatArray, std::optional<FloatArray>, std::tuple<int, int>,
                    std::tuple<int, int>, std::tuple<int, int, int, int>, int, const std::string&, const std::string&,
                    const std::map<std::string, int>&>(),
           py::arg("input_shape"), py::arg("weights"), py::arg("bias"), py::arg("strides"), py::arg("dilations"),
           py::arg("pads"), py::arg("groups"), py::arg("activation"), py::arg("method"), py::arg("params"))
      .def("run", &PyConvKernel::run, py::arg("x"))
      .def("time", &PyConvKernel::time, py::arg("x"), py::arg("warmup"), py::arg("repeats"))
      .def_property_readonly("output_shape", &PyConvKernel::output_shape)
      .def_property_readonly("flops", &PyConvKernel::flops)
      .def("__repr__", &PyConvKernel::describe);

  m.def("conv_methods", [] {
    std::map<std::string, std::vector<std::string>> out;
    for (const auto& name : method_names()) out[name] = method_param_names(parse_method(name));
    return out;
  });
  m.def("same_padding", [](int in, int kernel, int stride, int dilation) {
    ConvShape s;
    s.in_h = s.in_w = in;
    s.kernel_h = s.kernel_w = kernel;
    s.stride_h = s.stride_w = stride;
    s.dilation_h = s.dilation_w = dilation;
    s.set_padding("SAME");
    return std::make_tuple(s.pad_top, s.pad_bottom);
  });
  m.def("peak_gflops", &measure_peak_gflops, py::arg("threads") = 1, py::arg("seconds") = 0.5,
        py::call_guard<py::gil_scoped_release>());
  m.def("isa", [] { return std::string(simd::isa_name()); });
  m.def("simd_lanes", [] { return simd::kLanes; });
}
