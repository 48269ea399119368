"""fine-tune-optimizers foundations: Kenning-compatible configs, the search space, and the
strategies (one shared contract, as Optuna's samplers share theirs)."""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import require
from layertune.search.config import METRICS, ConfigError, load_config, parse_config
from layertune.search.space import enumerate_space, incompatibility
from layertune.search.strategies import GridSearch, RandomSearch, TPESearch, make_strategy

BASE = {
    "optimization_parameters": {"strategy": "grid_search", "optimizable": ["optimizers", "runtime"],
                                "metric": "inferencetime_mean", "policy": "min"},
    "model_wrapper": {"type": "layertune.search.blocks.KerasModel", "parameters": {"model_path": "m.keras"}},
    "dataset": {"type": "layertune.search.blocks.DigitsDataset", "parameters": {"num_samples": 50}},
    "optimizers": [
        {"type": "kenning.optimizers.tflite.TFLiteCompiler", "parameters": {"target": ["default", "int8"]}},
        {"type": "kenning.optimizers.tvm.TVMCompiler", "parameters": {"target": ["llvm"], "opt_level": [3]}},
    ],
    "runtime": [
        {"type": "kenning.runtimes.tflite.TFLiteRuntime", "parameters": {"num_threads": [1, 2]}},
        {"type": "kenning.runtimes.tvm.TVMRuntime", "parameters": {"num_threads": [1]}},
        {"type": "layertune.search.blocks.LayerTuneRuntime", "parameters": {"num_threads": [1, 2]}},
    ],
}


def config(**changes):
    data = copy.deepcopy(BASE)
    for key, value in changes.items():
        data[key] = value
    return data


def test_kenning_config_with_aliases_parses(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(BASE))
    cfg = load_config(path)
    assert [b.spec.name for b in cfg.optimizers] == ["TFLiteCompiler", "TVMCompiler"]
    assert [b.spec.name for b in cfg.runtimes] == ["TFLiteRuntime", "TVMRuntime", "LayerTuneRuntime"]
    assert cfg.metric == "inferencetime_mean" and cfg.policy == "min"


def test_grid_space_is_kennings_grid_and_compatibility_has_reasons():
    cfg = parse_config(BASE)
    space = enumerate_space(cfg)
    # chains (T), (V), (T,V), (V,T) with T having 2 targets: 2 + 1 + 2 + 2 = 7; runtimes 2 + 1 + 2 = 5
    assert len(space) == 35 and len(set(space)) == 35
    ok = [p for p in space if incompatibility(p, "keras") is None]
    descriptions = sorted(p.describe() for p in ok)
    assert all(d.startswith("TFLiteCompiler") for d in descriptions)
    assert any("TVMCompiler" in d and "TVMRuntime" in d for d in descriptions)  # keras -> tflite -> tvm
    reasons = {incompatibility(p, "keras") for p in space} - {None}
    assert "TVMCompiler takes tflite/onnx models, the chain gives it keras" in reasons
    assert any(r.startswith("TFLiteRuntime runs tflite models") for r in reasons)


def test_not_optimizable_blocks_take_their_first_values():
    cfg = parse_config(config(optimization_parameters={**BASE["optimization_parameters"], "optimizable": ["runtime"]}))
    space = enumerate_space(cfg)
    assert {p.optimizers[0].params["target"] for p in space} == {"default"}
    assert all(len(p.optimizers) == 2 for p in space)  # the listed chain, in order


@pytest.mark.parametrize("change, fragment", [
    ({"extra": 1}, "unknown key 'extra'"),
    ({"optimization_parameters": {"metric": "speed"}}, "unknown metric 'speed'"),
    ({"optimization_parameters": {"strategy": "annealing"}}, "strategy"),
    ({"optimization_parameters": {"strategy": "tpe"}}, "n_trials"),
    ({"optimization_parameters": {"policy": "best"}}, "policy"),
    ({"optimization_parameters": {"optimizable": ["everything"]}}, "optimizable"),
    ({"dataset": {"type": "kenning.datasets.pet_dataset.PetDataset", "parameters": {}}},
     "PetDataset downloads its data, and layertune runs offline (no data set can be fetched): use "
     "layertune.search.blocks.ImageFolderDataset"),
    ({"dataset": {"type": "kenning.datasets.no_such.Dataset", "parameters": {}}}, "unknown dataset"),
    ({"model_wrapper": {"type": "kenning.modelwrappers.classification.tensorflow_pet_dataset.TensorFlowPetDatasetMobileNetV2",
                        "parameters": {"model_path": "kenning:///models/classification/pet.h5"}}},
     "'model_wrapper.parameters.model_path': kenning:///models/classification/pet.h5 is a resource Kenning downloads"),
    ({"optimizers": [{"type": "layertune.search.blocks.TFLiteCompiler", "parameters": {"target": ["int4"]}}]}, "'int4' is not one of"),
    ({"optimizers": [{"type": "layertune.search.blocks.TFLiteCompiler", "parameters": {"bits": [8]}}]}, "not a parameter of TFLiteCompiler"),
    ({"optimizers": [{"type": "layertune.search.blocks.TVMCompiler", "parameters": {"opt_level": []}}]}, "empty list"),
    ({"optimizers": [{"type": "layertune.search.blocks.TVMCompiler", "parameters": {"tuning_trials": [8, -1]}}]},
     "'optimizers[0].parameters.tuning_trials': -1 is below the minimum 0"),
    ({"runtime": [{"type": "layertune.search.blocks.TFLiteRuntime", "parameters": {"num_threads": ["two"]}}]}, "wrong type"),
    ({"model_wrapper": {"type": "layertune.search.blocks.KerasModel", "parameters": {}}}, "model_path' is required"),
    ({"constraints": ["accuracy >= lots"]}, "constraints"),
    ({"runtime": []}, "lists no runtime"),
])
def test_bad_configs_get_errors_naming_the_key(change, fragment):
    data = config()
    for key, value in change.items():
        if key == "optimization_parameters":
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        parse_config(data, "cfg.json")


def test_unknown_metric_lists_the_valid_ones():
    with pytest.raises(ConfigError) as info:
        parse_config(config(optimization_parameters={"metric": "fps"}))
    assert all(m in str(info.value) for m in METRICS)


def test_constraints_parse():
    cfg = parse_config(config(constraints=["accuracy >= 0.95", "compiled_model_size <= 4e6"]))
    assert cfg.constraints == [("accuracy", ">=", 0.95), ("compiled_model_size", "<=", 4e6)]


def strategies(space_cfg, budget: int, seed: int):
    space = enumerate_space(space_cfg)
    return {"grid": (GridSearch(space), len(space)), "random": (RandomSearch(space, budget, seed), budget),
            "tpe": (TPESearch(space_cfg, budget, seed, "minimize"), budget)}


@pytest.mark.parametrize("name", ["grid", "random", "tpe"])
def test_strategy_contract(name):
    """Proposals come from the space, never repeat, stay within budget, tolerate failures and
    are reproducible for a seed."""
    if name == "tpe":
        require("optuna")
    cfg = parse_config(BASE)
    space = set(enumerate_space(cfg))

    def run(seed):
        strategy, budget = strategies(cfg, 12, seed)[name]
        asked = []
        while (p := strategy.ask()) is not None:
            asked.append(p)
            failed = incompatibility(p, "keras") is not None or len(asked) % 5 == 0  # failures are data
            strategy.tell(p, None if failed else float(len(p.optimizers)) + p.runtime.params.get("num_threads", 1))
        return asked, budget

    asked, budget = run(7)
    assert asked and set(asked) <= space
    assert len(asked) == len(set(asked)) and len(asked) <= budget
    if name != "grid":
        assert len(asked) == budget  # a budget below the space size is used in full
    assert run(7)[0] == asked  # seeded: reproducible


def test_make_strategy_follows_the_config():
    require("optuna")
    assert isinstance(make_strategy(parse_config(BASE)), GridSearch)
    tpe = config(optimization_parameters={**BASE["optimization_parameters"], "strategy": "tpe", "n_trials": 5})
    assert isinstance(make_strategy(parse_config(tpe)), TPESearch)


def test_the_bundled_example_config_stays_valid():
    """examples/digits/search.json is what the README runs: it parses, and its grid holds the
    pipelines the README's table lists (fp32 / int8 on every runtime, TVM untuned and tuned)."""
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    cfg = load_config(root / "examples" / "digits" / "search.json")
    space = enumerate_space(cfg)
    runnable = [p for p in space if not incompatibility(p, "keras")]
    assert (len(space), len(runnable)) == (60, 12)
    tuned = [p for p in runnable if any(s.params.get("tuning_trials") for s in p.optimizers)]
    assert len(tuned) == 2 and all(p.runtime.name == "TVMRuntime" for p in tuned)
    assert (root / cfg.model_wrapper.params["model_path"]).is_file()


def test_every_class_path_in_the_docs_names_a_real_block_class():
    import importlib
    from pathlib import Path

    from layertune.search.block import KINDS, REGISTRY, resolve

    root = Path(__file__).resolve().parent.parent
    text = "\n".join(p.read_text() for p in [root / "README.md", *(root / "docs").glob("*.md")])
    paths = set(re.findall(r"(?:layertune|kenning)\.[a-z_.]+\.[A-Z][A-Za-z0-9]+", text))
    assert {f"layertune.search.blocks.{name}" for name in REGISTRY} <= paths  # every block is documented
    for path in paths:
        cls = next((c for kind in KINDS if (c := resolve(path, kind))), None)
        assert cls is not None, f"{path} names no block"
        if path.startswith("layertune."):
            module, name = path.rsplit(".", 1)
            assert getattr(importlib.import_module(module), name) is cls, path


def test_an_unknown_block_type_is_an_error_listing_the_known_ones():
    data = copy.deepcopy(BASE)
    data["runtime"] = [{"type": "layertune.search.blocks.OnnxRuntime", "parameters": {}}]
    with pytest.raises(ConfigError, match=r"'runtime\[0\]\.type': unknown runtime .*known: .*TFLiteRuntime"):
        parse_config(data, "cfg.json")


def test_a_runtime_loads_only_the_chains_last_artifact():
    """Kenning's save_model_path: a runtime whose file is not the last optimizer's
    compiled_model_path cannot run that chain, and says which files they are."""
    cfg = parse_config(config(
        optimizers=[{"type": "kenning.compilers.tflite.TFLiteCompiler",
                     "parameters": {"compiled_model_path": ["build/a.tflite", "build/b.tflite"]}}],
        runtime=[{"type": "kenning.runtimes.tflite.TFLiteRuntime", "parameters": {"save_model_path": "./build/a.tflite"}}]))
    reasons = {p.optimizers[0].params["compiled_model_path"]: incompatibility(p, "keras") for p in enumerate_space(cfg)}
    assert reasons["build/a.tflite"] is None  # the same file, written differently
    assert reasons["build/b.tflite"] == ("TFLiteRuntime loads ./build/a.tflite (save_model_path), the chain's last "
                                         "artifact is build/b.tflite (TFLiteCompiler's compiled_model_path)")


def test_run_artifacts_are_prefixed_with_the_run_index():
    from layertune.search.trial import artifact_path
    assert artifact_path("build/compiled_model.tar", 7) == Path("build/7_compiled_model.tar")
    assert artifact_path("./m.onnx", None) == Path("m.onnx")


def test_cpu_utilization_of_a_compute_bound_run_is_measured():
    """A short busy run (as a small model's whole inference pass is) reads as busy, not 0 %; an
    idle one (sleeping) reads as nearly idle; memory is this process's real share."""
    import time as clock

    from layertune.runners.inference import measure

    def busy(x):
        end = clock.perf_counter() + 0.002  # shorter than a 10 ms clock tick
        while clock.perf_counter() < end:
            pass
        return x.sum(axis=2)

    def idle(x):
        clock.sleep(0.005)
        return x.sum(axis=2)

    x = np.ones((4, 3, 2), np.float32)
    hot, cold = measure(busy, x, warmup=1), measure(idle, x, warmup=1)
    cpus = os.cpu_count() or 1
    assert min(hot["cpus_percent_avg"]) > 50.0 / cpus  # one busy thread is 100 / cpu_count
    assert max(cold["cpus_percent_avg"]) < 20.0 / cpus
    assert 0 < min(hot["mem_percent"]) < 100
    assert hot["outputs"].shape == (4, 3) and np.all(hot["outputs"] == 2.0)
    assert len(hot["times_s"]) == 4 and all(t >= 0.002 for t in hot["times_s"])
    assert len(hot["cpus_percent_avg"]) == len(hot["mem_percent"]) == len(hot["timestamps"]) == 1  # 8 ms < a period
    windows = measure(busy, x, warmup=0, period=0.003)  # a window every second call or so
    assert 2 <= len(windows["cpus_percent_avg"]) <= 4 and windows["timestamps"] == sorted(windows["timestamps"])
    assert windows["timestamps"][-1] >= sum(windows["times_s"])
