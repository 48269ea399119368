"""Every pipeline of a search space as a standalone scenario (Kenning's single-pipeline JSON), so
that one pipeline can be inspected, shared or run alone."""

from __future__ import annotations

import json
import os
from pathlib import Path

from layertune.search.config import SearchConfig
from layertune.search.space import enumerate_space, incompatibility


def write_scenarios(cfg: SearchConfig, folder: Path) -> int:
    from layertune.search.blocks import load_model_info

    folder.mkdir(parents=True, exist_ok=True)
    wrapper = cfg.model_wrapper.alternatives(False)[0]
    model_format = load_model_info(cfg.model_wrapper.spec.name, wrapper).format
    count = 0
    for pipeline in enumerate_space(cfg):
        scenario = {
            "model_wrapper": {"type": cfg.model_wrapper.spec.path, "parameters": wrapper},
            "dataset": {"type": cfg.dataset.spec.path, "parameters": cfg.dataset.alternatives(False)[0]},
            **pipeline.to_json(),
        }
        reason = incompatibility(pipeline, model_format)
        if reason:
            scenario["incompatible"] = reason
        path = folder / f"scenario_{pipeline.id}.json"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(scenario, indent=1))
        os.replace(tmp, path)
        count += 1
    return count
