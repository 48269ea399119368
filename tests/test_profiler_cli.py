"""The standalone layertune-profiler executable (the seed of the on-device profiler)."""

from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path

import numpy as np
import pytest

import layertune
import layertune.methods

DIGITS = Path(__file__).resolve().parent.parent / "examples" / "digits" / "digits_cnn.tflite"

LAYER = ["--input", "1x10x12x8", "--filters", "16", "--kernel", "3x3", "--repeats", "3", "--warmup", "1"]


def profiler(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(layertune.profiler_path()), *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("method, params", [
    ("simple", []), ("unrolled", ["--param", "block_m=24"]),
    ("winograd", ["--param", "winograd_tile=2", "--param", "nonseparable_channel_depth=4"]),
])
def test_conv_times_one_variant_and_checks_it(method, params):
    proc = profiler("conv", *LAYER, "--method", method, "--threads", "2", "--activation", "relu", *params)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["error"] is None
    assert record["method"] == method and record["threads"] == 2 and record["repeats"] == 3
    assert 0 < record["min_ms"] <= record["median_ms"]
    assert record["max_abs_diff"] <= 1e-4 * record["max_abs_ref"]
    assert record["flops"] == 2 * 10 * 12 * 16 * 9 * 8


def test_info_and_peak():
    info = json.loads(profiler("info").stdout)
    assert info["isa"] == layertune._core.isa() and info["simd_lanes"] >= 4
    assert platform.machine().lower().startswith(info["arch"])  # what the host compares a device's Python with
    assert info["unavailable_methods"] == layertune.methods.unavailable_methods()  # as the bindings say
    peak = json.loads(profiler("peak", "--seconds", "0.05").stdout)
    assert peak["peak_gflops"] > 0


@pytest.mark.parametrize("args, fragment", [
    (["conv", *LAYER, "--method", "winograd", "--stride", "2x2"], "stride"),
    (["conv", *LAYER, "--method", "unrolled", "--param", "winograd_tile=2"], "winograd_tile"),
    (["conv", *LAYER], "--method"),
    (["conv", *LAYER, "--method", "simple", "--kernel", "3"], "--kernel"),
    (["conv", *LAYER, "--method", "simple", "--colour", "red"], "--colour"),
    (["tune"], "unknown command"),
])
def test_bad_arguments_give_one_line_and_exit_2(args, fragment):
    proc = profiler(*args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], proc.stderr


def test_infer_runs_a_plan_on_given_samples(tmp_path):
    """What a search trial runs on a device: each sample's output is the engine's on that sample
    (and each differs: the samples are really read), with each run's time, CPU and memory."""
    model = layertune.load(DIGITS)
    model.save(tmp_path / "m.ltplan")
    x = np.random.default_rng(3).uniform(0, 16, (5, *model.input_shapes[0][1:])).astype(np.float32)
    x.tofile(tmp_path / "in.f32")
    proc = profiler("infer", "--plan", str(tmp_path / "m.ltplan"), "--inputs", str(tmp_path / "in.f32"), "--count", "5",
                    "--outputs", str(tmp_path / "out.f32"), "--threads", "2", "--warmup", "1")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    got = np.fromfile(tmp_path / "out.f32", np.float32).reshape(5, -1)
    want = np.stack([np.asarray(model.run(x[i: i + 1])).reshape(-1) for i in range(5)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert len({row.tobytes() for row in got}) == 5
    assert len(record["times_s"]) == 5 and all(t > 0 for t in record["times_s"])
    # CPU and memory every 50 ms and after the last run (these runs take well under 50 ms)
    assert len(record["cpus_percent_avg"]) == len(record["mem_percent"]) == len(record["timestamps"]) >= 1
    assert record["timestamps"][-1] >= sum(record["times_s"]) and max(record["cpus_percent_avg"]) > 0
    assert 0 < min(record["mem_percent"]) < 100 and record["peak_rss_bytes"] > 0
    x[:4].tofile(tmp_path / "short.f32")  # fewer samples than --count: one line, nothing written
    proc = profiler("infer", "--plan", str(tmp_path / "m.ltplan"), "--inputs", str(tmp_path / "short.f32"), "--count", "5",
                    "--outputs", str(tmp_path / "short_out.f32"))
    assert proc.returncode == 2 and "does not hold exactly 5 samples" in proc.stderr.strip()
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "short_out.f32").exists()


def test_run_checks_kernel_overrides_against_a_saved_reference(tmp_path):
    """What the output-error gate runs (tuner/accuracy.py): `--kernels` replaces nodes' kernel
    choices (the output is then that of a plan saved with them), `--reference` keeps the reference
    outputs between runs (the file is read back, not recomputed: a wrong one gives a wrong answer),
    and bad overrides or a reference of another size are one-line errors."""
    model = layertune.load(DIGITS, fuse=False)
    model.save(tmp_path / "m.ltplan")
    convs = [i for i, n in enumerate(model.graph.nodes) if n.op == "CONV_2D"]
    assert len(convs) >= 2
    for i in convs:
        model.set_kernel(model.graph.nodes[i].name, "simple")
    model.save(tmp_path / "w.ltplan")
    spec = ";".join(f"{i}=simple,threads=1" for i in convs)
    ref = tmp_path / "ref.f32"

    def run(plan: str, *extra: str) -> dict:
        check = [] if "--check" in extra else ["--check", "1"]
        proc = profiler("run", "--plan", str(tmp_path / plan), "--repeats", "1", *check, *extra)
        assert proc.returncode in (0, 3), proc.stderr
        return json.loads(proc.stdout)

    saved = run("w.ltplan", "--reference", str(ref))
    assert ref.stat().st_size == 4 * model.output_shapes[0][-1] and saved["error"] is None
    overridden = run("m.ltplan", "--kernels", spec, "--reference", str(ref))
    assert overridden["max_abs_diff"] == saved["max_abs_diff"] > 0  # the same kernels: the same output
    assert run("m.ltplan", "--reference", str(ref))["max_abs_diff"] > 0
    np.zeros(model.output_shapes[0][-1], np.float32).tofile(ref)  # read back, not recomputed
    assert run("m.ltplan", "--reference", str(ref))["error"] == "wrong-answer"
    for args, fragment in [(["--kernels", "999=simple"], "out of range"), (["--kernels", f"{convs[0]}"], "expected I=method"),
                           (["--kernels", f"{convs[0]}=nosuch"], "unknown method 'nosuch'"),
                           (["--kernels", f"{convs[1]}=winograd"], "winograd needs stride 1")]:  # what the engine got
        proc = profiler("run", "--plan", str(tmp_path / "m.ltplan"), *args)
        assert proc.returncode == 2 and fragment in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    np.zeros(3, np.float32).tofile(ref)
    proc = profiler("run", "--plan", str(tmp_path / "m.ltplan"), "--check", "1", "--reference", str(ref))
    assert proc.returncode == 2 and "the plan's outputs are" in proc.stderr
    # --check N: N seeded inputs, the first the timed one; the file holds each one's outputs, and
    # the worst difference is over all of them (the others' alone differ from the first's)
    several = tmp_path / "ref3.f32"
    three = run("w.ltplan", "--check", "3", "--reference", str(several))
    assert several.stat().st_size == 3 * 4 * model.output_shapes[0][-1]
    assert three["max_abs_diff"] == run("w.ltplan", "--check", "3", "--reference", str(several))["max_abs_diff"]
    first = run("w.ltplan")["max_abs_diff"]
    assert three["max_abs_diff"] >= first > 0
    refs = np.fromfile(several, np.float32).reshape(3, -1)
    assert not np.array_equal(refs[0], refs[1]) and not np.array_equal(refs[1], refs[2])
    proc = profiler("run", "--plan", str(tmp_path / "m.ltplan"), "--check", "1", "--reference", str(several))
    assert proc.returncode == 2 and "the plan's outputs are" in proc.stderr
    proc = profiler("run", "--plan", str(tmp_path / "m.ltplan"), "--check", "-1")
    assert proc.returncode == 2 and "--check must be >= 0" in proc.stderr
