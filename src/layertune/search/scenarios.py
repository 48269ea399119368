"""Every pipeline of a search space as a standalone scenario (Kenning's single-pipeline JSON), so
that one pipeline can be inspected, shared or run alone; and running one alone (`layertune
test-pipeline`), from a scenario or from a search's run file OUT_<id>.json."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from layertune.jsonfile import read_json, write_json
from layertune.search.block import REGISTRY, Placement
from layertune.search.config import ConfigError, SearchConfig, parse_config
from layertune.search.trial import run_trial_process, trial_spec
from layertune.search.space import Pipeline, enumerate_space, incompatibility


def scenario(cfg: SearchConfig, pipeline: Pipeline) -> dict[str, Any]:
    """The pipeline as Kenning writes one: model_wrapper, dataset, optimizers, runtime."""
    return {"model_wrapper": {"type": cfg.model_wrapper.spec.path, "parameters": cfg.model_wrapper.alternatives(False)[0]},
            "dataset": {"type": cfg.dataset.spec.path, "parameters": cfg.dataset.alternatives(False)[0]},
            **pipeline.to_json()}


def write_scenarios(cfg: SearchConfig, folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    model_format = cfg.model_wrapper.spec.output
    count = 0
    for pipeline in enumerate_space(cfg):
        scenario_ = scenario(cfg, pipeline)
        reason = incompatibility(pipeline, model_format)
        if reason:
            scenario_["incompatible"] = reason
        write_json(folder / f"scenario_{pipeline.id}.json", scenario_)
        count += 1
    return count


def load_pipeline(path: Path, search_config: Path | None = None) -> tuple[SearchConfig, Pipeline, dict[str, Any]]:
    """One pipeline to run alone, with its model wrapper and dataset, and the metrics the search
    recorded for it (the search's OUT.json or a run file OUT_<id>.json) or {} (a scenario).
    `search_config` gives the model wrapper and dataset instead of the file's (a run file written
    before they were recorded holds neither)."""
    data = read_json(path, "pipeline file", ConfigError)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    recorded = data.get("metrics", {}) if "pipeline" in data else {}
    body = dict(data["pipeline"]) if "pipeline" in data else {k: v for k, v in data.items() if k != "incompatible"}
    if search_config is not None:
        base = read_json(search_config, "config file", ConfigError)
        for key in ("model_wrapper", "dataset"):
            if key not in base:
                raise ConfigError(f"{search_config}: missing key '{key}'")
            body[key] = base[key]
    elif "model_wrapper" not in body or "dataset" not in body:
        raise ConfigError(f"{path}: the pipeline names no model or dataset; pass the search's config with --json-cfg")
    if "runtime" not in body and not body.get("optimizers"):  # Kenning's native scenario: the model alone
        body["runtime"] = {"type": REGISTRY["NativeRuntime"].path, "parameters": {}}
    unknown = set(body) - {"model_wrapper", "dataset", "optimizers", "runtime"}
    if unknown:
        raise ConfigError(f"{path}: unknown key '{sorted(unknown)[0]}' in a pipeline")
    cfg = parse_config({**body, "optimization_parameters": {"optimizable": []}}, str(path))
    (pipeline,) = enumerate_space(cfg)
    return cfg, pipeline, recorded


def measure_pipeline(path: Path, search_config: Path | None, measurements: Path, cache: Path | None,
                     timeout_s: float, placement: Placement | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Runs one pipeline alone, in a trial process as the search does (here, or on `placement`'s
    device), and writes its measurements (the format of a search's run file, so `layertune report`
    reads it). Returns (the new result, the metrics recorded by the search or {}). Without `cache`
    everything is compiled afresh."""
    cfg, pipeline, recorded = load_pipeline(path, search_config)
    reason = incompatibility(pipeline, cfg.model_wrapper.spec.output)
    if reason:
        raise ConfigError(f"{path}: the pipeline cannot run: {reason}")
    with tempfile.TemporaryDirectory() as fresh:
        password = placement and placement.device and placement.device.password
        result = run_trial_process(trial_spec(cfg, pipeline, cache or Path(fresh), placement=placement), timeout_s,
                                   password)
    if result["status"] != "ok":
        raise RuntimeError(f"{path}: the pipeline {'was skipped' if result['status'] == 'skipped' else 'failed'}: "
                           f"{result['reason']}")
    measurements.parent.mkdir(parents=True, exist_ok=True)
    write_json(measurements, {**result, "pipeline": pipeline.to_json(), "id": pipeline.id})
    return result, recorded
