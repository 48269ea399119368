"""fine-tune-optimizers configs: Kenning's JSON format, validated into typed blocks.

    {"optimization_parameters": {"strategy": "grid_search", "optimizable": ["optimizers", "runtime"],
                                 "metric": "inferencetime_mean", "policy": "min"},
     "model_wrapper": {"type": ..., "parameters": {...}},
     "dataset": {"type": ..., "parameters": {...}},
     "optimizers": [{"type": ..., "parameters": {"target": ["default", "int8"]}}, ...],
     "runtime": [{"type": ..., "parameters": {"num_threads": [1, 2]}}, ...]}

Block types are layertune's class paths (`layertune.search.blocks.<Name>`) or the Kenning class
paths accepted as aliases. In a block whose kind is listed in `optimizable`, a list value is a
set of alternatives to search; elsewhere a list value means its first element. Every error names
the file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layertune.jsonfile import read_json

PREFIX = "layertune.search.blocks."


@dataclass(frozen=True)
class Param:
    kind: type | tuple[type, ...]
    default: Any = None
    choices: tuple | None = None
    required: bool = False
    minimum: int | None = None


@dataclass(frozen=True)
class BlockSpec:
    kind: str  # model_wrapper, dataset, optimizer, runtime
    name: str
    params: dict[str, Param]
    inputs: tuple[str, ...] = ()  # model formats accepted (optimizers, runtimes)
    output: str | None = None  # the format an optimizer or model wrapper produces

    @property
    def path(self) -> str:
        return PREFIX + self.name


_THREADS = Param(int, 1)
SPECS: dict[str, BlockSpec] = {s.name: s for s in [
    BlockSpec("model_wrapper", "KerasModel", {"model_path": Param(str, required=True),
                                             "num_classes": Param(int), "input_scale": Param((int, float), 1.0)},
              output="keras"),
    BlockSpec("model_wrapper", "TFLiteModel", {"model_path": Param(str, required=True),
                                              "num_classes": Param(int), "input_scale": Param((int, float), 1.0)},
              output="tflite"),
    BlockSpec("dataset", "SyntheticDataset", {"num_samples": Param(int, 50), "seed": Param(int, 0)}),
    BlockSpec("dataset", "DigitsDataset", {"num_samples": Param(int, 200), "seed": Param(int, 0),
                                           "calibration_samples": Param(int, 100)}),
    BlockSpec("dataset", "ImageFolderDataset", {"dataset_root": Param(str, required=True),
                                                "num_samples": Param(int, 0)}),
    BlockSpec("optimizer", "TFLiteCompiler",
              {"target": Param(str, "default", ("default", "float16", "int8")),
               "inference_input_type": Param(str, "float32", ("float32", "int8", "uint8")),
               "inference_output_type": Param(str, "float32", ("float32", "int8", "uint8")),
               "compiled_model_path": Param(str)},
              inputs=("keras",), output="tflite"),
    BlockSpec("optimizer", "TVMCompiler",
              {"target": Param((str, dict), "llvm"), "opt_level": Param(int, 3, (0, 1, 2, 3, 4)),
               "conv2d_data_layout": Param(str, "NHWC", ("NHWC", "NCHW")), "tuning_trials": Param(int, 0, minimum=0),
               "tuning_seed": Param(int, 0, minimum=0),
               "compiled_model_path": Param(str)},
              inputs=("tflite",), output="tvm"),
    BlockSpec("optimizer", "LayerTuneCompiler",
              {"options": Param(str, "quick.json"), "repeats": Param(int, 3), "compiled_model_path": Param(str)},
              inputs=("keras", "tflite"), output="ltplan"),
    BlockSpec("runtime", "TFLiteRuntime", {"num_threads": _THREADS, "use_xnnpack": Param(bool, True)},
              inputs=("tflite",)),
    BlockSpec("runtime", "TVMRuntime", {"num_threads": _THREADS}, inputs=("tvm",)),
    BlockSpec("runtime", "LayerTuneRuntime", {"num_threads": _THREADS}, inputs=("ltplan", "tflite", "keras")),
]}

# Kenning's class paths for the blocks layertune implements.
ALIASES = {
    "kenning.optimizers.tflite.TFLiteCompiler": "TFLiteCompiler",
    "kenning.optimizers.tvm.TVMCompiler": "TVMCompiler",
    "kenning.runtimes.tflite.TFLiteRuntime": "TFLiteRuntime",
    "kenning.runtimes.tvm.TVMRuntime": "TVMRuntime",
    "kenning.datasets.random_dataset.RandomizedClassificationDataset": "SyntheticDataset",
}

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
class Block:
    spec: BlockSpec
    params: dict[str, Any]  # name -> a value, or a list of alternatives (searchable blocks)

    def alternatives(self, searchable: bool) -> list[dict[str, Any]]:
        """Every concrete parameter setting (the product of list values when searchable)."""
        import itertools
        keys = list(self.params)
        lists = [v if isinstance(v, list) else [v] for v in self.params.values()]
        if not searchable:
            lists = [values[:1] for values in lists]
        full = [dict(zip(keys, combo)) for combo in itertools.product(*lists)] if keys else [{}]
        return [{**{k: p.default for k, p in self.spec.params.items() if p.default is not None}, **c} for c in full]


@dataclass
class SearchConfig:
    source: str
    strategy: str
    optimizable: tuple[str, ...]
    metric: str
    policy: str
    model_wrapper: Block
    dataset: Block
    optimizers: list[Block]
    runtimes: list[Block]
    n_trials: int | None = None
    seed: int = 0
    timeout_s: float | None = None
    trial_timeout_s: float = 600.0
    constraints: list[tuple[str, str, float]] = field(default_factory=list)


def _block(source: str, key: str, data: Any, kinds: tuple[str, ...]) -> Block:
    if not isinstance(data, dict) or "type" not in data:
        raise ConfigError(f"{source}: '{key}' must be an object with 'type' and 'parameters'")
    extra = set(data) - {"type", "parameters"}
    if extra:
        raise ConfigError(f"{source}: '{key}': unknown key '{sorted(extra)[0]}'")
    type_name = data["type"]
    name = ALIASES.get(type_name, type_name[len(PREFIX):] if str(type_name).startswith(PREFIX) else None)
    spec = SPECS.get(name) if name else None
    if spec is None or spec.kind not in kinds:
        known = [s.path for s in SPECS.values() if s.kind in kinds]
        known += [a for a, n in ALIASES.items() if SPECS[n].kind in kinds]
        raise ConfigError(f"{source}: '{key}.type': unknown {kinds[0].replace('_', ' ')} '{type_name}' "
                          f"(known: {', '.join(known)})")
    params = data.get("parameters", {})
    if not isinstance(params, dict):
        raise ConfigError(f"{source}: '{key}.parameters' must be an object")
    for pname, value in params.items():
        if pname not in spec.params:
            raise ConfigError(f"{source}: '{key}.parameters.{pname}': not a parameter of {spec.name} "
                              f"(known: {', '.join(spec.params)})")
        p = spec.params[pname]
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
    for pname, p in spec.params.items():
        if p.required and pname not in params:
            raise ConfigError(f"{source}: '{key}.parameters.{pname}' is required for {spec.name}")
    return Block(spec, dict(params))


def _constraint(source: str, text: Any) -> tuple[str, str, float]:
    import re
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
        model_wrapper=_block(source, "model_wrapper", data["model_wrapper"], ("model_wrapper",)),
        dataset=_block(source, "dataset", data["dataset"], ("dataset",)),
        optimizers=[_block(source, f"optimizers[{i}]", b, ("optimizer",)) for i, b in enumerate(optimizers)],
        runtimes=[_block(source, f"runtime[{i}]", b, ("runtime",)) for i, b in enumerate(runtimes)],
        n_trials=n_trials, seed=int(op.get("seed", 0)), timeout_s=op.get("timeout_s"),
        trial_timeout_s=float(op.get("trial_timeout_s", 600.0)),
        constraints=[_constraint(source, c) for c in constraints])


def load_config(path: str | Path) -> SearchConfig:
    return parse_config(read_json(path, "config file", ConfigError), str(path))
