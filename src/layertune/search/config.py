"""fine-tune-optimizers configs: Kenning's JSON format, validated into typed blocks.

    {"optimization_parameters": {"strategy": "grid_search", "optimizable": ["optimizers", "runtime"],
                                 "metric": "inferencetime_mean", "policy": "min"},
     "model_wrapper": {"type": ..., "parameters": {...}},
     "dataset": {"type": ..., "parameters": {...}},
     "optimizers": [{"type": ..., "parameters": {"target": ["default", "int8"]}}, ...],
     "runtime": [{"type": ..., "parameters": {"num_threads": [1, 2]}}, ...]}

Block types are layertune's class paths (`layertune.search.blocks.<Name>`, search/blocks.py) or
Kenning's class paths for the same blocks; anything else is an error listing the known ones. In a block whose kind is listed in `optimizable`, a list value is a
set of alternatives to search; elsewhere a list value means its first element. Every error names
the file and the key.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layertune.jsonfile import read_json
from layertune.search import blocks  # noqa: F401  (registers every block class)
from layertune.search.block import NOT_HERE, Block, known_paths, resolve

METRICS_MIN = ("inferencetime_mean", "inferencetime_std", "inferencetime_median",
               "session_utilization_mem_percent_mean", "session_utilization_mem_percent_std",
               "session_utilization_mem_percent_median", "session_utilization_cpus_percent_avg_mean",
               "session_utilization_cpus_percent_avg_std", "session_utilization_cpus_percent_avg_median",
               "compiled_model_size")
METRICS_MAX = ("accuracy", "mean_precision", "mean_sensitivity", "g_mean", "top_5_accuracy")
METRICS = METRICS_MIN + METRICS_MAX
STRATEGIES = ("grid_search", "random_search", "tpe")


class ConfigError(ValueError):
    """A config that is not valid: the message names the file and the key."""


@dataclass
class BlockConfig:
    spec: type[Block]  # the block class
    params: dict[str, Any]  # name -> a value, or a list of alternatives (searchable blocks)

    def alternatives(self, searchable: bool) -> list[dict[str, Any]]:
        """Every concrete parameter setting (the product of list values when searchable)."""
        keys = list(self.params)
        lists = [v if isinstance(v, list) else [v] for v in self.params.values()]
        if not searchable:
            lists = [values[:1] for values in lists]
        full = [dict(zip(keys, combo)) for combo in itertools.product(*lists)] if keys else [{}]
        return [{**self.spec.defaults(), **c} for c in full]

    def first(self) -> Block:
        """The block with the first value of every parameter (a non-searchable block)."""
        return self.spec(self.alternatives(False)[0])


@dataclass
class SearchConfig:
    source: str
    strategy: str
    optimizable: tuple[str, ...]
    metric: str
    policy: str
    model_wrapper: BlockConfig
    dataset: BlockConfig
    optimizers: list[BlockConfig]
    runtimes: list[BlockConfig]
    n_trials: int | None = None
    seed: int = 0
    timeout_s: float | None = None
    trial_timeout_s: float = 600.0
    constraints: list[tuple[str, str, float]] = field(default_factory=list)


def _block(source: str, key: str, data: Any, kind: str) -> BlockConfig:
    if not isinstance(data, dict) or "type" not in data:
        raise ConfigError(f"{source}: '{key}' must be an object with 'type' and 'parameters'")
    extra = set(data) - {"type", "parameters"}
    if extra:
        raise ConfigError(f"{source}: '{key}': unknown key '{sorted(extra)[0]}'")
    if data["type"] in NOT_HERE:
        raise ConfigError(f"{source}: '{key}.type': {data['type']} {NOT_HERE[data['type']]}")
    spec = resolve(data["type"], kind)
    if spec is None:
        raise ConfigError(f"{source}: '{key}.type': unknown {kind.replace('_', ' ')} '{data['type']}' "
                          f"(known: {', '.join(known_paths(kind))})")
    params = data.get("parameters", {})
    if not isinstance(params, dict):
        raise ConfigError(f"{source}: '{key}.parameters' must be an object")
    params = dict(params)
    for pname, value in params.items():
        if pname not in spec.params_spec:
            raise ConfigError(f"{source}: '{key}.parameters.{pname}': not a parameter of {spec.name} "
                              f"(known: {', '.join(spec.params_spec)})")
        p = spec.params_spec[pname]
        if p.kind is list and isinstance(value, list) and not any(isinstance(v, list) for v in value):
            value = params[pname] = [value]  # one list value (a list of them are alternatives)
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and not value:
            raise ConfigError(f"{source}: '{key}.parameters.{pname}': an empty list")
        for v in values:
            if isinstance(v, bool) and p.kind is not bool or not isinstance(v, p.kind):
                raise ConfigError(f"{source}: '{key}.parameters.{pname}': {v!r} has the wrong type")
            if p.choices is not None and v not in p.choices:
                raise ConfigError(f"{source}: '{key}.parameters.{pname}': {v!r} is not one of {list(p.choices)}")
            if p.minimum is not None and v < p.minimum:
                raise ConfigError(f"{source}: '{key}.parameters.{pname}': {v!r} is below the minimum {p.minimum}")
    for pname, p in spec.params_spec.items():
        if p.required and pname not in params:
            raise ConfigError(f"{source}: '{key}.parameters.{pname}' is required for {spec.name}")
    for combo in BlockConfig(spec, dict(params)).alternatives(True):
        problem = spec.check(combo)
        if problem:
            raise ConfigError(f"{source}: '{key}.parameters.{problem[0]}': {problem[1]}")
    return BlockConfig(spec, dict(params))


def _constraint(source: str, text: Any) -> tuple[str, str, float]:
    m = re.fullmatch(r"\s*([a-z0-9_]+)\s*(<=|>=|<|>)\s*([-+0-9.eE]+)\s*", text) if isinstance(text, str) else None
    if not m or m.group(1) not in METRICS:
        raise ConfigError(f"{source}: 'constraints': expected 'metric <= value' with a known metric, got {text!r}")
    return m.group(1), m.group(2), float(m.group(3))


def parse_config(data: Any, source: str = "config") -> SearchConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a JSON object")
    known = {"optimization_parameters", "model_wrapper", "dataset", "optimizers", "runtime", "constraints"}
    for key in data:
        if key not in known:
            raise ConfigError(f"{source}: unknown key '{key}' (known: {', '.join(sorted(known))})")
    for key in ("optimization_parameters", "model_wrapper", "dataset", "runtime"):
        if key not in data:
            raise ConfigError(f"{source}: missing key '{key}'")
    op = data["optimization_parameters"]
    if not isinstance(op, dict):
        raise ConfigError(f"{source}: 'optimization_parameters' must be an object")
    op_known = {"strategy", "optimizable", "metric", "policy", "n_trials", "seed", "timeout_s", "trial_timeout_s"}
    for key in op:
        if key not in op_known:
            raise ConfigError(f"{source}: unknown key 'optimization_parameters.{key}' (known: {', '.join(sorted(op_known))})")
    strategy = op.get("strategy", "grid_search")
    if strategy not in STRATEGIES:
        raise ConfigError(f"{source}: 'optimization_parameters.strategy': {strategy!r} is not one of {list(STRATEGIES)}")
    metric = op.get("metric", "inferencetime_mean")
    if metric not in METRICS:
        raise ConfigError(f"{source}: 'optimization_parameters.metric': unknown metric {metric!r} "
                          f"(valid: {', '.join(METRICS)})")
    policy = op.get("policy", "min" if metric in METRICS_MIN else "max")
    if policy not in ("min", "max"):
        raise ConfigError(f"{source}: 'optimization_parameters.policy': must be 'min' or 'max', got {policy!r}")
    optimizable = op.get("optimizable", ["optimizers", "runtime"])
    if not isinstance(optimizable, list) or any(o not in ("optimizers", "runtime") for o in optimizable):
        raise ConfigError(f"{source}: 'optimization_parameters.optimizable': a list of 'optimizers' and / or 'runtime'")
    n_trials = op.get("n_trials")
    if strategy != "grid_search" and not (isinstance(n_trials, int) and n_trials > 0):
        raise ConfigError(f"{source}: 'optimization_parameters.n_trials': {strategy} needs a positive trial budget")
    optimizers = data.get("optimizers", [])
    if not isinstance(optimizers, list):
        raise ConfigError(f"{source}: 'optimizers' must be a list")
    runtimes = data["runtime"] if isinstance(data["runtime"], list) else [data["runtime"]]
    if not runtimes:
        raise ConfigError(f"{source}: 'runtime' lists no runtime")
    constraints = data.get("constraints", [])
    if not isinstance(constraints, list):
        raise ConfigError(f"{source}: 'constraints' must be a list")
    return SearchConfig(
        source=source, strategy=strategy, optimizable=tuple(optimizable), metric=metric, policy=policy,
        model_wrapper=_block(source, "model_wrapper", data["model_wrapper"], "model_wrapper"),
        dataset=_block(source, "dataset", data["dataset"], "dataset"),
        optimizers=[_block(source, f"optimizers[{i}]", b, "optimizer") for i, b in enumerate(optimizers)],
        runtimes=[_block(source, f"runtime[{i}]", b, "runtime") for i, b in enumerate(runtimes)],
        n_trials=n_trials, seed=int(op.get("seed", 0)), timeout_s=op.get("timeout_s"),
        trial_timeout_s=float(op.get("trial_timeout_s", 600.0)),
        constraints=[_constraint(source, c) for c in constraints])


def load_config(path: str | Path) -> SearchConfig:
    return parse_config(read_json(path, "config file", ConfigError), str(path))
