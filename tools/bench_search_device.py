#!/usr/bin/env python3
"""Does the device rank a search's pipelines as this machine does? The fastest pipelines of a
finished search (its OUT_<id>.json run files and their compiled models), each measured here and
on a device in the same rounds, alternating place and pipeline round by round. Prints each
pipeline's median time in both places with the device / here ratio and its 95% interval, and each
pipeline's time against the fastest one's in each place (paired rounds).

    python tools/bench_search_device.py --search build/search.json [--top 4] [--rounds 7] \\
        --ipaddress HOST [--username ... --ssh_key ... --port ... --device_python ... --target ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from layertune.cli import add_device_arguments, target_and_devices
from layertune.runners.device import DeviceSession
from layertune.runners.remote_inference import check_runtime, measure_on_device
from layertune.search import blocks  # noqa: F401  (registers every block class)
from layertune.search.block import REGISTRY
from layertune.search.report import run_labels
from layertune.runners import inference
from layertune.tuner.build import build_profiler
from layertune.tuner.protocol import ratio_ci


def block(step: dict):
    return REGISTRY[step["type"].rsplit(".", 1)[-1]](step["parameters"])


def load_runs(search: Path, top: int) -> list[dict]:
    """The `top` fastest ok runs (the native baseline left out), from the search's run files."""
    stem = search.with_suffix("")
    entries = [e for e in json.loads(Path(f"{stem}_all_results.json").read_text())
               if e["status"] == "ok" and not e.get("baseline")]
    entries.sort(key=lambda e: e["metrics"]["inferencetime_mean"])
    return [json.loads(Path(f"{stem}_{e['id']}.json").read_text()) for e in entries[:top]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--search", required=True, help="the search's OUT.json (its run files beside it)")
    p.add_argument("--top", type=int, default=4, help="how many of the fastest pipelines")
    p.add_argument("--rounds", type=int, default=7)
    add_device_arguments(p)
    args = p.parse_args(argv)
    target, (device, *_) = target_and_devices(args)
    runs = load_runs(Path(args.search), args.top)
    scenario = runs[0]["pipeline"]
    model = block(scenario["model_wrapper"]).info()
    data = block(scenario["dataset"]).load(model)
    profiler, _ = build_profiler(target)
    session = DeviceSession(device.transport(args.temp_dir), target, profiler, lease_wait=args.lease_wait)
    session.open()
    try:
        plans = []
        for run in runs:
            runtime = block(run["pipeline"]["runtime"])
            loader, params = runtime.recipe(run["compiled_format"])
            check_runtime(session, loader)
            plans.append((runtime, loader, params, Path(run["compiled_model"])))
        here: list[list[float]] = [[] for _ in runs]
        there: list[list[float]] = [[] for _ in runs]
        for r in range(args.rounds):
            for i, (runtime, loader, params, compiled) in enumerate(plans):
                first, second = ("here", "there") if r % 2 == 0 else ("there", "here")
                for place in (first, second):
                    if place == "here":
                        times = inference.measure(runtime.load(compiled), data.x, 3)["times_s"]
                        here[i].append(statistics.median(times))
                    else:
                        times = measure_on_device(session, loader, params, compiled, data.x, 3, True, 600)["times_s"]
                        there[i].append(statistics.median(times))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        session.close()
    best_here = min(range(len(runs)), key=lambda i: statistics.median(here[i]))
    best_there = min(range(len(runs)), key=lambda i: statistics.median(there[i]))
    print(f"{len(runs)} pipelines, {len(data.x)} samples each, {args.rounds} rounds; here: this machine, "
          f"device: {session.name}; µs are medians over rounds of per-sample medians")
    print("| pipeline | here µs | device µs | device / here | vs fastest here | vs fastest on device |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    labels = run_labels(runs)
    for i, run in enumerate(runs):
        ratio = ratio_ci(there[i], here[i])
        vs_here, vs_there = ratio_ci(here[i], here[best_here]), ratio_ci(there[i], there[best_there])
        print(f"| {labels[run['id']]} | {statistics.median(here[i]) * 1e6:.2f} | "
              f"{statistics.median(there[i]) * 1e6:.2f} | {ratio.ratio:.2f} [{ratio.lo:.2f}, {ratio.hi:.2f}] | "
              f"{vs_here.ratio:.2f} [{vs_here.lo:.2f}, {vs_here.hi:.2f}] | "
              f"{vs_there.ratio:.2f} [{vs_there.lo:.2f}, {vs_there.hi:.2f}] |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
