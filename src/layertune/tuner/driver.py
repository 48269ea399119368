"""profile_and_optimize: time every variant of every unique convolution layer on the target's
devices, pick the fastest correct one per layer, write the optimized plan, and verify it end to
end on a device against the default choice (and each uniform method)."""

from __future__ import annotations

import logging
import statistics
import sys
import tempfile
import time
from copy import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layertune.graph.ir import Graph, Node
from layertune.graph.kernel_choice import apply_default_kernels, check_kernel, default_kernel
from layertune.graph.plan import write_plan
from layertune.jsonfile import write_json
from layertune.model import MODEL_SUFFIXES, import_graph
from layertune.runners.device import DeviceSequence, DeviceSession
from layertune.runners.devices import Device
from layertune.runners.pool import Job, PoolStats, run_pool
from layertune.tuner.build import build_profiler, cache_root
from layertune.tuner.database import Record, ResultsStore
from layertune.tuner.options import ProfileOptions
from layertune.tuner.report import write_report
from layertune.tuner.result import LayerRow, ModelResult, OutputCheck, PoolSummary, Verification
from layertune.tuner.select import best_records, conv_nodes, layer_line, layer_signature, variant_key
from layertune.tuner.targets import Target
from layertune.tuner.variants import layer_variants

log = logging.getLogger("layertune")
JOBS_PER_DEVICE = 12  # enough jobs to balance a pool, few enough that per-job overhead stays small


def find_models(model_path: str | Path, names: list[str] | None) -> list[Path]:
    root = Path(model_path)
    if not root.exists():
        raise ValueError(f"--model_path: {root} does not exist")
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.suffix.lower() in MODEL_SUFFIXES[:3])
    if names:
        files = [p for p in files if p.stem in names]
    if not files:
        wanted = f" named {', '.join(names)}" if names else ""
        raise ValueError(f"--model_path: no models{wanted} (*.tflite, *.keras, *.h5) under {root}")
    return files


@dataclass
class RunSettings:
    target: Target
    options: ProfileOptions
    output: Path
    devices: list[Device]
    warmup: int = 2
    repeats: int = 5
    timeout: float = 600.0
    parallel_run: int = 1
    parallel_build: int = 1
    use_cache: bool = True
    include_exercise_models: bool = False
    temp_dir: str | None = None
    flush_bytes: int = 0
    verify_rounds: int = 3


class Progress:
    """Layers / variants done, devices, time left: one rewritten line on a terminal, a log line
    every few seconds otherwise."""

    def __init__(self, total_jobs: int, total_variants: int, devices: int):
        self.total_jobs, self.total_variants, self.devices = total_jobs, total_variants, devices
        self.jobs = self.variants = 0
        self.start = self._last = time.monotonic()
        self.tty = sys.stderr.isatty()

    def variant_done(self) -> None:
        self.variants += 1
        self._show()

    def job_done(self) -> None:
        self.jobs += 1
        self._show(force=self.jobs == self.total_jobs)

    def _show(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < (0.2 if self.tty else 5.0):
            return
        self._last = now
        rate = self.variants / max(now - self.start, 1e-9)
        left = (self.total_variants - self.variants) / rate if rate > 0 else float("nan")
        text = (f"profiling: jobs {self.jobs}/{self.total_jobs}, variants {self.variants}/{self.total_variants}, "
                f"{self.devices} device(s), ~{left:.0f} s left")
        if self.tty:
            print("\r" + text.ljust(100), end="\n" if force else "", file=sys.stderr, flush=True)
        else:
            log.info(text)


def profile_and_optimize(model_files: list[Path], settings: RunSettings) -> dict[str, ModelResult]:
    """The whole run; returns each model's result (also written as summary.json and report.md)."""
    # 1. Import everything first: a bad model stops the run before any work.
    graphs = {}
    for path in model_files:
        graphs[path] = import_graph(path)
        log.info("imported %s: %d layers, %d convolutions", path.name, len(graphs[path].nodes),
                 len(conv_nodes(graphs[path])))
    # 2. Unique layer signatures.
    layers: dict[str, tuple[Graph, Node]] = {}
    for graph in graphs.values():
        for _, node in conv_nodes(graph):
            layers.setdefault(layer_signature(graph, node), (graph, node))
    # 3. The profiler for the target.
    t_build = time.monotonic()
    profiler, build = build_profiler(settings.target, jobs=2)
    build_seconds = time.monotonic() - t_build
    settings.output.mkdir(parents=True, exist_ok=True)
    store = ResultsStore(settings.output / "results.jsonl",
                         cache_root() / "results.jsonl" if settings.use_cache else None)
    sessions = [(lambda d=d: DeviceSession(d.transport(settings.temp_dir), settings.target, profiler))
                for d in settings.devices]
    with DeviceSequence(sessions) as first:  # released before the pool leases every device
        device_cores = first.run(lambda session: session.cores)
    if device_cores is None:
        raise ValueError(f"no usable device: {'; '.join(first.errors)}")
    # 4. Variants per layer (the default choice is a candidate too), then profile what is missing.
    variants: dict[str, list[tuple[str, dict]]] = {}
    for sig, (graph, node) in layers.items():
        candidates = layer_variants(graph.conv_info(node), settings.options, device_cores)
        candidates.append(_default_variant(graph, node, device_cores))
        variants[sig] = list({variant_key(v): v for v in candidates}.items())
    total = sum(len(v) for v in variants.values())
    log.info("%d unique convolution layers, %d variants on target %s (%d cores)", len(layers), total,
             settings.target.name, device_cores)
    stats = _profile(layers, variants, store, settings, sessions, build, total)
    # 5. Select, assemble, verify, report.
    best = best_records(store.records(), settings.target.name, build)
    failed = sum(1 for r in store.records() if not r.ok and r.target == settings.target.name and r.build == build)
    pool = PoolSummary(stats.busy_seconds, stats.setup_seconds, stats.cleanup_seconds, stats.wall_seconds,
                       round(stats.utilization, 3), stats.failed_devices) if stats else PoolSummary()
    results = {}
    names = model_names(list(graphs))
    with DeviceSequence(sessions) as device:  # one device, opened once, for every model
        for path, graph in graphs.items():
            optimized, rows, verification = _assemble_and_verify(graph, best, store, settings, device, build,
                                                                 device_cores)
            out_dir = settings.output / names[path]
            out_dir.mkdir(parents=True, exist_ok=True)
            write_plan(optimized, out_dir / "optimized.ltplan")
            result = ModelResult(path.name, names[path], settings.target.name, out_dir / "optimized.ltplan", build,
                                 device_cores, rows, verification, pool, round(build_seconds, 2), failed)
            write_report(out_dir, result)
            write_json(out_dir / "summary.json", result.to_json())
            results[result.name] = result
    return results


def _profile(layers: dict[str, tuple[Graph, Node]], variants: dict[str, list[tuple[str, dict]]],
             store: ResultsStore, settings: RunSettings, sessions: list, build: str, total: int) -> PoolStats | None:
    """Measures every (layer, variant) the store does not hold yet on the device pool; each
    measurement lands in the store as it arrives (a re-run resumes here)."""
    def key(sig: str, vkey: str) -> tuple[str, str, str, str]:
        return sig, vkey, settings.target.name, build

    def missing(job: Job) -> list[tuple[str, dict]]:
        return [(k, p) for k, p in job.variants if not store.measured(key(job.layer, k))]

    # Jobs in chunks sized to the pool, longest first (layer FLOPs x variants): the run ends on
    # small jobs, so no device idles while another finishes a big one.
    todo = {sig: [(k, p) for k, p in vs if not store.measured(key(sig, k))] for sig, vs in variants.items()}
    todo_total = sum(len(v) for v in todo.values())
    per_job = max(2, min(64, -(-todo_total // (JOBS_PER_DEVICE * max(1, len(settings.devices))))))
    jobs = [Job(sig, layer_line(*layers[sig], sig), vs[i: i + per_job])
            for sig, vs in todo.items() for i in range(0, len(vs), per_job)]
    jobs.sort(key=lambda j: -layers[j.layer][0].flops(layers[j.layer][1]) * len(j.variants))
    if total - todo_total:
        log.info("%d of %d variants already measured (results store / cache): not measured again",
                 total - todo_total, total)
    if not jobs:
        return None
    progress = Progress(len(jobs), todo_total, len(settings.devices))

    def on_record(job: Job, line: dict, device: str) -> None:
        store.add(Record.from_profiler(job.layer, dict(job.variants).get(line["variant"], {}), settings.target.name,
                                       build, line, device))
        progress.variant_done()

    def on_failure(job: Job, left: list[tuple[str, dict]], kind: str, message: str) -> None:
        for vkey, params in left:
            store.add(Record(job.layer, vkey, settings.target.name, build, params, error=kind, message=message))

    options = ["--warmup", str(settings.warmup), "--repeats", str(settings.repeats), "--flush-bytes",
               str(settings.flush_bytes)]
    stats = run_pool(sessions, jobs, missing, on_record, on_failure, options, settings.parallel_run,
                     settings.timeout, progress=progress.job_done)
    for name, why in stats.failed_devices.items():
        log.warning("device %s: %s", name, why)
    return stats


def model_names(paths: list[Path]) -> dict[Path, str]:
    """Output folder names: the file stem, or stem_suffix where two models share a stem."""
    stems = [p.stem for p in paths]
    return {p: p.stem if stems.count(p.stem) == 1 else f"{p.stem}_{p.suffix.lstrip('.')}" for p in paths}


def _default_variant(graph: Graph, node: Node, cores: int) -> dict[str, Any]:
    return {**default_kernel(graph, node), "threads": cores}


def _assemble_and_verify(graph: Graph, best: dict[str, Record], store: ResultsStore, settings: RunSettings,
                         device: DeviceSequence, build: str, cores: int
                         ) -> tuple[Graph, list[LayerRow], Verification]:
    """Candidate plans (tuned = the fastest variant timed alone per layer, default, each uniform
    method), per layer the candidate's choice that is fastest inside whole-model runs, then the
    result verified against the default on the device."""
    default = _copy_graph(graph)
    apply_default_kernels(default, overwrite=True)
    tuned = _copy_graph(default)
    rows = []
    for index, node in conv_nodes(tuned):
        sig = layer_signature(tuned, node)
        chosen = best.get(sig)
        default_rec = store.get((sig, variant_key(_default_variant(default, default.nodes[index], cores)),
                                 settings.target.name, build))
        if chosen:
            params = dict(chosen.params)
            node.set_kernel(params.pop("method"), params)
        rows.append(LayerRow(index, node.name, node.op, sig, tuned.flops(node), chosen.params if chosen else None,
                             chosen.median_ms if chosen else None, default.nodes[index].kernel,
                             default_rec.median_ms if default_rec and default_rec.ok else None))
    candidates = {"tuned": tuned, "default": default}
    for method in settings.options.methods:
        candidates[f"uniform-{method}"] = _uniform(default, method)
    with tempfile.TemporaryDirectory() as tmp:
        files = _write_plans(candidates, Path(tmp))
        # Isolated timings miss what a layer costs inside the model (cold weights, thread
        # wake-ups): per layer, keep the candidate plan's choice that is fastest in the model.
        in_model = _layer_times_in_model(files, device, settings, cores)
        optimized = _copy_graph(default)
        for row in rows:
            best_plan = min(in_model, key=lambda plan: in_model[plan][row.index]) if in_model else "tuned"
            params = dict(candidates[best_plan].nodes[row.index].kernel)
            optimized.nodes[row.index].set_kernel(params.pop("method"), params)
            row.in_model_ms = {plan: times[row.index] for plan, times in in_model.items()}
            row.final, row.final_from = candidates[best_plan].nodes[row.index].kernel, best_plan
        plans = {"optimized": optimized, "default": default}
        if settings.include_exercise_models:
            plans.update({k: v for k, v in candidates.items() if k.startswith("uniform-")})
        verification = _verify_on_device(_write_plans(plans, Path(tmp)), device, settings, cores)
    return optimized, rows, verification


def _write_plans(graphs: dict[str, Graph], folder: Path) -> dict[str, Path]:
    files = {name: folder / f"{name}.ltplan" for name in graphs}
    for name, g in graphs.items():
        write_plan(g, files[name])
    return files


def _timed_rounds(session: DeviceSession, remote: dict[str, str], settings: RunSettings, cores: int,
                  extra: list[str], pick: str) -> dict[str, list[Any]]:
    """`verify_rounds` interleaved rounds: each plan once per round; field `pick` of each run."""
    out: dict[str, list[Any]] = {name: [] for name in remote}
    for _ in range(settings.verify_rounds):
        for name, path in remote.items():
            r = session.profiler_json(["run", "--plan", path, "--threads", str(cores), "--repeats",
                                       str(settings.repeats), "--warmup", str(settings.warmup), *extra],
                                      settings.timeout)
            out[name].append(r[pick])
    return out


def _layer_times_in_model(files: dict[str, Path], device: DeviceSequence, settings: RunSettings,
                          cores: int) -> dict[str, list[float]]:
    """Per plan, each node's median time inside whole-model runs (interleaved rounds on one device)."""
    def measure(session: DeviceSession) -> dict[str, list[float]]:
        remote = {name: session.upload(f, f.name) for name, f in files.items()}
        rounds = _timed_rounds(session, remote, settings, cores, ["--layers", "1"], "layer_median_ms")
        return {name: [statistics.median(v) for v in zip(*per_round)] for name, per_round in rounds.items()}

    times = device.run(measure)
    if times is None:
        log.warning("per-layer timing in the model failed: %s", "; ".join(device.errors))
    return times or {}


def _verify_on_device(files: dict[str, Path], device: DeviceSequence, settings: RunSettings,
                      cores: int) -> Verification:
    """Whole-model latency of every plan, interleaved in rounds on one device, and the optimized
    plan's output checked against the reference kernels."""
    def verify(session: DeviceSession) -> Verification:
        remote = {name: session.upload(f, f.name) for name, f in files.items()}
        check = session.profiler_json(["run", "--plan", remote["optimized"], "--threads", str(cores), "--repeats", "1",
                                       "--check", "1"], settings.timeout)
        rounds = _timed_rounds(session, remote, settings, cores, [], "median_ms")
        return Verification(session.name, {name: statistics.median(v) for name, v in rounds.items()},
                            OutputCheck(check.get("max_abs_diff"), check.get("max_abs_ref"), check.get("error")),
                            check.get("arena_bytes"), check.get("peak_rss_bytes"))

    result = device.run(verify)
    return result if result is not None else Verification(
        error="no device could verify the model: " + "; ".join(device.errors))


def _uniform(graph: Graph, method: str) -> Graph:
    """Every convolution on `method` where it applies, the default elsewhere."""
    g = _copy_graph(graph)
    for _, node in conv_nodes(g):
        try:
            check_kernel(g, node, method, {})
            node.set_kernel(method, {})
        except ValueError:
            pass  # the method does not apply here: keep the default
    return g


def _copy_graph(graph: Graph) -> Graph:
    g = copy(graph)
    g.nodes = [copy(n) for n in graph.nodes]
    for n in g.nodes:
        n.attrs = dict(n.attrs)
    return g
