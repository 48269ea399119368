"""Arguments that do not fit raise ValueError naming the argument: never a crash or a wrong result."""

from __future__ import annotations

import numpy as np
import pytest

import layertune

X = np.zeros((1, 8, 8, 4), np.float32)
W3 = np.zeros((3, 3, 4, 6), np.float32)


@pytest.mark.parametrize("call, fragment", [
    (lambda: layertune.conv2d(X, np.zeros((5, 5, 4, 6)), method="winograd"), "3x3"),
    (lambda: layertune.conv2d(X, W3, strides=2, method="winograd"), "stride"),
    (lambda: layertune.conv2d(X, W3, dilations=2, method="winograd"), "dilation"),
    (lambda: layertune.conv2d(X, W3, method="winograd", winograd_tile=3), "winograd_tile"),
    (lambda: layertune.conv2d(X, W3, method="winograd", separable_block_depth=8), "separable_block_depth"),
    (lambda: layertune.depthwise_conv2d(X, np.zeros((3, 3, 4, 1)), method="winograd",
                                        nonseparable_channel_depth=8), "nonseparable"),
    (lambda: layertune.conv2d(X, W3, method="unrolled", winograd_tile=2), "winograd_tile"),
    (lambda: layertune.conv2d(X, W3, method="unrolled", blockm=2), "blockm"),
    (lambda: layertune.conv2d(X, W3, method="unrolled", block_m=0), "block_m"),
    (lambda: layertune.conv2d(X, W3, method="unrolled", block_m=2.5), "block_m"),
    (lambda: layertune.conv2d(X, W3, method="fastest"), "method"),
    (lambda: layertune.conv2d(X, W3, threads=0), "threads"),
    (lambda: layertune.conv2d(X, np.zeros((3, 3, 5, 6))), "w"),
    (lambda: layertune.conv2d(X, np.zeros((3, 3, 6))), "w"),
    (lambda: layertune.conv2d(X, W3, groups=3), "w"),
    (lambda: layertune.conv2d(X, np.zeros((3, 3, 2, 5)), groups=2), "groups"),
    (lambda: layertune.conv2d(X, W3, np.zeros(5)), "bias"),
    (lambda: layertune.conv2d(X[0], W3), "x"),
    (lambda: layertune.conv2d(X.astype(np.complex64), W3), "x"),
    (lambda: layertune.conv2d(np.full((1, 8, 8, 4), "a"), W3), "x"),
    (lambda: layertune.conv2d([[1, 2], [3]], W3), "x"),
    (lambda: layertune.conv2d(X, W3, padding="FULL"), "padding"),
    (lambda: layertune.conv2d(X, W3, padding=((1, -1), (0, 0))), "padding"),
    (lambda: layertune.conv2d(X, W3, padding=(1, 2, 3)), "padding"),
    (lambda: layertune.conv2d(X, W3, strides=(1, 2, 3)), "strides"),
    (lambda: layertune.conv2d(X, W3, strides=0), "strides"),
    (lambda: layertune.conv2d(X, np.zeros((9, 9, 4, 6)), padding="VALID"), "does not fit"),
    (lambda: layertune.conv2d(X, W3, activation="gelu"), "activation"),
    (lambda: layertune.depthwise_conv2d(X, np.zeros((3, 3, 5, 1))), "w"),
    (lambda: layertune.Conv2D((1, 8, 8, 4), W3).run(np.zeros((1, 8, 9, 4))), "x"),
])
def test_bad_arguments_raise_value_error_naming_them(call, fragment):
    with pytest.raises(ValueError, match=fragment):
        call()


def test_huge_tensor_is_refused_before_allocation():
    with pytest.raises(ValueError, match="too large"):
        layertune.Conv2D((1, 65536, 65536, 4), W3)
