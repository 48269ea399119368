"""A small CNN trained on scikit-learn's digits (8x8 grey images, 10 classes): the bundled
example (examples/digits/, rebuilt by tools/build_digits_model.py) and the tests' real model.
Needs TensorFlow and scikit-learn (imported here, not by layertune itself)."""

from __future__ import annotations

import contextlib
import io
import os

import numpy as np


def load_split(test_fraction: float = 0.3, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test); images scaled to [0, 1], shape (n, 8, 8, 1)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    split = int((1 - test_fraction) * len(x))
    return x[:split], y[:split], x[split:], y[split:]


def train_cnn(x_train: np.ndarray, y_train: np.ndarray, epochs: int = 40, seed: int = 0):
    """A Keras CNN with the layer kinds layertune tunes: 3x3 conv, strided conv, depthwise, 1x1, dense."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    model = tf.keras.Sequential([
        tf.keras.Input((8, 8, 1)),
        tf.keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        tf.keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu"),
        tf.keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6"),
        tf.keras.layers.Conv2D(32, 1, activation="relu"),
        tf.keras.layers.GlobalAveragePooling2D(),
        tf.keras.layers.Dense(10),
    ], name="digits_cnn")
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=0)
    return model


def to_tflite(model) -> bytes:
    import tensorflow as tf

    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints its SavedModel signature
        return tf.lite.TFLiteConverter.from_keras_model(model).convert()
