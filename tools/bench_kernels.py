#!/usr/bin/env python3
"""Kernel benchmark: every method and variant on real ResNet-50 / MobileNetV2 layer shapes.

Prints, per layer, thread count and variant: median time, effective GFLOP/s (the direct
convolution's FLOPs over the time: Winograd does fewer, so it can pass the peak), that as % of
this CPU's measured peak, and the ratio to LiteRT running the same single layer at the same
thread count. Everything is measured in one run: layertune's variants and LiteRT alternate in
rounds, and each figure is the median over all rounds' repeats, after warm-up.

    python tools/bench_kernels.py              # the full table (a few minutes)
    python tools/bench_kernels.py --quick      # two layers, fewer variants and repeats
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
from dataclasses import dataclass, field

import numpy as np

import layertune

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402


@dataclass(frozen=True)
class BenchLayer:
    name: str
    h: int
    w: int
    c: int
    oc: int  # depthwise: the multiplier
    k: int
    stride: int = 1
    depthwise: bool = False

    @property
    def winograd_ok(self) -> bool:
        return self.k == 3 and self.stride == 1

    @property
    def large(self) -> bool:
        return not self.depthwise and self.k in (1, 3) and self.c >= 64


LAYERS = [
    BenchLayer("resnet 3x3 56x56x64->64", 56, 56, 64, 64, 3),
    BenchLayer("resnet 3x3 28x28x128->128", 28, 28, 128, 128, 3),
    BenchLayer("resnet 3x3 14x14x256->256", 14, 14, 256, 256, 3),
    BenchLayer("resnet 1x1 56x56x64->256", 56, 56, 64, 256, 1),
    BenchLayer("resnet first 7x7/2 224x224x3->64", 224, 224, 3, 64, 7, 2),
    BenchLayer("mobilenetv2 first 3x3/2 224x224x3->32", 224, 224, 3, 32, 3, 2),
    BenchLayer("mobilenetv2 dw 3x3 112x112x32", 112, 112, 32, 1, 3, 1, True),
    BenchLayer("mobilenetv2 dw 3x3 56x56x144", 56, 56, 144, 1, 3, 1, True),
    BenchLayer("mobilenetv2 dw 3x3/2 56x56x144", 56, 56, 144, 1, 3, 2, True),
]
QUICK_LAYERS = [LAYERS[0], LAYERS[6]]


def variants(layer: BenchLayer, quick: bool) -> list[tuple[str, dict]]:
    out: list[tuple[str, dict]] = [("simple", {}), ("unrolled", {})]
    if not quick and not layer.depthwise:
        out += [("unrolled", {"block_m": 48, "block_k": 128}), ("unrolled", {"block_m": 192, "block_k": 512})]
    if layer.winograd_ok:
        if layer.depthwise:
            blockings = [{}] if quick else [{}, {"separable_block_depth": 16}]
        else:
            blockings = [{}] if quick else [{}, {"nonseparable_filter_block_depth": 32, "nonseparable_channel_depth": 32},
                                            {"nonseparable_filter_block_depth": 64, "nonseparable_channel_depth": 256}]
        for tile in (2, 4):
            out += [("winograd", {"winograd_tile": tile, **b}) for b in blockings]
    return out


def variant_name(method: str, params: dict) -> str:
    return method + "".join(f" {k}={v}" for k, v in params.items())


def litert_layer_model(layer: BenchLayer, weights: np.ndarray, bias: np.ndarray) -> bytes:
    """A one-layer TFLite model with the same weights."""
    import tensorflow as tf

    inp = tf.keras.Input((layer.h, layer.w, layer.c), batch_size=1)
    if layer.depthwise:
        conv = tf.keras.layers.DepthwiseConv2D(layer.k, layer.stride, padding="same", depth_multiplier=layer.oc)
    else:
        conv = tf.keras.layers.Conv2D(layer.oc, layer.k, layer.stride, padding="same")
    model = tf.keras.Model(inp, conv(inp))
    conv.set_weights([weights, bias])
    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints its SavedModel's signature
        return tf.lite.TFLiteConverter.from_keras_model(model).convert()


@dataclass
class Row:
    layer: str
    threads: int
    variant: str
    method: str
    params: dict
    times: list[float] = field(default_factory=list)
    flops: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def bench_layer(layer: BenchLayer, thread_counts: list[int], args) -> list[Row]:
    """Every variant at every thread count, and LiteRT at every thread count, measured in
    interleaved rounds (benchlib) so that machine drift hits all of them alike."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (1, layer.h, layer.w, layer.c)).astype(np.float32)
    w = rng.uniform(-0.1, 0.1, (layer.k, layer.k, layer.c, layer.oc)).astype(np.float32)
    out_c = layer.c * layer.oc if layer.depthwise else layer.oc
    b = rng.uniform(-0.1, 0.1, out_c).astype(np.float32)
    rows: list[Row] = []
    items: list[benchlib.Measurement] = []
    for threads in thread_counts:
        for method, params in variants(layer, args.quick):
            kernel = layertune.Conv2D(x.shape, w, b, strides=layer.stride, padding="SAME", method=method,
                                      threads=threads, depthwise=layer.depthwise, **params)
            rows.append(Row(layer.name, threads, variant_name(method, params), method, params, flops=kernel.flops))
            items.append(benchlib.Measurement(rows[-1].variant, lambda wu, r, k=kernel: k.time(x, warmup=wu, repeats=r)))
        if not args.no_litert:
            interpreter = benchlib.litert_interpreter(litert_layer_model(layer, w, b), threads)
            rows.append(Row(layer.name, threads, "LiteRT (XNNPACK)", "litert", {}, flops=rows[-1].flops))
            items.append(benchlib.Measurement("litert", benchlib.litert_timer(interpreter, [x], copies=False)))
    benchlib.measure_interleaved(items, args.rounds, args.warmup, args.repeats)
    for row, item in zip(rows, items):
        row.times = item.times
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two layers, fewer variants (a smoke run)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per round")
    parser.add_argument("--no-litert", action="store_true", help="skip the LiteRT comparison")
    parser.add_argument("--json", help="also write every row to this JSON file")
    args = parser.parse_args(argv)
    if not args.no_litert and not benchlib.litert_available():
        print("LiteRT comparison skipped: TensorFlow / ai-edge-litert are not installed "
              "(pip install 'layertune[tf]')")
        args.no_litert = True
    if args.quick:
        args.rounds, args.repeats = min(args.rounds, 2), min(args.repeats, 5)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    peaks = {t: layertune.peak_gflops(t, seconds=0.5) for t in args.threads}
    print(f"ISA {layertune._core.isa()}; measured fp32 peak: "
          + ", ".join(f"{t} thread(s) {p:.1f} GFLOP/s" for t, p in peaks.items()))
    layers = QUICK_LAYERS if args.quick else LAYERS
    all_rows: list[Row] = []
    for layer in layers:
        layer_rows = bench_layer(layer, args.threads, args)
        all_rows += layer_rows
        for threads in args.threads:
            rows = [r for r in layer_rows if r.threads == threads]
            lite = next((r.median for r in rows if r.method == "litert"), None)
            print(f"\n{layer.name}, {threads} thread(s), {rows[0].flops / 1e6:.0f} MFLOP")
            print(f"  {'variant':58s} {'median ms':>10s} {'eff GF/s':>8s} {'eff %pk':>7s} {'/LiteRT':>8s}")
            for r in rows:
                gflops = r.flops / r.median / 1e9
                ratio = f"{r.median / lite:8.2f}" if lite else "       -"
                print(f"  {r.variant:58s} {r.median * 1e3:10.3f} {gflops:8.1f} {100 * gflops / peaks[threads]:6.1f}% {ratio}")
            sys.stdout.flush()
    summarize(all_rows, layers, peaks)
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump([{"layer": r.layer, "threads": r.threads, "variant": r.variant, "method": r.method,
                        "params": r.params, "median_s": r.median, "flops": r.flops} for r in all_rows], f, indent=1)
        os.replace(args.json + ".tmp", args.json)
    return 0


def summarize(rows: list[Row], layers: list[BenchLayer], peaks: dict[int, float]) -> None:
    """The figures the kernel targets are stated in. `F4 speed-up`: unrolled's time over F(4x4)'s;
    `2-thr gain`: the best one-thread time over the best time at this thread count."""
    def pick(layer, threads, method=None, **match):
        cand = [r for r in rows if r.layer == layer.name and r.threads == threads and r.method != "litert"
                and (method is None or r.method == method) and all(r.params.get(k) == v for k, v in match.items())]
        return min(cand, key=lambda r: r.median) if cand else None

    print("\nSummary")
    print(f"  {'layer':40s} {'thr':>3s} {'best variant':42s} {'best/LiteRT':>11s} {'unrolled %pk':>12s} "
          f"{'F4 speed-up':>11s} {'2-thr gain':>9s}")
    for layer in layers:
        for threads in peaks:
            best = pick(layer, threads)
            lite = next((r for r in rows if r.layer == layer.name and r.threads == threads and r.method == "litert"), None)
            unrolled = pick(layer, threads, "unrolled")
            f4 = pick(layer, threads, "winograd", winograd_tile=4)
            one = pick(layer, 1)
            ratio = f"{best.median / lite.median:11.2f}" if lite else "          -"
            upeak = f"{100 * unrolled.flops / unrolled.median / 1e9 / peaks[threads]:11.1f}%"
            f4r = f"{unrolled.median / f4.median:11.2f}" if f4 else "          -"
            scale = f"{one.median / best.median:9.2f}" if threads > 1 and one else "        -"
            print(f"  {layer.name:40s} {threads:3d} {best.variant:42s} {ratio} {upeak} {f4r} {scale}")


if __name__ == "__main__":
    sys.exit(main())
