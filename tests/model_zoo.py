"""Small real models for the whole-model tests, built offline with TensorFlow."""

from __future__ import annotations

import contextlib
import functools
import io

import numpy as np

from conftest import require
from tflite_helpers import convert_keras

APPLICATIONS = ["MobileNet", "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large", "ResNet50", "EfficientNetB0",
                "DenseNet121"]


@functools.lru_cache(maxsize=None)
def application_tflite(name: str, size: int = 96) -> bytes:
    return convert_keras(calibrated_application(name, size))


@functools.lru_cache(maxsize=None)
def application_onnx(name: str, size: int = 96, opset: int = 17) -> bytes:
    """The application converted by tf2onnx (NHWC input, as Keras has it)."""
    tf = require("tensorflow")
    tf2onnx = require("tf2onnx")
    spec = (tf.TensorSpec((1, size, size, 3), tf.float32, name="input"),)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        proto, _ = tf2onnx.convert.from_keras(calibrated_application(name, size), input_signature=spec, opset=opset)
    return proto.SerializeToString()


@functools.lru_cache(maxsize=None)
def calibrated_application(name: str, size: int = 96):
    """tf.keras.applications.<name> with random weights and batch-norm statistics calibrated on
    one random batch (momentum 0, one training-mode call): without that, random weights make
    the outputs collapse and a comparison says little."""
    tf = require("tensorflow")
    tf.keras.utils.set_random_seed(0)
    model = getattr(tf.keras.applications, name)(weights=None, input_shape=(size, size, 3))
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            layer.momentum = 0.0
    batch = np.random.default_rng(0).uniform(-1, 1, (4, size, size, 3)).astype(np.float32)
    model(batch, training=True)
    return model


@functools.lru_cache(maxsize=None)
def digits_cnn():
    """The bundled example's CNN, trained on scikit-learn's digits: (keras model, x_test, y_test, x_train)."""
    require("tensorflow")
    require("sklearn")
    from layertune.examples import digits

    x_train, y_train, x_test, y_test = digits.load_split()
    return digits.train_cnn(x_train, y_train), x_test, y_test, x_train


def int8_tflite(model, calibration: np.ndarray) -> bytes:
    tf = require("tensorflow")

    def representative():
        for i in range(0, min(len(calibration), 200), 10):
            yield [calibration[i: i + 10]]

    return convert_keras(model, optimizations=[tf.lite.Optimize.DEFAULT], representative_dataset=representative,
                         target_spec=tf.lite.TargetSpec(supported_ops=[tf.lite.OpsSet.TFLITE_BUILTINS_INT8]),
                         inference_input_type=tf.int8, inference_output_type=tf.int8)
