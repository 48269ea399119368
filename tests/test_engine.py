"""Plans, the engine's memory planner, kernel choices per layer, the CLI, and bad input."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import numpy as np
import pytest

import layertune
from conftest import require
from layertune.graph.ir import Node, Tensor
from model_zoo import digits_cnn
from tflite_helpers import convert_function, convert_keras, op_names


@pytest.fixture(scope="module")
def digits_paths(tmp_path_factory):
    require("tensorflow")
    model, x_test, _, _ = digits_cnn()
    d = tmp_path_factory.mktemp("digits")
    (d / "digits.tflite").write_bytes(convert_keras(model))
    model.save(d / "digits.keras")
    return d, x_test


def test_keras_file_imports_through_tflite(digits_paths):
    d, x = digits_paths
    a = layertune.load(d / "digits.tflite").run(x[:1])
    b = layertune.load(d / "digits.keras").run(x[:1])
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_layers_report_shapes_flops_and_kernels(digits_paths):
    d, _ = digits_paths
    model = layertune.load(d / "digits.tflite")
    convs = [layer for layer in model.layers if layer.kernel is not None]
    assert [layer.op for layer in convs] == ["CONV_2D", "CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D"]
    first = convs[0]
    assert first.input_shapes == ((1, 8, 8, 1),) and first.output_shapes == ((1, 8, 8, 16),)
    assert first.flops == 2 * 8 * 8 * 16 * 3 * 3 * 1
    assert convs[2].kernel == {"method": "simple"}  # the default for depthwise layers


def test_set_kernel_changes_the_plan_and_keeps_the_answer(digits_paths, tmp_path):
    d, x = digits_paths
    model = layertune.load(d / "digits.tflite")
    want = model.run(x[:1])
    conv = next(layer for layer in model.layers if layer.kernel is not None)
    model.set_kernel(conv.index, "winograd", threads=2, winograd_tile=2)
    assert model.layers[conv.index].kernel == {"method": "winograd", "threads": 2, "winograd_tile": 2}
    np.testing.assert_allclose(model.run(x[:1]), want, rtol=1e-4, atol=1e-5)
    model.save(tmp_path / "tuned.ltplan")
    again = layertune.load(tmp_path / "tuned.ltplan")
    assert again.layers[conv.index].kernel == {"method": "winograd", "threads": 2, "winograd_tile": 2}
    np.testing.assert_allclose(again.run(x[:1]), want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=rf"layer {conv.index} .*winograd_tile"):
        model.set_kernel(conv.index, "winograd", winograd_tile=3)
    with pytest.raises(ValueError, match="not a convolution"):
        model.set_kernel(len(model.layers) - 1, "simple")
    with pytest.raises(ValueError, match="no layer named"):
        model.set_kernel("nope", "simple")


def test_memory_planner_reuses_the_arena(digits_paths):
    d, _ = digits_paths
    model = layertune.load(d / "digits.tflite")
    g = model.graph
    activations = sum(t.size * 4 for t in g.tensors if not t.constant)
    largest_pair = max(g.tensors[n.inputs[0]].size * 4 + g.tensors[n.outputs[0]].size * 4 for n in g.nodes)
    assert largest_pair <= model.arena_bytes < activations


def test_weights_the_kernels_packed_are_not_held_twice(digits_paths, tmp_path):
    """Once every convolution and fully-connected layer is prepared, the plan's copy of their
    weights is released (Model.weight_bytes: the constants still held); a constant an op reads
    while running stays, and the model's answer is the same."""
    d, _ = digits_paths
    model = layertune.load(d / "digits.tflite")
    x = np.random.default_rng(0).uniform(0, 1, model.input_shapes[0]).astype(np.float32)
    want = model.run(x)
    assert model.weight_bytes == 0
    # the same graph with a constant added to the output: that constant is kept
    g = model.graph.copy()
    out = g.outputs[0]
    shape = g.tensors[out].shape
    c = g.add_tensor(Tensor("offset", shape, np.full(shape, 0.25, np.float32)))
    y = g.add_tensor(Tensor("shifted", shape))
    g.nodes.append(Node("ADD", "shift", [out, c], [y], {"activation": "none"}))
    g.outputs = [y]
    shifted = layertune.Model(g)
    np.testing.assert_allclose(shifted.run(x), want + 0.25, rtol=1e-6)
    assert shifted.weight_bytes == 4 * int(np.prod(shape))
    # and from a plan file, read by the profiler straight into the constants' buffers
    shifted.save(tmp_path / "shifted.ltplan")
    proc = subprocess.run([str(layertune.profiler_path()), "run", "--plan", str(tmp_path / "shifted.ltplan"),
                           "--repeats", "1", "--check", "1"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    line = json.loads(proc.stdout)
    assert line["weight_bytes"] == 4 * int(np.prod(shape)) and line["error"] is None


def test_profiler_runs_and_checks_a_plan(digits_paths, tmp_path):
    d, _ = digits_paths
    model = layertune.load(d / "digits.tflite")
    for layer in model.layers:
        if layer.kernel is not None and layer.kernel["method"] != "simple":
            model.set_kernel(layer.index, "simple")
    model.save(tmp_path / "m.ltplan")
    proc = subprocess.run([str(layertune.profiler_path()), "run", "--plan", str(tmp_path / "m.ltplan"), "--repeats", "3",
                           "--check", "1", "--layers", "1", "--threads", "2"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["error"] is None and record["nodes"] == len(model.layers) and record["threads"] == 2
    assert record["max_abs_diff"] <= 1e-4 * record["max_abs_ref"]
    assert len(record["layer_median_ms"]) == len(model.layers) and record["arena_bytes"] > 0


def test_cli_run_prints_latency_and_shapes(digits_paths, tmp_path):
    d, x = digits_paths
    np.save(tmp_path / "x.npy", x[:1])
    proc = subprocess.run([sys.executable, "-m", "layertune.cli", "run", str(d / "digits.tflite"), "--repeat", "3",
                           "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "latency: median" in proc.stdout and "output 0: shape (1, 10)" in proc.stdout
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), layertune.load(d / "digits.tflite").run(x[:1]), rtol=1e-5)


# -- bad input ---------------------------------------------------------------------------------

def _load_error(path) -> str:
    with pytest.raises(ValueError) as info:
        layertune.load(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_truncated_and_foreign_files_are_refused(digits_paths, tmp_path):
    d, _ = digits_paths
    data = (d / "digits.tflite").read_bytes()
    (tmp_path / "cut.tflite").write_bytes(data[: len(data) // 3])
    assert "cut.tflite" in _load_error(tmp_path / "cut.tflite")
    (tmp_path / "noise.tflite").write_bytes(b"\x00\x01 this is not a model" * 10)
    assert "not a TFLite model" in _load_error(tmp_path / "noise.tflite")
    assert "no such model file" in _load_error(tmp_path / "missing.tflite")
    (tmp_path / "model.onnx").write_bytes(b"xx")
    assert "model.onnx: the ONNX graph has no nodes (not a model, or a corrupt file)" in _load_error(tmp_path / "model.onnx")
    (tmp_path / "model.pb").write_bytes(b"xx")
    assert "unknown model format" in _load_error(tmp_path / "model.pb")


def test_unsupported_op_is_named_with_its_index(tmp_path):
    tf = require("tensorflow")
    flatbuffer = convert_function(lambda x: tf.math.cumsum(tf.nn.relu(x), axis=1), [(1, 4, 4, 2)])
    assert "CUMSUM" in op_names(flatbuffer)
    (tmp_path / "cumsum.tflite").write_bytes(flatbuffer)
    message = _load_error(tmp_path / "cumsum.tflite")
    assert "cumsum.tflite" in message and "op 1 (CUMSUM)" in message and "CONV_2D" in message


def test_custom_op_and_second_subgraph_are_refused(tmp_path):
    tf = require("tensorflow")
    require("ai_edge_litert")
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(convert_function(tf.nn.relu, [(1, 4)])))
    code = model.operatorCodes[model.subgraphs[0].operators[0].opcodeIndex]
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode = "MyFancyOp"
    (tmp_path / "custom.tflite").write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    assert "custom op 'MyFancyOp'" in _load_error(tmp_path / "custom.tflite")

    def loop(x):
        return tf.while_loop(lambda i, v: i < 3, lambda i, v: (i + 1, v * 2.0), [0, x])[1]
    flatbuffer = convert_function(loop, [(1, 4)])
    (tmp_path / "loop.tflite").write_bytes(flatbuffer)
    assert "subgraphs" in _load_error(tmp_path / "loop.tflite")


def test_dynamic_shape_is_refused(tmp_path):
    tf = require("tensorflow")
    spec = tf.TensorSpec((1, None, None, 3), tf.float32)
    concrete = tf.function(tf.nn.relu).get_concrete_function(spec)
    flatbuffer = tf.lite.TFLiteConverter.from_concrete_functions([concrete]).convert()
    (tmp_path / "dynamic.tflite").write_bytes(flatbuffer)
    assert "dynamic shape" in _load_error(tmp_path / "dynamic.tflite")


def test_bad_plans_get_clear_errors(digits_paths, tmp_path):
    d, _ = digits_paths
    layertune.load(d / "digits.tflite").save(tmp_path / "good.ltplan")
    good = (tmp_path / "good.ltplan").read_bytes()
    cases = {
        "magic.ltplan": (b"NOTAPLAN" + good[8:], "wrong magic"),
        "newer.ltplan": (good[:8] + struct.pack("<I", 99) + good[12:], "version 99 is newer"),
        "short.ltplan": (good[: len(good) - 100], "truncated"),
        "header.ltplan": (good[:20], "truncated"),
    }
    for name, (data, fragment) in cases.items():
        (tmp_path / name).write_bytes(data)
        message = _load_error(tmp_path / name)
        assert fragment in message and name in message
        proc = subprocess.run([str(layertune.profiler_path()), "run", "--plan", str(tmp_path / name)],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and fragment in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_save_is_atomic_and_cli_errors_are_one_line(digits_paths, tmp_path):
    d, _ = digits_paths
    layertune.load(d / "digits.tflite").save(tmp_path / "m.ltplan")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ltplan"]
    proc = subprocess.run([sys.executable, "-m", "layertune.cli", "run", str(tmp_path / "missing.tflite")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"layertune: error: {tmp_path / 'missing.tflite'}: no such model file"]


def test_every_truncation_point_gives_a_clear_error(digits_paths, tmp_path):
    d, _ = digits_paths
    data = (d / "digits.tflite").read_bytes()
    for cut in np.linspace(8, len(data) - 1, 25).astype(int):
        (tmp_path / "cut.tflite").write_bytes(data[:cut])
        try:
            layertune.load(tmp_path / "cut.tflite")
        except ValueError as exc:
            assert "cut.tflite" in str(exc) and "\n" not in str(exc)


@pytest.mark.parametrize("threads", [1, 2])
def test_denormals_are_flushed_as_litert_flushes_them_and_the_callers_setting_is_kept(tmp_path, threads):
    """Denormal arithmetic costs ~100 cycles an operation on x86 (EfficientNetB0 on [0, 255]
    images ran 4x slower than LiteRT); the engine flushes denormals to zero as XNNPACK does, and
    restores the calling thread's own setting afterwards."""
    tf = require("tensorflow")
    from tflite_helpers import litert_run

    w = np.full((3, 3, 4, 8), 1e-20, np.float32)
    flatbuffer = convert_function(lambda x: tf.nn.conv2d(x, w, 1, "SAME"), [(1, 8, 8, 4)])
    (tmp_path / "tiny.tflite").write_bytes(flatbuffer)
    x = np.full((1, 8, 8, 4), 1e-20, np.float32)  # each product 1e-40, each sum below 1.2e-38
    assert float(np.einsum("hwio,hwi->o", w, x[0, :3, :3]).max()) > 0  # numpy keeps denormals
    (want,) = litert_run(flatbuffer, [x])
    got = layertune.load(tmp_path / "tiny.tflite", threads=threads).run(x)
    assert not want.any(), "LiteRT is expected to flush denormals to zero"
    assert not got.any(), f"layertune kept denormal outputs (max {float(got.max()):.3g})"
    assert np.float32(1e-20) * np.float32(1e-20) > 0, "the caller's denormals stayed flushed after the run"
