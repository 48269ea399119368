"""Property-based cases: random layers, every applicable method, against the numpy reference."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import layertune
from test_kernels import RTOL, Layer, make_data, numpy_reference, run, variants


@st.composite
def layers(draw):
    depthwise = draw(st.booleans())
    k = draw(st.sampled_from([(1, 1), (3, 3), (5, 5), (7, 7), (1, 3), (3, 1), (2, 2)]))
    strides = draw(st.sampled_from([(1, 1), (2, 2), (1, 2), (3, 3)]))
    dilations = draw(st.sampled_from([(1, 1), (1, 1), (2, 2), (1, 3)]))
    h = draw(st.integers(1, 14))
    w = draw(st.integers(1, 14))
    padding = draw(st.one_of(st.sampled_from(["SAME", "VALID"]),
                             st.tuples(st.tuples(st.integers(0, 3), st.integers(0, 3)),
                                       st.tuples(st.integers(0, 3), st.integers(0, 3)))))
    activation = draw(st.sampled_from([None, "relu", "relu6", "relu_n1_to_1"]))
    n = draw(st.integers(1, 2))
    if depthwise:
        c = draw(st.integers(1, 40))
        return Layer(n, h, w, c, draw(st.integers(1, 3)), k, strides, dilations, padding, depthwise=True,
                     activation=activation)
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    c = groups * draw(st.integers(1, 12))
    oc = groups * draw(st.integers(1, 14))
    return Layer(n, h, w, c, oc, k, strides, dilations, padding, groups=groups, activation=activation)


def fits(layer: Layer) -> bool:
    (t, b), (l, r) = ((0, 0), (0, 0)) if isinstance(layer.padding, str) else layer.padding
    if layer.padding == "SAME":
        return True
    eff_h = (layer.k[0] - 1) * layer.dilations[0] + 1
    eff_w = (layer.k[1] - 1) * layer.dilations[1] + 1
    return layer.h + t + b >= eff_h and layer.w + l + r >= eff_w


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers(), st.integers(0, 2**16))
def test_random_layers_match_numpy(layer, seed):
    x, w, bias = make_data(layer, seed)
    if not fits(layer):
        try:
            run(layer, x, w, bias, "simple")
        except ValueError as exc:
            assert "does not fit" in str(exc)
            return
        raise AssertionError(f"{layer}: a kernel larger than the padded input was accepted")
    want = numpy_reference(layer, x, w, bias)
    scale = float(np.abs(want).max()) or 1.0
    for method, params in [("reference", {})] + variants(layer):
        got = run(layer, x, w, bias, method, **params)
        assert got.shape == want.shape
        err = float(np.abs(got - want).max())
        assert err <= RTOL * scale, f"{method}{params} on {layer}: {err:.3g} > {RTOL} x {scale:.3g}"


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 40), st.integers(1, 70), st.integers(1, 70))
def test_winograd_block_depths_never_change_the_result(h, c, oc):
    """Block depths change the loop order only: results agree with each other to rounding."""
    rng = np.random.default_rng(h * 1000 + c)
    x = rng.uniform(-1, 1, (1, h, 5, c)).astype(np.float32)
    w = rng.uniform(-1, 1, (3, 3, c, oc)).astype(np.float32)
    base = layertune.conv2d(x, w, method="winograd")
    scale = float(np.abs(base).max()) or 1.0
    for fb, cd in [(1, 1), (7, 5), (64, 33)]:
        got = layertune.conv2d(x, w, method="winograd", nonseparable_filter_block_depth=fb,
                               nonseparable_channel_depth=cd)
        assert float(np.abs(got - base).max()) <= RTOL * scale
