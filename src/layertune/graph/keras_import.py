"""Keras models (.keras, .h5) -> TFLite with TensorFlow (the `layertune[tf]` extra), so that
there is one importer path."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

from layertune.graph.ir import Graph
from layertune.graph.tflite_import import ImportError_, import_tflite_bytes


def keras_to_tflite(path: str | Path) -> bytes:
    path = Path(path)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import tensorflow as tf
    except ImportError:
        raise ImportError_(f"{path}: Keras models need TensorFlow: pip install 'layertune[tf]'") from None
    try:
        model = tf.keras.models.load_model(path, compile=False)
    except Exception as exc:
        raise ImportError_(f"{path}: cannot load the Keras model ({str(exc).splitlines()[0][:200]})") from None
    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints its SavedModel signature
        return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def import_keras(path: str | Path) -> Graph:
    path = Path(path)
    return import_tflite_bytes(keras_to_tflite(path), path.stem, str(path))
