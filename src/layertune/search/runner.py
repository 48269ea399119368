"""The search loop: ask a pipeline, check it can work, run it as a trial in its own process with
a timeout, tell the strategy, write the results — as Kenning's fine-tune-optimizers does, with
failures recorded instead of fatal, and resumable. With several devices, one trial runs on each
device at a time, the strategy asked for the next pipeline whenever a device is free."""

from __future__ import annotations

import json
import logging
import operator
import threading
import time
from pathlib import Path
from typing import Any

from layertune.jsonfile import write_json
from layertune.runners.device import DeviceSession
from layertune.runners.transport import DeviceError
from layertune.search.config import SearchConfig
from layertune.search.metrics import pareto_flags
from layertune.search.block import Placement
from layertune.search.scenarios import scenario
from layertune.search.space import Pipeline, enumerate_space, incompatibility, native_pipeline
from layertune.search.strategies import make_strategy
from layertune.search.trial import kill_running_trials, run_trial_process, trial_spec

log = logging.getLogger("layertune.search")
_OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}


def _output_paths(output: Path) -> tuple[Path, Path, Path]:
    stem = output.with_suffix("")
    return output, Path(f"{stem}_all_results.json"), stem.parent


def run_file(output: Path, pipeline: Pipeline) -> Path:
    return Path(f"{output.with_suffix('')}_{pipeline.id}.json")


def _trial(cfg: SearchConfig, pipeline: Pipeline, output: Path, run_index: int | None,
           placement: Placement) -> dict[str, Any]:
    spec = trial_spec(cfg, pipeline, output.parent / f".{output.stem}_cache", run_index, placement)
    return run_trial_process(spec, cfg.trial_timeout_s, placement.device and placement.device.password)


def _satisfies(cfg: SearchConfig, metrics: dict[str, float]) -> bool:
    return all(m in metrics and _OPS[op](metrics[m], v) for m, op, v in cfg.constraints)


def _pareto(entries: list[dict[str, Any]]) -> None:
    """Marks the runs no other run beats on every one of (inference time, quality, size)."""
    ok = [e for e in entries if e["status"] == "ok"]
    for e in entries:
        e["pareto"] = False
    for e, flag in zip(ok, pareto_flags([e["metrics"] for e in ok])):
        e["pareto"] = flag


def _run(cfg: SearchConfig, pipeline: Pipeline, output: Path, index: int | None, total: Any,
         placement: Placement) -> dict[str, Any]:
    """One pipeline's entry: skipped (incompatible), resumed from its run file, or run as a trial
    (`index`: the trial's 0-based number, its artifacts' prefix; None for the native baseline)."""
    shown = "native" if index is None else index + 1
    where = f" on {placement.device.name}" if placement.device else ""
    entry = {"id": pipeline.id, "pipeline": pipeline.to_json(), "description": pipeline.describe()}
    reason = incompatibility(pipeline, cfg.model_wrapper.spec.output)  # the config says the format: no model loaded
    previous = run_file(output, pipeline)
    if reason:
        entry.update({"status": "skipped", "reason": f"incompatible: {reason}", "metrics": {}})
    elif previous.exists() and json.loads(previous.read_text()).get("status") == "ok":
        entry.update({k: v for k, v in json.loads(previous.read_text()).items() if k in ("status", "reason", "metrics")})
        entry["resumed"] = True
    else:
        log.info("trial %s/%s%s: %s", shown, total, where, pipeline.describe())
        result = _trial(cfg, pipeline, output, index, placement)
        entry.update({"status": result["status"], "reason": result["reason"], "metrics": result.get("metrics", {})})
        if result.get("device"):
            entry["device"] = result["device"]
        if result["status"] == "ok":
            write_json(previous, {**result, "pipeline": scenario(cfg, pipeline), "id": pipeline.id})
            log.info("trial %s/%s done in %.0f s: %s = %.6g", shown, total, result["seconds"], cfg.metric,
                     result["metrics"].get(cfg.metric, float("nan")))
        elif result["status"] == "skipped":
            log.info("trial skipped: %s", result["reason"])
        else:
            log.warning("trial failed: %s", result["reason"])
    entry["satisfies_constraints"] = entry["status"] == "ok" and _satisfies(cfg, entry["metrics"])
    return entry


def usable_placements(placements: list[Placement]) -> list[Placement]:
    """The placements whose device can be reached, leased and is of the target's kind (each opened
    once, before the search); the others are dropped with a warning, and none usable is an error
    naming why for each."""
    good, errors = [], []
    for p in placements:
        session = DeviceSession(p.device.transport(p.temp_dir), p.target, Path(p.profiler), lease_wait=p.lease_wait)
        try:
            session.open()
            good.append(p)
        except DeviceError as exc:
            errors.append(str(exc))
            log.warning("device %s unusable: %s", p.device.name, exc)
        finally:
            session.close()
    if not good:
        raise ValueError(f"no usable device: {'; '.join(errors)}")
    return good


def _against_native(entry: dict[str, Any], native: dict[str, Any]) -> None:
    """Kenning's summary figures: speed-up and size reduction against the model in its framework."""
    m, n = entry["metrics"], native["metrics"]
    if entry["status"] == "ok" and native["status"] == "ok" and "inferencetime_mean" in m and "inferencetime_mean" in n:
        entry["speedup_vs_native"] = n["inferencetime_mean"] / m["inferencetime_mean"]
        entry["size_reduction_vs_native"] = n["compiled_model_size"] / m["compiled_model_size"]


def run_search(cfg: SearchConfig, output: Path, placements: list[Placement] | None = None) -> dict[str, Any]:
    """Runs the search; writes OUT.json, OUT_all_results.json and OUT_<run id>.json. The model in
    its own framework (no optimizer, NativeRuntime) runs first as the baseline: recorded with
    "baseline": true, never a candidate, and every other run's speed-up and size reduction are
    measured against it. `placements`: where trials run (default: this machine), one trial per
    placement at a time; the baseline runs on the first."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    best_path, all_path, _ = _output_paths(output)
    placements = placements or [Placement()]
    strategy = make_strategy(cfg)
    pipelines: dict[str, Pipeline] = {}
    started = time.monotonic()
    total = len(enumerate_space(cfg)) if cfg.strategy == "grid_search" else cfg.n_trials
    native = {**_run(cfg, native_pipeline(), output, None, total, placements[0]), "baseline": True}
    done: dict[int, dict[str, Any]] = {}  # run index -> entry, in the order the pipelines were asked
    lock = threading.Lock()
    asked = [0]
    write_json(all_path, [native])

    def next_pipeline() -> tuple[int, Pipeline] | None:
        with lock:
            if cfg.timeout_s and time.monotonic() - started > cfg.timeout_s:
                log.info("search timeout (%g s) reached", cfg.timeout_s)
                return None
            pipeline = strategy.ask()
            if pipeline is None:
                return None
            pipelines[pipeline.id] = pipeline
            asked[0] += 1
            return asked[0] - 1, pipeline

    def worker(placement: Placement) -> None:
        while (item := next_pipeline()) is not None:
            index, pipeline = item
            entry = _run(cfg, pipeline, output, index, total, placement)
            with lock:
                _against_native(entry, native)
                strategy.tell(pipeline, entry["metrics"].get(cfg.metric) if entry["status"] == "ok" else None)
                done[index] = entry
                entries = [done[i] for i in sorted(done)]
                _pareto(entries)
                write_json(all_path, [native, *entries])

    if len(placements) == 1:
        worker(placements[0])
    else:
        threads = [threading.Thread(target=worker, args=(p,), daemon=True) for p in placements]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.2)
        except KeyboardInterrupt:
            kill_running_trials()  # their process groups: a daemon thread's cleanup would not run
            raise
    entries = [done[i] for i in sorted(done)]
    candidates = [e for e in entries if e["satisfies_constraints"] and cfg.metric in e["metrics"]]
    if not candidates:
        raise RuntimeError(f"no pipeline succeeded{' within the constraints' if cfg.constraints else ''}; "
                           f"see {all_path}")
    pick = min if cfg.policy == "min" else max
    best = pick(candidates, key=lambda e: e["metrics"][cfg.metric])
    # Kenning's OUT.json: the best pipeline with its model and dataset (a scenario to run again)
    summary = {"pipeline": scenario(cfg, pipelines[best["id"]]), "metrics": best["metrics"], "id": best["id"]}
    write_json(best_path, summary)
    return summary
