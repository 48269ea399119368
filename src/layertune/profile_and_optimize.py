"""profile_and_optimize: time every variant of every unique convolution layer on the target's
devices, pick the fastest correct one per layer, write the optimized plan, and verify it end to
end on a device against the default choice (and each uniform method)."""

from __future__ import annotations

import logging
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layertune.build import build_profiler, cache_root
from layertune.database import Record, ResultsStore
from layertune.graph.ir import Graph
from layertune.graph.kernel_choice import apply_default_kernels
from layertune.graph.plan import write_plan
from layertune.jsonfile import write_json
from layertune.model import MODEL_SUFFIXES, import_graph
from layertune.runners.device import DeviceSequence, DeviceSession
from layertune.runners.pool import Job, run_pool
from layertune.runners.transport import LocalTransport, SSHTransport
from layertune.select import best_records, conv_nodes, layer_line, layer_signature, variant_key
from layertune.targets import Target
from layertune.variants import ProfileOptions, layer_variants

log = logging.getLogger("layertune")
JOBS_PER_DEVICE = 12  # enough jobs to balance a pool, few enough that per-job overhead stays small


@dataclass
class Device:
    """How to reach one device (the password is kept out of repr, logs and files)."""
    host: str | None  # None: this machine
    user: str | None = None
    port: int = 22
    key_file: str | None = None
    password: str | None = field(default=None, repr=False)
    known_hosts: str | None = None

    def transport(self, temp_dir: str | None):
        if self.host is None:
            return LocalTransport(temp_dir)
        return SSHTransport(self.host, self.user, self.port, self.key_file, self.password, self.known_hosts)


def load_cluster(path: str | Path, defaults: Device) -> list[Device]:
    """A device list: one device per line, `[user@]host[:port]`; `#` starts a comment."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such cluster file")
    devices = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"(?:([^@\s]+)@)?([^:\s]+)(?::(\d+))?", line)
        if not m:
            raise ValueError(f"{path}:{number}: expected [user@]host[:port], got '{line}'")
        devices.append(Device(m.group(2), m.group(1) or defaults.user, int(m.group(3) or defaults.port),
                              defaults.key_file, defaults.password, defaults.known_hosts))
    if not devices:
        raise ValueError(f"{path}: lists no devices")
    return devices


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


def profile_and_optimize(model_files: list[Path], settings: RunSettings) -> dict[str, Any]:
    """The whole run; returns the summary of every model (also written to summary.json files)."""
    # 1. Import everything first: a bad model stops the run before any work.
    graphs = {}
    for path in model_files:
        graphs[path] = import_graph(path)
        log.info("imported %s: %d layers, %d convolutions", path.name, len(graphs[path].nodes),
                 len(conv_nodes(graphs[path])))
    # 2. Unique layer signatures and their variants.
    layers: dict[str, tuple[Graph, Any]] = {}
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
    variants: dict[str, list[tuple[str, dict]]] = {}
    for sig, (graph, node) in layers.items():
        candidates = layer_variants(graph.conv_info(node), settings.options, device_cores)
        candidates.append(_default_variant(graph, node, device_cores))  # the baseline is a candidate too
        variants[sig] = list({variant_key(v): v for v in candidates}.items())
    total = sum(len(v) for v in variants.values())
    log.info("%d unique convolution layers, %d variants on target %s (%d cores)", len(layers), total,
             settings.target.name, device_cores)

    def key(sig: str, vkey: str) -> tuple[str, str, str, str]:
        return sig, vkey, settings.target.name, build

    def missing(job: Job) -> list[tuple[str, dict]]:
        return [(k, p) for k, p in job.variants if not store.measured(key(job.layer, k))]

    # 4. Jobs: what is not measured yet (a re-run resumes here), in chunks sized to the pool.
    todo_total = sum(1 for sig, vs in variants.items() for k, _ in vs if not store.measured(key(sig, k)))
    per_job = max(2, min(64, -(-todo_total // (JOBS_PER_DEVICE * max(1, len(settings.devices))))))
    jobs = []
    for sig, vs in variants.items():
        graph, node = layers[sig]
        todo = [(k, p) for k, p in vs if not store.measured(key(sig, k))]
        for i in range(0, len(todo), per_job):
            jobs.append(Job(sig, layer_line(graph, node, sig), todo[i: i + per_job]))
    # Longest first (layer FLOPs x variants): the run ends on small jobs, so no device idles
    # while another finishes a big one.
    jobs.sort(key=lambda j: -layers[j.layer][0].flops(layers[j.layer][1]) * len(j.variants))
    already = total - sum(len(j.variants) for j in jobs)
    if already:
        log.info("%d of %d variants already measured (results store / cache): not measured again", already, total)
    progress = Progress(len(jobs), total - already, len(settings.devices))

    def on_record(job: Job, r: dict, device: str) -> None:
        params = dict(job.variants)[r["variant"]] if r["variant"] in dict(job.variants) else {}
        store.add(Record(job.layer, r["variant"], settings.target.name, build, params, r.get("median_ms"), r.get("min_ms"),
                         r.get("mean_ms"), r.get("std_ms"), r.get("repeats", 0), r.get("max_abs_diff"),
                         r.get("max_abs_ref"), r.get("error"), r.get("message", ""), device))
        progress.variant_done()

    def on_failure(job: Job, left: list[tuple[str, dict]], kind: str, message: str) -> None:
        for vkey, params in left:
            store.add(Record(job.layer, vkey, settings.target.name, build, params, error=kind, message=message))

    options = ["--warmup", str(settings.warmup), "--repeats", str(settings.repeats), "--flush-bytes",
               str(settings.flush_bytes)]
    stats = run_pool(sessions, jobs, missing, on_record, on_failure, options, settings.parallel_run,
                     settings.timeout, progress=progress.job_done) if jobs else None
    if stats and stats.failed_devices:
        for name, why in stats.failed_devices.items():
            log.warning("device %s: %s", name, why)

    # 5. Select, assemble, verify, report.
    best = best_records(store.records(), settings.target.name, build)
    summaries = {}
    names = model_names(list(graphs))
    with DeviceSequence(sessions) as device:  # one device, opened once, for every model
        for path, graph in graphs.items():
            summaries[names[path]] = _assemble_and_verify(path, names[path], graph, best, store, settings, device,
                                                          build, device_cores, stats, build_seconds)
    return summaries


def model_names(paths: list[Path]) -> dict[Path, str]:
    """Output folder names: the file stem, or stem_suffix where two models share a stem."""
    stems = [p.stem for p in paths]
    return {p: p.stem if stems.count(p.stem) == 1 else f"{p.stem}_{p.suffix.lstrip('.')}" for p in paths}


def _default_variant(graph: Graph, node, cores: int) -> dict[str, Any]:
    from layertune.graph.kernel_choice import default_kernel
    return {**default_kernel(graph, node), "threads": cores}


def _assemble_and_verify(path: Path, name: str, graph: Graph, best: dict[str, Record], store: ResultsStore,
                         settings: RunSettings, device: DeviceSequence, build: str, cores: int, stats,
                         build_seconds: float):
    out_dir = settings.output / name
    out_dir.mkdir(parents=True, exist_ok=True)
    default = _copy_graph(graph)
    apply_default_kernels(default, overwrite=True)
    optimized = _copy_graph(default)
    layer_rows = []
    for index, node in conv_nodes(optimized):
        sig = layer_signature(optimized, node)
        chosen = best.get(sig)
        default_params = _default_variant(default, default.nodes[index], cores)
        default_rec = store.get((sig, variant_key(default_params), settings.target.name, build))
        if chosen:
            params = dict(chosen.params)
            node.set_kernel(params.pop("method"), params)
        layer_rows.append({"index": index, "name": node.name, "op": node.op, "signature": sig,
                           "flops": optimized.flops(node), "chosen": chosen.params if chosen else None,
                           "time_ms": chosen.median_ms if chosen else None,
                           "default": default.nodes[index].kernel,
                           "default_time_ms": default_rec.median_ms if default_rec and default_rec.ok else None})
    candidates = {"tuned": optimized, "default": default}
    for method in settings.options.methods:
        candidates[f"uniform-{method}"] = _uniform(default, method)
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for name, g in candidates.items():
            files[name] = Path(tmp) / f"{name}.ltplan"
            write_plan(g, files[name])
        # Isolated timings miss what a layer costs inside the model (cold weights, thread
        # wake-ups): per layer, keep the candidate plan's choice that is fastest in the model.
        in_model = _layer_times_in_model(files, device, settings, cores)
        optimized = _copy_graph(default)
        for index, node in conv_nodes(optimized):
            best_plan = min(in_model, key=lambda name: in_model[name][index]) if in_model else "tuned"
            params = dict(candidates[best_plan].nodes[index].kernel)
            node.set_kernel(params.pop("method"), params)
            layer_rows[[r["index"] for r in layer_rows].index(index)].update(
                {"in_model_ms": {k: v[index] for k, v in in_model.items()}, "final": candidates[best_plan].nodes[index].kernel,
                 "final_from": best_plan})
        plans = {"optimized": optimized, "default": default}
        if settings.include_exercise_models:
            plans.update({k: v for k, v in candidates.items() if k.startswith("uniform-")})
        for name, g in plans.items():
            files[name] = Path(tmp) / f"{name}.ltplan"
            write_plan(g, files[name])
        verify = _verify_on_device({k: files[k] for k in plans}, device, settings, cores)
    write_plan(optimized, out_dir / "optimized.ltplan")
    summary = {
        "model": path.name, "target": settings.target.name, "profiler_build": build, "device_cores": cores,
        "layers": layer_rows, "whole_model": verify,
        "pool": {"busy_seconds": stats.busy_seconds if stats else {}, "setup_seconds": stats.setup_seconds if stats else {},
                 "cleanup_seconds": stats.cleanup_seconds if stats else {},
                 "wall_seconds": stats.wall_seconds if stats else 0.0,
                 "utilization": round(stats.utilization, 3) if stats else None,
                 "failed_devices": stats.failed_devices if stats else {}},
        "build_seconds": round(build_seconds, 2),
        "failed_measurements": sum(1 for r in store.records() if not r.ok and r.target == settings.target.name
                                   and r.build == build),
    }
    from layertune.report import write_report
    write_report(out_dir, summary)
    write_json(out_dir / "summary.json", summary)
    return summary


def _layer_times_in_model(files: dict[str, Path], device: DeviceSequence, settings: RunSettings,
                          cores: int) -> dict[str, list[float]]:
    """Per plan, each node's median time inside whole-model runs (interleaved rounds on one device)."""
    def measure(session: DeviceSession) -> dict[str, list[float]]:
        remote = {name: session.upload(f, f.name) for name, f in files.items()}
        per_round: dict[str, list[list[float]]] = {name: [] for name in files}
        for _ in range(settings.verify_rounds):
            for name in files:
                r = session.profiler_json(["run", "--plan", remote[name], "--threads", str(cores), "--layers", "1",
                                           "--repeats", str(settings.repeats), "--warmup", str(settings.warmup)],
                                          settings.timeout)
                per_round[name].append(r["layer_median_ms"])
        return {name: [statistics.median(v) for v in zip(*rounds)] for name, rounds in per_round.items()}

    times = device.run(measure)
    if times is None:
        log.warning("per-layer timing in the model failed: %s", "; ".join(device.errors))
    return times or {}


def _verify_on_device(files: dict[str, Path], device: DeviceSequence, settings: RunSettings, cores: int) -> dict[str, Any]:
    """Whole-model latency of every plan, interleaved in rounds on one device, and the optimized
    plan's output checked against the reference kernels."""
    def verify(session: DeviceSession) -> dict[str, Any]:
        remote = {name: session.upload(f, f.name) for name, f in files.items()}
        check = session.profiler_json(["run", "--plan", remote["optimized"], "--threads", str(cores), "--repeats", "1",
                                       "--check", "1"], settings.timeout)
        times: dict[str, list[float]] = {name: [] for name in files}
        for _ in range(settings.verify_rounds):
            for name in files:
                r = session.profiler_json(["run", "--plan", remote[name], "--threads", str(cores), "--repeats",
                                           str(settings.repeats), "--warmup", str(settings.warmup)], settings.timeout)
                times[name].append(r["median_ms"])
        latency = {name: statistics.median(v) for name, v in times.items()}
        return {"device": session.name, "latency_ms": latency,
                "speedup_over_default": latency["default"] / latency["optimized"],
                "check": {"max_abs_diff": check.get("max_abs_diff"), "max_abs_ref": check.get("max_abs_ref"),
                          "error": check.get("error")},
                "arena_bytes": check.get("arena_bytes"), "peak_rss_bytes": check.get("peak_rss_bytes")}

    result = device.run(verify)
    return result if result is not None else {"error": "no device could verify the model: " + "; ".join(device.errors)}


def _uniform(graph: Graph, method: str) -> Graph:
    from layertune.graph.kernel_choice import check_kernel
    g = _copy_graph(graph)
    for _, node in conv_nodes(g):
        try:
            check_kernel(g, node, method, {})
            node.set_kernel(method, {})
        except ValueError:
            pass  # the method does not apply here: keep the default
    return g


def _copy_graph(graph: Graph) -> Graph:
    from copy import copy
    g = copy(graph)
    g.nodes = [copy(n) for n in graph.nodes]
    for n in g.nodes:
        n.attrs = dict(n.attrs)
    return g

