"""The tuner's parts on their own, without sshd: the method table and what is derived from it
(variants, options, the options docs, the profiler's argument check), the results store,
selection, the device pool on two local devices, and the package's import graph."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import layertune
from layertune import _core
from layertune.graph.ir import Graph
from layertune.graph.kernel_choice import default_kernel
from layertune.kernels import profiler_path
from layertune.methods import default_int8_method, methods, options_table, tunable_methods, unavailable_methods, why_not
from layertune.runners.device import DeviceSession
from layertune.runners.pool import Job, run_pool
from layertune.runners.transport import DeviceError, LocalTransport
from layertune.tuner.database import Record, ResultsStore
from layertune.tuner.options import OptionsError, parse_options, shipped_options
from layertune.tuner.protocol import Settings, measure_until_narrow, median_interval, ratio_ci
from layertune.tuner.select import best_records, layer_line, layer_signature, variant_key
from layertune.tuner.targets import BUILTIN
from layertune.tuner.variants import layer_variants, thread_counts

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "layertune"


def conv(input_shape, weights, strides=(1, 1), groups=1, pads=(1, 1, 1, 1)):
    """A convolution as Graph.conv_info describes it."""
    return {"input": input_shape, "weights": weights, "strides": strides, "dilations": (1, 1), "pads": pads,
            "groups": groups, "activation": "relu"}


REGULAR = conv((1, 16, 16, 32), (3, 3, 32, 64))
DEPTHWISE = conv((1, 16, 16, 32), (3, 3, 1, 32), groups=32)
STRIDED = conv((1, 16, 16, 32), (3, 3, 32, 64), strides=(2, 2), pads=(0, 1, 0, 1))


# -- the method table --------------------------------------------------------------------

def test_the_table_names_every_method_once_with_threads_first():
    table = methods()
    assert list(table) == ["reference", "simple", "unrolled", "winograd", "amx_bf16x3", "amx_bf16x6", "int8_reference",
                           "int8_gemm", "int8_depthwise"]
    assert not table["reference"].tunable
    assert tunable_methods("float32") == ("simple", "unrolled", "winograd", "amx_bf16x3", "amx_bf16x6")
    assert not table["int8_reference"].tunable and tunable_methods("int8") == ("int8_gemm", "int8_depthwise")
    assert tunable_methods() == tunable_methods("float32") + tunable_methods("int8")
    assert {m.dtype for m in table.values()} == {"float32", "int8"}
    assert all(m.params[0].name == "threads" for m in table.values())
    assert table["winograd"].param("winograd_tile").choices == (2, 4, 6)
    assert table["winograd"].param("separable_block_depth").layers == "depthwise"


def test_the_profiler_reports_the_same_table_as_the_bindings():
    out = subprocess.run([str(profiler_path()), "methods"], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == json.loads(_core.methods_json())


def test_applicability_comes_from_the_core():
    assert why_not(REGULAR, "winograd") is None
    assert "stride" in why_not(STRIDED, "winograd")
    assert "depthwise" in why_not(REGULAR, "winograd", {"separable_block_depth": 8})
    assert "regular" in why_not(DEPTHWISE, "winograd", {"nonseparable_channel_depth": 8})
    with pytest.raises(ValueError, match="winograd_tile"):
        why_not(REGULAR, "winograd", {"winograd_tile": 3})
    with pytest.raises(ValueError, match="unknown method 'fastest'"):
        why_not(REGULAR, "fastest")


def test_int8_layers_take_the_int8_rows_and_float_layers_the_float_ones():
    """What a layer computes in is part of where a method applies: the int8 rows for int8 layers
    (each with its own reason where it cannot), the float rows for float layers; an ELL options
    file, which names no int8 method, tunes an int8 layer over every int8 method."""
    int8_regular, int8_depthwise = {**REGULAR, "dtype": "int8"}, {**DEPTHWISE, "dtype": "int8"}
    assert why_not(int8_regular, "int8_gemm") is None and why_not(int8_depthwise, "int8_depthwise") is None
    assert "computes int8 layers, this layer is float32" in why_not(REGULAR, "int8_gemm")
    assert "computes float32 layers, this layer is int8" in why_not(int8_regular, "unrolled")
    assert "ungrouped" in why_not(int8_depthwise, "int8_gemm")
    assert "depthwise layers only" in why_not(int8_regular, "int8_depthwise")
    assert default_int8_method(int8_regular) == "int8_gemm" and default_int8_method(int8_depthwise) == "int8_depthwise"
    grouped = {**conv((1, 8, 8, 16), (3, 3, 8, 16), groups=2), "dtype": "int8"}
    assert default_int8_method(grouped) == "int8_reference"  # no tunable int8 method computes it
    ell = options()  # convolution_methods: simple, unrolled, winograd
    variants = layer_variants(int8_regular, ell, 2)
    assert {(v["method"], v["tile_rows"], v["threads"]) for v in variants} == {
        ("int8_gemm", r, t) for r in (4, 7, 8, 12) for t in (1, 2)}  # parallel [true, false] on 2 cores
    assert {v["method"] for v in layer_variants(int8_depthwise, ell, 2)} == {"int8_depthwise"}
    assert layer_variants(grouped, ell, 2) == []
    assert {v["method"] for v in layer_variants(REGULAR, ell, 1)} == {"simple", "unrolled", "winograd"}
    only = options(convolution_methods=["unrolled", "int8_gemm"], int8_gemm_parameters={"tile_rows": [12]})
    assert {(v["method"], v["tile_rows"]) for v in layer_variants(int8_regular, only, 1)} == {("int8_gemm", 12)}
    assert layer_variants(int8_depthwise, only, 1) == []  # the options name int8_gemm only


def test_the_default_choice_follows_the_maps_size():
    """3x3 layers: Winograd F(4x4) from 28x28 maps, F(2x2) on 14x14, the GEMM below;
    1x1 layers the GEMM."""
    from test_fusion import Builder

    def choice(hw: int, channels: int, k: int = 3) -> dict:
        builder = Builder((1, hw, hw, channels))
        graph = builder.graph(builder.conv("conv", 0, channels, k=k))
        return default_kernel(graph, graph.nodes[0])

    assert choice(28, 128) == {"method": "winograd", "winograd_tile": 4}
    assert choice(14, 256) == {"method": "winograd", "winograd_tile": 2}
    assert choice(7, 512) == {"method": "unrolled"}
    assert choice(13, 256) == {"method": "unrolled"}
    assert choice(28, 128, 1) == {"method": "unrolled"}


def test_a_one_channel_layer_accepts_a_depthwise_depth_but_varies_only_what_it_uses():
    one_channel = conv((1, 8, 8, 1), (3, 3, 1, 16))
    assert why_not(one_channel, "winograd", {"separable_block_depth": 8}) is None  # nothing to block: accepted
    variants = layer_variants(one_channel, options(winograd_parameters=[8, 16]), 1)
    assert all("separable_block_depth" not in v for v in variants)
    assert any("nonseparable_channel_depth" in v for v in variants)


def test_options_readme_holds_the_generated_table():
    readme = (ROOT / "profile_options" / "README.md").read_text()
    start, end = "<!-- methods table: generated -->\n", "\n<!-- end of methods table -->"
    assert readme[readme.index(start) + len(start): readme.index(end)] == options_table()


# -- options and variants ----------------------------------------------------------------

def options(**data):
    return parse_options({"convolution_methods": ["simple", "unrolled", "winograd"], "parallel": [True, False], **data})


def test_a_method_the_device_lacks_gets_no_variants():
    """The profiler's `info` names the methods a device's CPU cannot run (amx_bf16x3 on ARM or
    without AMX); the variants leave them out there, and elsewhere as the method table says."""
    opts = options(convolution_methods=["unrolled", "amx_bf16x3"])
    lacking = {"amx_bf16x3": "amx_bf16x3 needs Intel AMX-BF16 tiles (x86-64 only)"}
    assert {v["method"] for v in layer_variants(REGULAR, opts, 1, lacking)} == {"unrolled"}
    here = {v["method"] for v in layer_variants(REGULAR, opts, 1)}
    assert here == ({"unrolled"} if "amx_bf16x3" in unavailable_methods() else {"unrolled", "amx_bf16x3"})


def test_variants_follow_ell_semantics():
    opts = options(winograd_parameters=[16, 32], winograd_tiles=[2, 4])
    regular = layer_variants(REGULAR, opts, device_cores=2)
    winograd = [v for v in regular if v["method"] == "winograd"]
    assert len(winograd) == 2 * 2 * 2 * 2  # threads x tiles x filter depths x channel depths
    assert all(set(v) == {"method", "threads", "winograd_tile", "nonseparable_filter_block_depth",
                          "nonseparable_channel_depth"} for v in winograd)
    depthwise = [v for v in layer_variants(DEPTHWISE, opts, 2) if v["method"] == "winograd"]
    assert len(depthwise) == 2 * 2 * 2 and all("separable_block_depth" in v for v in depthwise)
    strided = layer_variants(STRIDED, opts, 2)
    assert {v["method"] for v in strided} == {"simple", "unrolled"}
    assert {v["threads"] for v in regular} == {1, 2}
    assert thread_counts(opts, 4) == (1, 2, 3, 4)  # parallel true and false: every count, per layer
    assert thread_counts(options(parallel=[True]), 4) == (4,)


def test_every_generated_variant_is_accepted_by_the_core():
    opts = options(winograd_parameters=[8], unrolled_parameters={"block_m": [24], "block_k": [64]})
    for layer in (REGULAR, DEPTHWISE, STRIDED):
        for v in layer_variants(layer, opts, 2):
            params = {k: val for k, val in v.items() if k != "method"}
            assert why_not(layer, v["method"], params) is None, v


def test_gemm_tiles_are_a_tuning_dimension_of_the_gemm_methods():
    """`gemm_tiles` varies unrolled's tile and Winograd's (its alpha^2 GEMMs, regular layers only)."""
    opts = options(gemm_tiles=[62, 43])
    variants = layer_variants(REGULAR, opts, 1)
    assert sorted(v["gemm_tile"] for v in variants if v["method"] == "unrolled") == [43, 62]
    assert sorted((v["winograd_tile"], v["gemm_tile"]) for v in variants if v["method"] == "winograd") == [
        (t, g) for t in (2, 4, 6) for g in (43, 62)]
    assert all("gemm_tile" not in v for v in variants if v["method"] == "simple")
    assert all("gemm_tile" not in v for v in layer_variants(DEPTHWISE, opts, 1) if v["method"] == "winograd")
    assert all("gemm_tile" not in v for v in layer_variants(REGULAR, options(), 1))  # default: the ISA's tile
    with pytest.raises(OptionsError, match="gemm_tile: must be"):
        options(gemm_tiles=[63])


def test_threads_make_parallel_optional_and_the_sweep_fills_unnamed_parameters():
    opts = parse_options({"convolution_methods": ["winograd"], "threads": [1, 3]})
    assert thread_counts(opts, 8) == (1, 3)
    variants = layer_variants(REGULAR, opts, 8)
    assert sorted({v["winograd_tile"] for v in variants}) == [2, 4, 6]  # the table's sweep
    assert all("nonseparable_channel_depth" not in v for v in variants)  # left to the kernel


@pytest.mark.parametrize("data, fragment", [
    ({"convolution_methods": ["simple"]}, "missing key 'parallel' (or 'threads')"),
    ({"convolution_methods": ["reference"], "parallel": [False]}, "'convolution_methods' must be"),
    ({"convolution_methods": ["simple"], "parallel": [False], "winograd_tiles": [3]}, "winograd_tile: must be 2, 4 or 6"),
    ({"convolution_methods": ["simple"], "parallel": [False], "unrolled_parameters": {"block_n": [1]}},
     "unknown key 'unrolled_parameters.block_n' (known: gemm_tile, block_m, block_k)"),
    ({"convolution_methods": ["simple"], "parallel": [False], "simple_parameters": {"threads": [2]}},
     "unknown key 'simple_parameters.threads'"),
    ({"convolution_methods": ["simple"], "threads": [0]}, "'threads': threads: must be an integer in [1, 1024]"),
    ({"convolution_methods": ["simple"], "parallel": [False], "tiles": [2]}, "unknown key 'tiles'"),
    ({"convolution_methods": ["simple"], "parallel": [False], "precisions": ["fp16"]},
     "'precisions' must be a non-empty list of int8, float32"),
    ({"convolution_methods": ["simple"], "parallel": [False], "precisions": []}, "'precisions' must be"),
    ({"convolution_methods": ["simple"], "parallel": [False], "max_output_error": "1e-4"},
     "'max_output_error' must be a number in [0, 1)"),
    ({"convolution_methods": ["simple"], "parallel": [False], "max_output_error": 2}, "'max_output_error' must be"),
])
def test_bad_options_name_the_key(data, fragment):
    with pytest.raises(OptionsError, match=fragment.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]")):
        parse_options(data, "opts.json")


def test_the_shipped_options_parse():
    for name in ("default.json", "quick.json"):
        parse_options(json.loads(shipped_options(name).read_text()), name)


# -- results store and selection ---------------------------------------------------------

def record(layer, variant, median, error=None, target="host", build="b1", settings="s1"):
    return Record(layer, variant, target, build, {"method": variant}, median_ms=median if error is None else None,
                  error=error, repeats=5, settings=settings)


def test_store_resumes_and_a_success_overrides_a_failure(tmp_path):
    path, cache = tmp_path / "results.jsonl", tmp_path / "cache" / "results.jsonl"
    store = ResultsStore(path, cache)
    store.add(record("L1", "simple", None, error="timeout"))
    store.add(record("L1", "simple", 2.0))
    store.add(record("L1", "unrolled", None, error="wrong-answer"))
    with open(path, "a") as f:
        f.write('{"layer": "L1", "variant": "winograd", "ta')  # a line torn by a power loss
    again = ResultsStore(path)
    again.add(record("L1", "fresh", 1.5))  # appended after the torn line: must not be lost with it
    again = ResultsStore(path)
    assert again.measured(("L1", "fresh", "host", "b1", "s1"))
    assert again.measured(("L1", "simple", "host", "b1", "s1"))
    assert not again.measured(("L1", "unrolled", "host", "b1", "s1"))
    assert again.get(("L1", "winograd", "host", "b1", "s1")) is None
    # the user-level cache alone serves another output folder, under the same settings only
    other = ResultsStore(tmp_path / "other.jsonl", cache)
    assert other.measured(("L1", "simple", "host", "b1", "s1"))
    assert not other.measured(("L1", "simple", "host", "b1", "other-settings"))


def test_selection_takes_the_fastest_correct_variant_of_this_target_and_build():
    records = [record("L1", "simple", 3.0), record("L1", "unrolled", 2.0), record("L1", "winograd", 1.0, error="wrong-answer"),
               record("L1", "fast-elsewhere", 0.5, target="pi3"), record("L1", "old-build", 0.5, build="b0"),
               record("L1", "fewer-repeats", 0.5, settings="s0"), record("L2", "simple", 4.0)]
    best = best_records(records, "host", "b1", "s1")
    assert best["L1"].variant == "unrolled" and best["L2"].variant == "simple"
    # only among this run's variants: another run's options left "unrolled" in the store
    assert best_records(records, "host", "b1", "s1", {"L1": {"simple", "winograd"}})["L1"].variant == "simple"


def test_variant_keys_and_signatures_are_stable():
    assert variant_key({"method": "winograd", "winograd_tile": 2, "threads": 1}) == "winograd,threads=1,winograd_tile=2"
    model = layertune.load(ROOT / "examples" / "digits" / "digits_cnn.tflite")
    graph: Graph = model.graph
    convs = [n for n in graph.nodes if n.op == "CONV_2D"]
    sig = layer_signature(graph, convs[0])
    assert layer_signature(graph, convs[0]) == sig
    line = layer_line(graph, convs[0], sig).split()
    assert line[0] == "L" and line[1] == sig and len(line) == 2 + 16 + 1  # 16 integers and the activation


# -- the measurement protocol's decisions ------------------------------------------------

def series(seed: int, n: int, factor: float, noise: float, base: list[float] | None = None) -> list[float]:
    """Round times: `base` (or a drifting machine) times `factor`, with multiplicative noise."""
    import random
    rng = random.Random(seed)
    base = base or [10.0 * (1 + 0.2 * (i % 7) / 7) for i in range(n)]  # the machine drifts by 20%
    return [b * factor * (1 + rng.gauss(0, noise)) for b in base]


def test_a_real_five_percent_gain_is_kept_despite_drift():
    base = series(1, 24, 1.0, 0.02)
    faster = series(2, 24, 0.95, 0.02, base)
    ci = ratio_ci(faster, base)
    assert ci.faster and 0.93 < ci.ratio < 0.97 and ci.hi < 1


def test_a_change_within_noise_is_no_change():
    base = series(3, 24, 1.0, 0.05)
    for seed in range(4, 14):
        same = series(seed, 24, 1.0, 0.05, base)
        ci = ratio_ci(same, base)
        assert not ci.faster and not ci.slower, (seed, ci)


def test_the_median_interval_covers_as_documented():
    assert median_interval([5.0, 1.0, 3.0]) == (3.0, 1.0, 5.0)  # too few rounds for 95%: min and max
    _, lo, hi = median_interval(list(map(float, range(20))))
    assert (lo, hi) == (5.0, 14.0)  # the 6th and 15th of 20 (binomial coverage >= 95%)


def test_rounds_are_added_until_the_interval_is_narrow_and_hopeless_candidates_leave():
    calls: list[list[str]] = []

    def chunk(noise):
        def measure(rounds, racing):
            calls.append(list(racing))
            k = len(calls)
            base = series(k, rounds, 1.0, 0.01)
            out = {"base": base, "cand": series(100 + k, rounds, 0.9, noise, base),
                   "hopeless": series(200 + k, rounds, 3.0, 0.01, base)}
            return {n: out[n] for n in racing}
        return measure

    names = ["base", "cand", "hopeless"]
    quiet = measure_until_narrow(chunk(0.001), names, "base", Settings(chunk=4, min_rounds=8, max_rounds=40, ci_width=0.05))
    assert len(quiet["base"]) == len(quiet["cand"]) == 8  # narrow at the minimum
    assert len(quiet["hopeless"]) == 4 and "hopeless" not in calls[1]  # out of the race after one chunk
    assert ratio_ci(quiet["hopeless"], quiet["base"]).slower  # ... with its rounds kept
    calls.clear()
    noisy = measure_until_narrow(chunk(0.3), names, "base", Settings(chunk=4, min_rounds=8, max_rounds=20, ci_width=0.01))
    assert len(noisy["base"]) == 20  # never narrow: stops at max_rounds


# -- the device pool on two local devices --------------------------------------------------

class DyingTransport(LocalTransport):
    """A local device that dies during its first profiling job. (A fault injected in-process:
    the SSH pool test in test_profile_and_optimize.py kills a real sshd for the same case.)"""

    def run(self, argv, on_line=None, timeout=600.0):
        if "job" in argv:
            raise DeviceError("crash", f"{self.name}: the device went away")
        return super().run(argv, on_line, timeout)


def pool_jobs() -> list[Job]:
    layer = conv((1, 12, 12, 8), (3, 3, 8, 8))
    fields = [*layer["input"], 8, 3, 3, 1, 1, 1, 1, *layer["pads"], 1]
    line = "L L1 " + " ".join(map(str, fields)) + " relu"
    variants = [(variant_key(v), v) for v in layer_variants(layer, options(winograd_tiles=[2]), 1)]
    return [Job("L1", line, variants[i: i + 2]) for i in range(0, len(variants), 2)]


def run_local_pool(transports, tmp_path):
    store = ResultsStore(tmp_path / "results.jsonl")
    sessions = [lambda t=t: DeviceSession(t, BUILTIN["host"], profiler_path()) for t in transports]
    jobs = pool_jobs()
    planned = {k for j in jobs for k, _ in j.variants}
    seen: list[tuple[str, str]] = []

    def on_record(job, line, device):
        seen.append((line["variant"], device))
        store.add(Record.from_profiler(job.layer, dict(job.variants)[line["variant"]], "host", "b", "s", line, device))

    stats = run_pool(sessions, jobs, lambda job: [(k, p) for k, p in job.variants
                                                  if not store.measured(("L1", k, "host", "b", "s"))],
                     on_record, lambda *a: pytest.fail(f"gave up on {a}"), ["--repeats", "2", "--warmup", "1"],
                     parallel_run=2, timeout=120)
    return stats, planned, seen, store


def test_pool_spreads_jobs_over_two_local_devices(tmp_path):
    stats, planned, seen, store = run_local_pool([LocalTransport(str(tmp_path), "dev-a"),
                                                  LocalTransport(str(tmp_path), "dev-b")], tmp_path)
    assert sorted(k for k, _ in seen) == sorted(planned)  # every variant measured exactly once
    assert all(r.ok for r in store.records())
    assert set(stats.busy_seconds) == {"dev-a", "dev-b"} and not stats.failed_devices
    assert 0 < stats.utilization <= 1.0
    assert not list(tmp_path.glob("layertune-run-*"))  # work directories removed
    assert not list(Path("/tmp").glob("layertune-lease-dev-*"))  # leases released


def test_pool_requeues_the_job_of_a_device_that_dies(tmp_path):
    stats, planned, seen, _ = run_local_pool([DyingTransport(str(tmp_path), "dev-dying"),
                                              LocalTransport(str(tmp_path), "dev-ok")], tmp_path)
    assert sorted(k for k, _ in seen) == sorted(planned)
    assert {d for _, d in seen} == {"dev-ok"}
    assert "dev-dying" in stats.failed_devices and "went away" in stats.failed_devices["dev-dying"]
    assert not list(Path("/tmp").glob("layertune-lease-dev-*"))


def test_a_lease_held_by_another_run_is_waited_for(tmp_path):
    import threading
    holder = DeviceSession(LocalTransport(str(tmp_path), "dev-wait"), BUILTIN["host"], profiler_path())
    holder.open()
    threading.Timer(1.0, holder.close).start()
    waiter = DeviceSession(LocalTransport(str(tmp_path), "dev-wait"), BUILTIN["host"], profiler_path(), lease_wait=30)
    try:
        waiter.open()  # succeeds once the holder releases it
    finally:
        waiter.close()
    assert not list(Path("/tmp").glob("layertune-lease-dev-wait"))


def test_a_device_leased_by_another_run_is_busy(tmp_path):
    holder = DeviceSession(LocalTransport(str(tmp_path), "dev-held"), BUILTIN["host"], profiler_path())
    holder.open()
    try:
        other = DeviceSession(LocalTransport(str(tmp_path), "dev-held"), BUILTIN["host"], profiler_path())
        with pytest.raises(DeviceError, match="leased by another run .*waited 1 s"):
            other.lease_wait = 1.0
            other.open()
        other.close()
    finally:
        holder.close()
    assert not list(Path("/tmp").glob("layertune-lease-dev-held"))


# -- the package's structure ---------------------------------------------------------------

def module_imports() -> dict[str, set[str]]:
    """Each layertune module -> the layertune modules it imports at module level (outside
    TYPE_CHECKING), as `from a.b import c` resolves (c may be a module)."""
    names = {".".join(("layertune", *p.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__")
             for p in SRC.rglob("*.py")}
    graph = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(("layertune", *path.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__")
        deps = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                deps.add(node.module)
                deps |= {f"{node.module}.{a.name}" for a in node.names}
        # an ancestor package is always being imported when its submodule is: not an edge
        graph[name] = {d for d in deps if d in names and d != name and not name.startswith(d + ".")}
    return graph


def test_the_import_graph_has_no_cycles():
    graph = module_imports()
    state: dict[str, int] = {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(dep):] + [module, dep]))
            if dep not in state:
                visit(dep, stack + [module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


HEAVY_OPTIONAL = {"tensorflow", "tvm", "tflite", "optuna", "matplotlib", "paramiko", "fabric", "PIL",
                  "ai_edge_litert", "psutil", "sklearn", "onnx", "onnxruntime", "tf2onnx"}


DEVICE_SCRIPTS = {"runners/litert_timer.py", "runners/inference.py"}  # run on the device: any import may be missing there (a reason)


def test_litert_timer_without_litert_reports_which_modules_to_install():
    """A device without LiteRT: the timer prints one JSON error naming both interpreters it tries
    and what to install (the modules are made unimportable in the script's own process)."""
    blocker = ("import runpy, sys\n"
               "class NoLiteRT:\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] in ('ai_edge_litert', 'tflite_runtime'):\n"
               "            raise ImportError(f'No module named {name!r}')\n"
               "sys.meta_path.insert(0, NoLiteRT())\n"
               "sys.argv = sys.argv[1:]\n"
               "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    out = subprocess.run([sys.executable, "-c", blocker, str(SRC / "runners" / "litert_timer.py"),
                          str(ROOT / "examples" / "digits" / "digits_cnn.tflite")],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    error = json.loads(out.strip().splitlines()[-1])["error"]
    assert "ai_edge_litert" in error and "tflite_runtime" in error and "pip install ai-edge-litert" in error


def test_function_local_imports_are_only_heavy_optional_dependencies():
    found = []
    for path in SRC.rglob("*.py"):
        if str(path.relative_to(SRC)) in DEVICE_SCRIPTS:
            continue
        tree = ast.parse(path.read_text())
        top = {id(n) for n in tree.body}
        guarded = {id(n) for node in tree.body if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for n in ast.walk(node)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top | guarded:
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                found += [f"{path.relative_to(SRC)}:{node.lineno} {m}" for m in modules
                          if m.split(".")[0] not in HEAVY_OPTIONAL]
    assert not found, found


def test_no_module_imports_a_private_name_of_another():
    offenders = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("layertune"):
                offenders += [f"{path.relative_to(SRC)}: {node.module}.{a.name}" for a in node.names
                              if a.name.startswith("_") and a.name != "_core"]
    assert not offenders, offenders


def test_the_written_plan_is_never_slower_than_a_plan_in_hand_even_when_intervals_are_not_transitive():
    """Verification rounds from the CI failure's shape: the per-layer composite (T) was dropped
    from the race after 12 rounds; on those rounds it beat the strongest baseline (B), and the
    confirmed plan (C) beat T, while over all 24 rounds C did not beat B beyond noise. Taking
    the first plan that beats the choice wrote T, measured slower than C; the choice is repeated
    until no plan in hand beats it."""
    from layertune.tuner.confirm import _written
    rounds = 24
    b = [10.0 + 0.01 * (i % 3) for i in range(rounds)]
    # C: 4% faster than B in the first half, 4% slower in the second (the machine changed)
    c = [b[i] * (0.96 + 0.001 * (i % 2) if i < 12 else 1.04 + 0.001 * (i % 2)) for i in range(rounds)]
    t = [b[i] * (0.98 + 0.001 * (i % 3)) for i in range(12)]  # dropped after 12 rounds
    series = {"B": b, "C": c, "T": t}
    assert not ratio_ci(c, b).faster and ratio_ci(t, b).faster and ratio_ci(c, t).faster  # the premise
    written = _written(series, "C", "B", ["B"], ["C", "T"])
    assert written == "C"
    for other in ("B", "T"):
        assert ratio_ci(series[written], series[other]).lo <= 1.0


def scripted_measure(answers: list[dict[str, list[float]]]):
    """A verification's measure(keep) that returns `answers` in turn, and the keeps it was called
    with (scripted: a chunk of rounds that drifts cannot be produced on demand)."""
    calls: list[tuple[str, ...]] = []

    def measure(keep: tuple[str, ...]) -> dict[str, list[float]]:
        calls.append(keep)
        return answers[len(calls) - 1]
    return measure, calls


def plan_candidates(**baseline: bool):
    """PlanCandidates of an empty graph: name -> whether it is a baseline (simpler in the order given)."""
    from layertune.tuner.confirm import PlanCandidate
    graph = Graph("empty", [], [], [], [])
    return {name: PlanCandidate(graph, 1, baseline=b, simplicity=i) for i, (name, b) in enumerate(baseline.items())}


def test_a_cycle_left_by_the_race_is_settled_by_timing_every_plan_together():
    """The CI failure of e8dacc4: the first chunk of verification rounds ran 1.6x slow. In it the
    uniform baseline (U) beat the tuned plan (T), which left the race after 4 rounds, and T beat
    the default (D); over all rounds D beat U. Every plan the rule can write was then measured
    slower than some plan on their shared rounds. The verification times every plan again in the
    same rounds, none dropped, and chooses on those. (The measurements are scripted: a chunk that
    drifts cannot be produced on demand.)"""
    from layertune.tuner.confirm import _verify
    d = [5.0 * (1.6 if i < 4 else 1.0) * (1 + 0.002 * (i % 3)) for i in range(24)]
    u = [d[i] * (0.95 if i < 4 else 1.19) for i in range(24)]
    t = [d[i] * 0.99 for i in range(4)]  # raced out after the first chunk
    cycle = {"D": d, "U": u, "T": t}
    assert ratio_ci(u, t).faster and ratio_ci(t, d).faster and ratio_ci(d, u).faster  # the premise
    settled = {"D": d[4:], "U": [x * 1.1 for x in d[4:]], "T": [x * 0.9 for x in d[4:]]}
    candidates = plan_candidates(D=True, U=True, T=False)
    measure, calls = scripted_measure([cycle, settled])
    series, written, strongest = _verify(measure, ["D", "U", "T"], "T", candidates, lambda name: True,
                                         progress=lambda message: None)
    assert calls == [("T",), ("D", "U", "T")] and series is settled
    assert (written, strongest) == ("T", "D")
    assert all(ratio_ci(series[written], series[n]).lo <= 1.0 for n in series if n != written)
    # without a cycle the verification rounds are timed once
    measure, calls = scripted_measure([settled])
    series, written, _ = _verify(measure, ["D", "U", "T"], "T", candidates, lambda name: True)
    assert calls == [("T",)] and written == "T"


def test_a_chain_left_by_the_race_is_settled_by_timing_every_plan_together():
    """The README command's run at 3a83058: the tuned plan (T) beat the default (D) on the 4 rounds
    it raced, the confirmed plan (C) beat T on those, and over 40 rounds C and D were within noise.
    The replacements wrote C, no baseline's fused form and not faster than the strongest baseline
    beyond noise. The verification times every plan again in the same rounds and chooses on those
    (scripted measurements: a drifting chunk cannot be produced on demand)."""
    from layertune.tuner.confirm import _verify, _written
    d = [8.0 * (1 + 0.01 * ((i * 7) % 5 - 2)) for i in range(40)]
    c = [d[i] * (1.0 + 0.02 * ((i * 3) % 4 - 1.5) / 1.5) for i in range(40)]
    t = [d[i] * 0.97 for i in range(4)]
    c[:4] = [t[i] * 0.92 for i in range(4)]
    chain = {"D": d, "T": t, "C": c}
    assert not ratio_ci(c, d).faster and ratio_ci(t, d).faster and ratio_ci(c, t).faster  # the premise
    assert _written(chain, "C", "D", ["D"], ["T", "C"]) == "C"
    settled = {"D": d, "T": [x * 1.01 for x in d], "C": [x * 1.002 for x in d]}  # all within noise
    measure, calls = scripted_measure([chain, settled])
    series, written, strongest = _verify(measure, ["D", "T", "C"], "C", plan_candidates(D=True, T=False, C=False),
                                         lambda name: True, progress=lambda message: None)
    assert calls == [("C",), ("D", "T", "C")] and series is settled
    assert (written, strongest) == ("D", "D")


def test_a_tie_with_the_fused_form_writes_the_fused_form():
    """A model loaded untuned is fused, so the tuner must not take fusion away on noise: within
    noise of the choice, or faster, its "+fused" form is written; measured slower beyond noise, or
    beaten by a baseline, it is not."""
    from layertune.tuner.confirm import _written
    rounds = 16
    b = [10.0 + 0.3 * ((i * 7) % 5 - 2) for i in range(rounds)]  # noisy
    tie = [b[i] * (1.0 + 0.02 * ((i * 3) % 5 - 2)) for i in range(rounds)]
    slower = [x * 1.05 for x in b]
    faster = [x * 0.9 for x in b]
    assert not ratio_ci(tie, b).faster and not ratio_ci(tie, b).slower  # the premise: a tie
    assert _written({"B": b, "B+fused": tie}, "B", "B", ["B"], ["B+fused"]) == "B+fused"
    assert _written({"B": b, "B+fused": slower}, "B", "B", ["B"], ["B+fused"]) == "B"
    # a baseline at another thread count beats the fused form: not written
    assert _written({"B": b, "U": faster, "B+fused": tie}, "B", "B", ["B", "U"], ["B+fused"]) == "B"
    # the confirmed plan's fused form, the same way
    conf = [x * 0.9 for x in b]
    assert _written({"B": b, "C": conf, "C+fused": [x * 0.99 for x in conf]}, "C", "B", ["B"], ["C+fused"]) == "C+fused"


def test_a_plan_over_the_output_tolerance_is_never_written():
    """However fast, a plan that is not acceptable (tuner/accuracy.py: its output over the
    options' max_output_error) is not written: not the confirmed plan, not another plan in hand,
    not a fused form; the choice falls back to the fastest acceptable one."""
    from layertune.tuner.confirm import _written
    b = [10.0 + 0.01 * (i % 3) for i in range(16)]
    fast, faster = [x * 0.8 for x in b], [x * 0.7 for x in b]
    series = {"B": b, "C": fast, "T": faster, "C+fused": faster}
    assert _written(series, "C", "B", ["B"], ["C", "T", "C+fused"]) in ("T", "C+fused")  # the premise
    assert _written(series, "C", "B", ["B"], ["C", "T", "C+fused"], lambda n: n == "C") == "C"
    assert _written(series, "C", "B", ["B"], ["C", "T", "C+fused"], lambda n: n == "T") == "T"
    assert _written(series, "C", "B", ["B"], ["C", "T", "C+fused"], lambda n: False) == "B"


def test_plans_over_the_output_tolerance_neither_race_nor_stay_confirmed(tmp_path):
    """select_plan on the host, on a real model: a confirmed mix of kernels that is faster but not
    acceptable is not kept (its try says so), and no plan that is not acceptable races in the
    verification (a faster one would push the acceptable ones out of the race after a few rounds:
    ResNet50 then wrote its default plan beside a tuned one 0.9x its time). The baseline runs
    every layer on unrolled (MobileNetV2's depthwise layers 17x slower there), the tuned plan on
    the default kernels: confirming the tuned layers is faster for sure."""
    from model_zoo import application_tflite
    from layertune.graph.kernel_choice import apply_default_kernels
    from layertune.graph.tflite_import import import_tflite_bytes
    from layertune.runners.device import DeviceSequence
    from layertune.tuner.confirm import Bench, PlanCandidate, select_plan
    from layertune.tuner.driver import _uniform

    graph = import_tflite_bytes(application_tflite("MobileNetV2", 32), "mnv2")
    apply_default_kernels(graph, overwrite=True)
    sessions = [lambda: DeviceSession(LocalTransport(str(tmp_path), "dev"), BUILTIN["host"], profiler_path())]
    asked = []

    def step(session):
        outcomes = {}
        for label, refused in [("confirmed", ("confirmed-",)), ("confirmed and tuned", ("confirmed-", "tuned"))]:
            folder = tmp_path / label.replace(" ", "-")
            folder.mkdir()
            candidates = {"uniform-unrolled@1": PlanCandidate(_uniform(graph, "unrolled"), 1, baseline=True),
                          "tuned": PlanCandidate(graph.copy(), 1, baseline=False)}

            def acceptable(name, candidate, refused=refused):
                asked.append(name)
                return not name.startswith(refused)

            outcomes[label] = select_plan(candidates, Bench(session, folder, Settings(min_rounds=4, max_rounds=8), 300.0),
                                          "uniform-unrolled@1", progress=lambda _: None, fusion=(),
                                          acceptable=acceptable)
        return outcomes

    with DeviceSequence(sessions) as device:
        outcomes = device.run(step)
    assert outcomes is not None, device.errors
    for label, outcome in outcomes.items():
        first = outcome.confirm_tries[0]
        assert first["ratio"]["hi"] < 1 and not first["kept"] and first["over_tolerance"], (label, first)
        assert not any(n.startswith("confirmed-") for n in outcome.latency_ms), (label, outcome.latency_ms)
        assert not outcome.written.startswith("confirmed-")
    assert "tuned" in outcomes["confirmed"].latency_ms and outcomes["confirmed"].written == "tuned"
    assert "tuned" not in outcomes["confirmed and tuned"].latency_ms
    assert outcomes["confirmed and tuned"].written == "uniform-unrolled@1"
    assert "confirmed-1" in asked and "tuned" in asked


def test_the_output_gate_keeps_the_approximate_layers_that_save_the_most_within_the_tolerance(tmp_path):
    """tuner/accuracy.py on the host, on a real model: with every layer it can compute on an
    approximate method, the tuned plan keeps as many approximate layers as stay within the tolerance
    (the next count measured over; measured again after, against the reference kernels), none at a
    tolerance of 0, all at a loose one; a plan without approximate layers passes unchecked. On a CPU
    without an approximate method, that last part is what is asserted."""
    from model_zoo import application_tflite
    from layertune.graph.kernel_choice import apply_default_kernels, check_kernel
    from layertune.graph.tflite_import import import_tflite_bytes
    from layertune.runners.device import DeviceSequence
    from layertune.tuner.accuracy import Fallback, OutputGate, approximate_layers
    from layertune.tuner.confirm import Bench, PlanCandidate

    graph = import_tflite_bytes(application_tflite("MobileNetV2", 32), "mnv2")
    apply_default_kernels(graph, overwrite=True)
    exact = PlanCandidate(graph, 1, baseline=True)
    usable = [m for m, spec in methods().items() if spec.approximate and m not in unavailable_methods()]
    tuned = graph.copy()
    fallbacks = []
    for i, node in enumerate(tuned.nodes):
        if usable and tuned.is_tunable_conv(node):
            try:
                check_kernel(tuned, node, usable[0], {})
            except ValueError:
                continue
            fallbacks.append(Fallback(i, dict(graph.nodes[i].kernel), saved_ms=float(tuned.flops(node) % 977)))
            node.set_kernel(usable[0], {})
    sessions = [lambda: DeviceSession(LocalTransport(str(tmp_path), "dev"), BUILTIN["host"], profiler_path())]

    def step(session):
        def gate(tolerance: float, folder: str) -> OutputGate:
            (tmp_path / folder).mkdir()
            return OutputGate(Bench(session, tmp_path / folder, Settings(), 300.0), tolerance)

        plain = gate(0.0, "plain")
        assert plain.acceptable("default", exact) and plain.trim("default", exact, []) is exact
        assert not plain.errors  # nothing was run: no approximate layer
        if not usable:
            return True
        full = PlanCandidate(tuned, 1, baseline=False)
        loose = gate(0.99, "loose")
        assert loose.trim("tuned", full, fallbacks) is full and loose.trimmed["kept"] == len(fallbacks)
        full_error = loose.errors["tuned"]
        assert full_error > 0
        none = gate(0.0, "none").trim("tuned", full, fallbacks)
        assert not approximate_layers(none.graph)
        middle = gate(full_error / 3, "middle")
        assert not middle.acceptable("untrimmed", full)
        trimmed = middle.trim("tuned", full, fallbacks)
        kept = middle.trimmed["kept"]
        assert len(middle.trimmed["probes"]) <= len(fallbacks).bit_length() + 1
        kept_layers = approximate_layers(trimmed.graph)
        assert len(kept_layers) == kept and set(kept_layers) <= {f.index for f in fallbacks}
        assert [p for p in middle.trimmed["probes"] if p["kept"] == kept][0]["error"] <= full_error / 3
        assert all(p["error"] > full_error / 3 for p in middle.trimmed["probes"] if p["kept"] == kept + 1)
        # the kernels left are the fallbacks' exact ones
        assert all(trimmed.graph.nodes[f.index].kernel == f.exact for f in fallbacks if f.index not in kept_layers)
        check = gate(full_error / 3, "check")
        check.bench.add("trimmed", trimmed)
        assert check.error("trimmed", trimmed.graph) <= full_error / 3
        print(f"{len(fallbacks)} approximate layers, error {full_error:.2g}: {kept} kept at a third of it, "
              f"checks {middle.trimmed['probes']}")
        return True

    with DeviceSequence(sessions) as device:
        assert device.run(step) is True, device.errors
