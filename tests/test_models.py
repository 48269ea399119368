"""Whole models against LiteRT: the Keras applications (fp32) and an int8 digits CNN."""

from __future__ import annotations

import numpy as np
import pytest

import layertune
from conftest import require
from model_zoo import APPLICATIONS, application_tflite, digits_cnn, int8_tflite
from tflite_helpers import assert_matches, convert_keras, litert_run, op_names


FUSES = {"MobileNetV2": {"add"}, "MobileNetV3Small": {"hard_swish", "add"}, "ResNet50": {"add"},
         "EfficientNetB0": {"swish", "add"}}


@pytest.mark.parametrize("name", APPLICATIONS)
def test_application_matches_litert(name, tmp_path):
    require("tensorflow")
    flatbuffer = application_tflite(name)
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(flatbuffer)
    x = np.random.default_rng(1).uniform(-1, 1, (1, 96, 96, 3)).astype(np.float32)
    want = litert_run(flatbuffer, [x])[0]
    assert float(want.max()) > 2.0 / want.size, "the reference output collapsed: the test would say little"
    for threads in (1, 2):
        model = layertune.load(path, threads=threads)
        assert_matches(model.run(x), want, what=f"{name}, {threads} thread(s)")
    # unfused (graph/fusion.py off): the graph as the model wrote it gives the same answer
    unfused = layertune.load(path, fuse=False)
    assert_matches(unfused.run(x), want, what=f"{name} unfused")
    absorbed = sum(len(n.attrs["fused"].split(",")) for n in model.graph.nodes if n.attrs.get("fused"))
    assert len(model.graph.nodes) == len(unfused.graph.nodes) - absorbed
    if name in FUSES:  # residual adds, swish, hard-swish: the pass finds them
        assert {n.attrs["epilogue"].split(",")[0].split(":")[0] for n in model.graph.nodes
                if n.attrs.get("epilogue")} >= FUSES[name], name
    if name == "EfficientNetB0":  # its 16 squeeze-and-excite blocks, each one op (form squeeze_excite)
        assert sum("se_nodes" in n.attrs for n in model.graph.nodes) == 16
    # the saved plan runs the same (through the C++ reader)
    model.save(tmp_path / f"{name}.ltplan")
    assert_matches(layertune.load(tmp_path / f"{name}.ltplan").run(x), want, what=f"{name} from its plan")


def test_int8_digits_model_agrees_with_fp32_keras(tmp_path):
    require("tensorflow")
    model, x_test, y_test, x_train = digits_cnn()
    keras_top1 = np.argmax(model.predict(x_test, verbose=0), axis=1)
    assert np.mean(keras_top1 == y_test) >= 0.9, "the digits model did not train"
    flatbuffer = int8_tflite(model, x_train)
    path = tmp_path / "digits_int8.tflite"
    path.write_bytes(flatbuffer)
    lt = layertune.load(path)
    (q,) = [lt.graph.tensors[t].quantization for t in lt.graph.inputs]
    assert q is not None and q.dtype == "int8"
    x_q = np.clip(np.round(x_test / q.scale + q.zero_point), -128, 127).astype(np.int8)
    ours = np.array([np.argmax(lt.run(x_q[i: i + 1])) for i in range(len(x_q))])
    agreement = float(np.mean(ours == keras_top1))
    assert agreement >= 0.99, f"top-1 agreement with the fp32 Keras model {agreement:.3f} < 0.99"
    # and the same model with float input/output (QUANTIZE / DEQUANTIZE at the edges)
    tf = require("tensorflow")
    float_io = convert_keras(model, optimizations=[tf.lite.Optimize.DEFAULT],
                             representative_dataset=lambda: ([x_train[i: i + 1]] for i in range(100)))
    assert {"QUANTIZE", "DEQUANTIZE"} <= set(op_names(float_io))
    (tmp_path / "digits_float_io.tflite").write_bytes(float_io)
    lt2 = layertune.load(tmp_path / "digits_float_io.tflite")
    ours2 = np.argmax(lt2.run(x_test[:1]), axis=1)
    assert ours2.shape == (1,)
    agreement2 = float(np.mean([np.argmax(lt2.run(x_test[i: i + 1])) == keras_top1[i] for i in range(len(x_test))]))
    assert agreement2 >= 0.99, f"float-io int8 model: agreement {agreement2:.3f} < 0.99"


def test_fp16_weights_are_dequantized_at_import(tmp_path):
    tf = require("tensorflow")
    model, x_test, _, _ = digits_cnn()
    flatbuffer = convert_keras(model, optimizations=[tf.lite.Optimize.DEFAULT],
                               target_spec=tf.lite.TargetSpec(supported_types=[tf.float16]))
    assert "DEQUANTIZE" in op_names(flatbuffer)
    (tmp_path / "fp16.tflite").write_bytes(flatbuffer)
    lt = layertune.load(tmp_path / "fp16.tflite")
    assert "DEQUANTIZE" not in [layer.op for layer in lt.layers]  # folded into float32 constants
    assert_matches(lt.run(x_test[:1]), litert_run(flatbuffer, [x_test[:1]])[0], what="fp16 weights")


def test_weights_shared_by_layers_are_read_by_each(tmp_path):
    """The converter stores identical constants once: two depthwise, two regular, two transposed
    convolutions and two dense layers with the same weights read one tensor each pair; every layer
    reads it in its own layout (it was converted again for the second reader)."""
    tf = require("tensorflow")
    rng = np.random.default_rng(4)
    inp = tf.keras.Input((6, 6, 8), batch_size=1)
    x = inp
    pairs = [tf.keras.layers.DepthwiseConv2D(3, padding="same") for _ in range(2)]
    pairs += [tf.keras.layers.Conv2D(8, 3, padding="same") for _ in range(2)]
    pairs += [tf.keras.layers.Conv2DTranspose(8, 3, padding="same") for _ in range(2)]
    for layer in pairs:
        x = layer(x)
    dense = [tf.keras.layers.Dense(12), tf.keras.layers.Dense(12)]
    y = dense[1](tf.keras.layers.Dense(12, use_bias=False)(dense[0](tf.keras.layers.Flatten()(x))))
    model = tf.keras.Model(inp, y)
    for first, second in zip([*pairs[::2], dense[0]], [*pairs[1::2], dense[1]]):
        if first is dense[0]:  # (288, 12) and (12, 12) cannot be shared; share the biases instead
            second.set_weights([second.get_weights()[0], first.get_weights()[1]])
            continue
        weights = [rng.uniform(-0.4, 0.4, w.shape).astype(np.float32) for w in first.get_weights()]
        first.set_weights(weights)
        second.set_weights(weights)
    flatbuffer = convert_keras(model)
    import tflite
    sg = tflite.Model.GetRootAsModel(flatbuffer, 0).Subgraphs(0)
    readers: dict[int, int] = {}
    for i in range(sg.OperatorsLength()):
        for t in sg.Operators(i).InputsAsNumpy()[1:]:
            if t >= 0 and sg.Tensors(int(t)).Buffer() > 0:
                readers[int(t)] = readers.get(int(t), 0) + 1
    assert sum(n > 1 for n in readers.values()) >= 4, readers  # the converter did share them
    path = tmp_path / "shared.tflite"
    path.write_bytes(flatbuffer)
    x = rng.uniform(-1, 1, (1, 6, 6, 8)).astype(np.float32)
    assert_matches(layertune.load(path).run(x), litert_run(flatbuffer, [x])[0], what="shared weights vs LiteRT")


def _pruned(model, rng, block: int = 1):
    """Zeroes ~80% of every layer's kernel (a dense layer's in runs of `block` along its input
    axis), so that the converter stores them sparse."""
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            w = weights[0]
            run = block if w.ndim == 2 else 1
            keep = np.repeat(rng.uniform(size=(w.shape[0] // run, *w.shape[1:])) >= 0.8, run, axis=0)
            layer.set_weights([w * keep, *weights[1:]])
    return model


@pytest.mark.parametrize("block", [1, 4])
def test_sparse_weights_are_densified(block, tmp_path):
    """Weights stored sparse by the converter (TFLite's `sparsity` field: CSR levels, with 1x4
    blocks for the fully-connected layer, which then reads them sparse without a DENSIFY op) give
    LiteRT's and Keras's answer."""
    tf = require("tensorflow")
    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((8, 8, 4))
    x = tf.keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inp)
    x = tf.keras.layers.Dense(12)(tf.keras.layers.Flatten()(x))
    model = _pruned(tf.keras.Model(inp, x), np.random.default_rng(block), block)
    flatbuffer = convert_keras(model, optimizations=[tf.lite.Optimize.EXPERIMENTAL_SPARSITY])
    import tflite
    sg = tflite.Model.GetRootAsModel(flatbuffer, 0).Subgraphs(0)
    assert sum(sg.Tensors(i).Sparsity() is not None for i in range(sg.TensorsLength())) == 2
    assert op_names(flatbuffer).count("DENSIFY") == (2 if block == 1 else 1)
    path = tmp_path / "sparse.tflite"
    path.write_bytes(flatbuffer)
    x = np.random.default_rng(3).uniform(-1, 1, (2, 8, 8, 4)).astype(np.float32)[:1]
    lt = layertune.load(path)
    assert "DENSIFY" not in {n.op for n in lt.graph.nodes}  # folded at import
    assert_matches(lt.run(x), litert_run(flatbuffer, [x])[0], what="sparse model vs LiteRT")
    assert_matches(lt.run(x), model.predict(x, verbose=0), what="sparse model vs Keras")


@pytest.mark.parametrize("size", [(8, 10), (7, 9)])
def test_mediapipe_custom_ops_match_litert(size, tmp_path):
    """Convolution2DTransposeBias, MaxPoolingWithArgmax2D and MaxUnpooling2D (the custom ops XNNPACK
    runs for published segmentation models) against LiteRT with XNNPACK, on even sizes and on odd
    ones (SAME padding in the pooling)."""
    from tflite_helpers import mediapipe_custom_ops_model
    flatbuffer = mediapipe_custom_ops_model(size)
    path = tmp_path / "segmenter.tflite"
    path.write_bytes(flatbuffer)
    x = np.random.default_rng(5).uniform(-1, 1, (1, *size, 3)).astype(np.float32)
    want = litert_run(flatbuffer, [x])[0]
    lt = layertune.load(path)
    ops = {n.op for n in lt.graph.nodes}
    assert {"MAX_POOL_WITH_ARGMAX_2D", "MAX_UNPOOLING_2D", "DEPTH_TO_SPACE"} <= ops  # the transposed conv: phases
    assert "TRANSPOSE_CONV" not in ops
    for threads in (1, 2):
        assert_matches(layertune.load(path, threads=threads).run(x), want, what=f"custom ops, {threads} thread(s)")
    lt.save(tmp_path / "segmenter.ltplan")
    assert_matches(layertune.load(tmp_path / "segmenter.ltplan").run(x), want, what="custom ops from the plan")
