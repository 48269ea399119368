"""The pipelines a config describes, and which of them can work at all.

A pipeline is a chain of optimizers (each with concrete parameters) and one runtime. As in
Kenning's grid search: when `optimizers` is optimizable, every ordered non-empty subset of the
listed optimizers, each with the product of its parameter lists; when `runtime` is, every listed
runtime with the product of its parameter lists; otherwise the blocks as listed, first values.
Compatibility follows the model format through the chain: model -> each optimizer's inputs and
output -> the runtime's inputs."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import dataclass
from typing import Any

from layertune.search.block import REGISTRY
from layertune.search.config import BlockConfig, SearchConfig


@dataclass(frozen=True)
class Step:
    name: str  # a block class's name
    params_json: str  # the parameters, canonical JSON (hashable)

    @property
    def params(self) -> dict[str, Any]:
        return json.loads(self.params_json)

    @staticmethod
    def of(name: str, params: dict[str, Any]) -> "Step":
        return Step(name, json.dumps(params, sort_keys=True))


@dataclass(frozen=True)
class Pipeline:
    optimizers: tuple[Step, ...]
    runtime: Step

    def to_json(self) -> dict[str, Any]:
        return {"optimizers": [{"type": REGISTRY[s.name].path, "parameters": s.params} for s in self.optimizers],
                "runtime": {"type": REGISTRY[self.runtime.name].path, "parameters": self.runtime.params}}

    @property
    def id(self) -> str:
        return hashlib.sha1(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:10]

    def describe(self) -> str:
        chain = " -> ".join(f"{s.name}{_short(s.params)}" for s in self.optimizers) or "(no optimizer)"
        return f"{chain} => {self.runtime.name}{_short(self.runtime.params)}"


def _short(params: dict[str, Any]) -> str:
    shown = {k: v for k, v in params.items() if k not in ("compiled_model_path", "save_model_path")}
    return "(" + ", ".join(f"{k}={v}" for k, v in shown.items()) + ")" if shown else ""


def native_pipeline() -> Pipeline:
    """No optimizer, the model run by its own framework (Kenning's native scenario)."""
    return Pipeline((), Step.of("NativeRuntime", REGISTRY["NativeRuntime"].defaults()))


def chains(cfg: SearchConfig) -> list[tuple[int, ...]]:
    """Optimizer index chains: ordered non-empty subsets when searchable, else all in order."""
    n = len(cfg.optimizers)
    if n == 0:
        return [()]
    if "optimizers" not in cfg.optimizable:
        return [tuple(range(n))]
    return [p for k in range(1, n + 1) for p in itertools.permutations(range(n), k)]


def step_alternatives(block: BlockConfig, searchable: bool) -> list[Step]:
    return [Step.of(block.spec.name, params) for params in block.alternatives(searchable)]


def enumerate_space(cfg: SearchConfig) -> list[Pipeline]:
    opt_alts = [step_alternatives(b, "optimizers" in cfg.optimizable) for b in cfg.optimizers]
    runtime_blocks = cfg.runtimes if "runtime" in cfg.optimizable else cfg.runtimes[:1]
    runtimes = [s for b in runtime_blocks for s in step_alternatives(b, "runtime" in cfg.optimizable)]
    out = []
    for chain in chains(cfg):
        for steps in itertools.product(*[opt_alts[i] for i in chain]):
            for runtime in runtimes:
                out.append(Pipeline(tuple(steps), runtime))
    return out


def incompatibility(pipeline: Pipeline, model_format: str) -> str | None:
    """Why the pipeline cannot work (None if it can): checked before anything is compiled."""
    fmt = model_format
    for step in pipeline.optimizers:
        spec = REGISTRY[step.name]
        if fmt not in spec.inputs:
            return f"{step.name} takes {'/'.join(spec.inputs)} models, the chain gives it {fmt}"
        fmt = spec.output
    spec = REGISTRY[pipeline.runtime.name]
    if fmt not in spec.inputs:
        return f"{pipeline.runtime.name} runs {'/'.join(spec.inputs)} models, the chain produces {fmt}"
    # Kenning's save_model_path: the file the runtime loads, which must be the chain's last artifact
    loads = pipeline.runtime.params.get("save_model_path")
    last = pipeline.optimizers[-1].params.get("compiled_model_path") if pipeline.optimizers else None
    if loads and last and os.path.normpath(loads) != os.path.normpath(last):
        return (f"{pipeline.runtime.name} loads {loads} (save_model_path), the chain's last artifact is {last} "
                f"({pipeline.optimizers[-1].name}'s compiled_model_path)")
    return None
