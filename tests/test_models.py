"""Whole models against LiteRT: the Keras applications (fp32) and an int8 digits CNN."""

from __future__ import annotations

import numpy as np
import pytest

import layertune
from conftest import require
from model_zoo import APPLICATIONS, application_tflite, digits_cnn, int8_tflite
from tflite_helpers import assert_matches, convert_keras, litert_run, op_names


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
