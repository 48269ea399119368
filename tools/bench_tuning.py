#!/usr/bin/env python3
"""Does tuning keep its promise? Tunes each model with profile_and_optimize (default.json, no
cache: every tuning measures afresh), then times, independently of the tuner and interleaved in
one process (tools/benchlib.py), the written plan, the strongest layertune baseline the tuner
named (strongest_baseline.ltplan) and LiteRT with XNNPACK on the same .tflite.

For MobileNetV2, ResNet50 and EfficientNetB0 (tf.keras.applications, random weights with
calibrated batch norm, 224x224), with the threads limited to 1 (`"threads": [1]`) and allowed
1 and 2 (`"threads": [1, 2]`, per layer), `--tunings` tunings each. Per tuning it prints the
tuning time, what was written, the CLI's ratio (written / strongest baseline, 95% interval) and
the independent one, the ratio to LiteRT, and two checks:
  no_slower  the written plan is not slower than the strongest baseline (independent lo <= 1)
  agrees     the CLI's interval and the independent interval overlap

    python tools/bench_tuning.py                                  # 3 models x 2 x 3 tunings
    python tools/bench_tuning.py --models MobileNetV2 --tunings 1 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import layertune
from layertune.tuner.options import shipped_options
from layertune.tuner.protocol import ratio_ci

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
from bench_models import MODELS, build_tflite, tflite_path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def tune(tflite: Path, threads: list[int], out: Path) -> tuple[float, dict, str]:
    options = json.loads(shipped_options("default.json").read_text())
    options.pop("parallel")
    options["threads"] = threads
    shutil.rmtree(out, ignore_errors=True)  # a tuning from scratch (no results store, no cache)
    opts = out.parent / f"{out.name}.options.json"
    opts.write_text(json.dumps(options))
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "profile_and_optimize.py"), "--model_path", str(tflite),
                           "--options", str(opts), "--output_path", str(out), "--no-cache"],
                          capture_output=True, text=True)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1])
    summary = json.loads((out / tflite.stem / "summary.json").read_text())
    return seconds, summary, proc.stdout.strip().splitlines()[-1]


def engine_timer(model: layertune.Model, x: np.ndarray) -> benchlib.Timer:
    engine = model.engine
    return lambda warmup, repeats: engine.time([x], warmup, repeats)


def independent(folder: Path, whole: dict, flatbuffer: bytes, rounds: int) -> dict:
    x = np.random.default_rng(0).uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)
    strongest = whole["strongest_baseline"]
    base_threads = int(strongest.rsplit("@", 1)[1])
    litert_threads = max(whole["threads"], base_threads)
    items = [benchlib.Measurement("written", engine_timer(layertune.load(folder / "optimized.ltplan", threads=whole["threads"]), x)),
             benchlib.Measurement("baseline", engine_timer(layertune.load(folder / "strongest_baseline.ltplan", threads=base_threads), x)),
             benchlib.Measurement("litert", benchlib.litert_timer(benchlib.litert_interpreter(flatbuffer, litert_threads),
                                                                  [x]))]
    per_round = {m.label: [] for m in items}
    for r in range(rounds):  # each round starts one system later: no position favours anyone
        benchlib.measure_interleaved(items[r % 3:] + items[:r % 3], 1, 2, 3)
        for m in items:
            per_round[m.label].append(float(np.median(m.times[-3:])))
    return {"vs_baseline": ratio_ci(per_round["written"], per_round["baseline"]),
            "vs_litert": ratio_ci(per_round["written"], per_round["litert"]), "litert_threads": litert_threads,
            "ms": {k: float(np.median(v)) * 1e3 for k, v in per_round.items()}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="the most threads a tuning may use")
    p.add_argument("--tunings", type=int, default=3)
    p.add_argument("--rounds", type=int, default=15, help="independent interleaved rounds per tuning")
    p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "layertune-bench-models"))
    p.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "layertune-bench-tuning"))
    args = p.parse_args()
    cache, out = Path(args.cache), Path(args.out)
    cache.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    print("| model | threads | tuning | s | written | CLI written/strongest | independent | vs LiteRT | no_slower | agrees |")
    print("| --- | ---: | ---: | ---: | --- | --- | --- | --- | --- | --- |")
    passed = total = 0
    for name in args.models:
        flatbuffer = build_tflite(name, 224, cache)
        tflite = tflite_path(name, 224, cache)
        for most in args.threads:
            for k in range(args.tunings):
                folder = out / f"{name}_t{most}_{k}"
                seconds, summary, _ = tune(tflite, list(range(1, most + 1)), folder)
                whole = summary["whole_model"]
                cli = whole["ratios"].get(whole["strongest_baseline"], {"ratio": 1.0, "lo": 1.0, "hi": 1.0})
                ind = independent(folder / tflite.stem, whole, flatbuffer, args.rounds)
                r, lit = ind["vs_baseline"], ind["vs_litert"]
                no_slower, agrees = r.lo <= 1.0, cli["lo"] <= r.hi and r.lo <= cli["hi"]
                passed += no_slower and agrees
                total += 1
                print(f"| {name} | {most} | {k + 1} | {seconds:.0f} | {whole['written']} vs {whole['strongest_baseline']} "
                      f"| {cli['ratio']:.3f} [{cli['lo']:.3f}, {cli['hi']:.3f}] | {r} | {lit} (LiteRT@{ind['litert_threads']} "
                      f"{ind['ms']['litert']:.2f} ms) | {'yes' if no_slower else 'NO'} | {'yes' if agrees else 'NO'} |",
                      flush=True)
    print(f"\n{passed} of {total} tunings: no slower than the strongest baseline, and the CLI agrees")
    return 0 if passed == total else 1


if __name__ == "__main__":
    sys.exit(main())
