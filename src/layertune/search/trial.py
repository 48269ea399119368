"""The trial protocol, both sides: what a trial needs (trial_spec), the parent's runner that
starts the trial in a process of its own with a timeout (run_trial_process), and the child that
compiles the pipeline's optimizer chain (reusing cached prefixes), runs the runtime over the
dataset, measures, and writes the run's JSON:

    python -m layertune.search.trial SPEC.json OUT.json

A non-zero exit, a signal or a timeout comes back as a failed trial with its reason; the child
never has to be well-behaved for the search to go on."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from layertune.jsonfile import write_json
from layertune.search import blocks  # noqa: F401  (registers every block class)
from layertune.runners import inference
from layertune.runners.device import DeviceSession
from layertune.runners.remote_inference import check_runtime, measure_on_device
from layertune.search.block import REGISTRY, Data, ModelInfo, Placement, Unavailable
from layertune.search.metrics import classification_metrics

if TYPE_CHECKING:
    from layertune.search.config import SearchConfig
    from layertune.search.space import Pipeline


# -- the parent's side ---------------------------------------------------------------------

def trial_spec(cfg: "SearchConfig", pipeline: "Pipeline", cache: Path, run_index: int | None = None,
               placement: Placement | None = None) -> dict[str, Any]:
    """What a trial process needs: the model wrapper, the dataset, the pipeline, the compile cache,
    the run's index in the search (what its artifacts' names are prefixed with, as Kenning does)
    and where it runs (no password: that travels in the environment)."""
    return {"model_wrapper": {"name": cfg.model_wrapper.spec.name, "parameters": cfg.model_wrapper.alternatives(False)[0]},
            "dataset": {"name": cfg.dataset.spec.name, "parameters": cfg.dataset.alternatives(False)[0]},
            "pipeline": pipeline.to_json(), "cache": str(cache), "run_index": run_index,
            "placement": (placement or Placement()).to_json()}


def artifact_path(configured: str, run_index: int | None) -> Path:
    """Where a run's artifact goes: an optimizer's `compiled_model_path` with the run index
    prefixed to the file name (build/compiled_model.tar -> build/7_compiled_model.tar), so that the
    runs of one search do not overwrite each other's."""
    path = Path(configured)
    return path if run_index is None else path.with_name(f"{run_index}_{path.name}")


_RUNNING: set[subprocess.Popen] = set()  # trial processes now running (several, with several devices)


def kill_running_trials() -> None:
    """Kills every running trial's process group (when the search is interrupted)."""
    for proc in list(_RUNNING):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _kill_session(proc: subprocess.Popen) -> None:
    """Kills every process left in the trial's session (none, after a clean exit)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.communicate()


def run_trial_process(spec: dict[str, Any], timeout_s: float, password: str | None = None) -> dict[str, Any]:
    """Runs one trial in its own process (search/trial.py); a crash, an exception or a timeout
    comes back as {"status": "failed", "reason": ...}, never as an exception. The device's SSH
    password, if any, is handed over in the child's environment (RPI_PASSWORD), not in its spec."""
    env = {**os.environ, **({"RPI_PASSWORD": password} if password else {})}
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "run.json"
        spec_path.write_text(json.dumps(spec))
        started, started_at = time.monotonic(), time.time()  # wall clock: when, for trials run side by side
        # A session of its own, killed as a whole after a timeout or Ctrl-C. (TVM's tuning workers
        # were measured to exit by themselves once a killed trial's pipes close; this also covers
        # a child that does not watch its pipes.)
        proc = subprocess.Popen([sys.executable, "-m", "layertune.search.trial", str(spec_path), str(out_path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                                env=env)
        _RUNNING.add(proc)
        try:
            _, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return {"status": "failed", "reason": f"timeout: no result within {timeout_s:g} s"}
        finally:
            _kill_session(proc)
            _RUNNING.discard(proc)
        if proc.returncode != 0 or not out_path.exists():
            lines = [line for line in stderr.strip().splitlines() if line.strip()]
            why = lines[-1] if lines else f"exit code {proc.returncode}"
            kind = "crash" if proc.returncode < 0 else "error"
            return {"status": "failed", "reason": f"{kind}: {why[:300]}"}
        result = json.loads(out_path.read_text())
        if result.get("status") == "skipped":
            return result
        result.update({"status": "ok", "reason": "", "seconds": time.monotonic() - started,
                       "started_at": started_at, "ended_at": time.time()})
        return result


# -- the child's side ----------------------------------------------------------------------

def _stats(prefix: str, values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {f"{prefix}_mean": float(np.mean(values)), f"{prefix}_std": float(np.std(values)),
            f"{prefix}_median": float(statistics.median(values))}


def _block(step: dict[str, Any]):
    """The block object of a spec entry {"name" or "type": ..., "parameters": ...}."""
    name = step.get("name") or step["type"].rsplit(".", 1)[-1]
    return REGISTRY[name](step["parameters"])


def compile_chain(spec: dict[str, Any], model: ModelInfo, data: Data, cache: Path,
                  run_index: int | None = None, placement: Placement = Placement()) -> tuple[Path, str]:
    """Each optimizer prefix is compiled once per target and kept in the cache (keyed by the chain
    so far); an optimizer's `compiled_model_path` gets a copy of what it produced (see artifact_path)."""
    path, fmt = model.path, model.format
    for step, produced in _compiled_steps(spec, model, data, cache, placement):
        path, fmt = produced
        configured = step["parameters"].get("compiled_model_path")
        if configured:
            target = artifact_path(configured, run_index)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            path = target
    return path, fmt


def _compiled_steps(spec: dict[str, Any], model: ModelInfo, data: Data, cache: Path, placement: Placement):
    """(step, (path, format)) for every optimizer of the chain, compiled or found in the cache."""
    path, fmt = model.path, model.format
    chain_key = hashlib.sha1(f"{model.path.resolve()}|{placement.target.name}".encode()).hexdigest()[:8]
    for step in spec["optimizers"]:
        chain_key = hashlib.sha1((chain_key + json.dumps(step, sort_keys=True)).encode()).hexdigest()[:12]
        step_dir = cache / chain_key
        done = step_dir / "done.json"
        if done.exists():
            info = json.loads(done.read_text())
            path, fmt = step_dir / info["file"], info["format"]
            yield step, (path, fmt)
            continue
        tmp = cache / f".{chain_key}.{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        optimizer = _block(step)
        optimizer.placement = placement
        produced = optimizer.compile(path, data, tmp)
        fmt = optimizer.output
        shutil.rmtree(step_dir, ignore_errors=True)
        os.replace(tmp, step_dir)
        path = step_dir / produced.name
        done.write_text(json.dumps({"file": produced.name, "format": fmt}))
        yield step, (path, fmt)


def run_trial(spec: dict[str, Any]) -> dict[str, Any]:
    """Compiles the chain (for the placement's target), runs the runtime over the dataset (here,
    or on the placement's device, where it is first checked to have the runtime) and measures."""
    placement = Placement.from_json(spec.get("placement"))
    runtime = _block(spec["pipeline"]["runtime"])
    optimizers = [_block(step) for step in spec["pipeline"]["optimizers"]]
    for optimizer in optimizers:
        optimizer.placement = placement
    for block in [*optimizers, runtime]:
        reason = block.unavailable()
        if reason:
            raise Unavailable(reason)
    model = _block(spec["model_wrapper"]).info()
    loader, params = runtime.recipe(optimizers[-1].output if optimizers else model.format)
    if placement.device is not None:  # before compiling: a device without the runtime skips at once
        with _session(placement) as session:
            check_runtime(session, loader)
    data = _block(spec["dataset"]).load(model)
    compiled, fmt = compile_chain(spec["pipeline"], model, data, Path(spec["cache"]), spec.get("run_index"), placement)
    performance = not runtime.params.get("disable_performance_measurements")  # Kenning's: quality metrics only
    if placement.device is None:
        measured, device = inference.measure(runtime.load(compiled), data.x, 3, performance), "local"
    else:
        with _session(placement) as session:
            measured = measure_on_device(session, loader, params, compiled, data.x, 3, performance, 3600.0)
            device = session.name
    return _result(measured, performance, compiled, fmt, data, model, device)


@contextlib.contextmanager
def _session(placement: Placement):
    session = DeviceSession(placement.device.transport(placement.temp_dir), placement.target,
                            Path(placement.profiler), lease_wait=placement.lease_wait)
    try:
        session.open()
        yield session
    finally:
        session.close()


def _result(measured: dict[str, Any], performance: bool, compiled: Path, fmt: str, data: Data, model: ModelInfo,
            device: str) -> dict[str, Any]:
    """A run's record from a measurement (inference.measure's, here or on a device)."""
    metrics: dict[str, Any] = {"compiled_model_size": compiled.stat().st_size}
    resources = {k: measured[k] for k in ("timestamps", "cpus_percent_avg", "mem_percent")}
    if performance:
        metrics.update({**_stats("inferencetime", measured["times_s"]),
                        **_stats("session_utilization_cpus_percent_avg", measured["cpus_percent_avg"]),
                        **_stats("session_utilization_mem_percent", measured["mem_percent"])})
    confusion = None
    if data.y is not None:
        extra, confusion = classification_metrics(np.asarray(measured["outputs"]), data.y, model.num_classes)
        metrics.update(extra)
    return {"metrics": metrics, "inference_times": measured["times_s"] if performance else [],
            "resources": resources if performance else {}, "confusion_matrix": confusion, "compiled_model": str(compiled),
            "compiled_format": fmt, "device": device}


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    try:
        result = run_trial(spec)
    except Unavailable as exc:
        result = {"status": "skipped", "reason": str(exc)}
    write_json(argv[1], result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
