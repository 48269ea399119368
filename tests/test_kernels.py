"""Every method x parameter combination against the C++ reference and the numpy reference."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest

import layertune
import layertune.methods
import numpy_conv

# Relative to max |reference output|. Measured worst cases (uniform(-1, 1) data): direct methods
# 2.4e-6 and F(2x2,3x3) 8.6e-7 at 512 input channels; F(4x4,3x3), whose transform has larger
# coefficients (up to 8), 1.4e-5 at 512 channels (3e-6 at 3 to 64); amx_bf16x3 (three bf16
# products a product) 1e-5 at 512 channels; amx_bf16x6 (six) 9.4e-7 — all inside one bound.
RTOL = 1e-4

# The amx_bf16 methods run where the CPU has AMX-BF16; elsewhere the table says why (a test checks which).
AMX_LACKING = layertune.methods.unavailable_methods().get("amx_bf16x3")


@dataclass(frozen=True)
class Layer:
    n: int
    h: int
    w: int
    c: int
    oc: int  # for depthwise: the multiplier
    k: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    dilations: tuple[int, int] = (1, 1)
    padding: object = "SAME"
    groups: int = 1
    depthwise: bool = False
    activation: str | None = None

    def __str__(self) -> str:
        kind = f"dw x{self.oc}" if self.depthwise else f"->{self.oc} g{self.groups}"
        return (f"{self.n}x{self.h}x{self.w}x{self.c} {self.k[0]}x{self.k[1]} s{self.strides[0]}{self.strides[1]} "
                f"d{self.dilations[0]}{self.dilations[1]} {self.padding} {kind} {self.activation}")

    @property
    def winograd_ok(self) -> bool:
        return self.k == (3, 3) and self.strides == (1, 1) and self.dilations == (1, 1)


LAYERS = [
    Layer(1, 9, 11, 5, 7, (3, 3)),
    Layer(2, 8, 8, 17, 33, (3, 3), activation="relu"),
    Layer(1, 13, 7, 19, 40, (3, 3), padding="VALID", activation="relu6"),
    Layer(1, 10, 10, 3, 16, (3, 3), strides=(2, 2)),
    Layer(1, 11, 9, 3, 8, (7, 7), strides=(2, 2)),
    Layer(1, 9, 9, 6, 9, (5, 5), padding=((2, 1), (0, 3))),
    Layer(1, 7, 6, 37, 35, (1, 1)),
    Layer(2, 5, 7, 64, 48, (1, 1), activation="relu"),
    # a 7x7 map's 1x1 layer with an odd number of weight panels: on two threads a row half each
    # panel, panel-major (MobileNetV2's 7x7x960 -> 160)
    Layer(1, 7, 7, 64, 160, (1, 1), activation="relu6"),
    Layer(1, 9, 8, 16, 24, (1, 1), strides=(2, 2)),
    Layer(1, 12, 12, 8, 12, (3, 3), dilations=(2, 2)),
    Layer(1, 11, 13, 4, 6, (3, 5), strides=(1, 2), dilations=(2, 1), padding=((1, 0), (3, 2))),
    Layer(1, 8, 9, 12, 18, (3, 3), groups=3, activation="relu_n1_to_1"),
    Layer(1, 6, 6, 8, 8, (1, 1), groups=4),
    Layer(1, 11, 10, 21, 1, (3, 3), depthwise=True, activation="relu6"),
    Layer(2, 9, 9, 17, 2, (3, 3), depthwise=True),
    Layer(1, 12, 11, 32, 1, (3, 3), strides=(2, 2), depthwise=True),
    Layer(1, 13, 13, 40, 1, (5, 5), depthwise=True, activation="relu"),
    Layer(1, 14, 12, 19, 1, (5, 5), strides=(2, 2), depthwise=True, padding="VALID"),
    Layer(1, 10, 10, 8, 2, (3, 3), dilations=(2, 2), depthwise=True),
    Layer(1, 7, 9, 5, 1, (3, 3), depthwise=True, padding=((0, 2), (2, 0))),
    # rows that do not divide among 2 or 3 threads: tasks are rows x channel parts
    Layer(1, 7, 7, 48, 1, (3, 3), depthwise=True, activation="relu6"),
    Layer(1, 9, 7, 37, 2, (3, 3), depthwise=True),
    # batch 2, multiplier 1: bands of output rows (of up to 4) and a channel tail on the fast path
    Layer(2, 10, 9, 37, 1, (3, 3), depthwise=True, activation="relu6"),
    Layer(2, 11, 13, 21, 1, (5, 5), strides=(2, 2), depthwise=True),
]


GEMM_TILES = [t for t in layertune.methods.methods()["unrolled"].param("gemm_tile").choices if t]
WINOGRAD_TILES = layertune.methods.methods()["winograd"].param("winograd_tile").choices


def variants(layer: Layer) -> list[tuple[str, dict]]:
    """Every method that applies to the layer, with parameter settings that exercise odd blockings."""
    out: list[tuple[str, dict]] = [("simple", {}), ("simple", {"threads": 2}), ("simple", {"threads": 3})]
    out += [("unrolled", {}), ("unrolled", {"threads": 2}), ("unrolled", {"block_m": 13, "block_k": 7, "threads": 2}),
            ("unrolled", {"block_m": 1, "block_k": 5000})]
    # every register tile, with blockings that leave partial tiles in both directions
    out += [("unrolled", {"gemm_tile": t, "block_m": 7, "block_k": 9}) for t in GEMM_TILES]
    if not AMX_LACKING and not layer.depthwise and layer.groups == 1:
        out += [(m, p) for m in ("amx_bf16x3", "amx_bf16x6") for p in ({}, {"threads": 2}, {"threads": 3})]
    if layer.winograd_ok:
        blockings = ([{}, {"separable_block_depth": 1}, {"separable_block_depth": 17, "threads": 2}]
                     if layer.depthwise else
                     [{}, {"nonseparable_filter_block_depth": 1, "nonseparable_channel_depth": 3},
                      {"nonseparable_filter_block_depth": 40, "nonseparable_channel_depth": 1000, "threads": 2}])
        for tile, blocking in itertools.product(WINOGRAD_TILES, blockings):
            out.append(("winograd", {"winograd_tile": tile, **blocking}))
        if not layer.depthwise:  # every register tile of the alpha^2 GEMMs, F(2x2) and F(4x4) in turn
            out += [("winograd", {"winograd_tile": WINOGRAD_TILES[i % 2], "gemm_tile": t,
                                  "nonseparable_filter_block_depth": 20, "nonseparable_channel_depth": 7})
                    for i, t in enumerate(GEMM_TILES)]
    return out


def make_data(layer: Layer, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (layer.n, layer.h, layer.w, layer.c)).astype(np.float32)
    if layer.depthwise:
        w = rng.uniform(-1, 1, (*layer.k, layer.c, layer.oc)).astype(np.float32)
        out_c = layer.c * layer.oc
    else:
        w = rng.uniform(-1, 1, (*layer.k, layer.c // layer.groups, layer.oc)).astype(np.float32)
        out_c = layer.oc
    bias = rng.uniform(-1, 1, out_c).astype(np.float32)
    return x, w, bias


def pads_of(layer: Layer) -> tuple[int, int, int, int]:
    if layer.padding == "VALID":
        return 0, 0, 0, 0
    if layer.padding == "SAME":
        return (*numpy_conv.same_pads(layer.h, layer.k[0], layer.strides[0], layer.dilations[0]),
                *numpy_conv.same_pads(layer.w, layer.k[1], layer.strides[1], layer.dilations[1]))
    (t, b), (l, r) = layer.padding
    return t, b, l, r


def numpy_reference(layer: Layer, x, w, bias):
    if layer.depthwise:
        w = w.reshape(*layer.k, 1, layer.c * layer.oc)
    return numpy_conv.conv2d(x, w, bias, layer.strides, pads_of(layer), layer.dilations,
                             layer.c if layer.depthwise else layer.groups, layer.activation)


def run(layer: Layer, x, w, bias, method: str, **params):
    common = dict(strides=layer.strides, padding=layer.padding, dilations=layer.dilations,
                  activation=layer.activation, method=method)
    if layer.depthwise:
        return layertune.depthwise_conv2d(x, w, bias, **common, **params)
    return layertune.conv2d(x, w, bias, groups=layer.groups, **common, **params)


def assert_close(got, want, what: str):
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    scale = float(np.abs(want).max()) or 1.0
    err = float(np.abs(got.astype(np.float64) - want).max())
    assert err <= RTOL * scale, f"{what}: max |diff| {err:.3g} > {RTOL} x {scale:.3g}"


@pytest.fixture(scope="module", params=LAYERS, ids=str)
def case(request):
    layer = request.param
    x, w, bias = make_data(layer)
    ref = run(layer, x, w, bias, "reference")
    return layer, x, w, bias, ref


def test_reference_matches_numpy(case):
    layer, x, w, bias, ref = case
    assert_close(ref, numpy_reference(layer, x, w, bias), f"reference on {layer}")


def test_every_variant_matches_reference_and_numpy(case):
    layer, x, w, bias, ref = case
    want = numpy_reference(layer, x, w, bias)
    for method, params in variants(layer):
        got = run(layer, x, w, bias, method, **params)
        assert_close(got, ref.astype(np.float64), f"{method}{params} vs reference on {layer}")
        assert_close(got, want, f"{method}{params} vs numpy on {layer}")


def test_without_bias_and_repeated_runs_are_identical():
    layer = Layer(1, 9, 9, 8, 16, (3, 3))
    x, w, _ = make_data(layer)
    want = numpy_reference(layer, x, w, None)
    for method, params in variants(layer):
        kernel = layertune.Conv2D(x.shape, w, None, method=method, **params)
        first = kernel.run(x)
        assert_close(first, want, f"{method}{params} without bias")
        np.testing.assert_array_equal(kernel.run(x), first)  # no state leaks between runs


def test_big_channel_counts_winograd_f4():
    """Channel counts where the blocked GEMM paths (several channel / filter blocks) kick in."""
    layer = Layer(1, 10, 10, 200, 96, (3, 3), activation="relu")
    x, w, bias = make_data(layer, seed=3)
    want = numpy_reference(layer, x, w, bias)
    for params in ({}, {"nonseparable_channel_depth": 64, "nonseparable_filter_block_depth": 32}):
        assert_close(run(layer, x, w, bias, "winograd", winograd_tile=4, **params), want, f"winograd {params}")
    assert_close(run(layer, x, w, bias, "unrolled", block_k=100), want, "unrolled block_k=100")


def test_winograd_f6_error_at_512_input_channels():
    """F(6x6,3x3) rounds more than F(4x4,3x3) (its transforms hold 32s and 1/180s, and the error
    grows with the reduction): at 512 input channels it still keeps within the 1e-4 x max |output|
    every method is held to, against float64 numpy (measured: 2.75e-5; F4 1.4e-5)."""
    layer = Layer(1, 14, 13, 512, 24, (3, 3))
    x, w, bias = make_data(layer, seed=5)
    want = numpy_reference(layer, x, w, bias)
    for params in ({}, {"nonseparable_channel_depth": 100}):
        assert_close(run(layer, x, w, bias, "winograd", winograd_tile=6, **params), want, f"winograd F6 {params}")


def test_amx_bf16_methods_run_where_the_cpu_has_amx_and_say_why_not_elsewhere():
    """On an AMX-BF16 CPU: wide and deep 1x1 and 3x3 layers (several channel pairs, K blocks,
    tail rows and an odd last block) within the bound, amx_bf16x6 within fp32's own error;
    without one, both methods refuse every layer with the CPU's reason."""
    # the first two have a pixel block per thread or more; the last two fewer blocks than two or
    # three threads, so their channel pairs are split too: the 1x1 one shares each block's A'
    # between its chunks (run_shared), the 1300-channel one (2.2 MB of A') splits it per chunk
    layers = [Layer(1, 14, 13, 512, 40, (3, 3)), Layer(2, 7, 9, 160, 130, (1, 1), activation="relu6"),
              Layer(1, 5, 5, 160, 130, (1, 1)), Layer(1, 4, 5, 1300, 40, (3, 3))]
    if AMX_LACKING:
        conv = {"input": [1, 8, 8, 16], "weights": [1, 1, 16, 8], "strides": [1, 1], "dilations": [1, 1],
                "pads": [0, 0, 0, 0], "groups": 1, "activation": "none"}
        for method in ("amx_bf16x3", "amx_bf16x6"):
            reason = layertune.methods.unavailable_methods()[method]
            assert reason.startswith(method) and layertune.methods.why_not(conv, method) == "method: " + reason
            with pytest.raises(ValueError, match="AMX"):
                run(layers[1], *make_data(layers[1]), method)
        return
    for layer in layers:
        x, w, bias = make_data(layer, seed=11)
        want = numpy_reference(layer, x, w, bias)
        scale = float(np.abs(want).max())
        fp32 = max(float(np.abs(run(layer, x, w, bias, m).astype(np.float64) - want).max()) for m in ("simple", "unrolled"))
        for threads in (1, 2, 3):
            assert_close(run(layer, x, w, bias, "amx_bf16x3", threads=threads), want, f"amx_bf16x3 on {layer}")
            # amx_bf16x6 is not approximate: within fp32's own error (measured 0.4-0.7x of the
            # direct methods' here; amx_bf16x3 1.1-15x)
            err = float(np.abs(run(layer, x, w, bias, "amx_bf16x6", threads=threads).astype(np.float64) - want).max())
            assert err <= fp32, f"amx_bf16x6 on {layer}: max |diff| {err / scale:.2g} of max|y|, fp32's {fp32 / scale:.2g}"
    grouped = Layer(1, 6, 6, 8, 8, (1, 1), groups=4)
    for method in ("amx_bf16x3", "amx_bf16x6"):
        with pytest.raises(ValueError, match="ungrouped layers only, this layer has 4 groups"):
            run(grouped, *make_data(grouped), method)


@pytest.mark.parametrize("threads", [2, 3])
def test_winograd_keeps_a_blocks_input_transform_across_its_filter_shares_not_across_runs(threads):
    """On several threads a small map's tile blocks are split into filter shares, and a thread
    transforms a block's input once for all the shares it runs (two threads: each runs all four
    shares of one block; three: the middle thread runs shares of both). One kernel, run on new
    inputs, must transform them anew: every run matches numpy."""
    layer = Layer(1, 12, 12, 16, 64, (3, 3), activation="relu")
    _, w, bias = make_data(layer, seed=4)
    for tile in WINOGRAD_TILES:
        kernel = layertune.Conv2D((1, 12, 12, 16), w, bias, padding="SAME", activation="relu", method="winograd",
                                  winograd_tile=tile, threads=threads)
        for seed in (5, 6, 5):
            x = make_data(layer, seed=seed)[0]
            assert_close(kernel.run(x), numpy_reference(layer, x, w, bias), f"winograd F{tile} run on input {seed}")


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_winograd_blocks_large_transformed_weights_their_own_way(threads):
    """Where U takes 4 MiB or more, Winograd blocks its tiles up to 1 MiB of V and, on several
    threads, splits the filters before the tiles when there are enough weight panels: the layers
    here take each path (7x7x512 F(2x2): 16.8 MB of U, 11 panels; 14x14x260 F(2x2): 4.3 MB, 5)."""
    for layer in (Layer(1, 7, 7, 512, 512, (3, 3), activation="relu"), Layer(1, 14, 14, 260, 260, (3, 3))):
        x, w, bias = make_data(layer, seed=7)
        assert_close(run(layer, x, w, bias, "winograd", winograd_tile=2, threads=threads),
                     numpy_reference(layer, x, w, bias), f"winograd F2 {layer}")


def test_the_default_tile_is_chosen_by_the_layers_shape():
    """gemm_tile 0: on AVX-512 with one vector FMA pipe 7x1 vectors, or 7x2 where K >= 512 and the
    second vector pads the product at most 2% more (1024 inputs to 16 outputs: no); with two pipes
    7x2, or 7x1 where 7x2 pads 1.5 times as much (16 outputs); on AVX2 6x2 vectors, or 4x3 where
    6x2 pads 1.25 times as much (24 outputs: 32 columns against 24); elsewhere the ISA's default.
    The pipes are measured once per process."""
    from layertune import _core
    pipes = _core.vector_fma_pipes()
    assert pipes in (1, 2) and _core.vector_fma_pipes() == pipes
    default = _core.gemm_tile_for_shape(12 * 1000, 64, 16)
    if _core.isa() == "avx512" and pipes == 2:
        for m, n, k in ((12 * 1000, 64, 16), (7 * 7, 1280, 320), (56 * 56, 24, 96), (7 * 7, 48, 1024),
                        (56 * 56, 144, 24)):
            assert _core.gemm_tile_for_shape(m, n, k) == 72
        for m, n, k in ((112 * 112, 16, 32), (7 * 7, 16, 1024), (7 * 7, 8, 64)):
            assert _core.gemm_tile_for_shape(m, n, k) == 71
    elif _core.isa() == "avx512":
        assert default == 71
        assert _core.gemm_tile_for_shape(112 * 112, 16, 32) == 71
        assert _core.gemm_tile_for_shape(7 * 7, 1280, 320) == 71
        assert _core.gemm_tile_for_shape(7 * 7, 512, 2048) == 72
        assert _core.gemm_tile_for_shape(7 * 7, 16, 1024) == 71
        assert _core.gemm_tile_for_shape(7 * 7, 48, 1024) == 71  # 64 columns for 48: 33% more
    elif _core.isa() == "avx2":
        assert default == 62
        for m, n, k in ((56 * 56, 24, 96), (56 * 56, 24, 1024), (7 * 7, 20, 64)):
            assert _core.gemm_tile_for_shape(m, n, k) == 43
        for m, n, k in ((112 * 112, 16, 32), (56 * 56, 144, 24), (28 * 28, 32, 144), (7 * 7, 40, 64),
                        (7 * 7, 1280, 320)):
            assert _core.gemm_tile_for_shape(m, n, k) == 62
    for m, n, k in ((112 * 112, 16, 32), (7 * 7, 160, 960), (7 * 7, 512, 2048), (1, 1, 1)):
        tile = _core.gemm_tile_for_shape(m, n, k)
        assert tile in GEMM_TILES
        if _core.isa() not in ("avx512", "avx2"):
            assert tile == default
    # and the layers it picks for compute the right answer (the variant grid runs gemm_tile 0 too)
    for layer in (Layer(1, 7, 7, 24, 16, (1, 1)), Layer(1, 9, 7, 19, 24, (1, 1)), Layer(2, 5, 6, 8, 20, (3, 3))):
        x, w, bias = make_data(layer)
        assert_close(run(layer, x, w, bias, "unrolled"), numpy_reference(layer, x, w, bias), f"unrolled {layer}")


def test_winograd_takes_the_tile_that_pads_its_gemms_least():
    """Winograd's gemm_tile 0: on AVX-512 7x4 vectors, or 8x3 where that pads the tiles x output
    channels product less (16 tiles of a 7x7 map in F(2x2)); elsewhere the ISA's default."""
    from layertune import _core
    if _core.isa() == "avx512":
        assert _core.winograd_gemm_tile_for_shape(49, 256) == 74  # ResNet50's 14x14 stage, F(2x2)
        assert _core.winograd_gemm_tile_for_shape(196, 64) == 74
        assert _core.winograd_gemm_tile_for_shape(16, 512) == 83  # 7x7 in F(2x2): 16 rows, not 21
        assert _core.winograd_gemm_tile_for_shape(16, 64) == 74  # 64 columns would pad to 96
    else:
        assert {_core.winograd_gemm_tile_for_shape(m, n) for m, n in ((49, 256), (16, 512), (1, 1))} == {
            _core.gemm_tile_for_shape(1000, 64, 16)}
    # and what it picks computes the right answer: a 7x7 map in F(2x2) takes the 8-row tile here
    layer = Layer(1, 7, 7, 40, 48, (3, 3), activation="relu")
    x, w, bias = make_data(layer)
    assert_close(run(layer, x, w, bias, "winograd", winograd_tile=2), numpy_reference(layer, x, w, bias), "F(2x2) 7x7")


def test_conv_methods_lists_methods_and_params():
    methods = layertune.conv_methods()
    assert set(methods) == {"reference", "simple", "unrolled", "winograd", "amx_bf16x3", "amx_bf16x6"}
    assert layertune.conv_methods("int8") == {"int8_reference": ("threads",), "int8_gemm": ("threads", "tile_rows"),
                                              "int8_depthwise": ("threads",)}
    assert set(methods["winograd"]) >= {"winograd_tile", "separable_block_depth", "nonseparable_filter_block_depth",
                                        "nonseparable_channel_depth", "threads"}
    assert all("threads" in params for params in methods.values())


def test_input_conversion_accepts_float64_and_noncontiguous():
    layer = Layer(1, 8, 8, 6, 4, (3, 3))
    x, w, bias = make_data(layer)
    want = run(layer, x, w, bias, "reference")
    x64 = np.asfortranarray(x.astype(np.float64))
    w_strided = np.repeat(w, 2, axis=3)[..., ::2]
    assert not w_strided.flags.c_contiguous
    np.testing.assert_allclose(layertune.conv2d(x64, w_strided, bias.tolist()), want, rtol=0, atol=1e-5)


def test_prepared_kernel_reports_shapes_flops_and_times():
    kernel = layertune.Conv2D((1, 8, 8, 4), np.ones((3, 3, 4, 6), np.float32), strides=2, method="simple")
    assert kernel.output_shape == (1, 4, 4, 6)
    assert kernel.flops == 2 * 4 * 4 * 6 * 3 * 3 * 4
    times = kernel.time(np.zeros((1, 8, 8, 4), np.float32), warmup=1, repeats=3)
    assert len(times) == 3 and all(t > 0 for t in times)


@pytest.mark.parametrize("threads", [1, 2])
def test_peak_gflops_is_measured(threads):
    assert layertune.peak_gflops(threads, seconds=0.05) > 0.1
