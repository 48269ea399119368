"""Fits the degree-5 polynomial of simd::exp (csrc/include/layertune/simd.h) and checks it.

e^r on |r| <= ln2/2 as 1 + r*(c1 + r*(c2 + r*(c3 + r*(c4 + r*c5)))), fitted for relative error by
iteratively reweighted least squares (a few iterations approach the minimax fit), then evaluated
in float32 as the kernel does it, over the whole clamped input range:

    python tools/fit_exp.py
"""
from __future__ import annotations

import numpy as np

LN2_HI, LN2_LO = np.float32(0.693359375), np.float32(-2.12194440e-4)  # the kernel's split of ln 2


def fit(degree: int = 5, iterations: int = 60) -> np.ndarray:
    """c1..c_degree, fitted for relative error on Chebyshev nodes of [-ln2/2, ln2/2]."""
    r = np.cos(np.linspace(0, np.pi, 4001)) * np.log(2) / 2
    f = np.exp(r)
    powers = np.stack([r ** k for k in range(1, degree + 1)], 1)
    a, b = powers / f[:, None], (f - 1) / f
    weights = np.ones_like(r)
    for _ in range(iterations):
        c, *_ = np.linalg.lstsq(a * weights[:, None], b * weights, rcond=None)
        err = np.abs(1 + powers @ c - f) / f
        weights *= 1 + 50 * err / err.max()
        weights /= weights.mean()
    return c


def max_relative_error(c: np.ndarray) -> float:
    """The float32 evaluation's worst relative error over [-87, 88] (the kernel's clamp)."""
    c32 = c.astype(np.float32)
    x = np.linspace(-87, 88, 2_000_001).astype(np.float32)
    n = np.round(x * np.float32(1.44269504088896341))
    r = ((x - n * LN2_HI) - n * LN2_LO).astype(np.float32)
    p = c32[-1]
    for ck in c32[-2::-1]:
        p = (p * r + ck).astype(np.float32)
    y = np.ldexp((np.float32(1) + r * p).astype(np.float64), n.astype(int))
    want = np.exp(x.astype(np.float64))
    return float(np.max(np.abs(y - want) / want))


if __name__ == "__main__":
    coefficients = fit()
    print("c1..c5:", ", ".join(f"{np.float32(c):.8g}f" for c in coefficients))
    print(f"max relative error in float32: {max_relative_error(coefficients):.3g}")
