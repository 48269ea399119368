"""Cross-checks against TensorFlow's own convolutions (required in CI)."""

from __future__ import annotations

import numpy as np
import pytest

import layertune
from conftest import require

CASES = [
    # (input shape, weight shape, strides, padding, dilations, depthwise)
    ((1, 17, 19, 8), (3, 3, 8, 16), (1, 1), "SAME", (1, 1), False),
    ((2, 15, 15, 3), (7, 7, 3, 8), (2, 2), "SAME", (1, 1), False),
    ((1, 12, 10, 6), (5, 5, 6, 4), (1, 1), "VALID", (1, 1), False),
    ((1, 16, 16, 4), (3, 3, 4, 4), (1, 1), "SAME", (2, 2), False),
    ((1, 14, 14, 24), (3, 3, 24, 1), (2, 2), "SAME", (1, 1), True),
    ((1, 9, 9, 5), (3, 3, 5, 2), (1, 1), "SAME", (1, 1), True),
]


@pytest.mark.parametrize("x_shape, w_shape, strides, padding, dilations, depthwise", CASES)
def test_matches_tensorflow(x_shape, w_shape, strides, padding, dilations, depthwise):
    tf = require("tensorflow")
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, x_shape).astype(np.float32)
    w = rng.uniform(-1, 1, w_shape).astype(np.float32)
    if depthwise:
        want = tf.nn.depthwise_conv2d(x, w, strides=(1, *strides, 1), padding=padding, dilations=dilations).numpy()
        methods = ["simple", "unrolled"] + (["winograd"] if strides == (1, 1) and dilations == (1, 1) else [])
        run = lambda m: layertune.depthwise_conv2d(x, w, strides=strides, padding=padding, dilations=dilations,
                                                   method=m)
    else:
        want = tf.nn.conv2d(x, w, strides=strides, padding=padding, dilations=dilations).numpy()
        methods = ["simple", "unrolled"] + (["winograd"] if w_shape[:2] == (3, 3) and strides == (1, 1)
                                            and dilations == (1, 1) else [])
        run = lambda m: layertune.conv2d(x, w, strides=strides, padding=padding, dilations=dilations, method=m)
    scale = float(np.abs(want).max())
    for method in methods:
        got = run(method)
        assert got.shape == want.shape
        assert float(np.abs(got - want).max()) <= 1e-4 * scale, method
