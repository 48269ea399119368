"""The core under AddressSanitizer + UndefinedBehaviorSanitizer (`-DLAYERTUNE_SANITIZE=ON`, the
whole package built that way into a folder of its own): the kernel, argument and property tests
run again on the sanitized extension; the sanitized profiler computes every method on a grid of
layers (checked against the reference kernel inside the profiler), runs whole plans with their
output checked, and is fed mutated and truncated plan files and job texts — the parsers that
read what comes from outside.
A sanitizer report, a crash, a hang or a wrong answer fails; a clean one-line error (exit 2) is
what bad input must give. The TFLite importer gets the same treatment in Python.

The mutations are seeded (the same inputs every run); the corpus is tests/fuzz_corpus/ (job
texts; the plan seeds are written from the committed example model at test time, so they follow
the plan format) and each run tries FUZZ_INPUTS inputs per parser."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import layertune
from conftest import IN_CI

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).resolve().parent / "fuzz_corpus"
MODEL = ROOT / "examples" / "digits" / "digits_cnn.tflite"
FUZZ_INPUTS = int(os.environ.get("LAYERTUNE_FUZZ_INPUTS", "400"))
SANITIZER_ENV = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=99",
                 "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=98"}


@pytest.fixture(scope="module")
def sanitized(tmp_path_factory) -> Path:
    """The package built with -DLAYERTUNE_SANITIZE=ON into a folder of its own (the extension and
    the profiler), by the same scikit-build-core build as a normal install."""
    if shutil.which("cmake") is None:
        if IN_CI:
            pytest.fail("cmake is required in CI (tools/test_all.sh installs it)")
        pytest.skip("cmake is not installed")
    target = tmp_path_factory.mktemp("asan")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--target", str(target), "--config-settings=cmake.define.LAYERTUNE_SANITIZE=ON",
                           "--config-settings=cmake.build-type=RelWithDebInfo", str(ROOT)],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return target


@pytest.fixture(scope="module")
def profiler(sanitized) -> Path:
    return sanitized / "layertune" / "bin" / "layertune-profiler"


def test_kernel_tests_pass_under_the_sanitizers(sanitized):
    """The kernel, argument and property tests again, on the sanitized extension (the sanitizer
    runtimes preloaded into Python; leak checks off: the interpreter itself keeps its memory)."""
    runtimes = [subprocess.run(["g++", f"-print-file-name={lib}"], capture_output=True, text=True).stdout.strip()
                for lib in ("libasan.so", "libubsan.so")]
    env = {**os.environ, **SANITIZER_ENV, "ASAN_OPTIONS": "detect_leaks=0:exitcode=99", "LD_PRELOAD": ":".join(runtimes),
           "PYTHONPATH": str(sanitized)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
                           "tests/test_kernels.py", "tests/test_api_errors.py", "tests/test_properties.py"],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800, env=env)
    assert "ERROR: AddressSanitizer" not in proc.stderr + proc.stdout and "runtime error:" not in proc.stderr
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    check = subprocess.run([sys.executable, "-c", "import layertune, sys; print(layertune.__file__)"],
                           capture_output=True, text=True, env=env)
    assert check.stdout.startswith(str(sanitized)), check.stdout + check.stderr  # it was the sanitized build


def run(profiler: Path, args: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run([str(profiler), *args], capture_output=True, timeout=timeout,
                              env={**os.environ, **SANITIZER_ENV})
    except subprocess.TimeoutExpired:
        pytest.fail(f"hang: layertune-profiler {' '.join(args)[:200]}")
    # every message must be text: a name from a corrupt file is quoted printably, never raw
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def assert_clean(proc: subprocess.CompletedProcess, allowed: tuple[int, ...], what: str) -> None:
    report = "ERROR: AddressSanitizer" in proc.stderr or "runtime error:" in proc.stderr
    assert not report and proc.returncode in allowed, f"{what}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
    if proc.returncode == 2:
        line = proc.stderr.rstrip("\n")
        assert "\n" not in line and "\r" not in line and line.startswith("layertune-profiler: error:"), proc.stderr


LAYERS = [  # (input NxHxWxC, filters, kernel, stride, groups)
    ("1x9x11x5", 7, "3x3", "1x1", 1), ("2x8x8x16", 20, "3x3", "1x1", 1), ("1x10x10x12", 12, "3x3", "2x2", 12),
    ("1x7x9x8", 8, "5x5", "1x1", 8), ("1x6x6x17", 33, "1x1", "1x1", 1), ("1x12x12x6", 6, "3x3", "1x1", 3),
]


def test_every_method_is_clean_on_the_layer_grid(profiler):
    for shape, filters, kernel, stride, groups in LAYERS:
        for method, params in [("simple", []), ("unrolled", []), ("unrolled", ["--param", "block_k=7"]),
                               ("winograd", ["--param", "winograd_tile=2"]), ("winograd", ["--param", "winograd_tile=4"])]:
            if method == "winograd" and (kernel != "3x3" or stride != "1x1"):
                continue
            for threads in ("1", "2"):
                proc = run(profiler, ["conv", "--input", shape, "--filters", str(filters), "--kernel", kernel, "--stride",
                                      stride, "--groups", str(groups), "--method", method, "--threads", threads,
                                      "--repeats", "1", "--warmup", "0", "--activation", "relu6", *params])
                assert_clean(proc, (0,), f"{method} {params} on {shape} {kernel}/{stride} g{groups}")


@pytest.fixture(scope="module")
def plans(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("plans")
    default, tuned = folder / "digits.ltplan", folder / "digits_winograd.ltplan"
    model = layertune.load(MODEL)
    model.save(default)
    for layer in model.layers:
        if layer.op == "CONV_2D":
            try:
                model.set_kernel(layer.index, "winograd", winograd_tile=2, threads=2)
            except ValueError:
                pass
    model.save(tuned)
    return [default, tuned]


def test_whole_plans_run_clean_with_their_output_checked(profiler, plans):
    for plan in plans:
        for threads in ("1", "2"):
            assert_clean(run(profiler, ["run", "--plan", str(plan), "--threads", threads, "--check", "1", "--repeats", "2"]),
                         (0,), f"{plan.name} at {threads} threads")
    assert_clean(run(profiler, ["compare", "--plans", ",".join(map(str, plans)), "--threads", "1,2", "--rounds", "2",
                                "--layers", "1"]), (0,), "compare")


def mutations(seed: bytes, count: int, rng: random.Random):
    """Truncations, byte flips, overwritten 32-bit fields (sizes, offsets, counts) and spliced runs."""
    for i in range(count):
        data = bytearray(seed)
        kind = i % 4
        if kind == 0:
            yield bytes(data[: rng.randrange(len(data))])
            continue
        for _ in range(rng.randint(1, 8)):
            pos = rng.randrange(len(data))
            if kind == 1:
                data[pos] = rng.randrange(256)
            elif kind == 2 and pos + 4 <= len(data):
                data[pos: pos + 4] = rng.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, rng.randrange(1 << 32)]).to_bytes(4, "little")
            else:
                start = rng.randrange(len(data))
                data[pos: pos + 8] = data[start: start + 8]
        yield bytes(data)


def test_mutated_plans_give_errors_not_crashes(profiler, plans, tmp_path):
    rng = random.Random(1)
    tried = 0
    for plan in plans:
        for i, data in enumerate(mutations(plan.read_bytes(), FUZZ_INPUTS // len(plans), rng)):
            path = tmp_path / "mutant.ltplan"
            path.write_bytes(data)
            proc = run(profiler, ["run", "--plan", str(path), "--repeats", "1", "--warmup", "0", "--check", "1"])
            assert_clean(proc, (0, 2, 3), f"mutant {i} of {plan.name} (kept as {path})")
            tried += 1
    assert tried >= FUZZ_INPUTS - len(plans)


def test_mutated_job_texts_give_errors_not_crashes(profiler):
    rng = random.Random(2)
    seeds = sorted(CORPUS.glob("job_*.txt"))
    assert seeds, "the fuzz corpus has no job texts"
    for seed in seeds:
        for i, data in enumerate(mutations(seed.read_bytes(), FUZZ_INPUTS // len(seeds), rng)):
            text = data.decode("latin-1").replace("\0", " ")
            proc = run(profiler, ["job", "--text", text, "--repeats", "1", "--rounds", "1", "--warmup", "0",
                                  "--memory-mib", "64"])
            assert_clean(proc, (0, 2), f"mutant {i} of {seed.name}: {text[:300]!r}")


def test_mutated_tflite_models_give_one_line_errors():
    from layertune.graph.tflite_import import import_tflite_bytes
    rng = random.Random(3)
    seed = MODEL.read_bytes()
    for i, data in enumerate(mutations(seed, FUZZ_INPUTS, rng)):
        try:
            graph = import_tflite_bytes(data, "mutant", f"mutant {i}")
        except ValueError as exc:
            assert "\n" not in str(exc) and str(exc), (i, str(exc))
            continue
        layertune.Model(graph)  # an import that succeeds gives a plan the engine accepts or refuses cleanly
