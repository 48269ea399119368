"""TFLite's integer arithmetic in numpy (int64), written for obviousness and sharing no code with
layertune's int8 kernels: QuantizeMultiplier, MultiplyByQuantizedMultiplier and a quantized
convolution through tests/numpy_conv.py's float64 convolution (exact on these integers); and
XNNPACK's fp32 requantization, which LiteRT runs by default (requantization="xnnpack")."""

from __future__ import annotations

import math

import numpy as np

from numpy_conv import conv2d


def quantize_multiplier(real: float) -> tuple[int, int]:
    if real == 0:
        return 0, 0
    fraction, shift = math.frexp(real)
    m = math.floor(fraction * (1 << 31) + 0.5)  # std::round: ties away from zero (fraction > 0)
    if m == 1 << 31:
        m //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return m, shift


def multiply_by_quantized_multiplier(x: np.ndarray, m: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Element-wise, with gemmlowp's rounding: a doubling high multiply rounded to nearest (ties
    away from zero, truncating division), then a right shift rounded to nearest (ties away)."""
    x = np.asarray(x, np.int64)
    m = np.asarray(m, np.int64)
    shift = np.asarray(shift, np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    a = (x << left).astype(np.int32).astype(np.int64)
    ab = a * m
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    v = ab + nudge
    high = v // (1 << 31)  # floor division; C++'s division truncates toward zero:
    high = np.where((v < 0) & (v % (1 << 31) != 0), high + 1, high)
    mask = (np.int64(1) << right) - 1
    remainder = high & mask
    threshold = (mask >> 1) + (high < 0)
    return (high >> right) + (remainder > threshold)


def xnnpack_requantize(acc: np.ndarray, scales: np.ndarray, zy: int, lo: int, hi: int) -> np.ndarray:
    """XNNPACK's fp32 requantization: the sum as float32 times the float32 scale, clamped to the
    bounds less the zero point, rounded to nearest even, plus the zero point."""
    f = np.asarray(acc).astype(np.float32) * np.asarray(scales, np.float32)
    f = np.clip(f, np.float32(lo - zy), np.float32(hi - zy))
    return np.rint(f).astype(np.int64) + zy


def conv(q_x, zx, w, bias, multipliers, zy, lo, hi, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), groups=1,
         xnnpack_scales=None):
    """A quantized convolution: int8 x (N,H,W,C), int8 w HWIO, int32 bias, per-channel (m, shift) —
    or, given xnnpack_scales (per channel, float32), XNNPACK's requantization."""
    acc = conv2d(np.asarray(q_x, np.float64) - zx, w, None, strides, pads, dilations, groups)
    acc = np.rint(acc).astype(np.int64) + np.asarray(bias, np.int64)
    if xnnpack_scales is not None:
        return xnnpack_requantize(acc, xnnpack_scales, zy, lo, hi).astype(np.int8)
    m = np.array([p[0] for p in multipliers], np.int64)
    s = np.array([p[1] for p in multipliers], np.int64)
    y = multiply_by_quantized_multiplier(acc, m, s) + zy
    return np.clip(y, lo, hi).astype(np.int8)
