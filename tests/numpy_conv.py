"""An independent numpy convolution (float64): explicit zero padding, strided windows, einsum.

Shares no code with layertune's kernels, so a bug in the C++ reference cannot hide here.
"""

from __future__ import annotations

import numpy as np


def conv2d(x, w, bias=None, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), groups=1, activation=None):
    """x (N,H,W,C), w (kh,kw,C/groups,OC) -> (N,OH,OW,OC); pads = (top, bottom, left, right)."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    n, _, _, c = x.shape
    kh, kw, cig, oc = w.shape
    sh, sw = strides
    dh, dw = dilations
    top, bottom, left, right = pads
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    oh = (xp.shape[1] - ((kh - 1) * dh + 1)) // sh + 1
    ow = (xp.shape[2] - ((kw - 1) * dw + 1)) // sw + 1
    cog = oc // groups
    out = np.zeros((n, oh, ow, groups, cog))
    for ky in range(kh):
        for kx in range(kw):
            window = xp[:, ky * dh: ky * dh + (oh - 1) * sh + 1: sh, kx * dw: kx * dw + (ow - 1) * sw + 1: sw, :]
            window = window.reshape(n, oh, ow, groups, cig)
            out += np.einsum("nhwgc,cgj->nhwgj", window, w[ky, kx].reshape(cig, groups, cog))
    out = out.reshape(n, oh, ow, oc)
    if bias is not None:
        out += np.asarray(bias, np.float64)
    if activation == "relu":
        out = np.maximum(out, 0)
    elif activation == "relu6":
        out = np.clip(out, 0, 6)
    elif activation == "relu_n1_to_1":
        out = np.clip(out, -1, 1)
    return out


def same_pads(size, kernel, stride, dilation):
    """TensorFlow's SAME padding (before, after) for one axis."""
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2
