"""ONNX import against onnxruntime: one graph per op and attribute variant (built with
onnx.helper), Keras applications converted by tf2onnx, each within 1e-4 x max|ref| at 1 and 2
threads and again from the saved plan; and the one-line errors for what cannot be imported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import require

onnx = require("onnx")
ort = require("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import layertune  # noqa: E402

RNG = np.random.default_rng(0)
TOLERANCE = 1e-4


def weights(*shape: int) -> np.ndarray:
    return RNG.uniform(-1, 1, shape).astype(np.float32)


def build(nodes, inputs: dict[str, tuple], outputs: list[str], inits: dict[str, np.ndarray] | None = None,
          opset: int = 17):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in inputs.items()],
        [helper.make_empty_tensor_value_info(o) for o in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def compare(model, tmp_path: Path, positive: bool = False, input_shapes=None, feeds=None) -> None:
    """layertune (1 and 2 threads, and the saved plan) against onnxruntime on the same input."""
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    if feeds is None:
        feeds = {}
        for i in sess.get_inputs():
            shape = (input_shapes or {}).get(i.name, i.shape)
            lo = 0.1 if positive else -1.0
            feeds[i.name] = RNG.uniform(lo, 1.0, shape).astype(np.float32)
    refs = sess.run(None, feeds)
    xs = list(feeds.values())
    for threads in (1, 2):
        m = layertune.load(path, threads=threads, input_shapes=input_shapes)
        got = m.run(xs if len(xs) > 1 else xs[0])
        got = got if isinstance(got, list) else [got]
        for ref, y in zip(refs, got):
            assert y.shape == ref.shape
            np.testing.assert_allclose(y, ref, rtol=0, atol=TOLERANCE * max(np.abs(ref).max(), 1e-6))
    plan = tmp_path / "m.ltplan"
    m.save(plan)
    again = layertune.load(plan, threads=2).run(xs if len(xs) > 1 else xs[0])
    again = again if isinstance(again, list) else [again]
    for ref, y in zip(refs, again):
        np.testing.assert_allclose(y, ref, rtol=0, atol=TOLERANCE * max(np.abs(ref).max(), 1e-6))


X = {"x": (1, 4, 9, 11)}


def conv(name: str, x: str, out: str, cin: int, cout: int, k: int = 3, group: int = 1, bias: bool = True, **attrs):
    inits = {f"{name}_w": weights(cout, cin // group, k, k)}
    ins = [x, f"{name}_w"]
    if bias:
        inits[f"{name}_b"] = weights(cout)
        ins.append(f"{name}_b")
    return helper.make_node("Conv", ins, [out], name=name, group=group, **attrs), inits


def conv_model(cout: int, **kw):
    node, inits = conv("c", "x", "y", 4, cout, **kw)
    return build([node], X, ["y"], inits)


def single(op: str, attrs=None, inputs=X, consts=None, opset=17, extra_inputs=()):
    """One op on the graph input(s), with constant inputs after them."""
    consts = consts or {}
    names = list(inputs) + list(extra_inputs) + list(consts)
    node = helper.make_node(op, names, ["y"], name=f"the_{op.lower()}", **(attrs or {}))
    return build([node], inputs, ["y"], consts, opset)


def through_conv(op: str, attrs=None, consts=None, opset=17, cout=6):
    """A convolution (its output stored NHWC) and then the op: the layout-mapping path."""
    c, inits = conv("c", "x", "h", 4, cout, pads=[1, 1, 1, 1])
    node = helper.make_node(op, ["h"] + list(consts or {}), ["y"], name=f"the_{op.lower()}", **(attrs or {}))
    inits.update(consts or {})
    return build([c, node], X, ["y"], inits, opset)


def i64(*v):
    return np.array(v, np.int64)


CASES = {
    "conv_pads": lambda: conv_model(5, pads=[1, 0, 2, 1]),
    "conv_same_upper_s2": lambda: conv_model(5, strides=[2, 2], auto_pad="SAME_UPPER"),
    "conv_same_lower_s2": lambda: conv_model(5, strides=[2, 2], auto_pad="SAME_LOWER"),
    "conv_valid_5x5": lambda: conv_model(3, k=5, auto_pad="VALID", bias=False),
    "conv_dilated": lambda: conv_model(5, dilations=[2, 2], pads=[2, 2, 2, 2]),
    "conv_grouped": lambda: conv_model(6, group=2, pads=[1, 1, 1, 1]),
    "conv_depthwise": lambda: conv_model(4, group=4, strides=[2, 2], pads=[1, 1, 1, 1]),
    "conv_depthwise_multiplier": lambda: conv_model(8, group=4, pads=[1, 1, 1, 1]),
    "conv_transpose_s2": lambda: single("ConvTranspose", {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]},
                                        consts={"w": weights(4, 3, 3, 3), "b": weights(3)}),
    "conv_transpose_k4": lambda: single("ConvTranspose", {"strides": [2, 2], "pads": [1, 1, 1, 1]}, consts={"w": weights(4, 5, 4, 4)}),
    "conv_transpose_same": lambda: single("ConvTranspose", {"strides": [2, 2], "auto_pad": "SAME_UPPER"}, consts={"w": weights(4, 2, 3, 3)}),
    "conv_transpose_output_shape": lambda: single("ConvTranspose", {"strides": [2, 2], "output_shape": [18, 21]},
                                                  consts={"w": weights(4, 2, 3, 3)}),
    "batchnorm_after_conv": lambda: through_conv("BatchNormalization", {"epsilon": 1e-3}, {
        "s": weights(6), "o": weights(6), "mu": weights(6), "var": RNG.uniform(0.5, 2, 6).astype(np.float32)}),
    "batchnorm_alone": lambda: single("BatchNormalization", consts={
        "s": weights(4), "o": weights(4), "mu": weights(4), "var": RNG.uniform(0.5, 2, 4).astype(np.float32)}),
    "gemm": lambda: single("Gemm", {"transB": 1, "alpha": 0.5, "beta": 2.0}, {"a": (3, 7)},
                           {"w": weights(5, 7), "c": weights(5)}),
    "matmul": lambda: single("MatMul", inputs={"a": (3, 7)}, consts={"w": weights(7, 4)}),
    "matmul_3d": lambda: single("MatMul", inputs={"a": (2, 3, 7)}, consts={"w": weights(7, 4)}),
    "relu": lambda: through_conv("Relu"),
    "clip_relu6": lambda: through_conv("Clip", consts={"lo": np.float32(0), "hi": np.float32(6)}),
    "clip_range": lambda: single("Clip", consts={"lo": np.float32(-0.5), "hi": np.float32(0.7)}),
    "clip_min_only": lambda: single("Clip", consts={"lo": np.float32(-0.2)}),
    "clip_opset10_attributes": lambda: single("Clip", {"min": -0.3, "max": 0.4}, opset=10),
    "leaky_relu": lambda: through_conv("LeakyRelu", {"alpha": 0.3}),
    "prelu": lambda: through_conv("PRelu", consts={"slope": weights(6, 1, 1)}),
    "sigmoid": lambda: single("Sigmoid"),
    "hard_sigmoid": lambda: single("HardSigmoid", {"alpha": 0.3, "beta": 0.4}),
    "hard_swish": lambda: single("HardSwish"),
    "hard_sigmoid_times_x": lambda: build([helper.make_node("HardSigmoid", ["x"], ["hs"], alpha=1 / 6, beta=0.5),
                                           helper.make_node("Mul", ["x", "hs"], ["y"])], X, ["y"]),
    "tanh": lambda: through_conv("Tanh"),
    "softmax_channels": lambda: through_conv("Softmax", {"axis": 1}),
    "softmax_last": lambda: single("Softmax", {"axis": -1}),
    "softmax_opset11_flatten": lambda: through_conv("Softmax", {"axis": 1}, opset=11),
    "add_channel_const": lambda: through_conv("Add", consts={"c": weights(6, 1, 1)}),
    "sub_const_first": lambda: build([helper.make_node("Sub", ["c", "x"], ["y"])], X, ["y"], {"c": weights(11)}),
    "mul_scalar": lambda: single("Mul", consts={"c": np.float32(1.5)}),
    "div_row": lambda: single("Div", consts={"c": RNG.uniform(0.5, 2, (9, 1)).astype(np.float32)}),
    "add_two_inputs_broadcast": lambda: single("Add", inputs={"x": (1, 4, 9, 11), "z": (4, 1, 11)}),
    "mul_conv_by_mean": lambda: build([*conv("c", "x", "h", 4, 6, pads=[1, 1, 1, 1])[:1],
                                       helper.make_node("GlobalAveragePool", ["h"], ["m"]),
                                       helper.make_node("Sigmoid", ["m"], ["s"]),
                                       helper.make_node("Mul", ["h", "s"], ["y"])], X, ["y"],
                                      conv("c", "x", "h", 4, 6)[1]),
    "pow2": lambda: single("Pow", consts={"e": np.float32(2)}),
    "pow_half": lambda: single("Pow", consts={"e": np.float32(0.5)}),
    "sqrt": lambda: single("Sqrt"),
    "neg": lambda: single("Neg"),
    "concat_channels": lambda: build([*conv("c", "x", "h", 4, 6, pads=[1, 1, 1, 1])[:1],
                                      helper.make_node("Concat", ["h", "x"], ["y"], axis=1)], X, ["y"],
                                     conv("c", "x", "h", 4, 6)[1]),
    "concat_rows_const": lambda: single("Concat", {"axis": 2}, consts={"c": weights(1, 4, 2, 11)}),
    "split_input": lambda: build([helper.make_node("Split", ["x", "s"], ["a", "b"], axis=3)], X, ["a", "b"], {"s": i64(4, 7)}),
    "split_equal_opset11": lambda: build([*conv("c", "x", "h", 4, 6, pads=[1, 1, 1, 1])[:1],
                                          helper.make_node("Split", ["h"], ["a", "b"], axis=1)], X, ["a", "b"],
                                         conv("c", "x", "h", 4, 6)[1], opset=11),
    "slice_steps": lambda: single("Slice", consts={"s": i64(-2, 1), "e": i64(0, 100), "ax": i64(3, 2), "st": i64(-2, 3)}),
    "slice_channels": lambda: through_conv("Slice", consts={"s": i64(1), "e": i64(5), "ax": i64(1)}),
    "gather_scalar": lambda: through_conv("Gather", {"axis": 1}, {"i": np.array(2, np.int64)}),
    "gather_spaced": lambda: single("Gather", {"axis": 3}, consts={"i": i64(1, 4, 7)}),
    "maxpool_s2": lambda: through_conv("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "maxpool_ceil": lambda: single("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}),
    "avgpool_exclude_pad": lambda: single("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "avgpool_include_pad": lambda: single("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    "avgpool_ceil": lambda: single("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    "avgpool_same": lambda: single("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    "global_avgpool": lambda: through_conv("GlobalAveragePool"),
    "global_maxpool": lambda: through_conv("GlobalMaxPool"),
    "reduce_mean_keepdims0": lambda: through_conv("ReduceMean", {"axes": [2, 3], "keepdims": 0}, opset=13),
    "reduce_mean_opset18": lambda: through_conv("ReduceMean", consts={"ax": i64(1)}, opset=18),
    "flatten_after_conv": lambda: through_conv("Flatten", {"axis": 1}),
    "reshape_zero_minus1": lambda: through_conv("Reshape", consts={"s": i64(0, 3, -1)}),
    "transpose_then_conv": lambda: build([helper.make_node("Transpose", ["x"], ["t"], perm=[0, 1, 3, 2]),
                                          *conv("c", "t", "y", 4, 5, pads=[1, 1, 1, 1])[:1]], X, ["y"],
                                         conv("c", "t", "y", 4, 5)[1]),
    "nhwc_input_transposed": lambda: build([helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
                                            *conv("c", "t", "h", 11, 5, pads=[1, 1, 1, 1])[:1],
                                            helper.make_node("Transpose", ["h"], ["y"], perm=[0, 2, 3, 1])],
                                           X, ["y"], conv("c", "t", "h", 11, 5)[1]),
    "transpose_output": lambda: through_conv("Transpose", {"perm": [0, 3, 1, 2]}),
    "squeeze_unsqueeze": lambda: build([*conv("c", "x", "h", 4, 6, pads=[1, 1, 1, 1])[:1],
                                        helper.make_node("GlobalAveragePool", ["h"], ["g"]),
                                        helper.make_node("Squeeze", ["g", "a"], ["s"]),
                                        helper.make_node("Unsqueeze", ["s", "b"], ["y"])], X, ["y"],
                                       {**conv("c", "x", "h", 4, 6)[1], "a": i64(2, 3), "b": i64(1)}),
    "resize_nearest_scales": lambda: single("Resize", {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                                                       "nearest_mode": "floor"},
                                            consts={"roi": np.zeros(0, np.float32), "sc": np.array([1, 1, 2, 2], np.float32)}),
    "resize_nearest_half_pixel": lambda: single("Resize", {"mode": "nearest"}, extra_inputs=["", ""],
                                                consts={"sz": i64(1, 4, 18, 33)}),
    "resize_linear_half_pixel": lambda: single("Resize", {"mode": "linear"}, extra_inputs=["", ""],
                                               consts={"sz": i64(1, 4, 14, 16)}),
    "resize_linear_align_corners": lambda: single("Resize", {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
                                                  extra_inputs=["", ""], consts={"sz": i64(1, 4, 17, 21)}),
    "resize_linear_asymmetric": lambda: single("Resize", {"mode": "linear", "coordinate_transformation_mode": "asymmetric"},
                                               consts={"roi": np.zeros(0, np.float32), "sc": np.array([1, 1, 2, 3], np.float32)}),
    "upsample_opset9": lambda: single("Upsample", {"mode": "nearest"}, consts={"sc": np.array([1, 1, 2, 2], np.float32)}, opset=9),
    "pad_constant": lambda: through_conv("Pad", consts={"p": i64(0, 0, 1, 2, 0, 0, 3, 0), "v": np.float32(0.5)}),
    "pad_zeros_then_conv": lambda: build([*conv("a", "x", "h", 4, 6)[:1], helper.make_node("Pad", ["h", "p"], ["padded"]),
                                          *conv("c", "padded", "y", 6, 5, strides=[2, 2])[:1]], X, ["y"],
                                         {**conv("a", "x", "h", 4, 6)[1], **conv("c", "padded", "y", 6, 5)[1],
                                          "p": i64(0, 0, 0, 1, 0, 0, 1, 1)}),
    "pad_reflect": lambda: single("Pad", {"mode": "reflect"}, consts={"p": i64(0, 0, 2, 1, 0, 0, 1, 2)}),
    "pad_opset10_attributes": lambda: single("Pad", {"pads": [0, 0, 1, 1, 0, 0, 1, 1], "value": 0.25}, opset=10),
    "cast_identity_dropout": lambda: build([helper.make_node("Cast", ["x"], ["c"], to=TensorProto.FLOAT),
                                            helper.make_node("Identity", ["c"], ["i"]),
                                            helper.make_node("Dropout", ["i"], ["d"]),
                                            helper.make_node("Relu", ["d"], ["y"])], X, ["y"]),
    "shape_arithmetic_reshape": lambda: build([
        *conv("c", "x", "h", 4, 6, pads=[1, 1, 1, 1])[:1],
        helper.make_node("Shape", ["h"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "zero1"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["h", "target"], ["y"])], X, ["y"],
        {**conv("c", "x", "h", 4, 6)[1], "zero": np.array(0, np.int64), "zero1": i64(0), "minus1": i64(-1)}),
    "depth_to_space": lambda: through_conv("DepthToSpace", {"blocksize": 2, "mode": "DCR"}, cout=8),
    "space_to_depth": lambda: single("SpaceToDepth", {"blocksize": 2}, inputs={"x": (1, 3, 8, 10)}),
}
POSITIVE = {"pow_half", "sqrt"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_op_matches_onnxruntime(case: str, tmp_path: Path) -> None:
    compare(CASES[case](), tmp_path, positive=case in POSITIVE)


def test_ops_are_lowered_as_documented(tmp_path: Path) -> None:
    """BatchNormalization and a following Clip(0, 6) vanish into the convolution; x * HardSigmoid(x)
    is one HARD_SWISH; a Transpose of the NHWC input costs nothing."""
    def ops(model) -> list[str]:
        onnx.save(model, tmp_path / "m.onnx")
        return [n.op for n in layertune.load(tmp_path / "m.onnx").graph.nodes]
    bn = through_conv("BatchNormalization", consts={"s": weights(6), "o": weights(6), "mu": weights(6),
                                                    "var": np.ones(6, np.float32)})
    bn.graph.node.append(helper.make_node("Clip", ["y", "lo", "hi"], ["z"]))
    bn.graph.initializer.extend([numpy_helper.from_array(np.float32(0), "lo"), numpy_helper.from_array(np.float32(6), "hi")])
    bn.graph.output[0].name = "z"
    assert ops(bn) == ["TRANSPOSE", "CONV_2D", "TRANSPOSE"]  # NCHW in and out, NHWC inside
    assert layertune.load(tmp_path / "m.onnx").graph.nodes[1].attrs["activation"] == "relu6"
    assert ops(CASES["hard_sigmoid_times_x"]()) == ["HARD_SWISH"]
    assert ops(CASES["nhwc_input_transposed"]()) == ["CONV_2D"]
    assert ops(CASES["pad_zeros_then_conv"]()) == ["TRANSPOSE", "CONV_2D", "CONV_2D", "TRANSPOSE"]  # PAD: the conv's padding
    assert ops(CASES["pad_constant"]()).count("PAD") == 1  # padding with 0.5 is not


# ResNet50 and MobileNetV3Small with random weights are ill-conditioned: onnxruntime and LiteRT, on
# the same weights and inputs, differ by up to 1.3e-4 and 1.5e-4 x max|ref| (six inputs each), so 1e-4
# would test the rounding of whichever runtime is the reference rather than the importer. (layertune's
# ResNet50 from ONNX and from TFLite give bit-identical outputs.)
APPLICATION_TOLERANCE = {"MobileNetV3Small": 2e-4, "ResNet50": 2e-4}


@pytest.mark.parametrize("name", ["MobileNetV2", "MobileNetV3Small", "ResNet50", "EfficientNetB0"])
def test_keras_application_via_tf2onnx(name: str, tmp_path: Path, monkeypatch) -> None:
    from model_zoo import application_onnx
    model = onnx.load_from_string(application_onnx(name, 96))
    monkeypatch.setitem(globals(), "TOLERANCE", APPLICATION_TOLERANCE.get(name, TOLERANCE))
    x = np.random.default_rng(1).uniform(-1, 1, (1, 96, 96, 3)).astype(np.float32)
    compare(model, tmp_path, feeds={"input": x})
    ops = {n.op for n in layertune.load(tmp_path / "m.onnx").graph.nodes}
    assert "TRANSPOSE" not in ops  # the NHWC input's Transpose and the squeeze-excite reshapes cost nothing


@pytest.mark.parametrize("opset", [11, 13, 15, 18, 21])
def test_opsets_11_to_21(opset: int, tmp_path: Path) -> None:
    """MobileNetV2 by tf2onnx at opsets 11 and 13, and the opset-13 export upgraded by onnx's
    version converter to 15, 18 and 21 (Clip, Pad, Squeeze, ReduceMean change form on the way)."""
    from onnx import version_converter

    from model_zoo import application_onnx
    model = onnx.load_from_string(application_onnx("MobileNetV2", 96, opset=min(opset, 13)))
    if opset > 13:
        model = version_converter.convert_version(model, opset)
    assert model.opset_import[0].version == opset
    compare(model, tmp_path, feeds={"input": np.random.default_rng(1).uniform(-1, 1, (1, 96, 96, 3)).astype(np.float32)})


def dynamic_model():
    node = helper.make_node("Relu", ["images"], ["y"], name="act")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              [helper.make_empty_tensor_value_info("y")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_dynamic_dimensions_need_input_shapes(tmp_path: Path) -> None:
    path = tmp_path / "dyn.onnx"
    onnx.save(dynamic_model(), path)
    with pytest.raises(ValueError) as err:
        layertune.load(path)
    msg = str(err.value)
    assert "\n" not in msg and "dyn.onnx" in msg and "'images'" in msg and "0 (N)" in msg and "2 (H)" in msg
    assert "--input_shape images=Nx3xNxN" in msg
    m = layertune.load(path, input_shapes={"images": (2, 3, 5, 7)})
    x = RNG.standard_normal((2, 3, 5, 7)).astype(np.float32)
    np.testing.assert_array_equal(m.run(x), np.maximum(x, 0))
    for bad, why in (({"images": (1, 4, 5, 7)}, "does not fit"), ({"pixels": (1, 3, 5, 7)}, "pixels")):
        with pytest.raises(ValueError, match=why):
            layertune.load(path, input_shapes=bad)


def test_unsupported_op_names_model_node_and_op(tmp_path: Path) -> None:
    model = build([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Einsum", ["r"], ["y"], name="mixer", equation="ij->ji")],
                  {"x": (3, 4)}, ["y"])
    path = tmp_path / "einsum.onnx"
    onnx.save(model, path)
    with pytest.raises(ValueError) as err:
        layertune.load(path)
    msg = str(err.value)
    assert "\n" not in msg and "einsum.onnx" in msg and "node 'mixer' (Einsum)" in msg and "not supported" in msg


def test_corrupt_and_unfit_models_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(ValueError, match=r"bad\.onnx: (corrupt ONNX model|the ONNX graph has no nodes)"):
        layertune.load(bad)
    conv1d = build([helper.make_node("Conv", ["x", "w"], ["y"], name="c1d")], {"x": (1, 2, 9)}, ["y"], {"w": weights(3, 2, 3)})
    onnx.save(conv1d, tmp_path / "c1d.onnx")
    with pytest.raises(ValueError, match=r"c1d\.onnx: node 'c1d' \(Conv\): input has shape \(1, 2, 9\); only 2-D"):
        layertune.load(tmp_path / "c1d.onnx")
    cubic = single("Resize", {"mode": "cubic"}, extra_inputs=["", ""], consts={"sz": i64(1, 4, 18, 22)})
    onnx.save(cubic, tmp_path / "cubic.onnx")
    with pytest.raises(ValueError, match=r"Resize mode 'cubic' is not supported"):
        layertune.load(tmp_path / "cubic.onnx")
