"""The tuner's parts on their own, without sshd: the method table and what is derived from it
(variants, options, the options docs, the profiler's argument check), the results store,
selection, the device pool on two local devices, and the package's import graph."""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path

import pytest

import layertune
from layertune import _core
from layertune.graph.ir import Graph
from layertune.kernels import profiler_path
from layertune.methods import methods, options_table, tunable_methods, why_not
from layertune.runners.device import DeviceSession
from layertune.runners.pool import Job, run_pool
from layertune.runners.transport import DeviceError, LocalTransport
from layertune.tuner.database import Record, ResultsStore
from layertune.tuner.options import OptionsError, parse_options, shipped_options
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
    assert list(table) == ["reference", "simple", "unrolled", "winograd"]
    assert not table["reference"].tunable and tunable_methods() == ("simple", "unrolled", "winograd")
    assert all(m.params[0].name == "threads" for m in table.values())
    assert table["winograd"].param("winograd_tile").choices == (2, 4)
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


def test_options_readme_holds_the_generated_table():
    readme = (ROOT / "profile_options" / "README.md").read_text()
    start, end = "<!-- methods table: generated -->\n", "\n<!-- end of methods table -->"
    assert readme[readme.index(start) + len(start): readme.index(end)] == options_table()


# -- options and variants ----------------------------------------------------------------

def options(**data):
    return parse_options({"convolution_methods": ["simple", "unrolled", "winograd"], "parallel": [True, False], **data})


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


def test_every_generated_variant_is_accepted_by_the_core():
    opts = options(winograd_parameters=[8], unrolled_parameters={"block_m": [24], "block_k": [64]})
    for layer in (REGULAR, DEPTHWISE, STRIDED):
        for v in layer_variants(layer, opts, 2):
            params = {k: val for k, val in v.items() if k != "method"}
            assert why_not(layer, v["method"], params) is None, v


def test_threads_make_parallel_optional_and_the_sweep_fills_unnamed_parameters():
    opts = parse_options({"convolution_methods": ["winograd"], "threads": [1, 3]})
    assert thread_counts(opts, 8) == (1, 3)
    variants = layer_variants(REGULAR, opts, 8)
    assert sorted({v["winograd_tile"] for v in variants}) == [2, 4]  # the table's sweep
    assert all("nonseparable_channel_depth" not in v for v in variants)  # left to the kernel


@pytest.mark.parametrize("data, fragment", [
    ({"convolution_methods": ["simple"]}, "missing key 'parallel' (or 'threads')"),
    ({"convolution_methods": ["reference"], "parallel": [False]}, "'convolution_methods' must be"),
    ({"convolution_methods": ["simple"], "parallel": [False], "winograd_tiles": [3]}, "winograd_tile: must be 2 or 4"),
    ({"convolution_methods": ["simple"], "parallel": [False], "unrolled_parameters": {"block_n": [1]}},
     "unknown key 'unrolled_parameters.block_n' (known: block_m, block_k)"),
    ({"convolution_methods": ["simple"], "parallel": [False], "simple_parameters": {"threads": [2]}},
     "unknown key 'simple_parameters.threads'"),
    ({"convolution_methods": ["simple"], "threads": [0]}, "'threads': threads: must be an integer in [1, 1024]"),
    ({"convolution_methods": ["simple"], "parallel": [False], "tiles": [2]}, "unknown key 'tiles'"),
])
def test_bad_options_name_the_key(data, fragment):
    with pytest.raises(OptionsError, match=fragment.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]")):
        parse_options(data, "opts.json")


def test_the_shipped_options_parse():
    for name in ("default.json", "quick.json"):
        parse_options(json.loads(shipped_options(name).read_text()), name)


# -- results store and selection ---------------------------------------------------------

def record(layer, variant, median, error=None, target="host", build="b1"):
    return Record(layer, variant, target, build, {"method": variant}, median_ms=median if error is None else None,
                  error=error, repeats=5)


def test_store_resumes_and_a_success_overrides_a_failure(tmp_path):
    path, cache = tmp_path / "results.jsonl", tmp_path / "cache" / "results.jsonl"
    store = ResultsStore(path, cache)
    store.add(record("L1", "simple", None, error="timeout"))
    store.add(record("L1", "simple", 2.0))
    store.add(record("L1", "unrolled", None, error="wrong-answer"))
    with open(path, "a") as f:
        f.write('{"layer": "L1", "variant": "winograd", "ta')  # a line torn by a power loss
    again = ResultsStore(path)
    assert again.measured(("L1", "simple", "host", "b1"))
    assert not again.measured(("L1", "unrolled", "host", "b1"))
    assert again.get(("L1", "winograd", "host", "b1")) is None
    # the user-level cache alone serves another output folder
    other = ResultsStore(tmp_path / "other.jsonl", cache)
    assert other.measured(("L1", "simple", "host", "b1"))


def test_selection_takes_the_fastest_correct_variant_of_this_target_and_build():
    records = [record("L1", "simple", 3.0), record("L1", "unrolled", 2.0), record("L1", "winograd", 1.0, error="wrong-answer"),
               record("L1", "fast-elsewhere", 0.5, target="pi3"), record("L1", "old-build", 0.5, build="b0"),
               record("L2", "simple", 4.0)]
    best = best_records(records, "host", "b1")
    assert best["L1"].variant == "unrolled" and best["L2"].variant == "simple"


def test_variant_keys_and_signatures_are_stable():
    assert variant_key({"method": "winograd", "winograd_tile": 2, "threads": 1}) == "winograd,threads=1,winograd_tile=2"
    model = layertune.load(ROOT / "examples" / "digits" / "digits_cnn.tflite")
    graph: Graph = model.graph
    convs = [n for n in graph.nodes if n.op == "CONV_2D"]
    sig = layer_signature(graph, convs[0])
    assert layer_signature(graph, convs[0]) == sig
    line = layer_line(graph, convs[0], sig).split()
    assert line[0] == "L" and line[1] == sig and len(line) == 2 + 16 + 1  # 16 integers and the activation


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
        store.add(Record.from_profiler(job.layer, dict(job.variants)[line["variant"]], "host", "b", line, device))

    stats = run_pool(sessions, jobs, lambda job: [(k, p) for k, p in job.variants
                                                  if not store.measured(("L1", k, "host", "b"))],
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


def test_a_device_leased_by_another_run_is_busy(tmp_path):
    holder = DeviceSession(LocalTransport(str(tmp_path), "dev-held"), BUILTIN["host"], profiler_path())
    holder.open()
    try:
        other = DeviceSession(LocalTransport(str(tmp_path), "dev-held"), BUILTIN["host"], profiler_path())
        with pytest.raises(DeviceError, match="leased by another run"):
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
                  "ai_edge_litert", "psutil", "sklearn"}


def test_function_local_imports_are_only_heavy_optional_dependencies():
    found = []
    for path in SRC.rglob("*.py"):
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
