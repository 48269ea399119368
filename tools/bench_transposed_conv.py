#!/usr/bin/env python3
"""Transposed convolutions: the phase convolutions layertune lowers them to, against the engine's
direct scatter loop (what the node ran as before) and LiteRT with XNNPACK, on decoder-sized layers.
One Keras Conv2DTranspose layer per model; all three alternate round by round in one process, and
each ratio is the median over paired rounds with its 95% interval.

    python tools/bench_transposed_conv.py [--threads 1 2] [--rounds 15]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys

import numpy as np

import layertune
import layertune.graph.tflite_import as tflite_import
from layertune.tuner.protocol import ratio_ci

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

# (input h, w, channels, filters, kernel, stride): a segmentation decoder's upsampling steps
LAYERS = [(28, 28, 64, 32, 4, 2), (56, 56, 32, 16, 3, 2), (14, 14, 128, 64, 2, 2), (20, 20, 16, 16, 5, 3)]


def tflite_layer(h: int, w: int, c: int, filters: int, k: int, s: int) -> bytes:
    import tensorflow as tf
    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((h, w, c))
    model = tf.keras.Model(inp, tf.keras.layers.Conv2DTranspose(filters, k, s, "same")(inp))
    with contextlib.redirect_stdout(io.StringIO()):
        return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def direct_model(flatbuffer: bytes, threads: int) -> layertune.Model:
    """The layer as one TRANSPOSE_CONV node (the lowering switched off for this import)."""
    lower = tflite_import.lower_transposed_convs
    tflite_import.lower_transposed_convs = lambda graph: None
    try:
        return layertune.Model(tflite_import.import_tflite_bytes(flatbuffer), threads)
    finally:
        tflite_import.lower_transposed_convs = lower


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print("| layer | threads | phases (ms) | direct loop (ms) | phases / direct | LiteRT (ms) | phases / LiteRT |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for h, w, c, filters, k, s in LAYERS:
        flatbuffer = tflite_layer(h, w, c, filters, k, s)
        x = np.random.default_rng(0).uniform(-1, 1, (1, h, w, c)).astype(np.float32)
        for threads in args.threads:
            lowered = layertune.Model(tflite_import.import_tflite_bytes(flatbuffer), threads)
            direct = direct_model(flatbuffer, threads)
            assert np.allclose(lowered.run(x), direct.run(x), atol=1e-4)
            items = [benchlib.Measurement("phases", lambda wu, r, m=lowered: m.time(x, wu, r)),
                     benchlib.Measurement("direct", lambda wu, r, m=direct: m.time(x, wu, r)),
                     benchlib.Measurement("litert", benchlib.litert_timer(benchlib.litert_interpreter(flatbuffer, threads), [x]))]
            per_round = {item.label: [] for item in items}
            for _ in range(args.rounds):  # one round at a time, so that the ratios pair rounds
                for item in items:
                    item.times = []
                benchlib.measure_interleaved(items, 1, 2, args.repeats)
                for item in items:
                    per_round[item.label].append(item.median)
            ms = {label: float(np.median(v)) * 1e3 for label, v in per_round.items()}
            print(f"| {h}x{w}x{c} -> {filters}, {k}x{k}/{s} | {threads} | {ms['phases']:.3f} | {ms['direct']:.3f} | "
                  f"{ratio_ci(per_round['phases'], per_round['direct'])} | {ms['litert']:.3f} | "
                  f"{ratio_ci(per_round['phases'], per_round['litert'])} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
