"""Every supported op against LiteRT, on one-op models built with TensorFlow."""

from __future__ import annotations

import numpy as np
import pytest

import layertune
from conftest import require
from tflite_helpers import (assert_matches, convert_function, convert_keras, litert_run, op_names,
                            reshape_as_squeeze)

rng = np.random.default_rng(0)
C1 = rng.uniform(-1, 1, (5,)).astype(np.float32)
C4 = rng.uniform(0.5, 1.5, (1, 1, 1, 5)).astype(np.float32)
X = (1, 6, 7, 5)


def _cases():
    import tensorflow as tf  # noqa: F401  (only when collected with TensorFlow present)
    nn = tf.nn
    return [
        # (id, expected op, function, input shapes)
        ("add_broadcast_vector", "ADD", lambda x: x + C1, [X]),
        ("add_two_inputs", "ADD", lambda x, y: x + y, [X, X]),
        ("add_broadcast_middle", "ADD", lambda x, y: x + y, [X, (1, 6, 1, 5)]),
        ("sub", "SUB", lambda x: x - C4, [X]),
        ("sub_scalar_first", "SUB", lambda x: 2.0 - x, [X]),
        ("mul", "MUL", lambda x, y: x * y, [X, (1, 1, 1, 5)]),
        ("div", "DIV", lambda x, y: x / (nn.relu(y) + 0.5), [X, (1, 1, 7, 5)]),
        ("maximum", "MAXIMUM", lambda x, y: tf.maximum(x, y), [X, X]),
        ("minimum", "MINIMUM", lambda x: tf.minimum(x, C1), [X]),
        ("squared_difference", "SQUARED_DIFFERENCE", lambda x, y: tf.math.squared_difference(x, y), [X, X]),
        ("concat_channels", "CONCATENATION", lambda x, y: tf.concat([x, y], -1), [X, (1, 6, 7, 3)]),
        ("concat_rows", "CONCATENATION", lambda x, y: tf.concat([x, y], 1), [X, (1, 2, 7, 5)]),
        ("pack", "PACK", lambda x, y: tf.stack([x, y], axis=2), [(2, 3, 4), (2, 3, 4)]),
        ("pad", "PAD", lambda x: tf.pad(x, [[0, 0], [1, 2], [0, 3], [0, 0]]), [X]),
        ("padv2", "PADV2", lambda x: tf.pad(x, [[0, 0], [2, 1], [1, 1], [0, 1]], constant_values=1.5), [X]),
        ("mirror_pad_reflect", "MIRROR_PAD", lambda x: tf.pad(x, [[0, 0], [2, 1], [1, 2], [0, 0]], "REFLECT"), [X]),
        ("mirror_pad_symmetric", "MIRROR_PAD", lambda x: tf.pad(x, [[0, 0], [2, 2], [1, 0], [0, 0]], "SYMMETRIC"), [X]),
        ("avg_pool_same", "AVERAGE_POOL_2D", lambda x: nn.avg_pool2d(x, 3, 2, "SAME"), [X]),
        ("avg_pool_valid", "AVERAGE_POOL_2D", lambda x: nn.avg_pool2d(x, (2, 3), 1, "VALID"), [X]),
        ("max_pool_same", "MAX_POOL_2D", lambda x: nn.max_pool2d(x, 3, 2, "SAME"), [X]),
        ("max_pool_valid", "MAX_POOL_2D", lambda x: nn.max_pool2d(x, 2, 2, "VALID"), [X]),
        ("mean_spatial", "MEAN", lambda x: tf.reduce_mean(x, [1, 2], keepdims=True), [X]),
        ("mean_channels", "MEAN", lambda x: tf.reduce_mean(x, [3]), [X]),
        ("mean_rows_and_channels", "MEAN", lambda x: tf.reduce_mean(x, [1, 3]), [X]),
        ("reshape", "RESHAPE", lambda x: tf.reshape(x, (1, 42, 5)), [X]),
        ("strided_slice", "STRIDED_SLICE", lambda x: x[:, 1:5:2, ::-1, 2:], [X]),
        ("strided_slice_shrink", "STRIDED_SLICE", lambda x: x[:, 2, :, 1:4], [X]),
        ("slice", "SLICE", lambda x: tf.slice(x, [0, 1, 2, 0], [1, 3, -1, 4]), [X]),
        ("transpose", "TRANSPOSE", lambda x: tf.transpose(x, (0, 2, 1, 3)), [X]),
        ("depth_to_space", "DEPTH_TO_SPACE", lambda x: nn.depth_to_space(x, 2), [(1, 3, 4, 8)]),
        ("space_to_depth", "SPACE_TO_DEPTH", lambda x: nn.space_to_depth(x, 2), [(1, 6, 4, 3)]),
        ("softmax", "SOFTMAX", lambda x: nn.softmax(x * 3.0), [(2, 10)]),
        ("relu", "RELU", nn.relu, [X]),
        ("relu6", "RELU6", nn.relu6, [X]),
        ("relu_n1_to_1", "RELU_N1_TO_1", lambda x: tf.minimum(tf.maximum(x, -1.0), 1.0), [X]),
        ("leaky_relu", "LEAKY_RELU", lambda x: nn.leaky_relu(x, 0.3), [X]),
        ("logistic", "LOGISTIC", nn.sigmoid, [X]),
        ("logistic_saturating", "LOGISTIC", lambda x: nn.sigmoid(x * 30.0), [X]),
        ("tanh", "TANH", tf.tanh, [X]),
        ("hard_swish", "HARD_SWISH", lambda x: x * nn.relu6(x + 3.0) * (1.0 / 6.0), [X]),
        ("resize_bilinear", "RESIZE_BILINEAR", lambda x: tf.compat.v1.image.resize_bilinear(x, (11, 9)), [X]),
        ("resize_bilinear_align", "RESIZE_BILINEAR",
         lambda x: tf.compat.v1.image.resize_bilinear(x, (11, 13), align_corners=True), [X]),
        ("resize_bilinear_half_pixel", "RESIZE_BILINEAR", lambda x: tf.image.resize(x, (13, 5), "bilinear"), [X]),
        ("resize_nearest", "RESIZE_NEAREST_NEIGHBOR",
         lambda x: tf.compat.v1.image.resize_nearest_neighbor(x, (12, 10)), [X]),
        ("resize_nearest_half_pixel", "RESIZE_NEAREST_NEIGHBOR", lambda x: tf.image.resize(x, (9, 15), "nearest"), [X]),
        ("resize_nearest_align", "RESIZE_NEAREST_NEIGHBOR",
         lambda x: tf.compat.v1.image.resize_nearest_neighbor(x, (11, 13), align_corners=True), [X]),
    ]


def _case_ids():
    try:
        return [c[0] for c in _cases()]
    except ImportError:
        return ["tensorflow-missing"]


@pytest.mark.parametrize("case_id", _case_ids())
def test_op_matches_litert(case_id, tmp_path):
    require("tensorflow")
    _, op, fn, shapes = next(c for c in _cases() if c[0] == case_id)
    flatbuffer = convert_function(fn, shapes)
    assert op in op_names(flatbuffer), f"the converter did not emit {op}: {op_names(flatbuffer)}"
    path = tmp_path / f"{case_id}.tflite"
    path.write_bytes(flatbuffer)
    inputs = [rng.uniform(-4, 4, s).astype(np.float32) for s in shapes]
    want = litert_run(flatbuffer, inputs)
    model = layertune.load(path)
    got = model.run(inputs if len(inputs) > 1 else inputs[0])
    got = got if isinstance(got, list) else [got]
    for g, w in zip(got, want):
        assert_matches(g, w, what=case_id)


@pytest.mark.parametrize("case_id", ["mean_spatial", "mean_rows", "mul_broadcast", "logistic", "pad", "mirror_pad",
                                     "concat_channels", "resize_bilinear", "resize_nearest"])
def test_ops_split_across_threads_match_litert(case_id, tmp_path):
    """Inputs large enough for the ops to split their work across two threads (MEAN by output
    rows and chunks of 64 channels, with a tail of 8; the elementwise ops by rows and chunks; PAD
    and RESIZE by output rows, CONCATENATION by groups of rows)."""
    require("tensorflow")
    import tensorflow as tf
    big = (2, 24, 20, 136)
    fn, shapes = {
        "mean_spatial": (lambda x: tf.reduce_mean(x, [1, 2], keepdims=True), [big]),
        "mean_rows": (lambda x: tf.reduce_mean(x, [1]), [big]),
        "mul_broadcast": (lambda x, y: x * y, [big, (2, 1, 1, 136)]),
        "logistic": (lambda x: tf.math.sigmoid(x), [big]),
        "pad": (lambda x: tf.pad(x, [[0, 0], [2, 1], [3, 0], [1, 2]]), [big]),
        "mirror_pad": (lambda x: tf.pad(x, [[0, 0], [2, 1], [3, 2], [0, 0]], mode="REFLECT"), [big]),
        "concat_channels": (lambda x, y: tf.concat([x, y], -1), [big, (2, 24, 20, 40)]),
        "resize_bilinear": (lambda x: tf.image.resize(x, (37, 29), "bilinear"), [big]),
        "resize_nearest": (lambda x: tf.compat.v1.image.resize_nearest_neighbor(x, (48, 40)), [big]),
    }[case_id]
    flatbuffer = convert_function(fn, shapes)
    path = tmp_path / f"{case_id}.tflite"
    path.write_bytes(flatbuffer)
    inputs = [rng.uniform(-4, 4, s).astype(np.float32) for s in shapes]
    (want,) = litert_run(flatbuffer, inputs)
    for threads in (1, 2):
        got = layertune.load(path, threads=threads).run(inputs if len(inputs) > 1 else inputs[0])
        assert_matches(got, want, what=f"{case_id} at {threads} threads")


def test_logistic_is_accurate_to_each_values_own_size(tmp_path):
    """The sigmoid (LOGISTIC, and the swish epilogue and squeeze-excite gate that share it) keeps
    every value within 1e-6 of its own size, the tiny ones of large negative inputs too: it is
    computed from e^-|x|, and e^x's polynomial is fitted for relative error (tools/fit_exp.py).
    numpy in float64 is the reference."""
    tf = require("tensorflow")
    x = np.linspace(-86, 30, 3 * 1001, dtype=np.float32).reshape(1, 3, 1001)
    flatbuffer = convert_function(tf.math.sigmoid, [x.shape])
    path = tmp_path / "logistic.tflite"
    path.write_bytes(flatbuffer)
    got = layertune.load(path).run(x).astype(np.float64)
    want = 1 / (1 + np.exp(-x.astype(np.float64)))
    relative = np.abs(got - want) / want
    worst = int(np.argmax(relative))
    assert relative.max() < 1e-6, f"sigmoid({x.flat[worst]}) = {got.flat[worst]}, want {want.flat[worst]}"


def test_squeeze_matches_litert(tmp_path):
    tf = require("tensorflow")
    flatbuffer = reshape_as_squeeze(convert_function(lambda x: tf.squeeze(x, 2), [(1, 6, 1, 5)]), [2])
    assert op_names(flatbuffer) == ["SQUEEZE"]
    (tmp_path / "squeeze.tflite").write_bytes(flatbuffer)
    x = rng.uniform(-1, 1, (1, 6, 1, 5)).astype(np.float32)
    assert_matches(layertune.load(tmp_path / "squeeze.tflite").run(x), litert_run(flatbuffer, [x])[0])


def _keras_cases():
    tf = require("tensorflow")
    L = tf.keras.layers
    return {
        "conv_same_stride2_relu6": (L.Conv2D(8, 3, 2, "same", activation="relu6"), (9, 10, 4), "CONV_2D"),
        "conv_valid_5x5": (L.Conv2D(6, 5, 1, "valid"), (11, 9, 3), "CONV_2D"),
        "conv_1x1_relu": (L.Conv2D(16, 1, activation="relu"), (5, 6, 12), "CONV_2D"),
        "conv_grouped": (L.Conv2D(8, 3, padding="same", groups=2), (7, 7, 6), "CONV_2D"),
        "conv_dilated": (L.Conv2D(5, 3, padding="same", dilation_rate=2), (12, 11, 4), None),
        "conv_dilated_valid": (L.Conv2D(5, 3, padding="valid", dilation_rate=2), (12, 11, 4), None),
        "winograd_sized_conv": (L.Conv2D(32, 3, padding="same", activation="relu"), (16, 16, 32), "CONV_2D"),
        "depthwise": (L.DepthwiseConv2D(3, padding="same", activation="relu"), (9, 8, 7), "DEPTHWISE_CONV_2D"),
        "depthwise_mult2_stride2": (L.DepthwiseConv2D(3, 2, "same", depth_multiplier=2), (9, 9, 4), "DEPTHWISE_CONV_2D"),
        "depthwise_dilated": (L.DepthwiseConv2D(3, padding="same", dilation_rate=2), (10, 10, 6), None),
        "transpose_conv_same": (L.Conv2DTranspose(6, 3, 2, "same"), (5, 4, 3), "TRANSPOSE_CONV"),
        "transpose_conv_valid": (L.Conv2DTranspose(4, 3, 2, "valid", use_bias=False), (4, 5, 3), "TRANSPOSE_CONV"),
        "transpose_conv_k4_relu": (L.Conv2DTranspose(5, 4, 2, "same", activation="relu"), (6, 5, 3), "TRANSPOSE_CONV"),
        "transpose_conv_s3": (L.Conv2DTranspose(4, 5, 3, "valid"), (4, 3, 2), "TRANSPOSE_CONV"),
        "transpose_conv_unequal_strides": (L.Conv2DTranspose(4, 3, (2, 1), "same"), (4, 5, 3), "TRANSPOSE_CONV"),
        "dense_relu": (L.Dense(7, activation="relu"), (12,), "FULLY_CONNECTED"),
        "dense_rank3": (L.Dense(5), (3, 8), "FULLY_CONNECTED"),
        "prelu": (L.PReLU(shared_axes=[1, 2]), (5, 6, 4), "PRELU"),
    }


@pytest.mark.parametrize("case_id", ["conv_same_stride2_relu6", "conv_valid_5x5", "conv_1x1_relu", "conv_grouped",
                                     "conv_dilated", "conv_dilated_valid", "winograd_sized_conv", "depthwise",
                                     "depthwise_mult2_stride2", "depthwise_dilated", "transpose_conv_same",
                                     "transpose_conv_valid", "transpose_conv_k4_relu", "transpose_conv_s3",
                                     "transpose_conv_unequal_strides", "dense_relu", "dense_rank3", "prelu"])
def test_layer_matches_litert(case_id, tmp_path):
    tf = require("tensorflow")
    layer, shape, op = _keras_cases()[case_id]
    inp = tf.keras.Input(shape, batch_size=2 if case_id == "dense_relu" else 1)
    model = tf.keras.Model(inp, layer(inp))
    weights = [np.random.default_rng(1).uniform(-1, 1, w.shape).astype(np.float32) for w in model.get_weights()]
    model.set_weights(weights)
    flatbuffer = convert_keras(model)
    ops = op_names(flatbuffer)
    if op is not None:
        assert op in ops, f"the converter did not emit {op}: {ops}"
    path = tmp_path / f"{case_id}.tflite"
    path.write_bytes(flatbuffer)
    x = np.random.default_rng(2).uniform(-1, 1, (inp.shape[0], *shape)).astype(np.float32)
    want = litert_run(flatbuffer, [x])[0]
    lt = layertune.load(path)
    assert "SPACE_TO_BATCH_ND" not in [layer.op for layer in lt.layers]  # dilated convs are folded
    if case_id.startswith("transpose_conv"):  # equal strides: s*s tunable stride-1 phase convolutions
        lowered = case_id != "transpose_conv_unequal_strides"
        assert ("TRANSPOSE_CONV" in [layer.op for layer in lt.layers]) != lowered
        stride = layer.strides[0]
        assert [layer.op for layer in lt.layers].count("CONV_2D") == (stride * stride if lowered else 0)
    assert_matches(lt.run(x), want, what=case_id)
    # every method that applies to each convolution gives the same answer
    for layer_info in lt.layers:
        if layer_info.kernel is None:
            continue
        for method in ("simple", "unrolled", "winograd"):
            try:
                lt.set_kernel(layer_info.index, method)
            except ValueError:
                assert method == "winograd"  # the only method that does not apply everywhere
                continue
            assert_matches(lt.run(x), want, what=f"{case_id} with {method}")


def _lowered_dilated_convs():
    tf = require("tensorflow")
    w = np.random.default_rng(3).uniform(-1, 1, (3, 3, 4, 5)).astype(np.float32)
    b = np.random.default_rng(4).uniform(-1, 1, (5,)).astype(np.float32)
    stb, bts, conv = tf.space_to_batch_nd, tf.batch_to_space, tf.nn.conv2d
    return {  # patterns the converter leaves unfused: a fused activation or bias, SAME inside
        "relu": lambda x: bts(tf.nn.relu(conv(stb(x, [2, 2], [[2, 2], [2, 3]]), w, 1, "VALID")), [2, 2], [[0, 0], [0, 1]]),
        "bias": lambda x: bts(conv(stb(x, [2, 2], [[2, 2], [2, 3]]), w, 1, "VALID") + b, [2, 2], [[0, 0], [0, 1]]),
        "same_inside": lambda x: bts(conv(stb(x, [2, 2], [[0, 0], [0, 1]]), w, 1, "SAME"), [2, 2], [[0, 0], [0, 1]]),
    }


@pytest.mark.parametrize("variant", ["relu", "bias", "same_inside"])
def test_space_to_batch_conv_is_folded_into_a_dilated_conv(variant, tmp_path):
    tf = require("tensorflow")
    fn = tf.autograph.experimental.do_not_convert(_lowered_dilated_convs()[variant])
    flatbuffer = convert_function(fn, [(1, 12, 11, 4)])
    assert op_names(flatbuffer) == ["SPACE_TO_BATCH_ND", "CONV_2D", "BATCH_TO_SPACE_ND"]
    (tmp_path / "m.tflite").write_bytes(flatbuffer)
    model = layertune.load(tmp_path / "m.tflite")
    assert [layer.op for layer in model.layers] == ["CONV_2D"]
    assert model.graph.nodes[0].attrs["dilations"] == [2, 2]
    x = rng.uniform(-1, 1, (1, 12, 11, 4)).astype(np.float32)
    assert_matches(model.run(x), litert_run(flatbuffer, [x])[0], what=variant)
