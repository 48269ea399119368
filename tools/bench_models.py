#!/usr/bin/env python3
"""Whole-model benchmark: layertune vs LiteRT (XNNPACK) vs Apache TVM (untuned, and tuned).

For MobileNetV2, ResNet50 and EfficientNetB0 (tf.keras.applications, random weights with
calibrated batch-norm statistics, 224x224) at 1 and 2 threads, measured in interleaved rounds
of one run (tools/benchlib.py):
  * layertune with the default kernel choice, fused as `layertune.load` fuses (graph/fusion.py)
    and unfused, and with each uniform method (every convolution on that method where it
    applies, the default elsewhere; fused); with --tuned also the plan that
    tools/profile_and_optimize.py writes for this machine (default.json, 1 to the row's count of
    threads per layer, tuned before the rounds; the tuning time is printed);
  * LiteRT with XNNPACK;
  * TVM 0.27 Relax, untuned, llvm for this CPU (-mcpu from LLVM's host detection), timed in a
    process of its own after the others (its thread pool spins long after each run and slowed
    the next system in a shared process by up to 1.5x); with --tvm-trials N also TVM tuned by
    meta_schedule with N trials (layertune.search.tvm_compiler; the tuning time is printed).
Prints median latency and the ratio to LiteRT with its 95% interval over the rounds (paired round by
round: the ratio is the median of the rounds' ratios), and each system's speed-up from the fewest
threads to the most, and that speed-up over LiteRT's (round by round, with its interval: above 1
the system scales better); then peak memory, each system in its own process: layertune's engine
(layertune-profiler's peak RSS, minus the profiler's own) and LiteRT's interpreter (RSS growth from
creating and running it); with --per-op, where layertune's default plan spends its time: each op
type's milliseconds per run at every thread count (Model.run_profiled, thread counts alternating
round by round) and its speed-up over the fewest threads, so that an op type that does not scale (or
gets slower) is named.

    python tools/bench_models.py                       # all three models (~10 minutes)
    python tools/bench_models.py --models MobileNetV2 --no-tvm
    python tools/bench_models.py --models MobileNetV2 --size 96 --tvm-trials 500
    python tools/bench_models.py --models MobileNetV2 --no-tvm --tuned --per-op
    python tools/bench_models.py --int8 --no-tvm          # the int8 models (issue 15's table)

With --int8 the model is the converter's full-int8 quantization of the same application (int8
input and output, calibrated on 8 random images) and the rows are: LiteRT int8 (the baseline),
layertune's int8 path (requantizing in XNNPACK's arithmetic, the default; with --tuned also the
plan profile_and_optimize writes for the int8 model), the same in TFLite's reference arithmetic
(requantization="tflite"), layertune on the same model in float32 (`int8=False`), LiteRT fp32 and
layertune fp32; max|diff| is then against LiteRT int8's dequantized output, and the weight bytes
of the int8 plan are printed against the fp32 plan's.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import layertune
from layertune.graph.fusion import fuse
from layertune.graph.ir import CONV_OPS
from layertune.graph.tflite_import import import_tflite_bytes
from layertune.tuner.protocol import RatioCI, ratio_ci

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

MODELS = ["MobileNetV2", "ResNet50", "EfficientNetB0"]
METHODS = ["simple", "unrolled", "winograd"]


def tflite_path(name: str, size: int, cache: Path, int8: bool = False) -> Path:
    """Where build_tflite caches the application."""
    return cache / f"{name}_{size}{'_int8' if int8 else ''}.tflite"


def build_tflite(name: str, size: int, cache: Path, int8: bool = False) -> bytes:
    """The application as TFLite, cached (building and converting takes a while); int8: fully
    quantized by the converter (int8 input and output), calibrated on 8 random images."""
    path = tflite_path(name, size, cache, int8)
    if path.exists():
        return path.read_bytes()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    model = getattr(tf.keras.applications, name)(weights=None, input_shape=(size, size, 3))
    for layer in model.layers:  # calibrated statistics: random weights otherwise collapse the activations
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            layer.momentum = 0.0
    model(np.random.default_rng(0).uniform(-1, 1, (4, size, size, 3)).astype(np.float32), training=True)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        images = np.random.default_rng(1).uniform(-1, 1, (8, 1, size, size, 3)).astype(np.float32)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x] for x in images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        data = converter.convert()
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return data


def layertune_model(flatbuffer: bytes, name: str, threads: int, method: str | None, fused: bool = True) -> layertune.Model:
    """Default kernel choice, or `method` on every convolution it applies to; fused as
    `layertune.load` fuses (graph/fusion.py), or not."""
    graph = import_tflite_bytes(flatbuffer, name)
    model = layertune.Model(fuse(graph) if fused else graph, threads)
    if method:
        for layer in model.layers:
            if layer.op in CONV_OPS:
                try:
                    model.set_kernel(layer.index, method)
                except ValueError:
                    pass  # does not apply (Winograd on a strided / non-3x3 layer): keep the default
    return model


TVM_CHILD = """
import json, os, sys, time, numpy as np, tvm
from pathlib import Path
from tvm import relax
from layertune.search.tvm_compiler import compile_model
path, repeats, warmup, trials, lib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[6]), sys.argv[7]
if not os.path.exists(lib):  # compile (and tune) once; every thread count reuses the library
    started = time.perf_counter()
    compile_model({"tuning_trials": trials}, Path(path), Path(lib))
    print(f"TVM compile{f' + tuning ({trials} trials)' if trials else ''}: {time.perf_counter() - started:.0f} s",
          file=sys.stderr)
vm = relax.VirtualMachine(tvm.runtime.load_module(lib), tvm.cpu())
x = np.load(sys.argv[4])
data = tvm.runtime.tensor(x)
out = vm["main"](data).numpy()
for _ in range(warmup):
    vm["main"](data)
times = []
for _ in range(repeats):
    t0 = time.perf_counter(); vm["main"](data).numpy(); times.append(time.perf_counter() - t0)
np.save(sys.argv[5], out)
print(json.dumps(times))
"""


def tvm_times(flatbuffer: bytes, x: np.ndarray, threads: int, repeats: int, warmup: int, trials: int,
              workdir: Path) -> tuple[list[float], np.ndarray]:
    """TVM in a process of its own (TVM_NUM_THREADS=threads): its thread pool spins long after a
    run and would slow whatever runs next in a shared process. The compiled (with `trials` > 0,
    meta_schedule-tuned) library is kept in `workdir` for the next thread count."""
    model, xin, out = workdir / "m.tflite", workdir / "x.npy", workdir / "y.npy"
    model.write_bytes(flatbuffer)
    np.save(xin, x)
    env = dict(os.environ, TVM_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, "-c", TVM_CHILD, str(model), str(repeats), str(warmup), str(xin), str(out),
                           str(trials), str(workdir / f"tvm_{trials}.so")], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        errors = [line for line in proc.stderr.splitlines() if "Error" in line or "error" in line]
        raise RuntimeError((errors or proc.stderr.strip().splitlines() or ["?"])[-1][:200])
    for line in proc.stderr.splitlines():
        if line.startswith("TVM compile"):
            print(f"  {line}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), np.load(out)


def memory_layertune(model: layertune.Model) -> int:
    """Peak RSS of layertune-profiler running the plan, minus the profiler's own baseline."""
    profiler = str(layertune.profiler_path())
    with tempfile.TemporaryDirectory() as d:
        plan = Path(d) / "m.ltplan"
        model.save(plan)
        run = json.loads(subprocess.run([profiler, "run", "--plan", str(plan), "--repeats", "2"], check=True,
                                        capture_output=True, text=True).stdout)
        tiny = layertune.Model(import_tflite_bytes(TINY, "tiny"), 1)
        tiny.save(plan)
        base = json.loads(subprocess.run([profiler, "run", "--plan", str(plan), "--repeats", "1"], check=True,
                                         capture_output=True, text=True).stdout)
    return run["peak_rss_bytes"] - base["peak_rss_bytes"]


LITERT_MEMORY = """
import resource, sys, numpy as np
from ai_edge_litert.interpreter import Interpreter
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize()
before = rss()
it = Interpreter(model_path=sys.argv[1], num_threads=1)
it.allocate_tensors()
d = it.get_input_details()[0]
it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
it.invoke()
print(rss() - before)
"""


def memory_litert(flatbuffer: bytes) -> int:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.tflite"
        path.write_bytes(flatbuffer)
        out = subprocess.run([sys.executable, "-c", LITERT_MEMORY, str(path)], check=True, capture_output=True, text=True)
    return int(out.stdout.strip().splitlines()[-1])


TINY = b""  # set in main: a one-op model for the profiler's baseline RSS


def per_op_table(flatbuffer: bytes, name: str, x: np.ndarray, thread_counts: list[int], rounds: int,
                 repeats: int) -> None:
    """Milliseconds per run by op type (the sum over its nodes; per round the median of `repeats`
    profiled runs, then the median over rounds), the thread counts alternating round by round."""
    models = {t: layertune_model(flatbuffer, name, t, None) for t in thread_counts}
    graph = models[thread_counts[0]].graph  # a fused convolution is its op type + its epilogue
    ops = [n.op + (f"+{n.attrs['epilogue']}" if n.attrs.get("epilogue") else "") for n in graph.nodes]
    per_round: dict[int, list[dict[str, float]]] = {t: [] for t in thread_counts}
    for _ in range(rounds):
        for t, model in models.items():
            for _ in range(2):  # warm-up
                model.run_profiled(x)
            runs = np.array([model.run_profiled(x)[1] for _ in range(repeats)])  # (repeats, nodes)
            node = np.median(runs, axis=0)
            totals: dict[str, float] = {}
            for op, seconds in zip(ops, node):
                totals[op] = totals.get(op, 0.0) + float(seconds)
            per_round[t].append(totals)
    first = thread_counts[0]
    med = {t: {op: float(np.median([r[op] for r in per_round[t]])) for op in per_round[t][0]} for t in thread_counts}
    counts = {op: ops.count(op) for op in set(ops)}
    print(f"  per op type (default plan, ms per run; speed-up over {first} thread(s); {rounds} rounds):")
    print(f"  {'op':24s} {'nodes':>5s} " + " ".join(f"{f'{t} thr':>9s}" for t in thread_counts)
          + " " + " ".join(f"{f'x{t}':>6s}" for t in thread_counts[1:]))
    for op in sorted(med[first], key=lambda o: -med[first][o]):
        print(f"  {op:24s} {counts[op]:5d} " + " ".join(f"{med[t][op] * 1e3:9.3f}" for t in thread_counts) + " "
              + " ".join(f"{med[first][op] / max(med[t][op], 1e-12):6.2f}" for t in thread_counts[1:]))
    totals = {t: sum(med[t].values()) for t in thread_counts}
    print(f"  {'total':24s} {len(ops):5d} " + " ".join(f"{totals[t] * 1e3:9.3f}" for t in thread_counts) + " "
          + " ".join(f"{totals[first] / totals[t]:6.2f}" for t in thread_counts[1:]))


def tuned_measurement(tflite: Path, name: str, threads: int, x: np.ndarray, want: np.ndarray,
                      label: str = "layertune tuned") -> benchlib.Measurement:
    """The plan profile_and_optimize writes for this model (build_tflite's file) with at most
    `threads` threads."""
    from bench_tuning import engine_timer, tune  # bench_tuning imports this module: import late
    with tempfile.TemporaryDirectory(prefix="layertune-bench-tuned-") as out:
        seconds, summary, _ = tune(tflite, list(range(1, threads + 1)), Path(out) / "tuned")
        print(f"  {name} tuned for {threads} thread(s) in {seconds:.0f} s: {summary['whole_model']['written']}", flush=True)
        # the loaded model keeps what it needs: the folder may go
        model = layertune.load(Path(out) / "tuned" / tflite.stem / "optimized.ltplan", threads=threads)
    diff = float(np.abs(model.run(x).reshape(want.shape) - want).max())
    # the engine takes real values: integer input goes through Model.time (converted before the timed runs)
    timer = engine_timer(model, x) if x.dtype == np.float32 else (lambda w, r: model.time(x, w, r))
    return benchlib.Measurement(label, timer, info={"threads": threads, "max_abs_diff": diff})


def plan_constant_bytes(model: layertune.Model) -> int:
    """What the model's plan file holds as constants (weights, biases, tables)."""
    return sum(int(t.data.nbytes) for t in model.graph.tensors if t.constant)


def int8_items(name: str, args, cache: Path) -> tuple[list[benchlib.Measurement], bytes, np.ndarray, np.ndarray]:
    """The --int8 rows at every thread count, the int8 flatbuffer, its int8 input and LiteRT int8's
    real output."""
    fb8, fb32 = build_tflite(name, args.size, cache, int8=True), build_tflite(name, args.size, cache)
    x = np.random.default_rng(0).uniform(-1, 1, (1, args.size, args.size, 3)).astype(np.float32)
    int8_model = layertune.Model(fuse(import_tflite_bytes(fb8, name)), 1)
    q = int8_model.graph.tensors[int8_model.graph.inputs[0]].quantization
    xq = np.clip(np.round(x / q.scale + q.zero_point), -128, 127).astype(np.int8)
    reference = benchlib.litert_interpreter(fb8, 1)
    benchlib.litert_timer(reference, [xq])(1, 1)
    detail = reference.get_output_details()[0]
    scale, zero = detail["quantization"]
    want = (reference.get_tensor(detail["index"]).astype(np.float32) - zero) * scale
    fp32 = layertune_model(fb32, name, 1, None)
    print(f"  {name} weights in the plan: int8 {plan_constant_bytes(int8_model) / 2**20:.2f} MiB, fp32 "
          f"{plan_constant_bytes(fp32) / 2**20:.2f} MiB (1/{plan_constant_bytes(fp32) / plan_constant_bytes(int8_model):.2f})")
    items = []
    for threads in args.threads:
        models = [("layertune int8", layertune.Model(fuse(import_tflite_bytes(fb8, name)), threads), xq),
                  ("layertune int8, tflite arith.", layertune.Model(
                      fuse(import_tflite_bytes(fb8, name, requantization="tflite")), threads), xq),
                  ("layertune int8 model in fp32", layertune.Model(fuse(import_tflite_bytes(fb8, name, int8=False)), threads), xq),
                  ("layertune fp32", layertune_model(fb32, name, threads, None), x)]
        items.append(benchlib.Measurement("LiteRT int8 (XNNPACK)", benchlib.litert_timer(
            benchlib.litert_interpreter(fb8, threads), [xq]), info={"threads": threads}))
        for label, model, inp in models:
            diff = float(np.abs(model.run(inp).reshape(want.shape) - want).max())
            items.append(benchlib.Measurement(label, lambda w, r, m=model, i=inp: m.time(i, w, r),
                                              info={"threads": threads, "max_abs_diff": diff}))
        if args.tuned:
            items.append(tuned_measurement(tflite_path(name, args.size, cache, int8=True), name, threads, xq, want,
                                           "layertune int8 tuned"))
        items.append(benchlib.Measurement("LiteRT fp32 (XNNPACK)", benchlib.litert_timer(
            benchlib.litert_interpreter(fb32, threads), [x]), info={"threads": threads}))
    return items, fb8, xq, want


def paired_ratio(item: benchlib.Measurement, base: benchlib.Measurement, repeats: int) -> RatioCI | None:
    """item / base with its 95% interval over the rounds they were timed in together (each
    round's median of `repeats` runs); None for a system timed apart (TVM, in its own process)."""
    if item.timer is None or base.timer is None or len(item.times) != len(base.times):
        return None
    return ratio_ci(round_medians(item, repeats), round_medians(base, repeats))


def round_medians(item: benchlib.Measurement, repeats: int) -> list[float]:
    """Each round's median of `repeats` runs."""
    return [statistics.median(item.times[r: r + repeats]) for r in range(0, len(item.times), repeats)]


def speedup_over_litert(pair: list[benchlib.Measurement], lite: list[benchlib.Measurement],
                        repeats: int) -> RatioCI | None:
    """A system's speed-up from the fewest threads to the most over LiteRT's, round by round (all
    four timed in the same rounds): above 1, it scales better than LiteRT."""
    if any(i.timer is None for i in (*pair, *lite)) or len({len(i.times) for i in (*pair, *lite)}) != 1:
        return None
    mine = [a / b for a, b in zip(round_medians(pair[0], repeats), round_medians(pair[1], repeats))]
    theirs = [a / b for a, b in zip(round_medians(lite[0], repeats), round_medians(lite[1], repeats))]
    return ratio_ci(mine, theirs)


def report(name: str, args, items: list[benchlib.Measurement], want: np.ndarray, summary: list, flatbuffer: bytes,
           x: np.ndarray) -> None:
    """The table, the speed-ups, the per-op breakdown and memory of one model."""
    print(f"\n{name} ({args.size}x{args.size}); max |LiteRT output| {float(np.abs(want).max()):.3g}")
    print(f"  {'system':28s} {'threads':>7s} {'median ms':>10s} {'/LiteRT':>8s} {'95% interval':>14s} {'max|diff|':>10s}")
    for threads in args.threads:
        rows = [i for i in items if i.info["threads"] == threads]
        lite_item = next(i for i in rows if i.label.startswith("LiteRT"))
        lite = lite_item.median
        for i in rows:
            diff = i.info.get("max_abs_diff")
            ci = paired_ratio(i, lite_item, args.repeats) if i is not lite_item else None
            # the paired ratio (median of the rounds' ratios) where there is one, so that the
            # ratio lies inside its interval; the ratio of medians for a system timed apart
            ratio = ci.ratio if ci else i.median / lite
            interval = f"[{ci.lo:.2f}, {ci.hi:.2f}]" if ci else "-"
            print(f"  {i.label:28s} {threads:7d} {i.median * 1e3:10.2f} {ratio:8.2f} {interval:>14s} "
                  f"{'-' if diff is None else f'{diff:.2e}':>10s}")
            summary.append({"model": name, "system": i.label, "threads": threads, "median_ms": i.median * 1e3,
                            "ratio_to_litert": ratio})
    if len(args.threads) > 1:  # each system's speed-up from the fewest threads to the most, paired by round
        few, most = min(args.threads), max(args.threads)
        pairs = {label: [next((i for i in items if i.label == label and i.info["threads"] == t), None)
                         for t in (few, most)] for label in dict.fromkeys(i.label for i in items)}
        pairs = {label: pair for label, pair in pairs.items() if None not in pair}
        for label, pair in pairs.items():
            ci = paired_ratio(pair[0], pair[1], args.repeats)
            if ci:
                print(f"  {label}: {few} -> {most} threads speed-up {ci.ratio:.2f}x [{ci.lo:.2f}, {ci.hi:.2f}]")
        lite = next(pair for label, pair in pairs.items() if label.startswith("LiteRT"))
        for label, pair in pairs.items():
            ci = speedup_over_litert(pair, lite, args.repeats) if not label.startswith("LiteRT") else None
            if ci:
                print(f"  {label}: speed-up over LiteRT's {ci.ratio:.2f} [{ci.lo:.2f}, {ci.hi:.2f}]"
                      + (" (within noise)" if ci.lo <= 1.0 <= ci.hi else ""))
    if args.per_op:
        per_op_table(flatbuffer, name, x, args.threads, max(args.rounds, 5), args.repeats)
    ours = layertune_model(flatbuffer, name, 1, None)
    lt_mem, lite_mem = memory_layertune(ours), memory_litert(flatbuffer)
    print(f"  memory: layertune engine {lt_mem / 2**20:.1f} MiB (arena {ours.arena_bytes / 2**20:.1f} MiB + "
          f"constants kept {ours.weight_bytes / 2**20:.1f} MiB + packed kernels), LiteRT {lite_mem / 2**20:.1f} MiB, "
          f"ratio {lt_mem / lite_mem:.2f}")
    summary.append({"model": name, "memory_layertune": lt_mem, "memory_litert": lite_mem})
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    global TINY
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-tvm", action="store_true")
    parser.add_argument("--tvm-trials", type=int, default=0,
                        help="also time TVM tuned by meta_schedule with this many trials (needs layertune[tvm])")
    parser.add_argument("--tuned", action="store_true",
                        help="also tune each model with tools/profile_and_optimize.py and time the plan it writes")
    parser.add_argument("--per-op", action="store_true",
                        help="also break layertune's default plan down by op type at each thread count")
    parser.add_argument("--int8", action="store_true",
                        help="the converter's full-int8 models against LiteRT int8 (see above); implies --no-tvm")
    parser.add_argument("--cache", default=os.path.join(os.path.expanduser("~"), ".cache", "layertune", "bench_models"))
    args = parser.parse_args(argv)
    if not benchlib.litert_available():
        parser.error("needs TensorFlow and LiteRT: pip install 'layertune[tf]'")
    import tensorflow as tf
    with contextlib.redirect_stdout(io.StringIO()):
        TINY = tf.lite.TFLiteConverter.from_concrete_functions(
            [tf.function(tf.nn.relu).get_concrete_function(tf.TensorSpec((1, 4), tf.float32))]).convert()

    summary = []
    for name in args.models:
        if args.int8:
            items, flatbuffer, x, want = int8_items(name, args, Path(args.cache))
            benchlib.measure_interleaved(items, args.rounds, args.warmup, args.repeats)
            report(name, args, items, want, summary, flatbuffer, x)
            continue
        flatbuffer = build_tflite(name, args.size, Path(args.cache))
        x = np.random.default_rng(0).uniform(-1, 1, (1, args.size, args.size, 3)).astype(np.float32)
        items: list[benchlib.Measurement] = []
        reference = benchlib.litert_interpreter(flatbuffer, 1)
        benchlib.litert_timer(reference, [x])(1, 1)
        want = reference.get_tensor(reference.get_output_details()[0]["index"])
        for threads in args.threads:
            for method, fused in [(None, True), (None, False)] + [(m, True) for m in METHODS]:
                model = layertune_model(flatbuffer, name, threads, method, fused)
                diff = float(np.abs(model.run(x) - want).max())
                items.append(benchlib.Measurement(f"layertune {method or 'default'}{'' if fused else ' unfused'}",
                                                  lambda w, r, m=model: m.time(x, w, r),
                                                  info={"threads": threads, "max_abs_diff": diff}))
            if args.tuned:
                items.append(tuned_measurement(tflite_path(name, args.size, Path(args.cache)), name, threads, x, want))
            items.append(benchlib.Measurement("LiteRT (XNNPACK)",
                                              benchlib.litert_timer(benchlib.litert_interpreter(flatbuffer, threads), [x]),
                                              info={"threads": threads}))
        benchlib.measure_interleaved(items, args.rounds, args.warmup, args.repeats)
        for trials in [] if args.no_tvm else sorted({0, args.tvm_trials}):
            label = f"TVM tuned {trials} trials" if trials else "TVM untuned (own process)"
            with tempfile.TemporaryDirectory() as workdir:
                for threads in args.threads:
                    try:
                        times, out = tvm_times(flatbuffer, x, threads, max(3, args.repeats), args.warmup, trials,
                                               Path(workdir))
                    except RuntimeError as exc:  # a failed system is a row with its reason, not the end of the run
                        print(f"  {label} failed on {name}: {exc}")
                        break
                    items.append(benchlib.Measurement(label, None, times,
                                                      {"threads": threads, "max_abs_diff": float(np.abs(out - want).max())}))
        report(name, args, items, want, summary, flatbuffer, x)
    return 0


if __name__ == "__main__":
    sys.exit(main())
