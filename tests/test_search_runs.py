"""fine-tune-optimizers end to end with the real libraries (TensorFlow, LiteRT, TVM, layertune)
on the bundled digits model: every trial in its own process."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require

ROOT = Path(__file__).resolve().parent.parent
MODEL = str(ROOT / "examples" / "digits" / "digits_cnn.keras")


def search_config(**overrides) -> dict:
    cfg = {
        "optimization_parameters": {"strategy": "grid_search", "optimizable": ["optimizers", "runtime"],
                                    "metric": "inferencetime_mean", "policy": "min", "trial_timeout_s": 300},
        "model_wrapper": {"type": "layertune.search.blocks.KerasModel", "parameters": {"model_path": MODEL}},
        "dataset": {"type": "layertune.search.blocks.DigitsDataset", "parameters": {"num_samples": 120}},
        "optimizers": [{"type": "kenning.optimizers.tflite.TFLiteCompiler", "parameters": {"target": ["default", "int8"]}}],
        "runtime": [{"type": "kenning.runtimes.tflite.TFLiteRuntime", "parameters": {"num_threads": [1]}},
                    {"type": "kenning.runtimes.tvm.TVMRuntime", "parameters": {"num_threads": [1]}},
                    {"type": "layertune.search.blocks.LayerTuneRuntime", "parameters": {"num_threads": [0, 2]}}],
        "constraints": ["accuracy >= 0.9"],
    }
    for key, value in overrides.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) and key in cfg else value
    return cfg


def run(cfg: dict, tmp: Path, name: str = "out", cwd: Path = ROOT, args: tuple[str, ...] = (),
        env: dict | None = None) -> tuple[subprocess.CompletedProcess, Path]:
    for module in ("tensorflow", "ai_edge_litert", "optuna", "tvm", "sklearn"):
        require(module)
    (tmp / f"{name}_cfg.json").write_text(json.dumps(cfg))
    out = tmp / f"{name}.json"
    proc = subprocess.run([sys.executable, "-m", "layertune.cli", "fine-tune-optimizers", "--json-cfg",
                           str(tmp / f"{name}_cfg.json"), "--output", str(out), *args], capture_output=True, text=True,
                          timeout=1200, cwd=cwd, env=env)
    return proc, out


def trials(all_results: Path) -> list[dict]:
    """The search's trials, the native baseline (always the first entry) checked and left out."""
    native, *entries = json.loads(all_results.read_text())
    assert native["baseline"] and native["pipeline"]["optimizers"] == [] and "NativeRuntime" in native["description"]
    return entries


def pipeline_alone(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "layertune.cli", "test-pipeline", *args], capture_output=True,
                          text=True, timeout=600, cwd=ROOT)


def test_grid_with_incompatible_and_failing_pipelines(tmp_path):
    proc, out = run(search_config(), tmp_path)
    assert proc.returncode == 0, proc.stderr
    entries = trials(tmp_path / "out_all_results.json")
    by_status = {}
    for e in entries:
        by_status.setdefault(e["status"], []).append(e)
    assert len(entries) == 2 * 4  # 2 TFLite targets x 4 runtimes
    # the native baseline (the Keras model in TensorFlow) ran, and every run is compared with it
    native = json.loads((tmp_path / "out_all_results.json").read_text())[0]
    assert native["status"] == "ok" and native["metrics"]["accuracy"] >= 0.9
    assert all(e["speedup_vs_native"] > 0 and e["size_reduction_vs_native"] > 0 for e in entries if e["status"] == "ok")
    int8 = [e for e in entries if e["status"] == "ok" and e["pipeline"]["optimizers"][0]["parameters"]["target"] == "int8"]
    assert int8 and all(e["size_reduction_vs_native"] > 2 for e in int8)  # int8 weights against the .keras file
    skipped = by_status["skipped"]
    assert skipped and all("TVMRuntime runs tvm models" in e["reason"] for e in skipped)
    failed = by_status["failed"]  # LayerTuneRuntime with num_threads 0
    assert len(failed) == 2 and all("threads" in e["reason"] for e in failed)
    ok = by_status["ok"]
    assert len(ok) == 4
    for e in ok:
        m = e["metrics"]
        assert 0 < m["inferencetime_median"] < 0.1 and m["compiled_model_size"] > 1000
        assert 0 <= m["session_utilization_cpus_percent_avg_mean"] <= 100
        assert 0.9 <= m["accuracy"] <= 1 and m["top_5_accuracy"] >= m["accuracy"]
        run_file = Path(f"{tmp_path}/out_{e['id']}.json")
        detail = json.loads(run_file.read_text())
        assert len(detail["inference_times"]) == 120 and len(detail["confusion_matrix"]) == 10
    fp32 = [e for e in ok if e["pipeline"]["optimizers"][0]["parameters"]["target"] == "default"
            and "TFLiteRuntime" in e["pipeline"]["runtime"]["type"]]
    assert fp32[0]["metrics"]["accuracy"] >= 0.9  # the trained model, fp32 TFLite
    best = json.loads(out.read_text())
    assert best["metrics"]["inferencetime_mean"] == min(e["metrics"]["inferencetime_mean"] for e in ok
                                                        if e["satisfies_constraints"])
    assert any(e["pareto"] for e in ok)
    # re-running the same command resumes: nothing is run again
    proc2, _ = run(search_config(), tmp_path)
    assert proc2.returncode == 0 and "trial 1/" not in proc2.stderr
    assert all(e.get("resumed") for e in trials(tmp_path / "out_all_results.json")
               if e["status"] == "ok")
    # OUT.json is Kenning's: the best pipeline with its model and dataset, which runs again as it is
    # (compiled afresh): the same pipeline, the same answers
    assert set(best["pipeline"]) == {"model_wrapper", "dataset", "optimizers", "runtime"}
    assert best["pipeline"]["model_wrapper"]["parameters"]["model_path"] == MODEL
    proc3 = pipeline_alone(str(out), "--measurements", str(tmp_path / "again.json"))
    assert proc3.returncode == 0, proc3.stderr
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["id"] == best["id"] and again["metrics"]["accuracy"] == best["metrics"]["accuracy"]
    assert "inferencetime_mean = " in proc3.stdout and "search recorded" in proc3.stdout
    run_file = json.loads((tmp_path / f"out_{best['id']}.json").read_text())
    assert run_file["pipeline"] == best["pipeline"]
    # a pipeline without its model (written by hand, or by an older layertune): one line naming
    # the file and the option
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"pipeline": {k: best["pipeline"][k] for k in ("optimizers", "runtime")}}))
    proc4 = pipeline_alone(str(bare), "--measurements", str(tmp_path / "none.json"))
    assert proc4.returncode == 2 and not (tmp_path / "none.json").exists()
    (line,) = proc4.stderr.strip().splitlines()
    assert str(bare) in line and "--json-cfg" in line


def test_a_hanging_trial_times_out_and_is_recorded(tmp_path):
    # A real hang: the "image" is a named pipe, so reading it blocks until the trial is killed.
    images = tmp_path / "images" / "zero"
    images.mkdir(parents=True)
    os.mkfifo(images / "blocked.png")
    cfg = search_config(dataset={"type": "layertune.search.blocks.ImageFolderDataset",
                                 "parameters": {"dataset_root": str(tmp_path / "images")}},
                        runtime=[{"type": "layertune.search.blocks.LayerTuneRuntime", "parameters": {"num_threads": 1}}],
                        optimizers=[], constraints=[])
    cfg["optimization_parameters"]["trial_timeout_s"] = 20
    proc, out = run(cfg, tmp_path)
    assert proc.returncode == 2 and "no pipeline succeeded" in proc.stderr.strip().splitlines()[-1]
    (entry,) = trials(tmp_path / "out_all_results.json")
    assert entry["status"] == "failed" and entry["reason"].startswith("timeout")
    assert not out.exists()


@pytest.mark.parametrize("strategy", ["random_search", "tpe"])
def test_seeded_random_and_tpe_are_reproducible(strategy, tmp_path):
    cfg = search_config(optimization_parameters={"strategy": strategy, "n_trials": 3, "seed": 5,
                                                 "metric": "accuracy", "policy": "max"}, constraints=[])
    proc, out = run(cfg, tmp_path, "a")
    assert proc.returncode == 0, proc.stderr
    first = [e["id"] for e in trials(tmp_path / "a_all_results.json")]
    assert len(first) == 3 and len(set(first)) == 3
    # the same seed elsewhere: the same pipelines in the same order
    (tmp_path / "again").mkdir()
    proc, _ = run(cfg, tmp_path / "again", "a")
    assert proc.returncode == 0, proc.stderr
    assert [e["id"] for e in trials(tmp_path / "again/a_all_results.json")] == first
    best = json.loads(out.read_text())
    ok = [e for e in trials(tmp_path / "a_all_results.json") if e["status"] == "ok"]
    assert best["metrics"]["accuracy"] == max(e["metrics"]["accuracy"] for e in ok)  # policy max


def test_generate_scenarios_writes_every_pipeline(tmp_path):
    require("tensorflow")
    cfg = search_config(runtime=[{"type": "layertune.search.blocks.LayerTuneRuntime", "parameters": {"num_threads": [1]}},
                                 {"type": "kenning.runtimes.tvm.TVMRuntime", "parameters": {"num_threads": [1]}}],
                        optimization_parameters={"strategy": "random_search", "n_trials": 1, "seed": 0})
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    proc = subprocess.run([sys.executable, "-m", "layertune.cli", "fine-tune-optimizers", "--json-cfg", str(tmp_path / "cfg.json"),
                           "--output", str(tmp_path / "o.json"), "--generate-scenarios", str(tmp_path / "scenarios")],
                          capture_output=True, text=True, timeout=600)
    assert f"wrote 4 scenarios to {tmp_path / 'scenarios'}" in proc.stdout, proc.stderr
    scenarios = [json.loads(p.read_text()) for p in sorted((tmp_path / "scenarios").glob("scenario_*.json"))]
    assert len(scenarios) == 4  # 2 targets x 2 runtimes
    assert sum("incompatible" in s for s in scenarios) == 2  # tflite -> TVMRuntime
    assert all(s["model_wrapper"]["parameters"]["model_path"] == MODEL and s["runtime"] for s in scenarios)
    # a scenario runs alone; an incompatible one is refused with its reason
    paths = sorted((tmp_path / "scenarios").glob("scenario_*.json"))
    runnable = next(p for p, s in zip(paths, scenarios) if "incompatible" not in s)
    proc = pipeline_alone(str(runnable), "--measurements", str(tmp_path / "alone.json"))
    assert proc.returncode == 0, proc.stderr
    alone = json.loads((tmp_path / "alone.json").read_text())
    assert alone["status"] == "ok" and alone["metrics"]["accuracy"] >= 0.9 and "search recorded" not in proc.stdout
    blocked = next(p for p, s in zip(paths, scenarios) if "incompatible" in s)
    proc = pipeline_alone(str(blocked), "--measurements", str(tmp_path / "never.json"))
    assert proc.returncode == 2 and "TVMRuntime runs tvm models" in proc.stderr


def test_bad_config_is_one_line(tmp_path):
    cfg = search_config(optimization_parameters={"metric": "fps"})
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    proc = subprocess.run([sys.executable, "-m", "layertune.cli", "fine-tune-optimizers", "--json-cfg",
                           str(tmp_path / "cfg.json"), "--output", str(tmp_path / "o.json")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "unknown metric 'fps'" in line and "inferencetime_mean" in line


def test_layertune_compiler_chain_and_the_report(tmp_path):
    cfg = search_config(optimizers=[{"type": "layertune.search.blocks.LayerTuneCompiler",
                                     "parameters": {"options": "quick.json", "repeats": 2}}],
                        runtime=[{"type": "layertune.search.blocks.LayerTuneRuntime", "parameters": {"num_threads": [1, 2]}}])
    proc, out = run(cfg, tmp_path)
    assert proc.returncode == 0, proc.stderr
    entries = trials(tmp_path / "out_all_results.json")
    assert [e["status"] for e in entries] == ["ok", "ok"]
    assert all(e["metrics"]["accuracy"] >= 0.9 for e in entries)  # the tuned plan keeps the model's answers
    for name in ("out_report.md", "out_report_time_vs_quality.png", "out_report_time_histograms.png",
                 "out_report_cpu_memory.png", "out_report_confusion_matrix.png"):
        assert (tmp_path / name).is_file(), name
    # `layertune report` on the same measurements
    runs = [str(p) for p in tmp_path.glob("out_*.json") if len(p.stem) == len("out_") + 10]
    proc = subprocess.run([sys.executable, "-m", "layertune.cli", "report", "--measurements", *runs, "--report-path",
                           str(tmp_path / "build" / "report.md")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "build" / "report.md").read_text()
    assert text.count("LayerTune") >= 2 and (tmp_path / "build" / "report_time_vs_quality.png").is_file()


def kenning_config(optimizers: list[tuple[str, dict]], runtimes: list[tuple[str, dict]]) -> dict:
    return {"optimization_parameters": {"strategy": "grid_search", "optimizable": ["optimizers", "runtime"],
                                        "metric": "inferencetime_mean", "policy": "min"},
            "optimizers": [{"type": t, "parameters": p} for t, p in optimizers],
            "runtime": [{"type": t, "parameters": p} for t, p in runtimes]}


_TVM_TFLITE = dict(
    optimizers=[("{ns}.tflite.TFLiteCompiler", {"target": ["default"], "compiled_model_path": ["./build/compiled_model.tflite"]}),
                ("{ns}.tvm.TVMCompiler", {"target": ["llvm"], "compiled_model_path": ["./build/compiled_model.tar"],
                                          "opt_level": [3], "conv2d_data_layout": ["NHWC", "NCHW"]})],
    runtimes=[("kenning.runtimes.tvm.TVMRuntime", {"save_model_path": ["./build/compiled_model.tar"]}),
              ("kenning.runtimes.tflite.TFLiteRuntime", {"save_model_path": ["./build/compiled_model.tflite"]})])


def _with_namespace(spec: dict, ns: str) -> dict:
    return kenning_config([(t.format(ns=ns), p) for t, p in spec["optimizers"]], spec["runtimes"])


# Kenning's three documented search configs (scripts/optimizationconfigs/), but for their model_wrapper
# (a Keras MobileNetV2 trained on the pet dataset, a magic-wand model) and dataset, which are swapped
# for the bundled digits model and scikit-learn's digits.
KENNING_CONFIGS = {
    "tvm-tflite-tensorflow-pet-dataset": _with_namespace(_TVM_TFLITE, "kenning.compilers"),
    "tvm-tflite-tensorflow-magic-wand": _with_namespace(_TVM_TFLITE, "kenning.optimizers"),
    "onnx-tflite-tensorflow-pet-dataset": kenning_config(
        [("kenning.compilers.tflite.TFLiteCompiler", {"target": ["default"], "compiled_model_path": ["./build/compiled_model.tflite"]}),
         ("kenning.compilers.onnx.ONNXCompiler", {"compiled_model_path": ["./build/compiled_model.onnx"]})],
        [("kenning.runtimes.onnx.ONNXRuntime", {"save_model_path": ["./build/compiled_model.onnx"],
                                                "execution_providers": [["CPUExecutionProvider"], ["CUDAExecutionProvider"]]}),
         ("kenning.runtimes.tflite.TFLiteRuntime", {"save_model_path": ["./build/compiled_model.tflite"]})]),
}


@pytest.mark.parametrize("name", sorted(KENNING_CONFIGS))
def test_kennings_search_configs_run(name, tmp_path):
    """Each of Kenning's documented configs, model and dataset swapped for local blocks: validated
    as they are, run to completion with nothing failed; a runtime runs only the artifact its
    save_model_path names; each run's artifact lands at compiled_model_path with the run index
    prefixed (a .tar path gets TVM's .tar export, which TVMRuntime links on load); the CUDA provider
    is skipped with the reason; every pipeline classifies like the fp32 TFLite one."""
    require("onnxruntime")
    require("tf2onnx")
    cfg = {**KENNING_CONFIGS[name],
           "model_wrapper": {"type": "layertune.search.blocks.KerasModel", "parameters": {"model_path": MODEL}},
           "dataset": {"type": "layertune.search.blocks.DigitsDataset", "parameters": {"num_samples": 120}}}
    proc, out = run(cfg, tmp_path, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    entries = trials(tmp_path / "out_all_results.json")
    assert not [e for e in entries if e["status"] == "failed"], [e["reason"] for e in entries if e["status"] == "failed"]
    ok = {i: e for i, e in enumerate(entries) if e["status"] == "ok"}
    runtimes = {e["pipeline"]["runtime"]["type"].rsplit(".", 1)[-1] for e in ok.values()}
    if "onnx" in name:
        assert len(entries) == 4 * 3 and runtimes == {"ONNXRuntime", "TFLiteRuntime"}
        assert sorted(e["description"].split(" => ")[0].count("->") for e in ok.values()) == [0, 0, 1]
        assert all(e["status"] == "skipped" for e in entries if "CUDAExecutionProvider" in e["description"])
        assert any("CUDAExecutionProvider is not available" in e["reason"] for e in entries)
    else:  # chains [T], [V] x 2 layouts, [T, V] x 2, [V, T] x 2; TVM takes the TFLite model
        assert len(entries) == 7 * 2 and runtimes == {"TVMRuntime", "TFLiteRuntime"} and len(ok) == 3
    for i, e in ok.items():
        suffix = {"TFLiteRuntime": ".tflite", "ONNXRuntime": ".onnx", "TVMRuntime": ".tar"}[
            e["pipeline"]["runtime"]["type"].rsplit(".", 1)[-1]]
        assert (tmp_path / "build" / f"{i}_compiled_model{suffix}").is_file()
    accuracies = [e["metrics"]["accuracy"] for e in ok.values()]
    assert min(accuracies) >= 0.9 and max(accuracies) - min(accuracies) <= 0.02


def test_kenning_parameters_that_cannot_apply_skip_with_the_reason(tmp_path):
    """Kenning's parameters are accepted with Kenning's values; those that cannot apply here skip
    their trial naming the parameter; a Kenning target string is a TVM 0.27 target."""
    base = {"model_wrapper": {"type": "layertune.search.blocks.KerasModel", "parameters": {"model_path": MODEL}},
            "dataset": {"type": "layertune.search.blocks.DigitsDataset", "parameters": {"num_samples": 40}}}
    tflite = {**base, **kenning_config(
        [("kenning.compilers.tflite.TFLiteCompiler", {"target": "default", "model_framework": "keras",
                                                      "dataset_percentage": 0.5})],
        [("kenning.runtimes.tflite.TFLiteRuntime", {"batch_size": [1, 2], "delegates": [[], ["libnosuchdelegate.so"]],
                                                    "disable_performance_measurements": False})])}
    tflite["optimization_parameters"]["optimizable"] = ["runtime"]
    proc, _ = run(tflite, tmp_path, name="tflite", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    entries = trials(tmp_path / "tflite_all_results.json")
    assert [e["status"] for e in entries].count("ok") == 1 and len(entries) == 4
    reasons = " | ".join(e["reason"] for e in entries)
    assert "batch_size 2" in reasons and "delegate libnosuchdelegate.so cannot be loaded" in reasons
    cpu = "llvm -mcpu=core-avx2" if platform.machine() == "x86_64" else "llvm"
    tvm = {**base, **kenning_config(
        [("kenning.compilers.tflite.TFLiteCompiler", {"target": ["default", "edgetpu"], "location": ["host", "target"]}),
         ("kenning.compilers.tvm.TVMCompiler", {"target": cpu, "model_framework": "tflite"})],
        [("kenning.runtimes.tvm.TVMRuntime", {"use_tvm_vm": [True, False], "target_device_context": "cpu"})])}
    proc, _ = run(tvm, tmp_path, name="tvm", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    entries = trials(tmp_path / "tvm_all_results.json")
    assert not [e for e in entries if e["status"] == "failed"], [e["reason"] for e in entries]
    ok = [e for e in entries if e["status"] == "ok"]
    assert len(ok) == 1 and ok[0]["pipeline"]["optimizers"][1]["parameters"]["target"] == cpu
    reasons = " | ".join(e["reason"] for e in entries)
    assert "target 'edgetpu'" in reasons and "location 'target'" in reasons and "use_tvm_vm false" in reasons
