"""fine-tune-optimizers with its trials measured on devices: over the sshd on 127.0.0.1 (the host
target, the device's Python being this one), spread over two devices, on pi3_64 under qemu (the
cross-built profiler runs the layertune pipelines; the Python runtimes are refused, since an
emulated device has only the host's Python), and on a device whose Python has no packages."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import IN_CI, leftovers, require, ssh_args
from test_search_runs import MODEL, pipeline_alone, run, search_config, trials

TFLITE = {"type": "kenning.optimizers.tflite.TFLiteCompiler", "parameters": {"target": ["default"]}}
TVM = {"type": "kenning.optimizers.tvm.TVMCompiler", "parameters": {"target": ["llvm"], "opt_level": [3]}}
LAYERTUNE_COMPILER = {"type": "layertune.search.blocks.LayerTuneCompiler", "parameters": {"repeats": [1]}}
RUNTIMES = {"tflite": {"type": "kenning.runtimes.tflite.TFLiteRuntime", "parameters": {"num_threads": [1]}},
            "tvm": {"type": "kenning.runtimes.tvm.TVMRuntime", "parameters": {"num_threads": [1]}},
            "layertune": {"type": "layertune.search.blocks.LayerTuneRuntime", "parameters": {"num_threads": [1]}}}
SAMPLES = 60


def device_config(optimizers: list[dict], runtimes: list[str]) -> dict:
    return search_config(optimizers=optimizers, runtime=[RUNTIMES[r] for r in runtimes], constraints=[],
                         dataset={"type": "layertune.search.blocks.DigitsDataset",
                                  "parameters": {"num_samples": SAMPLES}})


def by_runtime(entries: list[dict]) -> dict[tuple, dict]:
    """(optimizer chain, runtime) -> entry."""
    return {(tuple(o["type"].rsplit(".", 1)[-1] for o in e["pipeline"]["optimizers"]),
             e["pipeline"]["runtime"]["type"].rsplit(".", 1)[-1]): e for e in entries}


def test_trials_measured_on_a_device_over_ssh_match_the_local_search(tmp_path, sshd):
    """Every runtime on the device (LiteRT, TVM, TensorFlow for the baseline with the device's
    Python; layertune with the profiler): the accuracy computed from the outputs brought back is
    the local search's, pipeline for pipeline."""
    cfg = device_config([TFLITE, TVM], ["tflite", "tvm", "layertune"])
    before = leftovers()
    proc, _ = run(cfg, tmp_path, "device", args=(*ssh_args(sshd), "--device_python", sys.executable))
    assert proc.returncode == 0, proc.stderr
    proc_local, _ = run(cfg, tmp_path, "local")
    assert proc_local.returncode == 0, proc_local.stderr
    on_device = json.loads((tmp_path / "device_all_results.json").read_text())
    local = {e["id"]: e for e in json.loads((tmp_path / "local_all_results.json").read_text())}
    device = f"root@127.0.0.1:{sshd.port}"
    ran = [e for e in on_device if e["status"] == "ok"]
    # native, TFLite -> LiteRT / layertune, TFLite -> TVM -> TVM (the other chains are incompatible)
    assert len(ran) == 4 and on_device[0]["baseline"] and on_device[0]["status"] == "ok", proc.stderr
    for e in ran:
        assert e["device"] == device and local[e["id"]].get("device") == "local"
        assert e["metrics"]["accuracy"] == local[e["id"]]["metrics"]["accuracy"] > 0.85, e["description"]
        assert e["metrics"]["session_utilization_cpus_percent_avg_mean"] > 0
        run_file = json.loads((tmp_path / f"device_{e['id']}.json").read_text())
        resources = run_file["resources"]
        assert len(run_file["inference_times"]) == SAMPLES
        assert len(resources["timestamps"]) == len(resources["cpus_percent_avg"]) == len(resources["mem_percent"]) >= 1
    assert all("speedup_vs_native" in e for e in ran[1:])
    assert "on root@127.0.0.1" in proc.stderr  # the log says where each trial runs
    # the best pipeline alone, again on the device (compiled afresh)
    best = json.loads((tmp_path / "device.json").read_text())
    alone = pipeline_alone(str(tmp_path / "device.json"), "--measurements", str(tmp_path / "again.json"),
                           *ssh_args(sshd), "--device_python", sys.executable)
    assert alone.returncode == 0, alone.stderr
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["device"] == device and again["metrics"]["accuracy"] == best["metrics"]["accuracy"]
    assert leftovers() == before  # every lease released, every work directory removed


def test_trials_run_in_parallel_one_per_device(tmp_path, sshd):
    """Two devices (two names for the same sshd: two leases), four trials: both devices measure,
    and trials on the two overlap in time."""
    cfg = device_config([{**TFLITE, "parameters": {"target": ["default", "float16"]}}], ["tflite", "layertune"])
    proc, _ = run(cfg, tmp_path, args=(*ssh_args(sshd, ("127.0.0.1", "localhost")), "--device_python", sys.executable))
    assert proc.returncode == 0, proc.stderr
    entries = trials(tmp_path / "out_all_results.json")
    assert len(entries) == 4 and all(e["status"] == "ok" for e in entries), proc.stderr
    spans = {}
    for e in entries:
        run_file = json.loads((tmp_path / f"out_{e['id']}.json").read_text())
        spans.setdefault(e["device"], []).append((run_file["started_at"], run_file["ended_at"]))
    assert set(spans) == {f"root@127.0.0.1:{sshd.port}", f"root@localhost:{sshd.port}"}
    a, b = spans.values()
    assert any(s1 < e2 and s2 < e1 for s1, e1 in a for s2, e2 in b), spans


def test_layertune_pipelines_on_pi3_64_under_qemu(tmp_path, sshd):
    """The cross-built profiler runs each layertune pipeline (the LayerTuneCompiler tunes on the
    emulated device itself); its outputs are the engine's here, so the accuracy is the local
    engine's. LiteRT and TensorFlow would run on the host's Python: skipped, saying so."""
    for tool in ("qemu-aarch64", "aarch64-linux-gnu-g++"):
        if shutil.which(tool) is None:
            if IN_CI:
                pytest.fail(f"{tool} is required in CI (.ci/run installs it)")
            pytest.skip(f"{tool} is not installed")
    targets = {"pi3_64_qemu": {"base": "pi3_64", "run_prefix": ["qemu-aarch64"], "cpuinfo_regex": ".*"}}
    (tmp_path / "targets.json").write_text(json.dumps(targets))
    cfg = device_config([TFLITE, LAYERTUNE_COMPILER], ["tflite", "layertune"])
    proc, _ = run(cfg, tmp_path, args=(*ssh_args(sshd), "--target", "pi3_64_qemu", "--targets",
                                       str(tmp_path / "targets.json"), "--device_python", sys.executable))
    assert proc.returncode == 0, proc.stderr
    native, *entries = json.loads((tmp_path / "out_all_results.json").read_text())
    assert native["status"] == "skipped" and "emulated device" in native["reason"]
    runs = by_runtime(entries)
    assert runs[(("TFLiteCompiler",), "TFLiteRuntime")]["status"] == "skipped"
    assert "x86_64" in runs[(("TFLiteCompiler",), "TFLiteRuntime")]["reason"]
    layertune_runs = [e for key, e in runs.items() if key[1] == "LayerTuneRuntime" and e["status"] != "skipped"]
    assert len(layertune_runs) == 3 and all(e["status"] == "ok" for e in layertune_runs), proc.stderr

    import layertune
    from layertune.search.blocks import DigitsDataset, KerasModel
    model = KerasModel({"model_path": MODEL}).info()
    data = DigitsDataset({"num_samples": SAMPLES}).load(model)
    engine = layertune.load(MODEL)
    expected = float(np.mean([np.argmax(engine.run(x[None])) == y for x, y in zip(data.x, data.y)]))
    for e in layertune_runs:
        assert e["device"] == f"root@127.0.0.1:{sshd.port}"
        assert e["metrics"]["accuracy"] == pytest.approx(expected, abs=1.5 / SAMPLES), e["description"]


def test_a_device_without_python_packages_still_measures_layertune(tmp_path, sshd):
    """A bare Python on the device (no numpy, no runtime): its Python pipelines are skipped naming
    what is missing, the layertune pipeline runs with the profiler alone."""
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120)
    cfg = device_config([TFLITE], ["tflite", "layertune"])
    proc, _ = run(cfg, tmp_path, args=(*ssh_args(sshd), "--device_python", str(bare / "bin" / "python")))
    assert proc.returncode == 0, proc.stderr
    native, *entries = json.loads((tmp_path / "out_all_results.json").read_text())
    runs = by_runtime(entries)
    for skipped in (native, runs[(("TFLiteCompiler",), "TFLiteRuntime")]):
        assert skipped["status"] == "skipped" and "needs numpy" in skipped["reason"], skipped
    assert runs[(("TFLiteCompiler",), "LayerTuneRuntime")]["status"] == "ok"


def test_no_password_in_a_trial_spec(monkeypatch):
    """The trial process gets the device's password in its environment, never in its spec file."""
    from layertune.runners.devices import Device
    from layertune.search.block import Placement
    from layertune.search.config import parse_config
    from layertune.search.space import enumerate_space
    from layertune.search.trial import trial_spec

    cfg = parse_config(device_config([TFLITE], ["tflite"]), "cfg.json")
    placement = Placement(device=Device("pi.local", "pi", password="s3cret-pw"))
    spec = trial_spec(cfg, enumerate_space(cfg)[0], Path("cache"), 0, placement)
    assert "s3cret-pw" not in json.dumps(spec)
    monkeypatch.setenv("RPI_PASSWORD", "s3cret-pw")
    again = Placement.from_json(json.loads(json.dumps(spec["placement"])))
    assert again.device == placement.device and again.device.password == "s3cret-pw"
    assert "s3cret-pw" not in repr(again)


def test_unusable_devices_are_dropped_before_the_search_and_none_usable_is_one_line(tmp_path, sshd):
    from conftest import free_port

    dead = free_port()  # nothing listens there
    key = ("--username", "root", "--ssh_key", sshd.key, "--known_hosts", sshd.known_hosts,
           "--device_python", sys.executable)
    (tmp_path / "cluster.txt").write_text(f"127.0.0.1:{dead}  # switched off\n127.0.0.1:{sshd.port}\n")
    cfg = device_config([TFLITE], ["layertune"])
    proc, _ = run(cfg, tmp_path, args=("--cluster", str(tmp_path / "cluster.txt"), *key))
    assert proc.returncode == 0, proc.stderr
    assert f"device root@127.0.0.1:{dead} unusable" in proc.stderr
    assert {e["device"] for e in trials(tmp_path / "out_all_results.json")} == {f"root@127.0.0.1:{sshd.port}"}
    proc, _ = run(cfg, tmp_path, "none", args=("--ipaddress", "127.0.0.1", "--port", str(dead), *key))
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()[-1:]
    assert line.startswith("layertune: error: no usable device:") and "cannot connect" in line, proc.stderr
    assert not (tmp_path / "none_all_results.json").exists()  # nothing measured, nothing written
