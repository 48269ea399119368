"""The trial protocol, both sides: what a trial needs (trial_spec), the parent's runner that
starts the trial in a process of its own with a timeout (run_trial_process), and the child that
compiles the pipeline's optimizer chain (reusing cached prefixes), runs the runtime over the
dataset, measures, and writes the run's JSON:

    python -m layertune.search.trial SPEC.json OUT.json

A non-zero exit, a signal or a timeout comes back as a failed trial with its reason; the child
never has to be well-behaved for the search to go on."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from layertune.jsonfile import write_json
from layertune.search import blocks  # noqa: F401  (registers every block class)
from layertune.search.block import REGISTRY, Data, ModelInfo, Unavailable
from layertune.search.metrics import classification_metrics

if TYPE_CHECKING:
    from layertune.search.config import SearchConfig
    from layertune.search.space import Pipeline


# -- the parent's side ---------------------------------------------------------------------

def trial_spec(cfg: "SearchConfig", pipeline: "Pipeline", cache: Path, run_index: int | None = None) -> dict[str, Any]:
    """What a trial process needs: the model wrapper, the dataset, the pipeline, the compile cache,
    and the run's index in the search (what its artifacts' names are prefixed with, as Kenning does)."""
    return {"model_wrapper": {"name": cfg.model_wrapper.spec.name, "parameters": cfg.model_wrapper.alternatives(False)[0]},
            "dataset": {"name": cfg.dataset.spec.name, "parameters": cfg.dataset.alternatives(False)[0]},
            "pipeline": pipeline.to_json(), "cache": str(cache), "run_index": run_index}


def artifact_path(configured: str, run_index: int | None) -> Path:
    """Where a run's artifact goes: an optimizer's `compiled_model_path` with the run index
    prefixed to the file name (build/compiled_model.tar -> build/7_compiled_model.tar), so that the
    runs of one search do not overwrite each other's."""
    path = Path(configured)
    return path if run_index is None else path.with_name(f"{run_index}_{path.name}")


def _kill_session(proc: subprocess.Popen) -> None:
    """Kills every process left in the trial's session (none, after a clean exit)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.communicate()


def run_trial_process(spec: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Runs one trial in its own process (search/trial.py); a crash, an exception or a timeout
    comes back as {"status": "failed", "reason": ...}, never as an exception."""
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "run.json"
        spec_path.write_text(json.dumps(spec))
        started = time.monotonic()
        # A session of its own, killed as a whole after a timeout or Ctrl-C. (TVM's tuning workers
        # were measured to exit by themselves once a killed trial's pipes close; this also covers
        # a child that does not watch its pipes.)
        proc = subprocess.Popen([sys.executable, "-m", "layertune.search.trial", str(spec_path), str(out_path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            _, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return {"status": "failed", "reason": f"timeout: no result within {timeout_s:g} s"}
        finally:
            _kill_session(proc)
        if proc.returncode != 0 or not out_path.exists():
            lines = [line for line in stderr.strip().splitlines() if line.strip()]
            why = lines[-1] if lines else f"exit code {proc.returncode}"
            kind = "crash" if proc.returncode < 0 else "error"
            return {"status": "failed", "reason": f"{kind}: {why[:300]}"}
        result = json.loads(out_path.read_text())
        if result.get("status") == "skipped":
            return result
        result.update({"status": "ok", "reason": "", "seconds": time.monotonic() - started})
        return result


# -- the child's side ----------------------------------------------------------------------

class ResourceSampler:
    """CPU and memory of this process, sampled in a background thread during inference. CPU % is
    the process's CPU time over wall time, averaged over all CPUs and clamped to [0, 100]. CPU time
    is the process clock (nanoseconds; psutil's cpu_times advance in 10 ms ticks, which made every
    short trial read 0 %); a run shorter than one period gets one sample over the whole run."""

    def __init__(self, period: float = 0.05):
        import psutil
        self._proc, self._period = psutil.Process(), period
        self._cpus = psutil.cpu_count() or 1
        self.timestamps: list[float] = []
        self.cpu: list[float] = []
        self.mem: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def _cpu_seconds() -> float:
        return time.process_time()  # every thread of this process

    def _sample(self, since_wall: float, since_cpu: float) -> tuple[float, float]:
        now, cpu = time.perf_counter(), self._cpu_seconds()
        busy = (cpu - since_cpu) / max(now - since_wall, 1e-9) / self._cpus * 100.0
        self.timestamps.append(now - self._start)
        self.cpu.append(min(max(busy, 0.0), 100.0))
        self.mem.append(self._proc.memory_percent())
        return now, cpu

    def _loop(self) -> None:
        wall, cpu = self._start, self._cpu0
        while not self._stop.wait(self._period):
            wall, cpu = self._sample(wall, cpu)

    def __enter__(self) -> "ResourceSampler":
        self._start, self._cpu0 = time.perf_counter(), self._cpu_seconds()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if not self.cpu:
            self._sample(self._start, self._cpu0)


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
                  run_index: int | None = None) -> tuple[Path, str]:
    """Each optimizer prefix is compiled once and kept in the cache (keyed by the chain so far);
    an optimizer's `compiled_model_path` gets a copy of what it produced (see artifact_path)."""
    path, fmt = model.path, model.format
    for step, produced in _compiled_steps(spec, model, data, cache):
        path, fmt = produced
        configured = step["parameters"].get("compiled_model_path")
        if configured:
            target = artifact_path(configured, run_index)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            path = target
    return path, fmt


def _compiled_steps(spec: dict[str, Any], model: ModelInfo, data: Data, cache: Path):
    """(step, (path, format)) for every optimizer of the chain, compiled or found in the cache."""
    path, fmt = model.path, model.format
    chain_key = hashlib.sha1(str(model.path.resolve()).encode()).hexdigest()[:8]
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
        produced = optimizer.compile(path, data, tmp)
        fmt = optimizer.output
        shutil.rmtree(step_dir, ignore_errors=True)
        os.replace(tmp, step_dir)
        path = step_dir / produced.name
        done.write_text(json.dumps({"file": produced.name, "format": fmt}))
        yield step, (path, fmt)


def run_trial(spec: dict[str, Any]) -> dict[str, Any]:
    runtime = _block(spec["pipeline"]["runtime"])
    for block in [*(_block(step) for step in spec["pipeline"]["optimizers"]), runtime]:
        reason = block.unavailable()
        if reason:
            raise Unavailable(reason)
    model = _block(spec["model_wrapper"]).info()
    data = _block(spec["dataset"]).load(model)
    compiled, fmt = compile_chain(spec["pipeline"], model, data, Path(spec["cache"]), spec.get("run_index"))
    run = runtime.load(compiled)
    measure = not runtime.params.get("disable_performance_measurements")
    for i in range(min(3, len(data.x)) if measure else 0):  # warm-up
        run(data.x[i: i + 1])
    times, outputs = [], []
    with ResourceSampler() as sampler:
        for i in range(len(data.x)):
            t0 = time.perf_counter()
            y = run(data.x[i: i + 1])
            times.append(time.perf_counter() - t0)
            outputs.append(np.asarray(y).reshape(-1))
    metrics: dict[str, Any] = {"compiled_model_size": compiled.stat().st_size}
    if measure:  # Kenning's disable_performance_measurements: quality metrics only
        metrics.update({**_stats("inferencetime", times), **_stats("session_utilization_cpus_percent_avg", sampler.cpu),
                        **_stats("session_utilization_mem_percent", sampler.mem)})
    else:
        times = []
    confusion = None
    if data.y is not None:
        scores = np.stack(outputs)
        extra, confusion = classification_metrics(scores, data.y, model.num_classes)
        metrics.update(extra)
    return {"metrics": metrics, "inference_times": times,
            "resources": {"timestamps": sampler.timestamps, "cpus_percent_avg": sampler.cpu, "mem_percent": sampler.mem}
            if measure else {},
            "confusion_matrix": confusion, "compiled_model": str(compiled), "compiled_format": fmt}


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
