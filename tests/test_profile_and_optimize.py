"""profile_and_optimize end to end, through the real CLI: this machine, SSH to an sshd on
127.0.0.1, ARM builds under qemu over that SSH, a pool with a device killed mid-run, bad input."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import layertune
from conftest import IN_CI, leftovers, require, served_by, ssh_args, start_sshd, stop_sshd
from layertune.tuner.targets import BUILTIN

ROOT = Path(__file__).resolve().parent.parent
SMALL_OPTIONS = {"convolution_methods": ["simple", "unrolled", "winograd"], "parallel": [False],
                 "winograd_parameters": [16], "winograd_tiles": [2]}


@pytest.fixture
def workspace(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(ROOT / "examples" / "digits" / "digits_cnn.tflite", models)
    (tmp_path / "small.json").write_text(json.dumps(SMALL_OPTIONS))
    return tmp_path


def run_cli(args: list[str], cache: Path, timeout: float = 600, **env_extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, LAYERTUNE_CACHE=str(cache), **env_extra)
    return subprocess.run([sys.executable, str(ROOT / "tools" / "profile_and_optimize.py"), *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def tune(tmp_path: Path, model: str, options: dict, repeats: int, *extra: str, **env: str) -> tuple[dict, str]:
    """profile_and_optimize over tmp_path/models with these options (and extra arguments, and
    environment) into tmp_path/out (its results store there): `model`'s summary and what the
    command printed."""
    (tmp_path / "options.json").write_text(json.dumps(options))
    out = tmp_path / "out"
    proc = run_cli(["--model_path", str(tmp_path / "models"), "--options", str(tmp_path / "options.json"),
                    "--output_path", str(out), "--repeats", str(repeats), *extra], tmp_path / "cache", **env)
    assert proc.returncode == 0, proc.stderr
    return json.loads((out / model / "summary.json").read_text()), proc.stdout


def check_outputs(out: Path, model: str = "digits_cnn") -> dict:
    folder = out / model
    for name in ("optimized.ltplan", "report.md", "summary.json", "layers.png", "whole_model.png"):
        assert (folder / name).is_file(), f"{name} missing"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["whole_model"]["check"]["error"] is None
    assert all(row["chosen"] for row in summary["layers"]), "a layer has no measured variant"
    # the optimized plan runs in Python too and gives the model's answer
    x = np.random.default_rng(0).uniform(0, 1, (1, 8, 8, 1)).astype(np.float32)
    want = layertune.load(ROOT / "examples" / "digits" / "digits_cnn.tflite").run(x)
    np.testing.assert_allclose(layertune.load(folder / "optimized.ltplan").run(x), want, rtol=1e-4, atol=1e-4)
    return summary


def assert_never_slower(whole: dict) -> None:
    """The written plan is measured faster than (or within noise of) every layertune baseline; it
    is the tuned plan only when that beat the strongest baseline beyond noise, and the strongest
    baseline's fused form (written on a tie: `load` fuses an untuned model) or the baseline itself
    otherwise."""
    for name, r in whole["ratios"].items():
        if not name.startswith("litert"):
            assert r["lo"] <= 1.0, f"the written plan was measured slower than {name}: {r}"
    source = whole["written"].split("+", 1)[0]
    if source == "tuned" or source.startswith("confirmed"):
        if "+" not in whole["written"]:
            assert whole["ratios"][whole["strongest_baseline"]]["hi"] < 1.0
    else:
        assert source == whole["strongest_baseline"] or whole["ratios"][whole["strongest_baseline"]]["hi"] < 1.0


def test_host_run_then_resume(workspace):
    out = workspace / "out"
    args = ["--model_path", str(workspace / "models"), "--options", str(workspace / "small.json"),
            "--output_path", str(out), "--repeats", "3", "--include_exercise_models"]
    before = leftovers()
    proc = run_cli(args, workspace / "cache")
    assert proc.returncode == 0, proc.stderr
    summary = check_outputs(out)
    whole = summary["whole_model"]
    baselines = {f"{plan}@1" for plan in ("default", "uniform-simple", "uniform-unrolled", "uniform-winograd")}
    assert baselines <= set(whole["latency_ms"]) and {"tuned", "litert@1"} <= set(whole["latency_ms"])
    assert set(whole["ratios"]) == set(whole["latency_ms"]) - {whole["written"]}
    assert whole["strongest_baseline"] in baselines
    assert_never_slower(whole)
    lines = (out / "results.jsonl").read_text().splitlines()
    planned = int(re.search(r"(\d+) variants on target", proc.stderr).group(1))
    assert len(lines) == planned and all(json.loads(line)["target"] == "host" for line in lines)  # each once
    report = (out / "digits_cnn" / "report.md").read_text()
    assert "| # | op |" in report and "speedup" in report
    assert all(f"| {name} |" in report for name in whole["latency_ms"])  # every baseline, with its ratio
    # the same command again: nothing is measured twice
    proc = run_cli(args, workspace / "cache")
    assert proc.returncode == 0, proc.stderr
    assert "already measured" in proc.stderr
    assert (out / "results.jsonl").read_text().splitlines() == lines
    assert leftovers() == before


def test_int8_model_is_tuned_over_the_int8_methods(tmp_path):
    """A quantized model: its int8 convolutions are timed over the method table's int8 rows (an
    ELL options file names none: every int8 method), each variant checked exactly against
    int8_reference in the profiler; the written plan names int8 methods and computes what the
    default int8 engine computes, bit for bit, but for the layers whose float32 twin it chose
    (check_written_int8_plan); no uniform float plan is timed (none changes a layer)."""
    require("tensorflow")
    from model_zoo import digits_cnn, int8_tflite

    model, x_test, _, x_train = digits_cnn()
    models = tmp_path / "models"
    models.mkdir()
    tflite = models / "digits_int8.tflite"
    tflite.write_bytes(int8_tflite(model, x_train))
    summary, _ = tune(tmp_path, "digits_int8", {**SMALL_OPTIONS, "parallel": [False, True]}, repeats=3)
    out = tmp_path / "out"
    whole = summary["whole_model"]
    assert whole["check"]["error"] is None
    assert_never_slower(whole)
    assert not any(name.startswith("uniform-") for name in whole["latency_ms"])
    # timed in the layers' own arithmetic (XNNPACK's requantization, the default)
    assert summary["layers"] and all(row["signature"].endswith("-int8-xnnpack") and row["chosen"]["method"].startswith("int8_")
                                     for row in summary["layers"])
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    int8_records = [r for r in records if r["layer"].endswith("-int8-xnnpack")]
    assert all(r["error"] is None and r["max_abs_diff"] == 0 and r["max_abs_ref"] > 10 for r in int8_records)
    assert {r["params"].get("tile_rows") for r in int8_records if r["params"]["method"] == "int8_gemm"} >= {4, 7, 8, 12}
    assert {r["params"]["method"] for r in int8_records} == {"int8_gemm", "int8_depthwise"}
    # the per-layer precision choice: every int8 layer's float32 twin timed over the float methods
    twins = {r["layer"] for r in records if r not in int8_records}
    assert len(twins) == len(summary["layers"]) and all(r["error"] is None for r in records if r not in int8_records)
    assert all(row["float_time_ms"] > 0 and row["precision"] in ("int8", "float32") for row in summary["layers"])
    assert "float32 twin" in (out / "digits_int8" / "report.md").read_text()
    check_written_int8_plan(summary, out / "digits_int8" / "optimized.ltplan", layertune.load(tflite), "xnnpack",
                            x_test[:20])
    # In TFLite's arithmetic: its own measurements (other signatures), and a plan that keeps it.
    summary, _ = tune(tmp_path, "digits_int8", {**SMALL_OPTIONS, "parallel": [False]}, 1, "--requantization", "tflite")
    assert summary["layers"] and all(row["signature"].endswith("-int8") for row in summary["layers"])
    check_written_int8_plan(summary, out / "digits_int8" / "optimized.ltplan",
                            layertune.load(tflite, requantization="tflite"), "tflite", x_test[:20])


def check_written_int8_plan(summary: dict, path, reference, requantization: str, xs: np.ndarray) -> None:
    """The written plan's convolutions run int8 methods in `requantization`'s arithmetic and its
    output is `reference`'s, bit for bit — but for the layers whose float32 twin the tuner chose:
    where the int8 GEMM has neither VNNI nor AMX (AVX2's vpmaddwd, an AMD EPYC) a twin can win on
    the whole model, and the mixed plan's float32 layers round otherwise (within one output step
    for 99% of the values; test_int8_layers_are_chosen_in_float32_where_that_measured_faster)."""
    plan = layertune.load(path)
    convs = [n for n in plan.graph.nodes if n.op in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    in_float = {row["name"] for row in summary["layers"] if row["precision"] == "float32"}
    assert {n.name for n in convs if not n.kernel["method"].startswith("int8_")} == in_float
    assert all(n.attrs["requantization"] == requantization for n in convs if n.name not in in_float)
    got = np.concatenate([plan.run(x[None].astype(np.float32)) for x in xs])
    want = np.concatenate([reference.run(x[None].astype(np.float32)) for x in xs])
    if in_float:
        assert summary["whole_model"]["written"].startswith("tuned-mixed")
        lsb = plan.graph.tensors[plan.graph.outputs[0]].quantization.scale
        assert np.mean(np.abs(got - want) <= lsb * (1 + 1e-6)) >= 0.99
    else:
        np.testing.assert_array_equal(got, want)


def test_int8_layers_are_chosen_in_float32_where_that_measured_faster(tmp_path):
    """The per-layer precision choice. With the int8 GEMM forced onto its portable code
    (LAYERTUNE_INT8_ISA=portable: what a CPU without VNNI runs) the float32 kernels are the faster
    on this machine: the tuner builds the mixed plan (those layers in float32 between DEQUANTIZE and
    QUANTIZE, the others in int8), times it as a whole against the baselines, and the report and
    summary say what each layer computes in. With 'precisions': ['int8'] no twin is timed."""
    require("tensorflow")
    from model_zoo import digits_cnn, int8_tflite
    from tflite_helpers import litert_run

    model, x_test, _, x_train = digits_cnn()
    (tmp_path / "models").mkdir()
    tflite = tmp_path / "models" / "digits_int8.tflite"
    tflite.write_bytes(int8_tflite(model, x_train))
    summary, _ = tune(tmp_path, "digits_int8", {**SMALL_OPTIONS, "parallel": [True]}, 3, LAYERTUNE_INT8_ISA="portable")
    whole, rows = summary["whole_model"], summary["layers"]
    assert all(row["float_time_ms"] is not None for row in rows)
    in_float = [row for row in rows if row["float_time_ms"] < 0.9 * row["time_ms"]]
    assert in_float, rows  # the portable int8 kernels lose to AVX-512 float32 ones
    assert "tuned-mixed" in whole["latency_ms"]  # timed as a whole, beside the baselines
    plan = layertune.load(tmp_path / "out" / "digits_int8" / "optimized.ltplan")
    dtypes = {n.name: plan.graph.tensors[n.outputs[0]].dtype for n in plan.graph.nodes}
    assert all(dtypes[row["name"]] == row["precision"] for row in rows)
    if whole["written"].startswith("tuned-mixed"):
        assert {row["name"] for row in rows if row["precision"] == "float32"} == {row["name"] for row in in_float}
    q = plan.graph.tensors[plan.graph.inputs[0]].quantization
    oq = plan.graph.tensors[plan.graph.outputs[0]].quantization
    xq = np.clip(np.round(x_test[:20] / q.scale + q.zero_point), -128, 127).astype(np.int8)
    ours = np.concatenate([np.round(plan.run(x[None]) / oq.scale + oq.zero_point) for x in xq])
    theirs = np.concatenate([litert_run(tflite.read_bytes(), [x[None]])[0] for x in xq])
    assert np.mean(np.abs(ours - theirs) <= 1) >= 0.99  # float32 layers round otherwise, a LSB here and there
    summary, _ = tune(tmp_path, "digits_int8", {**SMALL_OPTIONS, "parallel": [True], "precisions": ["int8"]}, 1)
    assert all(row["float_time_ms"] is None and row["precision"] == "int8" for row in summary["layers"])


def test_fused_plans_are_timed_against_the_unfused_chain(tmp_path):
    """A model with swish and a residual add: its verification times the chosen plan fused (every
    form, and each form alone) beside the plan itself; a fused plan is written only when it was
    measured faster, and then the plan and the report say which groups it fused."""
    tf = require("tensorflow")
    from tflite_helpers import convert_keras, litert_run
    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((24, 24, 8))
    y = tf.keras.layers.Conv2D(16, 3, padding="same", activation="swish")(inp)
    y = tf.keras.layers.Add()([tf.keras.layers.Conv2D(16, 3, padding="same")(y), y])
    y = tf.keras.layers.Dense(5)(tf.keras.layers.GlobalAveragePooling2D()(y))
    flatbuffer = convert_keras(tf.keras.Model(inp, y))
    models = tmp_path / "models"
    models.mkdir()
    (models / "swishnet.tflite").write_bytes(flatbuffer)
    whole = tune(tmp_path, "swishnet", SMALL_OPTIONS, repeats=3)[0]["whole_model"]
    out = tmp_path / "out"
    fused = [n for n in whole["latency_ms"] if "+" in n]
    base = fused[0].split("+")[0]
    assert sorted(fused) == sorted(f"{base}+{form}" for form in ("fused", "swish", "add")), whole["latency_ms"]
    assert base in whole["latency_ms"]  # timed beside the unfused chain, in the same rounds
    assert_never_slower(whole)
    plan = layertune.load(out / "swishnet" / "optimized.ltplan")
    epilogues = {n.attrs.get("epilogue") for n in plan.graph.nodes} - {None}
    if "+" in whole["written"]:
        assert whole["fused"] and epilogues and "Fused groups" in (out / "swishnet" / "report.md").read_text()
    else:
        assert not whole["fused"] and not epilogues
    x = np.random.default_rng(0).uniform(-1, 1, (1, 24, 24, 8)).astype(np.float32)
    want = litert_run(flatbuffer, [x])[0]
    np.testing.assert_allclose(plan.run(x), want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_no_approximate_layer_is_written_at_a_zero_output_error(tmp_path):
    """amx_bf16x3 (an approximate method) in the options with max_output_error 0: whatever the
    tuned plan chose, the written plan has no layer on it, no uniform baseline is made of it, and
    the report says what the output-error gate did (on a CPU without AMX the method is left out)."""
    from model_zoo import application_tflite
    from layertune.methods import methods, unavailable_methods
    from layertune.tuner.accuracy import approximate_layers
    models = tmp_path / "models"
    models.mkdir()
    (models / "mobilenet_v2.tflite").write_bytes(application_tflite("MobileNetV2", 32))
    summary, _ = tune(tmp_path, "mobilenet_v2", {"convolution_methods": ["unrolled", "amx_bf16x3"], "parallel": [False],
                                                 "max_output_error": 0}, repeats=2)
    whole = summary["whole_model"]
    assert methods()["amx_bf16x3"].approximate and not any("amx" in name for name in whole["latency_ms"])
    plan = layertune.load(tmp_path / "out" / "mobilenet_v2" / "optimized.ltplan")
    assert not approximate_layers(plan.graph)
    chosen = sum(1 for r in summary["layers"] if r["chosen"]["method"] == "amx_bf16x3")
    assert chosen == 0 if "amx_bf16x3" in unavailable_methods() else chosen > 0  # tuned alone, it is fast
    if chosen:
        assert whole["accuracy"]["approximate_layers"] == chosen and whole["accuracy"]["kept"] == 0
        assert "approximate layers" in (tmp_path / "out" / "mobilenet_v2" / "report.md").read_text()
    assert_never_slower(whole)


def test_a_variant_much_slower_in_the_model_is_never_kept(tmp_path):
    """Only `unrolled` in the options: on MobileNetV2's depthwise layers it is far slower than the
    default (`simple`); neither the uniform-unrolled plan nor unrolled on a depthwise layer is kept."""
    from model_zoo import application_tflite
    models = tmp_path / "models"
    models.mkdir()
    (models / "mobilenet_v2.tflite").write_bytes(application_tflite("MobileNetV2", 32))
    summary, printed = tune(tmp_path, "mobilenet_v2", {"convolution_methods": ["unrolled"], "parallel": [False]}, repeats=2)
    whole = summary["whole_model"]
    assert whole["ratios"]["uniform-unrolled@1"]["hi"] < 1.0  # measured, and much slower than what was written
    depthwise = [r for r in summary["layers"] if r["op"] == "DEPTHWISE_CONV_2D"]
    assert depthwise and all(r["final"]["method"] != "unrolled" for r in depthwise)
    assert_never_slower(whole)
    assert "strongest baseline" in printed and "uniform-unrolled@1" in printed


def test_host_over_ssh(workspace, sshd):
    out = workspace / "out"
    before = leftovers()
    proc = run_cli(["--model_path", str(workspace / "models"), "--options", str(workspace / "small.json"),
                    "--output_path", str(out), "--repeats", "2", *ssh_args(sshd)], workspace / "cache")
    assert proc.returncode == 0, proc.stderr
    summary = check_outputs(out)
    assert summary["whole_model"]["device"] == f"root@127.0.0.1:{sshd.port}"
    devices = {json.loads(line)["device"] for line in (out / "results.jsonl").read_text().splitlines()}
    assert devices == {f"root@127.0.0.1:{sshd.port}"}
    # each connect + lease + upload is paid three times: core count, the pool, then one session
    # that serves every model's in-model timing and verification
    assert proc.stderr.count("leased, profiler uploaded") == 3, proc.stderr
    # the profiling phase runs from the first ready device to the last measurement: no device is
    # busy longer than it, and setup and cleanup are reported apart from it
    pool = summary["pool"]
    (busy,) = pool["busy_seconds"].values()
    assert 0 < busy <= pool["wall_seconds"] and 0 < pool["utilization"] <= 1
    assert set(pool["setup_seconds"]) == set(pool["cleanup_seconds"]) == set(pool["busy_seconds"])
    assert leftovers() == before  # the per-run directory and the lease are gone


QEMU_TARGETS = {
    "pi3_64": ["qemu-aarch64"],
    "pi3": ["qemu-arm", "-cpu", "max"],
    "pi0": ["qemu-arm", "-cpu", "arm1176"],
}


@pytest.mark.parametrize("base", list(QEMU_TARGETS))
def test_arm_target_cross_built_and_run_under_qemu_over_ssh(base, workspace, sshd):
    for tool in (QEMU_TARGETS[base][0], BUILTIN[base].compiler):
        if shutil.which(tool) is None:
            if IN_CI:
                pytest.fail(f"{tool} is required in CI (.ci/run installs it)")
            pytest.skip(f"{tool} is not installed")
    # qemu-user shows the host's /proc/cpuinfo: the test target accepts it
    targets = {f"{base}_qemu": {"base": base, "run_prefix": QEMU_TARGETS[base], "cpuinfo_regex": ".*"}}
    (workspace / "targets.json").write_text(json.dumps(targets))
    out = workspace / "out"
    proc = run_cli(["--model_path", str(workspace / "models"), "--options", str(workspace / "small.json"),
                    "--output_path", str(out), "--repeats", "1", "--warmup", "0", "--target", f"{base}_qemu",
                    "--targets", str(workspace / "targets.json"), *ssh_args(sshd)], workspace / "cache", timeout=900)
    assert proc.returncode == 0, proc.stderr
    summary = check_outputs(out)
    assert summary["target"] == f"{base}_qemu"
    assert (workspace / "cache" / "profilers").is_dir()  # the cross build is cached


def test_pool_survives_a_device_killed_mid_run(workspace, sshd, tmp_path):
    """Device 2 is a second sshd; once profiling is under way, every connection it serves is
    killed (a real fault: its profiler and session die). Its job must move to device 1."""
    second = start_sshd(tmp_path / "sshd2")
    (second.dir / "authorized_keys").write_text(Path(sshd.key + ".pub").read_text())  # one client key for both
    try:
        cluster = workspace / "cluster.txt"
        cluster.write_text(f"root@127.0.0.1:{sshd.port}\nroot@localhost:{second.port}\n")
        known = workspace / "known_hosts"
        known.write_text(Path(sshd.known_hosts).read_text() + Path(second.known_hosts).read_text())
        # jobs many and long enough (here and in --rounds) that device 2 gets some however slow
        # its set-up, and is still busy when the killer looks
        options = dict(SMALL_OPTIONS, winograd_parameters=[8, 16, 32], winograd_tiles=[2, 4], parallel=[True, False],
                       gemm_tiles=[62, 42, 43, 81])
        (workspace / "pool.json").write_text(json.dumps(options))
        out = workspace / "out"
        killed = threading.Event()

        def kill_second_device():
            """Once device 2 is running a profiling job, kill every process its sshd serves (once:
            the pool must notice and move the job; cleanup may reconnect). A sighting whose job
            ended before the kill reached it does not count: watch for the next one."""
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                tree = served_by(second.pid)
                jobs = [pid for pid, args in tree.items() if "layertune-profiler job" in args]
                if jobs:
                    hit = set()
                    for pid in tree:
                        try:
                            os.kill(pid, signal.SIGKILL)
                            hit.add(pid)
                        except ProcessLookupError:
                            pass
                    if hit & set(jobs):
                        killed.set()
                        return
                time.sleep(0.005)

        killer = threading.Thread(target=kill_second_device)
        killer.start()
        before = leftovers()
        proc = run_cli(["--model_path", str(workspace / "models"), "--options", str(workspace / "pool.json"),
                        "--output_path", str(out), "--repeats", "20", "--rounds", "6",
                        "--cluster", str(cluster), "--username", "root",
                        "--ssh_key", sshd.key, "--known_hosts", str(known), "--parallel_run", "2"], workspace / "cache")
        killer.join()
        assert killed.is_set(), f"the second device was never seen running a job:\n{proc.stderr[-3000:]}"
        assert proc.returncode == 0, proc.stderr
        summary = check_outputs(out)
        failed = summary["pool"]["failed_devices"]
        assert list(failed) == [f"root@localhost:{second.port}"], failed
        records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
        measured = {(r["layer"], r["variant"]) for r in records if r["error"] is None}
        planned = int(re.search(r"(\d+) variants on target", proc.stderr).group(1))
        assert len(measured) == planned, f"{planned - len(measured)} variants lost"
        assert summary["pool"]["busy_seconds"][f"root@localhost:{second.port}"] > 0  # it did work before dying
        assert leftovers() == before  # no lease, no work directory left behind
    finally:
        stop_sshd(second)


def _fails(args: list[str], workspace: Path, fragment: str) -> None:
    out = workspace / "out"
    proc = run_cli([*args, "--output_path", str(out)], workspace / "cache", timeout=300)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert lines and fragment in lines[-1], proc.stderr
    assert lines[-1].startswith("layertune: error:") and "Traceback" not in proc.stderr
    assert not list(out.rglob("optimized.ltplan")) and not list(out.rglob("summary.json"))


def test_bad_input_gives_one_line_errors(workspace):
    models, small = str(workspace / "models"), str(workspace / "small.json")
    _fails(["--model_path", str(workspace / "nope"), "--options", small], workspace, "does not exist")
    (workspace / "empty").mkdir()
    _fails(["--model_path", str(workspace / "empty"), "--options", small], workspace, "no models")
    (workspace / "corrupt").mkdir()
    (workspace / "corrupt" / "bad.tflite").write_bytes(b"\x10\x00\x00\x00TFL3" + b"\x00" * 10)
    _fails(["--model_path", str(workspace / "corrupt"), "--options", small], workspace, "bad.tflite")
    (workspace / "unknown.json").write_text(json.dumps({**SMALL_OPTIONS, "convolution_method": ["simple"]}))
    _fails(["--model_path", models, "--options", str(workspace / "unknown.json")], workspace, "unknown key 'convolution_method'")
    (workspace / "empty_list.json").write_text(json.dumps({**SMALL_OPTIONS, "winograd_parameters": []}))
    _fails(["--model_path", models, "--options", str(workspace / "empty_list.json")], workspace, "winograd_parameters")
    _fails(["--model_path", models, "--options", small, "--platform_regex", "NoSuchProcessor"], workspace,
           "does not match")
    _fails(["--model_path", models, "--options", small, "--target", "pi5"], workspace, "unknown target 'pi5'")
    _fails(["--model_path", models, "--options", small, "--apikey", "k"], workspace, "do not apply")
    _fails(["--model_path", models, "--options", small, "--ci_width", "0"], workspace, "--ci_width")


def test_unreachable_devices_give_one_line_errors(workspace, sshd, tmp_path):
    models, small = str(workspace / "models"), str(workspace / "small.json")
    closed = str(__import__("conftest").free_port())
    _fails(["--model_path", models, "--options", small, "--ipaddress", "127.0.0.1", "--port", closed,
            "--username", "root", "--ssh_key", sshd.key, "--known_hosts", sshd.known_hosts], workspace, "cannot connect")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "stranger")], check=True)
    _fails(["--model_path", models, "--options", small, *ssh_args(sshd)[:-4], "--ssh_key", str(tmp_path / "stranger"),
            "--known_hosts", sshd.known_hosts], workspace, "authentication failed")


def test_onnx_model_with_a_dynamic_batch_is_tuned(tmp_path):
    """An ONNX export (the bundled digits CNN through tf2onnx, batch left dynamic) is tuned like a
    TFLite model once --input_shape fixes the batch, and the written plan gives onnxruntime's answer."""
    tf = require("tensorflow")
    tf2onnx = require("tf2onnx")
    ort = require("onnxruntime")
    models = tmp_path / "models"
    models.mkdir()
    keras_model = tf.keras.models.load_model(ROOT / "examples" / "digits" / "digits_cnn.keras", compile=False)
    spec = (tf.TensorSpec((None, 8, 8, 1), tf.float32, name="pixels"),)
    # (from_function: tf2onnx's from_keras cannot name the outputs of a reloaded Keras 3 model)
    tf2onnx.convert.from_function(tf.function(lambda x: keras_model(x)), input_signature=spec, opset=13,
                                  output_path=str(models / "digits.onnx"))
    out = tmp_path / "out"
    args = ["--model_path", str(models), "--options", str(tmp_path / "small.json"), "--output_path", str(out),
            "--repeats", "2"]
    (tmp_path / "small.json").write_text(json.dumps(SMALL_OPTIONS))
    proc = run_cli(args, tmp_path / "cache")
    assert proc.returncode != 0 and "input 'pixels' has dynamic dimensions 0" in proc.stderr
    assert "--input_shape pixels=Nx8x8x1" in proc.stderr and not out.exists()
    proc = run_cli([*args, "--input_shape", "pixels=1x8x8x1"], tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "digits" / "summary.json").read_text())
    assert summary["whole_model"]["check"]["error"] is None
    assert len(summary["layers"]) >= 2 and all(row["chosen"] for row in summary["layers"])
    assert_never_slower(summary["whole_model"])
    x = np.random.default_rng(0).uniform(0, 1, (1, 8, 8, 1)).astype(np.float32)
    sess = ort.InferenceSession(str(models / "digits.onnx"), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"pixels": x})[0]
    got = layertune.load(out / "digits" / "optimized.ltplan", threads=2).run(x)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max())
