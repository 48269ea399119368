"""TVMCompiler with meta_schedule tuning (a tiny trial budget), on the bundled digits model:
real TVM tuning (builder and runner processes, xgboost cost model), checked against LiteRT."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import pytest

from conftest import require

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "examples" / "digits" / "digits_cnn.tflite"


def test_tuning_reaches_every_task_and_keeps_the_outputs(tmp_path):
    for module in ("tvm", "xgboost", "cloudpickle", "ai_edge_litert", "sklearn"):
        require(module)
    from layertune.search import blocks

    info = blocks.TFLiteModel({"model_path": str(MODEL)}).info()
    data = blocks.DigitsDataset({"num_samples": 16}).load(info)
    trials = 6
    (tmp_path / "tvm").mkdir()
    out = blocks.TVMCompiler({"tuning_trials": trials, "tuning_seed": 1}).compile(MODEL, data, tmp_path / "tvm")

    db = tmp_path / "tvm" / "meta_schedule"
    workloads = (db / "database_workload.json").read_text().splitlines()
    records = [json.loads(line) for line in (db / "database_tuning_record.json").read_text().splitlines()]
    assert len(workloads) == 6  # the digits CNN's fused functions: 4 convs, mean, dense
    assert 1 <= len(records) <= trials
    # the budget is split over the tasks, so even 6 trials measure a candidate of every one
    assert {r[0] for r in records} == set(range(len(workloads)))
    assert all(r[1][1] and min(r[1][1]) > 0 for r in records)  # measured run times

    tuned = blocks.TVMRuntime({"num_threads": 1}).load(out)
    reference = blocks.TFLiteRuntime({"num_threads": 1}).load(MODEL)
    for x in data.x:
        want, got = reference(x[None]), tuned(x[None])
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * float(np.abs(want).max()))



def test_tuning_a_cross_target_is_refused_before_any_work(tmp_path):
    require("tvm")
    from layertune.search import blocks

    other = "x86_64" if platform.machine() == "aarch64" else "aarch64"
    target = {"kind": "llvm", "mtriple": f"{other}-linux-gnu"}
    with pytest.raises(ValueError, match=f"tuning measures candidates on this .* machine; the target is {other}"):
        blocks.TVMCompiler({"tuning_trials": 4, "target": target}).compile(MODEL, None, tmp_path)
    assert not (tmp_path / "meta_schedule").exists()


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_onnx_models_compile_and_match_onnxruntime(tmp_path, layout):
    """ONNXCompiler (tf2onnx) -> TVMCompiler from ONNX in either conv layout -> TVMRuntime, against
    onnxruntime on the same .onnx; the ONNX model block reads the model's shapes."""
    for module in ("tvm", "tf2onnx", "onnxruntime", "tensorflow", "sklearn"):
        require(module)
    from layertune.search import blocks

    keras = ROOT / "examples" / "digits" / "digits_cnn.keras"
    (tmp_path / "onnx").mkdir()
    onnx_path = blocks.ONNXCompiler({}).compile(keras, None, tmp_path / "onnx")
    info = blocks.ONNXModel({"model_path": str(onnx_path)}).info()
    assert info.format == "onnx" and info.input_shape == (1, 8, 8, 1) and info.num_classes == 10
    data = blocks.DigitsDataset({"num_samples": 8}).load(info)
    (tmp_path / "tvm").mkdir()
    lib = blocks.TVMCompiler({"conv2d_data_layout": layout}).compile(onnx_path, data, tmp_path / "tvm")
    run_tvm = blocks.TVMRuntime({"num_threads": 1}).load(lib)
    run_ort = blocks.ONNXRuntime({}).load(onnx_path)
    for x in data.x:
        want = run_ort(x[None])
        np.testing.assert_allclose(run_tvm(x[None]), want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_channels_first_models_get_channels_first_data():
    from layertune.search.blocks import DigitsDataset
    from layertune.search.block import ModelInfo

    data = DigitsDataset({"num_samples": 4}).load(ModelInfo(Path("m.onnx"), "onnx", (1, 3, 16, 12), 10, 1.0))
    assert data.x.shape == (4, 3, 16, 12)
    np.testing.assert_array_equal(data.x[:, 0], data.x[:, 2])  # grey images, channels repeated


@pytest.mark.parametrize("target, machine, elf_class, hard_float", [
    ("pi3_64", 183, 2, False),  # EM_AARCH64, 64-bit
    ("pi3", 40, 1, True),  # EM_ARM, 32-bit, hard-float ABI (what arm-linux-gnueabihf links)
])
def test_a_device_trial_cross_compiles_for_the_target(tmp_path, target, machine, elf_class, hard_float):
    """TVMCompiler placed on an ARM target: a plain "llvm" becomes the target's triple and the
    library is linked by its cross compiler, so the device's TVM runtime can load it."""
    import shutil

    from conftest import IN_CI
    from layertune.search.block import Placement
    from layertune.search.tvm_compiler import TVMCompiler
    from layertune.tuner.targets import BUILTIN

    require("tvm")
    if shutil.which(BUILTIN[target].compiler) is None:
        if IN_CI:
            pytest.fail(f"{BUILTIN[target].compiler} is required in CI (.ci/run installs it)")
        pytest.skip(f"{BUILTIN[target].compiler} is not installed")
    compiler = TVMCompiler({"target": "llvm"})
    compiler.placement = Placement(BUILTIN[target])
    header = compiler.compile(MODEL, None, tmp_path).read_bytes()[:52]
    assert header[:4] == b"\x7fELF" and header[4] == elf_class
    assert int.from_bytes(header[18:20], "little") == machine
    if elf_class == 1:
        flags = int.from_bytes(header[36:40], "little")
        assert bool(flags & 0x400) == hard_float  # EF_ARM_ABI_FLOAT_HARD
    tuned = TVMCompiler({"target": "llvm", "tuning_trials": 8})
    tuned.placement = Placement(BUILTIN[target])
    assert "RPC runner" in tuned.unavailable()  # tuning would time candidates on this machine
