"""profile_and_optimize: time every variant of every unique convolution layer on the target's
devices (interleaved with the layer's default choice), then choose, confirm and verify the plan
to write on whole-model runs against layertune's baselines and LiteRT (tuner/confirm.py)."""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from layertune.graph.ir import Graph, Node
from layertune.graph.keras_import import keras_to_tflite
from layertune.graph.fusion import fused_groups
from layertune.graph.kernel_choice import apply_default_kernels, check_kernel, default_kernel
from layertune.graph.plan import write_plan
from layertune.graph.precision import DEFAULT_REQUANTIZATION
from layertune.graph.tflite_import import import_tflite_bytes
from layertune.jsonfile import write_json
from layertune.graph.onnx_import import import_onnx
from layertune.model import SOURCE_SUFFIXES
from layertune.runners.device import DeviceSequence, DeviceSession
from layertune.runners.devices import Device
from layertune.runners.pool import Job, PoolStats, run_pool
from layertune.methods import methods
from layertune.tuner.accuracy import CHECK_INPUTS, Fallback, OutputGate
from layertune.tuner.build import build_profiler, cache_root
from layertune.tuner.confirm import Bench, Outcome, PlanCandidate, pinned, select_plan
from layertune.tuner.database import Key, Record, ResultsStore
from layertune.tuner.options import ProfileOptions
from layertune.tuner.protocol import PROTOCOL_VERSION, Settings
from layertune.tuner.report import write_report
from layertune.tuner.result import LayerRow, ModelResult, OutputCheck, PoolSummary, Verification
from layertune.tuner.select import best_records, conv_nodes, layer_line, layer_signature, variant_key
from layertune.tuner.targets import Target
from layertune.tuner.variants import layer_variants, thread_counts

log = logging.getLogger("layertune")
JOBS_PER_DEVICE = 12  # enough jobs to balance a pool, few enough that per-job overhead stays small


def find_models(model_path: str | Path, names: list[str] | None) -> list[Path]:
    root = Path(model_path)
    if not root.exists():
        raise ValueError(f"--model_path: {root} does not exist")
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.suffix.lower() in SOURCE_SUFFIXES)
    if names:
        files = [p for p in files if p.stem in names]
    if not files:
        wanted = f" named {', '.join(names)}" if names else ""
        raise ValueError(f"--model_path: no models{wanted} ({', '.join('*' + s for s in SOURCE_SUFFIXES)}) under {root}")
    return files


@dataclass
class RunSettings:
    target: Target
    options: ProfileOptions
    output: Path
    devices: list[Device]
    warmup: int = 2
    repeats: int = 3  # timed runs per candidate per round
    rounds: int = 3  # interleaved rounds per layer variant
    timeout: float = 600.0
    parallel_run: int = 1
    parallel_build: int = 1
    use_cache: bool = True
    temp_dir: str | None = None
    flush_bytes: int = 0
    lease_wait: float = 0.0
    whole_model: Settings = field(default_factory=Settings)  # the protocol of the whole-model decisions
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # ONNX inputs' dynamic dimensions fixed
    requantization: str = DEFAULT_REQUANTIZATION  # an int8 model's arithmetic (graph/precision.py)

    def measurement_key(self) -> str:
        """Every setting that changes a per-layer measurement: part of each record's key, so a
        cached measurement is reused only under the same protocol."""
        return f"p{PROTOCOL_VERSION}-w{self.warmup}-r{self.rounds}x{self.repeats}-f{self.flush_bytes}"


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
    graphs: dict[Path, Graph] = {}
    tflites: dict[Path, bytes | None] = {}  # what LiteRT runs beside the plans (none for ONNX models)
    # An int8 model's twin: its int8 convolutions in float32 (between DEQUANTIZE and QUANTIZE), each
    # a layer of its own to time, when the options allow float32 (the per-layer precision choice).
    twins: dict[Path, Graph] = {}
    for path in model_files:
        if path.suffix.lower() == ".onnx":
            tflites[path] = None
            graphs[path] = import_onnx(path, settings.input_shapes, other_inputs_ok=True)
        else:
            tflites[path] = path.read_bytes() if path.suffix.lower() == ".tflite" else keras_to_tflite(path)
            graphs[path] = _import_tflite(tflites[path], path, settings)
            int8_layers = _int8_layers(graphs[path])
            if int8_layers and "float32" in settings.options.precisions:
                twins[path] = _import_tflite(tflites[path], path, settings, int8_layers)
        log.info("imported %s: %d layers, %d convolutions", path.name, len(graphs[path].nodes),
                 len(conv_nodes(graphs[path])))
    named = {g.tensors[t].name for p, g in graphs.items() if p.suffix.lower() == ".onnx" for t in g.inputs}
    if set(settings.input_shapes) - named:
        raise ValueError(f"--input_shape: no ONNX model has an input named "
                         f"{', '.join(sorted(set(settings.input_shapes) - named))}")
    # 2. Unique layer signatures.
    layers: dict[str, tuple[Graph, Node]] = {}
    for path, graph in graphs.items():
        for g in (graph, twins.get(path)) if path in twins else (graph,):
            for _, node in conv_nodes(g):
                layers.setdefault(layer_signature(g, node), (g, node))
    # 3. The profiler for the target.
    t_build = time.monotonic()
    profiler, build = build_profiler(settings.target, jobs=2)
    build_seconds = time.monotonic() - t_build
    settings.output.mkdir(parents=True, exist_ok=True)
    store = ResultsStore(settings.output / "results.jsonl",
                         cache_root() / "results.jsonl" if settings.use_cache else None)
    sessions = [(lambda d=d: DeviceSession(d.transport(settings.temp_dir), settings.target, profiler,
                                           lease_wait=settings.lease_wait)) for d in settings.devices]
    with DeviceSequence(sessions) as first:  # released before the pool leases every device
        device = first.run(lambda session: (session.cores, session.unavailable_methods))
    if device is None:
        raise ValueError(f"no usable device: {'; '.join(first.errors)}")
    device_cores, unavailable = device
    for method, why in unavailable.items():
        if method in settings.options.methods:
            log.info("method %s left out: %s", method, why)
    # 4. Variants per layer (the default choice is a candidate too), then profile what is missing.
    threads = thread_counts(settings.options, device_cores)
    variants: dict[str, list[tuple[str, dict]]] = {}
    baselines: dict[str, tuple[str, dict]] = {}
    for sig, (graph, node) in layers.items():
        default = _default_variant(graph, node, max(threads))
        baselines[sig] = (variant_key(default), default)
        candidates = [default, *layer_variants(graph.conv_info(node), settings.options, device_cores, unavailable)]
        variants[sig] = list({variant_key(v): v for v in candidates}.items())
    total = sum(len(v) for v in variants.values())
    log.info("%d unique convolution layers, %d variants on target %s (%d cores)", len(layers), total,
             settings.target.name, device_cores)
    stats = _profile(layers, variants, baselines, store, settings, sessions, build, total)
    # 5. Select, assemble, verify, report.
    best = best_records(store.records(), settings.target.name, build, settings.measurement_key(),
                        {sig: {k for k, _ in vs} for sig, vs in variants.items()})
    # each layer's fastest exact variant: where an approximate one is too inaccurate in the model
    exact_best = best_records(store.records(), settings.target.name, build, settings.measurement_key(),
                              {sig: {k for k, p in vs if not methods()[p["method"]].approximate}
                               for sig, vs in variants.items()})
    failed = sum(1 for r in store.records() if not r.ok and r.target == settings.target.name and r.build == build
                 and r.settings == settings.measurement_key())
    pool = PoolSummary(stats.busy_seconds, stats.setup_seconds, stats.cleanup_seconds, stats.wall_seconds,
                       round(stats.utilization, 3), stats.failed_devices, stats.job_intervals) if stats else PoolSummary()
    results = {}
    names = model_names(list(graphs))
    with DeviceSequence(sessions) as device, tempfile.TemporaryDirectory() as tmp:  # one device for every model
        for path, graph in graphs.items():
            out_dir = settings.output / names[path]
            out_dir.mkdir(parents=True, exist_ok=True)
            (Path(tmp) / names[path]).mkdir()
            tflite = Path(tmp) / names[path] / "model.tflite" if tflites[path] is not None else None
            if tflite is not None:
                tflite.write_bytes(tflites[path])
            mixed = (lambda names, p=path: _import_tflite(tflites[p], p, settings, names)) if path in twins else None
            rows, candidates, fallbacks = _candidates(graph, best, exact_best, store, settings, build, threads,
                                                      twins.get(path), mixed)
            verification, outcome = _choose_on_device(candidates, fallbacks, device, settings, Path(tmp) / names[path],
                                                      tflite, threads)
            if outcome is not None:
                _fill_rows(rows, outcome, candidates)
                optimized = outcome.graph
                strongest = candidates[outcome.strongest]  # the default choice's best form, unfused
                write_plan(pinned(strongest.graph, strongest.threads), out_dir / "strongest_baseline.ltplan")
            else:  # no device could measure the model: the default choice, unconfirmed
                optimized = candidates[f"default@{min(threads)}"].graph
            write_plan(optimized, out_dir / "optimized.ltplan")
            result = ModelResult(path.name, names[path], settings.target.name, out_dir / "optimized.ltplan", build,
                                 device_cores, rows, verification, pool, round(build_seconds, 2), failed)
            write_report(out_dir, result)
            write_json(out_dir / "summary.json", result.to_json())
            results[result.name] = result
    return results


def _profile(layers: dict[str, tuple[Graph, Node]], variants: dict[str, list[tuple[str, dict]]],
             baselines: dict[str, tuple[str, dict]], store: ResultsStore, settings: RunSettings, sessions: list,
             build: str, total: int) -> PoolStats | None:
    """Measures every (layer, variant) the store does not hold yet on the device pool; each
    measurement lands in the store as it arrives (a re-run resumes here)."""
    def key(sig: str, vkey: str) -> Key:
        return sig, vkey, settings.target.name, build, settings.measurement_key()

    def missing(job: Job) -> list[tuple[str, dict]]:
        """What the job still has to measure, behind the layer's baseline (timed with it)."""
        left = [(k, p) for k, p in job.variants if not store.measured(key(job.layer, k))]
        return _with_baseline(baselines[job.layer], left) if left else []

    # Jobs in chunks sized to the pool, longest first (layer FLOPs x variants): the run ends on
    # small jobs, so no device idles while another finishes a big one.
    todo = {sig: [(k, p) for k, p in vs if not store.measured(key(sig, k))] for sig, vs in variants.items()}
    todo_total = sum(len(v) for v in todo.values())
    per_job = max(2, min(64, -(-todo_total // (JOBS_PER_DEVICE * max(1, len(settings.devices))))))
    # Every job starts with the layer's default variant: the baseline its variants are timed with.
    jobs = [Job(sig, layer_line(*layers[sig], sig), _with_baseline(baselines[sig], vs[i: i + per_job]))
            for sig, vs in todo.items() for i in range(0, len(vs), per_job)]
    jobs.sort(key=lambda j: -layers[j.layer][0].flops(layers[j.layer][1]) * len(j.variants))
    if total - todo_total:
        log.info("%d of %d variants already measured (results store / cache): not measured again",
                 total - todo_total, total)
    if not jobs:
        return None
    progress = Progress(len(jobs), todo_total, len(settings.devices))

    def on_record(job: Job, line: dict, device: str) -> None:
        if store.measured(key(job.layer, line["variant"])):  # the layer's baseline, timed again as the reference
            return
        progress.variant_done()
        store.add(Record.from_profiler(job.layer, dict(job.variants).get(line["variant"], {}), settings.target.name,
                                       build, settings.measurement_key(), line, device))

    def on_failure(job: Job, left: list[tuple[str, dict]], kind: str, message: str) -> None:
        for vkey, params in left:
            store.add(Record(job.layer, vkey, settings.target.name, build, params, error=kind, message=message,
                             settings=settings.measurement_key()))

    options = ["--warmup", str(settings.warmup), "--repeats", str(settings.repeats), "--rounds", str(settings.rounds),
               "--flush-bytes", str(settings.flush_bytes)]
    stats = run_pool(sessions, jobs, missing, on_record, on_failure, options, settings.parallel_run,
                     settings.timeout, progress=progress.job_done)
    for name, why in stats.failed_devices.items():
        log.warning("device %s: %s", name, why)
    return stats


def model_names(paths: list[Path]) -> dict[Path, str]:
    """Output folder names: the file stem, or stem_suffix where two models share a stem."""
    stems = [p.stem for p in paths]
    return {p: p.stem if stems.count(p.stem) == 1 else f"{p.stem}_{p.suffix.lstrip('.')}" for p in paths}


def _import_tflite(data: bytes, path: Path, settings: RunSettings, float_layers: frozenset[str] = frozenset()) -> Graph:
    return import_tflite_bytes(data, path.stem, str(path), requantization=settings.requantization,
                               float_layers=float_layers)


def _int8_layers(graph: Graph) -> frozenset[str]:
    """The names of a graph's int8 convolutions (the layers a per-layer precision choice is about)."""
    return frozenset(n.name for _, n in conv_nodes(graph) if graph.conv_info(n)["dtype"] == "int8")


# A layer of an int8 model goes float32 in the mixed plan only when its float32 twin measured at
# least this much faster alone: the DEQUANTIZE / QUANTIZE around it are not in that time (the whole
# model decides in the end: tuner/confirm.py).
FLOAT_MARGIN = 0.9


def _default_variant(graph: Graph, node: Node, threads: int) -> dict[str, Any]:
    """The layer's default kernel at the most threads the options allow: the baseline its
    variants are timed with."""
    return {**default_kernel(graph, node), "threads": threads}


def _with_baseline(baseline: tuple[str, dict], variants: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    return [baseline] + [v for v in variants if v[0] != baseline[0]]


def _candidates(graph: Graph, best: dict[str, Record], exact_best: dict[str, Record], store: ResultsStore,
                settings: RunSettings, build: str, threads: tuple[int, ...], twin: Graph | None = None,
                mixed: Callable[[frozenset[str]], Graph] | None = None
                ) -> tuple[list[LayerRow], dict[str, PlanCandidate], list[Fallback]]:
    """The per-layer rows and the whole-model candidates: layertune's baselines (the default
    choice and each uniform method, at every allowed thread count) and the tuned plan (each
    layer's fastest variant timed alone, with its own thread count). For an int8 model with its
    float32 `twin`, also "tuned-mixed": the tuned plan with the layers whose float32 twin was
    faster (by FLOAT_MARGIN) computed in float32 (`mixed` imports the model so). Last, for each
    layer of the tuned plan on an approximate method, its fastest exact variant (`exact_best`;
    the default kernel where none was measured): what tuner/accuracy.py falls back to."""
    default = graph.copy()
    apply_default_kernels(default, overwrite=True)
    tuned = default.copy()
    int8_layers = _int8_layers(graph)  # a layer already in float32 has no twin
    twin_nodes = {n.name: n for _, n in conv_nodes(twin) if n.name in int8_layers} if twin is not None else {}
    rows, in_float, fallbacks = [], {}, []
    for index, node in conv_nodes(tuned):
        sig = layer_signature(tuned, node)
        chosen = best.get(sig)
        default_rec = store.get((sig, variant_key(_default_variant(default, default.nodes[index], max(threads))),
                                 settings.target.name, build, settings.measurement_key()))
        if chosen:
            params = dict(chosen.params)
            node.set_kernel(params.pop("method"), params)
            if methods()[chosen.params["method"]].approximate:
                exact = exact_best.get(sig) or default_rec
                fallbacks.append(Fallback(index, dict(exact.params) if exact else default.nodes[index].kernel,
                                          exact.median_ms - chosen.median_ms if exact else 0.0))
        float_rec = best.get(layer_signature(twin, twin_nodes[node.name])) if node.name in twin_nodes else None
        rows.append(LayerRow(index, node.name, node.op, sig, tuned.flops(node), chosen.params if chosen else None,
                             chosen.median_ms if chosen else None, default.nodes[index].kernel,
                             default_rec.median_ms if default_rec and default_rec.ok else None,
                             float_chosen=float_rec.params if float_rec else None,
                             float_time_ms=float_rec.median_ms if float_rec else None))
        if float_rec and (not chosen or float_rec.median_ms < FLOAT_MARGIN * chosen.median_ms):
            in_float[node.name] = float_rec.params
    candidates = {f"default@{t}": PlanCandidate(default, t, baseline=True, simplicity=i)
                  for i, t in enumerate(sorted(threads))}
    for m, method in enumerate(settings.options.methods):
        if methods()[method].approximate:
            continue  # a baseline is exact: approximate layers come in the tuned plan, through the gate
        uniform = _uniform(default, method)
        if all(a.attrs == b.attrs for a, b in zip(uniform.nodes, default.nodes)):
            continue  # the method computes none of this model's layers: the default plan again
        for i, t in enumerate(sorted(threads)):
            candidates[f"uniform-{method}@{t}"] = PlanCandidate(uniform, t, baseline=True,
                                                                simplicity=100 * (m + 1) + i)
    candidates["tuned"] = PlanCandidate(tuned, max(threads), baseline=False)
    if in_float and mixed is not None:
        candidates["tuned-mixed"] = PlanCandidate(_mixed_plan(mixed(frozenset(in_float)), tuned, in_float),
                                                  max(threads), baseline=False)
    return rows, candidates, fallbacks


def _mixed_plan(graph: Graph, tuned: Graph, in_float: dict[str, dict[str, Any]]) -> Graph:
    """`graph` (the model with the layers of `in_float` in float32) with their float32 kernels, and
    every other convolution's kernel as in `tuned`."""
    apply_default_kernels(graph, overwrite=True)
    int8_kernels = {n.name: n.kernel for _, n in conv_nodes(tuned)}
    for _, node in conv_nodes(graph):
        params = dict(in_float.get(node.name) or int8_kernels[node.name])
        node.set_kernel(params.pop("method"), params)
    return graph


def _choose_on_device(candidates: dict[str, PlanCandidate], fallbacks: list[Fallback], device: DeviceSequence,
                      settings: RunSettings, folder: Path, tflite: Path | None,
                      threads: tuple[int, ...]) -> tuple[Verification, Outcome | None]:
    """The tuned plan trimmed to the output tolerance, select_plan on one device, then the written
    plan's output checked against the reference."""
    def step(session: DeviceSession) -> tuple[Verification, Outcome]:
        bench = Bench(session, folder, settings.whole_model, settings.timeout, tflite, tuple(sorted(threads)))
        gate = OutputGate(bench, settings.options.max_output_error)
        plans = {**candidates, "tuned": gate.trim("tuned", candidates["tuned"], fallbacks)}
        reference = f"default@{max(threads)}"
        outcome = select_plan(plans, bench, reference, fusion=settings.options.fusion,
                              strip_rows=settings.options.strip_rows, acceptable=gate.acceptable)
        write_plan(outcome.graph, folder / "written.ltplan")
        remote = session.upload(folder / "written.ltplan", "written.ltplan")
        check = gate.check(remote, outcome.threads, outcome.graph)
        return Verification(
            session.name, outcome.written, outcome.threads, outcome.strongest,
            {k: round(v, 4) for k, v in outcome.latency_ms.items()},
            {k: v.to_json() for k, v in outcome.ratios.items()},
            OutputCheck(check.get("max_abs_diff"), check.get("max_abs_ref"), check.get("error"), CHECK_INPUTS),
            check.get("arena_bytes"), check.get("peak_rss_bytes"), outcome.litert_error,
            outcome.confirm_tries, fused=fused_groups(outcome.graph), accuracy=gate.to_json()), outcome

    result = device.run(step)
    if result is None:
        return Verification(error="no device could verify the model: " + "; ".join(device.errors)), None
    return result


def _fill_rows(rows: list[LayerRow], outcome: Outcome, candidates: dict[str, PlanCandidate]) -> None:
    changed = dict(outcome.changes)
    written = {n.name: n for n in outcome.graph.nodes}
    source = outcome.written.split("+", 1)[0]  # a fused plan's kernels are those of the plan it fused
    base = source if source in candidates else outcome.strongest
    # by name: a fused plan has fewer nodes, a mixed-precision plan more (its conversions)
    index_of = {plan: {n.name: i for i, n in enumerate(candidates[plan].graph.nodes)} for plan in outcome.screen_node_ms}
    for row in rows:
        row.in_model_ms = {plan: round(times[index_of[plan][row.name]], 4)
                           for plan, times in outcome.screen_node_ms.items() if row.name in index_of[plan]}
        row.final = written[row.name].kernel
        row.final_from = changed.get(row.index, base)
        row.precision = outcome.graph.tensors[written[row.name].outputs[0]].dtype


def _uniform(graph: Graph, method: str) -> Graph:
    """Every convolution on `method` where it applies, the default elsewhere."""
    g = graph.copy()
    for _, node in conv_nodes(g):
        try:
            check_kernel(g, node, method, {})
            node.set_kernel(method, {})
        except ValueError:
            pass  # the method does not apply here: keep the default
    return g
