"""int8 models computed in int8: every int8 convolution kernel bit-exact against the reference
kernel and an independent numpy version of TFLite's arithmetic, one-op models and whole models
against LiteRT (within 1 LSB), the precision pass, plans, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import layertune
from layertune import _core
from layertune.graph.ir import Graph, Node, Quantization, Tensor
from layertune.graph.plan import graph_from_plan, plan_bytes
from layertune.graph.precision import REQUANTIZED_OPS
from layertune.graph.fusion import fuse
from layertune.graph.tflite_import import import_tflite_bytes

import int8_reference as ref
from conftest import require
from model_zoo import calibrated_application, digits_cnn, int8_tflite
from tflite_helpers import litert_run

RNG = np.random.default_rng(7)
ROOT = Path(__file__).resolve().parent.parent


def _q(scale: float, zero: int, dtype: str = "int8") -> Quantization:
    return Quantization(dtype, (float(scale),), (int(zero),))


def conv_graph(x_shape, w, bias, *, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), groups=1,
               activation="none", method="", sx=0.05, zx=3, sy=0.2, zy=-5, w_scales=None, op=None,
               requantization="tflite", tile_rows=None):
    """real input -> QUANTIZE -> an int8 convolution -> DEQUANTIZE -> real output."""
    kh, kw, _, oc = w.shape
    n, h, wd, _ = x_shape
    oh = (h + pads[0] + pads[1] - (kh - 1) * dilations[0] - 1) // strides[0] + 1
    ow = (wd + pads[2] + pads[3] - (kw - 1) * dilations[1] - 1) // strides[1] + 1
    w_scales = w_scales if w_scales is not None else tuple(float(s) for s in RNG.uniform(0.005, 0.02, oc))
    tensors = [
        Tensor("x", tuple(x_shape), quantization=_q(sx, zx)),
        Tensor("xq", tuple(x_shape), quantization=_q(sx, zx), dtype="int8"),
        Tensor("w", w.shape, w, Quantization("int8", w_scales, (0,) * len(w_scales), 3), "int8"),
        Tensor("b", (oc,), bias, Quantization("int32", tuple(sx * s for s in w_scales), (0,) * len(w_scales)), "int32"),
        Tensor("yq", (n, oh, ow, oc), quantization=_q(sy, zy), dtype="int8"),
        Tensor("y", (n, oh, ow, oc), quantization=_q(sy, zy)),
    ]
    attrs = {"strides": list(strides), "dilations": list(dilations), "pads": list(pads), "groups": groups,
             "activation": activation, "requantization": requantization}
    if method:
        attrs["kernel.method"] = method
    if tile_rows:
        attrs["kernel.tile_rows"] = tile_rows
    op = op or ("DEPTHWISE_CONV_2D" if groups > 1 and groups == x_shape[3] else "CONV_2D")
    nodes = [Node("QUANTIZE", "quantize", [0], [1]), Node(op, "conv", [1, 2, 3], [4], attrs),
             Node("DEQUANTIZE", "dequantize", [4], [5])]
    return Graph("conv", tensors, nodes, [0], [5])


def run_int(graph: Graph, q_x: np.ndarray, threads: int = 1, reference: bool = False) -> np.ndarray:
    """The graph on integer input (given as the reals they stand for), its integer output."""
    xq, yq = graph.tensors[graph.inputs[0]].quantization, graph.tensors[graph.outputs[0]].quantization
    x = ((q_x.astype(np.float64) - xq.zero_point) * xq.scale).astype(np.float32)
    engine = _core.Engine(plan_bytes(graph), threads, reference)
    y = engine.run([x])[0]
    return np.round(y.astype(np.float64) / yq.scale + yq.zero_point).astype(np.int64)


def numpy_conv(graph: Graph, q_x: np.ndarray) -> np.ndarray:
    conv = graph.nodes[1]
    T = graph.tensors
    w, b, yq = T[2], T[3], T[4].quantization
    sx, zx = T[1].quantization.scale, T[1].quantization.zero_point
    mults = [ref.quantize_multiplier(float(np.float32(sx)) * float(np.float32(s)) / float(np.float32(yq.scale)))
             for s in w.quantization.scales]
    xnnpack_scales = None
    if conv.attrs["requantization"] == "xnnpack":  # float32 arithmetic, in XNNPACK's order
        xnnpack_scales = [np.float32(np.float32(sx) * np.float32(s)) / np.float32(yq.scale) for s in w.quantization.scales]
    lo, hi = -128, 127
    act = conv.attrs["activation"]
    if act in ("relu", "relu6"):
        lo = max(lo, yq.zero_point)
    if act == "relu6":
        hi = min(hi, yq.zero_point + int(np.round(6 / np.float32(yq.scale))))
    return ref.conv(q_x, zx, w.data, b.data, mults, yq.zero_point, lo, hi, conv.attrs["strides"],
                    conv.attrs["pads"], conv.attrs["dilations"], conv.attrs["groups"], xnnpack_scales).astype(np.int64)


# (input, kernel h/w, out channels, strides, pads, dilations, groups, activation): 1x1, 3x3, 5x5,
# strided, dilated, channel counts off the 4-byte / 16-lane grid, batch 2, grouped, the activations;
# k (padded to 4) leaves every tail of the GEMM tiles' k steps (8 for NEON, 16 for the dot product):
# 16, 28 (tails 4 / 12), 48, 64, 152 (8), 72 (8), 24 (8, in place), 20 (4, in place).
REGULAR = [
    ((1, 8, 8, 16), 1, 24, (1, 1), (0, 0, 0, 0), (1, 1), 1, "none"),
    ((1, 9, 11, 3), 3, 8, (1, 1), (1, 1, 1, 1), (1, 1), 1, "relu6"),
    ((2, 10, 10, 5), 3, 40, (2, 2), (0, 1, 0, 1), (1, 1), 1, "relu"),
    ((1, 12, 9, 7), 3, 17, (1, 1), (2, 2, 2, 2), (2, 2), 1, "none"),
    ((1, 9, 9, 6), 5, 33, (1, 2), (2, 2, 1, 2), (1, 1), 1, "none"),
    ((1, 6, 6, 70), 1, 130, (1, 1), (0, 0, 0, 0), (1, 1), 1, "relu"),
    ((2, 7, 9, 24), 1, 40, (1, 1), (0, 0, 0, 0), (1, 1), 1, "relu6"),  # 1x1 read in place (channels % 4 == 0)
    ((1, 5, 6, 20), 1, 19, (1, 1), (0, 0, 0, 0), (1, 1), 1, "none"),  # in place, k past the tiles' 8 / 16: a tail of 4
    ((1, 7, 7, 8), 3, 12, (1, 1), (1, 1, 1, 1), (1, 1), 2, "none"),  # grouped: the reference
    ((1, 20, 19, 13), 3, 48, (1, 1), (1, 1, 1, 1), (1, 1), 1, "relu"),  # 380 rows: AMX splits rows on 2 threads; K 117
]
DEPTHWISE = [
    ((1, 10, 10, 24), 3, 1, (1, 1), (1, 1, 1, 1), "relu6"),
    ((1, 11, 11, 40), 3, 1, (2, 2), (0, 1, 0, 1), "none"),
    ((2, 9, 9, 17), 5, 1, (1, 1), (2, 2, 2, 2), "relu"),
    ((1, 12, 12, 33), 5, 1, (2, 2), (1, 2, 1, 2), "none"),
    ((1, 8, 8, 6), 3, 2, (1, 1), (1, 1, 1, 1), "none"),  # multiplier 2: the reference
]


def _layer(case, depthwise: bool):
    if depthwise:
        x_shape, k, mult, strides, pads, act = case
        c = x_shape[3]
        w = RNG.integers(-127, 128, (k, k, 1, c * mult)).astype(np.int8)
        kw = dict(strides=strides, pads=pads, groups=c, activation=act)
        oc = c * mult
    else:
        x_shape, k, oc, strides, pads, dil, groups, act = case
        w = RNG.integers(-127, 128, (k, k, x_shape[3] // groups, oc)).astype(np.int8)
        kw = dict(strides=strides, pads=pads, dilations=dil, groups=groups, activation=act)
    bias = RNG.integers(-3000, 3000, oc).astype(np.int32)
    q_x = RNG.integers(-128, 128, x_shape).astype(np.int64)
    return w, bias, kw, q_x


@pytest.mark.parametrize("depthwise,case", [(False, c) for c in REGULAR] + [(True, c) for c in DEPTHWISE])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("requantization", ["tflite", "xnnpack"])
def test_int8_conv_kernels_bit_exact(depthwise, case, threads, requantization):
    w, bias, kw, q_x = _layer(case, depthwise)
    kw["requantization"] = requantization
    fast = conv_graph(q_x.shape, w, bias, **kw)  # the default kernel for the layer
    want = numpy_conv(fast, q_x)
    got_ref = run_int(fast, q_x, threads, reference=True)
    np.testing.assert_array_equal(got_ref, want, "int8_reference vs numpy")
    np.testing.assert_array_equal(run_int(fast, q_x, threads), want, "default int8 kernel vs numpy")
    method = "int8_depthwise" if depthwise else "int8_gemm"
    if (depthwise and case[2] == 1) or (not depthwise and case[6] == 1):  # where the method applies
        for tile_rows in [None] if depthwise else layertune.methods.methods()["int8_gemm"].param("tile_rows").choices:
            named = conv_graph(q_x.shape, w, bias, method=method, w_scales=fast.tensors[2].quantization.scales,
                               tile_rows=tile_rows, **kw)
            np.testing.assert_array_equal(run_int(named, q_x, threads), want, f"{method} {tile_rows} vs numpy")
    # the outputs are not all clamped: the comparison says something
    assert len(np.unique(want)) > 10


# On a CPU with AMX (its tiles are then the default) the VNNI tile, which CPUs without AMX run, too.
OTHER_INT8_ISAS = ["avx2", "portable"] + (["avx512vnni"] if _core.int8_gemm_isa() == "avx512amx" else [])


@pytest.mark.parametrize("isa", OTHER_INT8_ISAS)
def test_the_other_int8_gemm_tiles_agree_too(isa):
    """The int8 GEMM's tiles for CPUs without VNNI (LAYERTUNE_INT8_ISA: AVX2's vpmaddwd tile, and the
    portable code that ARMv6 and the oracle of every layout run; and VNNI's where AMX is the default)
    on the same grid, and with a fused residual ADD, in a process of their own. (The NEON tiles run
    under qemu: test_arm_codegen.py.)"""
    env = {**os.environ, "LAYERTUNE_INT8_ISA": isa}
    got = subprocess.run([sys.executable, "-c", "from layertune import _core; print(_core.int8_gemm_isa())"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert got.stdout.strip() == isa, got.stdout + got.stderr
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/test_int8.py::test_int8_conv_kernels_bit_exact",  # by their ids: never this test again
                           "tests/test_int8.py::test_a_fused_residual_add_gives_the_unfused_answer"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0 and " passed" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]


def test_an_int8_gemm_tile_this_cpu_lacks_is_one_line():
    env = {**os.environ, "LAYERTUNE_INT8_ISA": "neon"}
    got = subprocess.run([sys.executable, "-c", "from layertune import _core; print(_core.int8_gemm_isa())"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert got.returncode != 0
    assert "LAYERTUNE_INT8_ISA=neon: this CPU's int8 GEMM tiles are portable" in got.stderr.strip().splitlines()[-1]


def residual_add_graph(conv: Graph, conv_first: bool, activation: str = "relu") -> Graph:
    """conv_graph's layer, then an int8 ADD of its output and a second input (the residual, of
    the output's shape and its own quantization), with an activation, in the layer's arithmetic."""
    T = [Tensor(t.name, t.shape, t.data, t.quantization, t.dtype) for t in conv.tensors[:5]]
    shape = T[4].shape
    T += [Tensor("r", shape, quantization=_q(0.13, 7)), Tensor("rq", shape, quantization=_q(0.13, 7), dtype="int8"),
          Tensor("zq", shape, quantization=_q(0.31, -9), dtype="int8"), Tensor("z", shape, quantization=_q(0.31, -9))]
    req = conv.nodes[1].attrs["requantization"]
    nodes = [conv.nodes[0], conv.nodes[1], Node("QUANTIZE", "quantize_r", [5], [6]),
             Node("ADD", "add", [4, 6] if conv_first else [6, 4], [7], {"activation": activation, "requantization": req}),
             Node("DEQUANTIZE", "dequantize", [7], [8])]
    return Graph("conv_add", T, nodes, [0, 5], [8])


def _run_two(graph: Graph, q_x: np.ndarray, q_r: np.ndarray, threads: int, reference: bool = False) -> np.ndarray:
    ins = []
    for t, q in zip(graph.inputs, (q_x, q_r)):
        qt = graph.tensors[t].quantization
        ins.append(((q.astype(np.float64) - qt.zero_point) * qt.scale).astype(np.float32))
    return _core.Engine(plan_bytes(graph), threads, reference).run(ins)[0]


@pytest.mark.parametrize("depthwise,case", [(False, REGULAR[0]), (False, REGULAR[2]), (False, REGULAR[4]),
                                            (True, DEPTHWISE[0])])
@pytest.mark.parametrize("requantization", ["tflite", "xnnpack"])
def test_a_fused_residual_add_gives_the_unfused_answer(depthwise, case, requantization):
    """graph/fusion.py's `add` on an int8 layer: the layer's output, computed in registers, through
    the ADD's arithmetic (either input order, with its activation) equals the layer then the ADD
    (whose arithmetic the one-op ADD test holds to LiteRT's), in every kernel and tile height, at 1
    and 2 threads."""
    w, bias, kw, q_x = _layer(case, depthwise)
    kw["requantization"] = requantization
    method = "int8_depthwise" if depthwise else "int8_gemm"
    plain = conv_graph(q_x.shape, w, bias, **kw)
    q_r = RNG.integers(-128, 128, plain.tensors[4].shape)
    tile_rows = [None] if depthwise else layertune.methods.methods()["int8_gemm"].param("tile_rows").choices
    for conv_first, activation in ((True, "relu"), (False, "none")):
        unfused = residual_add_graph(plain, conv_first, activation)
        want = _run_two(unfused, q_x, q_r, 1)
        assert len(np.unique(want)) > 10
        for rows in tile_rows:
            named = conv_graph(q_x.shape, w, bias, method=method, w_scales=plain.tensors[2].quantization.scales,
                               tile_rows=rows, **kw)
            fused = fuse(residual_add_graph(named, conv_first, activation), ("add",))
            conv = next(n for n in fused.nodes if n.op in ("CONV_2D", "DEPTHWISE_CONV_2D"))
            assert conv.attrs["epilogue"] == f"add:{activation}" and "ADD" not in {n.op for n in fused.nodes}
            for threads in (1, 2):
                np.testing.assert_array_equal(_run_two(fused, q_x, q_r, threads), want, f"{method} {rows} {threads}")
        np.testing.assert_array_equal(_run_two(fused, q_x, q_r, 2, reference=True), want, "int8_reference")


def test_a_bad_int8_epilogue_is_one_line():
    w, bias, kw, q_x = _layer(REGULAR[0], False)
    fused = fuse(residual_add_graph(conv_graph(q_x.shape, w, bias, **kw), True), ("add",))
    conv = next(n for n in fused.nodes if n.op == "CONV_2D")
    conv.attrs["epilogue"] = "add:relu,swish"
    with pytest.raises(ValueError, match="node 'conv'.*an int8 convolution's epilogue can only be one residual add"):
        _core.Engine(plan_bytes(fused), 1)
    conv.attrs["epilogue"] = "add:relu"
    del conv.attrs["conv_output_scale"]
    with pytest.raises(ValueError, match="node 'conv'.*needs conv_output_scale and conv_output_zero_point"):
        _core.Engine(plan_bytes(fused), 1)


def test_int8_method_that_does_not_apply_is_one_line():
    w, bias, kw, q_x = _layer(next(c for c in REGULAR if c[6] > 1), False)  # grouped
    graph = conv_graph(q_x.shape, w, bias, method="int8_gemm", **kw)
    with pytest.raises(ValueError, match="node 'conv'.*int8_gemm computes ungrouped layers only"):
        _core.Engine(plan_bytes(graph), 1)


def test_int8_plan_round_trip_and_bad_quantization():
    w, bias, kw, q_x = _layer(REGULAR[1], False)
    graph = conv_graph(q_x.shape, w, bias, **kw)
    back = graph_from_plan(plan_bytes(graph))
    assert [t.dtype for t in back.tensors] == [t.dtype for t in graph.tensors]
    assert back.tensors[2].data.dtype == np.int8 and back.tensors[3].data.dtype == np.int32
    assert back.tensors[2].quantization.scales == pytest.approx(graph.tensors[2].quantization.scales)
    np.testing.assert_array_equal(run_int(back, q_x), run_int(graph, q_x))
    graph.tensors[4].quantization = None  # an int8 tensor with no scale
    with pytest.raises(ValueError, match="int8 tensor 'yq' has no quantization"):
        _core.Engine(plan_bytes(graph), 1)


def test_an_unknown_requantization_is_one_line(tmp_path):
    w, bias, kw, q_x = _layer(REGULAR[0], False)
    graph = conv_graph(q_x.shape, w, bias, requantization="gemmlowp", **kw)
    with pytest.raises(ValueError, match="node 'conv'.*requantization must be tflite or xnnpack, got 'gemmlowp'"):
        _core.Engine(plan_bytes(graph), 1)
    with pytest.raises(ValueError, match="requantization must be one of xnnpack, tflite, got 'fp32'"):
        import_tflite_bytes(b"", "m", requantization="fp32")


def test_quantize_rounds_half_away_from_zero_as_tflite():
    """QUANTIZE's vectorized rounding (x / scale, ties away from zero, plus the zero point,
    saturated) on exact ties of both signs, tiny and saturating values, over a length that leaves
    a vector tail; and int8 -> int8 requantization against the scalar arithmetic."""
    scale, zero = 0.25, -3
    steps = np.array([0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 0.49999997, -0.49999997, 1e-8, -1e-8, 0.0, 126.5,
                      -126.5, 1e9, -1e9, 130.5, -130.5, 7.25, -7.75, 3.5000002, -3.4999998] * 2, np.float64)
    x = (steps * scale).astype(np.float32)
    tensors = [Tensor("x", (1, len(x)), quantization=_q(scale, zero)),
               Tensor("xq", (1, len(x)), quantization=_q(scale, zero), dtype="int8"),
               Tensor("xr", (1, len(x)), quantization=_q(scale * 3.1, 5), dtype="int8"),
               Tensor("y", (1, len(x)), quantization=_q(scale * 3.1, 5))]
    nodes = [Node("QUANTIZE", "quantize", [0], [1]), Node("QUANTIZE", "requantize", [1], [2]),
             Node("DEQUANTIZE", "dequantize", [2], [3])]
    engine = _core.Engine(plan_bytes(Graph("quantize", tensors, nodes, [0], [3])), 1)
    q = x.astype(np.float32) / np.float32(scale)
    xq = np.clip(np.sign(q) * np.floor(np.abs(q.astype(np.float64)) + 0.5) + zero, -128, 127).astype(np.int64)
    m, shift = ref.quantize_multiplier(float(np.float32(scale)) / float(np.float32(scale * 3.1)))
    want = np.clip(ref.multiply_by_quantized_multiplier(xq - zero, m, shift) + 5, -128, 127)
    got = np.round(engine.run([x])[0].astype(np.float64).ravel() / np.float32(scale * 3.1) + 5).astype(np.int64)
    np.testing.assert_array_equal(got, want)


# -- one-op models against LiteRT ----------------------------------------------------------------

def _one_op_models():
    tf = require("tensorflow")
    L = tf.keras.layers

    def model(shape, *layers, inputs=1):
        xs = [tf.keras.Input(shape) for _ in range(inputs)]
        y = xs[0] if inputs == 1 else xs
        for layer in layers:
            y = layer(y)
        return tf.keras.Model(xs, y)

    def squeeze_excite(shape):
        x = tf.keras.Input(shape)
        scale = L.Activation("sigmoid")(L.GlobalAveragePooling2D(keepdims=True)(x))
        return tf.keras.Model(x, L.Multiply()([x, scale]))

    def resize(shape, size, interpolation="nearest"):
        x = tf.keras.Input(shape, batch_size=1)
        return tf.keras.Model(x, L.Resizing(*size, interpolation=interpolation)(x))

    def resize_bilinear_v1(shape, size, align_corners):  # TensorFlow's legacy coordinates, or aligned corners
        x = tf.keras.Input(shape, batch_size=1)
        resize = L.Lambda(lambda v: tf.compat.v1.image.resize_bilinear(v, size, align_corners=align_corners))
        return tf.keras.Model(x, resize(x))

    tf.keras.utils.set_random_seed(1)
    return {
        "conv3x3_relu6": model((12, 12, 5), L.Conv2D(16, 3, padding="same"), L.ReLU(6.0)),
        "conv_s2_valid": model((13, 13, 8), L.Conv2D(24, 3, strides=2)),
        "conv1x1": model((8, 8, 32), L.Conv2D(40, 1, activation="relu")),
        "depthwise_s1": model((10, 10, 24), L.DepthwiseConv2D(3, padding="same")),
        "depthwise5_s2": model((11, 11, 16), L.DepthwiseConv2D(5, strides=2, padding="same")),
        "dense": model((20,), L.Dense(13)),
        "add": model((6, 6, 8), L.Add(), inputs=2),
        "concat": model((6, 6, 8), L.Concatenate(), inputs=2),
        "mean": model((7, 7, 16), L.GlobalAveragePooling2D()),
        "avgpool": model((8, 8, 8), L.AveragePooling2D(2)),
        "maxpool": model((9, 9, 8), L.MaxPooling2D(3, strides=2, padding="same")),
        "maxpool_wide": model((7, 9, 70), L.MaxPooling2D(3, strides=2)),  # a whole 64-lane vector and a tail
        "pad": model((6, 6, 4), L.ZeroPadding2D(((1, 2), (0, 1)))),
        "logistic": model((6, 6, 4), L.Activation("sigmoid")),
        "hard_swish": model((6, 6, 4), L.Activation(tf.nn.relu6), L.Lambda(lambda v: v * tf.nn.relu6(v + 3) / 6)),
        "reshape_softmax": model((4, 4, 3), L.Reshape((48,)), L.Softmax()),
        "mul": model((6, 6, 8), L.Multiply(), inputs=2),
        "mul_squeeze_excite": squeeze_excite((7, 5, 24)),  # MUL broadcasting 1 x 1 x C over H x W x C
        "mul_swish": model((6, 6, 20), L.Activation("swish")),  # x * sigmoid(x): LOGISTIC's table, then MUL
        "resize_nearest": resize((5, 6, 8), (10, 18)),
        # half-pixel centers, upsampling by a fraction; a channel count past one 16-lane vector
        "resize_bilinear": resize((5, 6, 20), (10, 17), "bilinear"),
        "resize_bilinear_down": resize((9, 11, 8), (4, 5), "bilinear"),
        "resize_bilinear_legacy": resize_bilinear_v1((5, 6, 3), (11, 13), False),
        "resize_bilinear_align": resize_bilinear_v1((4, 7, 8), (9, 10), True),
    }


ONE_OP = [
    "conv3x3_relu6", "conv_s2_valid", "conv1x1", "depthwise_s1", "depthwise5_s2", "dense", "add", "concat", "mean",
    "avgpool", "maxpool", "maxpool_wide", "pad", "logistic", "hard_swish", "reshape_softmax", "mul", "mul_squeeze_excite",
    "mul_swish", "resize_nearest", "resize_bilinear", "resize_bilinear_down", "resize_bilinear_legacy",
    "resize_bilinear_align"]


def _quantized(model, rng: np.random.Generator) -> tuple[bytes, list[np.ndarray]]:
    tf = require("tensorflow")
    shapes = [tuple(i.shape[1:]) for i in model.inputs]
    calib = [rng.uniform(-2, 2, (50, 1) + s).astype(np.float32) for s in shapes]

    def representative():
        for i in range(50):
            yield [c[i] for c in calib]

    from tflite_helpers import convert_keras
    fb = convert_keras(model, optimizations=[tf.lite.Optimize.DEFAULT], representative_dataset=representative,
                       target_spec=tf.lite.TargetSpec(supported_ops=[tf.lite.OpsSet.TFLITE_BUILTINS_INT8]),
                       inference_input_type=tf.int8, inference_output_type=tf.int8)
    return fb, [rng.uniform(-2, 2, (1,) + s).astype(np.float32) for s in shapes]


def litert_int(fb: bytes, xs: list[np.ndarray], threads: int = 1, reference: bool = False) -> np.ndarray:
    """LiteRT's output: by default with XNNPACK (fp32 requantization); reference=True with
    TFLite's reference kernels (BUILTIN_REF), whose fixed-point arithmetic layertune's int8 path follows."""
    if not reference:
        return litert_run(fb, xs, threads)[0]
    litert = require("ai_edge_litert.interpreter")
    it = litert.Interpreter(model_content=fb, num_threads=threads,
                            experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    for d, x in zip(it.get_input_details(), xs):
        it.set_tensor(d["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


def _lsb_diff(graph: Graph, fb: bytes, xs_real: list[np.ndarray], threads: int = 1, reference: bool = False) -> np.ndarray:
    """|layertune - LiteRT| in the output's integers, for the input quantized as LiteRT takes it."""
    xs = []
    for t, x in zip(graph.inputs, xs_real):
        q = graph.tensors[t].quantization
        xs.append(np.clip(np.round(x / q.scale + q.zero_point), -128, 127).astype(np.int8))
    want = litert_int(fb, xs, threads, reference).astype(np.int64)
    got = layertune.Model(graph, threads).run(xs if len(xs) > 1 else xs[0])
    oq = graph.tensors[graph.outputs[0]].quantization
    return np.abs(np.round(got / oq.scale + oq.zero_point).astype(np.int64) - want.reshape(got.shape))


@pytest.fixture(scope="module")
def one_op_models():
    return _one_op_models()


@pytest.mark.parametrize("name", ONE_OP)
def test_one_op_int8_models_agree_with_litert(one_op_models, name):
    model = one_op_models[name]
    fb, xs = _quantized(model, np.random.default_rng(ONE_OP.index(name)))
    graph = import_tflite_bytes(fb, name)
    main = [n for n in graph.nodes if n.op not in ("QUANTIZE", "DEQUANTIZE")]
    assert all(graph.tensors[n.outputs[0]].dtype == "int8" for n in main), [(n.op, graph.tensors[n.outputs[0]].dtype) for n in main]
    if name == "mul_swish":  # LOGISTIC and the MUL of its input by it, folded into one table (precision.py)
        assert [n.op for n in main] == ["SWISH"]
    requantized = [n for n in main if n.op in REQUANTIZED_OPS]
    assert all(n.attrs["requantization"] == "xnnpack" for n in requantized)  # the default
    fixed = import_tflite_bytes(fb, name, requantization="tflite")
    assert all(n.attrs["requantization"] == "tflite" for n in fixed.nodes if n.op in REQUANTIZED_OPS)
    for threads in (1, 2):
        diff = _lsb_diff(graph, fb, xs, threads)
        assert diff.max() <= 1, f"{name}: {diff.max()} LSB off LiteRT"
        if requantized or name == "reshape_softmax":  # XNNPACK's own arithmetic, or TFLite's optimized SOFTMAX:
            assert diff.max() == 0, f"{name}: {np.mean(diff == 0):.4f} equal to LiteRT"  # LiteRT's output, every element
        if name != "reshape_softmax":  # SOFTMAX computes as LiteRT's optimized kernel does, not as its reference
            exact = _lsb_diff(fixed, fb, xs, threads, reference=True)
            assert exact.max() == 0, f"{name}: {np.mean(exact == 0):.4f} equal to TFLite's reference kernels"


def test_a_pad_before_an_int8_max_pool_is_folded_and_gives_litert_s_answer():
    """ResNet50's stem: a ReLU'd convolution, a zero PAD (int8's lowest value at this zero point)
    and a 3x3 / 2 max pool. Folded, the pool skips the padding; without a ReLU the pad is kept."""
    tf = require("tensorflow")
    L = tf.keras.layers
    tf.keras.utils.set_random_seed(3)
    for activation, folds in (("relu", True), (None, False)):
        x = tf.keras.Input((11, 10, 3))
        y = L.MaxPooling2D(3, strides=2)(L.ZeroPadding2D(1)(L.Conv2D(20, 3, activation=activation)(x)))
        fb, xs = _quantized(tf.keras.Model(x, y), np.random.default_rng(5))
        graph = import_tflite_bytes(fb, "pad_pool")
        fused = fuse(graph, ("pad",))
        assert ("PAD" not in [n.op for n in fused.nodes]) == folds
        for threads in (1, 2):
            assert _lsb_diff(fused, fb, xs, threads).max() == 0


# -- whole models -------------------------------------------------------------------------------

def test_int8_digits_cnn_in_int8_agrees_with_litert(tmp_path):
    keras_model, x_test, y_test, x_train = digits_cnn()
    fb = int8_tflite(keras_model, x_train)
    path = tmp_path / "digits_int8.tflite"
    path.write_bytes(fb)
    model = layertune.load(path)
    convs = [n for n in model.graph.nodes if n.op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
    assert convs and all(model.graph.tensors[n.outputs[0]].dtype == "int8" for n in convs)
    q = model.graph.tensors[model.graph.inputs[0]].quantization
    xq = np.clip(np.round(x_test / q.scale + q.zero_point), -128, 127).astype(np.int8)
    oq = model.graph.tensors[model.graph.outputs[0]].quantization
    plan = tmp_path / "digits_int8.ltplan"
    model.save(plan)
    from_plan = layertune.load(plan, threads=2)
    ours, ours_plan, theirs = [], [], []
    for i in range(len(xq)):
        ours.append(np.round(model.run(xq[i:i + 1]) / oq.scale + oq.zero_point))
        ours_plan.append(np.round(from_plan.run(xq[i:i + 1]) / oq.scale + oq.zero_point))
        theirs.append(litert_run(fb, [xq[i:i + 1]])[0])
    ours, ours_plan, theirs = (np.concatenate(a).astype(np.int64) for a in (ours, ours_plan, theirs))
    np.testing.assert_array_equal(ours_plan, ours)
    # every op of this CNN in XNNPACK's arithmetic (the default): LiteRT's output, element for element
    np.testing.assert_array_equal(ours, theirs)
    assert np.mean(ours.argmax(1) == y_test) > 0.9  # and it is still a digits classifier


# exact: every op by TFLite's integer arithmetic with requantization="tflite", and by XNNPACK's by
# default: equal to TFLite's reference kernels, and to LiteRT (XNNPACK), element for element.
# (MobileNetV3's HARD_SWISH is a table here, its SE MUL computed in float: within 1 LSB, not equal.)
@pytest.mark.parametrize("name,size,exact", [("MobileNetV2", 96, True), ("MobileNetV3Small", 96, False),
                                             ("ResNet50", 64, True)])
def test_int8_applications_agree_with_litert(name, size, exact):
    tf = require("tensorflow")
    keras_model = calibrated_application(name, size)
    rng = np.random.default_rng(3)  # the same data whichever tests ran before
    calib = rng.uniform(-1, 1, (8, 1, size, size, 3)).astype(np.float32)
    from tflite_helpers import convert_keras
    fb = convert_keras(keras_model, optimizations=[tf.lite.Optimize.DEFAULT],
                       representative_dataset=lambda: ([c] for c in calib),
                       target_spec=tf.lite.TargetSpec(supported_ops=[tf.lite.OpsSet.TFLITE_BUILTINS_INT8]),
                       inference_input_type=tf.int8, inference_output_type=tf.int8)
    graph = import_tflite_bytes(fb, name)  # XNNPACK's arithmetic (the default)
    fixed = import_tflite_bytes(fb, name, requantization="tflite")  # TFLite's reference kernels'
    convs = [n for n in graph.nodes if n.op in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert all(graph.tensors[n.outputs[0]].dtype == "int8" for n in convs)
    x = [rng.uniform(-1, 1, (1, size, size, 3)).astype(np.float32)]
    # and fused as layertune.load fuses them (residual ADDs in the convolutions' epilogues)
    fused, fixed_fused = fuse(graph), fuse(fixed)
    assert name == "MobileNetV3Small" or any(n.attrs.get("epilogue", "").startswith("add") for n in fused.nodes)
    for threads in (1, 2):
        for g, f in ((fixed, "unfused"), (fixed_fused, "fused")):
            ref_diff = _lsb_diff(g, fb, x, threads, reference=True)
            assert ref_diff.max() == 0 if exact else np.mean(ref_diff <= 1) >= 0.999, \
                f"{name} {f} at {threads} threads: {np.mean(ref_diff == 0):.4f} equal to TFLite's reference kernels"
        for g, f in ((graph, "unfused"), (fused, "fused")):
            diff = _lsb_diff(g, fb, x, threads)
            assert diff.max() == 0 if exact else np.mean(diff <= 1) >= 0.999, \
                f"{name} {f} at {threads} threads: {np.mean(diff == 0):.4f} equal to LiteRT, {np.mean(diff <= 1):.4f} within 1 LSB"


def test_int8_off_computes_in_float_as_before():
    keras_model, x_test, _, x_train = digits_cnn()
    fb = int8_tflite(keras_model, x_train)
    graph = import_tflite_bytes(fb, "digits", int8=False)
    assert all(t.dtype == "float32" for t in graph.tensors)
    int8_graph = import_tflite_bytes(fb, "digits")
    x = x_test[:1]
    a = layertune.Model(graph).run(x)
    b = layertune.Model(int8_graph).run(x)
    assert np.abs(a - b).max() <= 2 * graph.tensors[graph.outputs[0]].quantization.scale
