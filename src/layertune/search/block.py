"""What a pipeline block is: a class holding its parameter spec (Param per name), the model
formats it takes and gives, Kenning's class paths for it, and its implementation (in
search/blocks.py and search/tvm_compiler.py). Every concrete block class registers itself; the
config resolves a `type` to one of them or fails naming the key and the known types."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

from layertune.runners import inference
from layertune.runners.devices import Device
from layertune.tuner.targets import BUILTIN, Target

PREFIX = "layertune.search.blocks."
KINDS = ("model_wrapper", "dataset", "optimizer", "runtime")


@dataclass(frozen=True)
class Param:
    kind: type | tuple[type, ...]
    default: Any = None
    choices: tuple | None = None
    required: bool = False
    minimum: int | None = None


@dataclass
class ModelInfo:
    path: Path
    format: str  # keras, tflite, onnx
    input_shape: tuple[int, ...]  # with the batch dimension (1, ...)
    num_classes: int
    input_scale: float


@dataclass
class Data:
    x: np.ndarray  # (n, *input shape without batch), float32
    y: np.ndarray | None  # labels, or None (performance metrics only)
    calibration: np.ndarray  # inputs for int8 calibration


@dataclass
class Placement:
    """Where a trial runs: on this machine, or compiled here for a target and measured on one of
    its devices (`device`), with the target's profiler (`profiler`, built by the search's parent)."""
    target: Target = field(default_factory=lambda: BUILTIN["host"])
    device: Device | None = None
    profiler: str | None = None
    temp_dir: str | None = None
    lease_wait: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"target": asdict(self.target), "device": self.device and self.device.to_json(),
                "profiler": self.profiler, "temp_dir": self.temp_dir, "lease_wait": self.lease_wait}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> "Placement":
        if not data:
            return cls()
        target = Target(**{**data["target"], "run_prefix": tuple(data["target"]["run_prefix"])})
        device = Device.from_json(data["device"]) if data.get("device") else None
        return cls(target, device, data.get("profiler"), data.get("temp_dir"), float(data.get("lease_wait", 0.0)))


# A block that cannot run on this machine or device (a missing execution provider, ...): the trial
# is skipped with the reason rather than failed. One class with the device-side loaders'.
Unavailable = inference.Unavailable


# Kenning's blocks that cannot work here, and what to use instead (said when a config names one).
_OFFLINE = ("downloads its data, and layertune runs offline (no data set can be fetched): use "
            "layertune.search.blocks.ImageFolderDataset on a local copy (a folder per class) or DigitsDataset")
NOT_HERE = {
    "kenning.datasets.pet_dataset.PetDataset": _OFFLINE,
    "kenning.datasets.magic_wand_dataset.MagicWandDataset": _OFFLINE,
    "kenning.datasets.imagenet_dataset.ImageNetDataset": _OFFLINE,
    "kenning.datasets.coco_dataset.COCODataset2017": _OFFLINE,
    "kenning.modelwrappers.object_detection.yolov4.ONNXYOLOV4":
        "post-processes detections, which layertune's classification metrics do not: use "
        "layertune.search.blocks.ONNXModel for the network alone",
}

REGISTRY: dict[str, type["Block"]] = {}  # class name -> block class
ALIASES: dict[str, str] = {}  # Kenning class path -> class name


class Block:
    """A block with concrete parameters (the spec's defaults filled in)."""
    kind: ClassVar[str]  # one of KINDS
    params_spec: ClassVar[dict[str, Param]] = {}
    inputs: ClassVar[tuple[str, ...]] = ()  # model formats accepted (optimizers, runtimes)
    output: ClassVar[str | None] = None  # the format an optimizer or model wrapper produces
    kenning_paths: ClassVar[tuple[str, ...]] = ()  # Kenning's class paths for this block
    name: ClassVar[str]
    path: ClassVar[str]  # layertune's class path, as configs and outputs write it

    def __init_subclass__(cls, abstract: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if abstract:
            return
        cls.name, cls.path = cls.__name__, PREFIX + cls.__name__
        REGISTRY[cls.name] = cls
        ALIASES.update({alias: cls.name for alias in cls.kenning_paths})

    def __init__(self, params: dict[str, Any] | None = None):
        self.params = {**self.defaults(), **(params or {})}

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {k: p.default for k, p in cls.params_spec.items() if p.default is not None}

    @classmethod
    def check(cls, params: dict[str, Any]) -> tuple[str, str] | None:
        """(parameter, why) for a value the config cannot have here, checked at validation."""
        return None


class ModelWrapper(Block, abstract=True):
    kind = "model_wrapper"

    def info(self) -> ModelInfo:
        raise NotImplementedError


class Dataset(Block, abstract=True):
    kind = "dataset"

    def load(self, model: ModelInfo) -> Data:
        raise NotImplementedError


# Kenning's parameters of every optimizer and every runtime (search/trial.py and space.py give the
# paths their meaning; `unavailable` says when a value cannot apply here).
OPTIMIZER_PARAMS = {"compiled_model_path": Param(str), "location": Param(str, "host", ("host", "target"))}
RUNTIME_PARAMS = {"save_model_path": Param(str), "batch_size": Param(int, 1, minimum=1),
                  "disable_performance_measurements": Param(bool, False)}


class Optimizer(Block, abstract=True):
    kind = "optimizer"
    placement: Placement = Placement()  # set by the trial: the target (and device) it compiles for

    def unavailable(self) -> str | None:
        """Why these parameters cannot apply on this machine (the trial is then skipped), or None."""
        if self.params.get("location") == "target":
            return f"{self.name}: location 'target' (compiling on the device) is not supported; trials compile on the host"
        return None

    def compile(self, src: Path, data: Data | None, out_dir: Path) -> Path:
        """Runs the optimizer on the model at `src`; returns the path of the model it produced."""
        raise NotImplementedError


class Runtime(Block, abstract=True):
    kind = "runtime"

    def unavailable(self) -> str | None:
        """Why these parameters cannot apply on this machine (the trial is then skipped), or None."""
        if self.params.get("batch_size", 1) != 1:
            return (f"{self.name}: batch_size {self.params['batch_size']} is not supported; the models run with "
                    "their static batch of 1")
        return None

    def recipe(self, model_format: str) -> tuple[str, dict[str, Any]]:
        """(loader, its parameters): how runners/inference.py runs a model of this format, here or
        on a device ("layertune": layertune's engine here, the target's profiler on a device)."""
        raise NotImplementedError

    def load(self, model_path: Path) -> Callable[[np.ndarray], np.ndarray]:
        """A function: one input batch -> the model's first output as real values."""
        loader, params = self.recipe(format_of(model_path))
        try:
            return inference.LOADERS[loader](str(model_path), **params)
        except Unavailable as exc:
            raise Unavailable(f"{self.name}: {exc}") from None


_SUFFIX_FORMATS = {".tflite": "tflite", ".onnx": "onnx", ".ltplan": "ltplan", ".so": "tvm", ".tar": "tvm",
                   ".keras": "keras", ".h5": "keras"}


def format_of(path: Path) -> str:
    """A model file's format, by its suffix (what the optimizers write)."""
    if path.suffix not in _SUFFIX_FORMATS:
        raise ValueError(f"{path}: not a model file layertune knows ({', '.join(_SUFFIX_FORMATS)})")
    return _SUFFIX_FORMATS[path.suffix]


def resolve(type_name: Any, kind: str) -> type[Block] | None:
    """The block class a config's `type` names (layertune's class path or Kenning's), if it is
    of this kind."""
    name = ALIASES.get(type_name, type_name[len(PREFIX):] if str(type_name).startswith(PREFIX) else None)
    cls = REGISTRY.get(name) if name else None
    return cls if cls is not None and cls.kind == kind else None


def known_paths(kind: str) -> list[str]:
    return [c.path for c in REGISTRY.values() if c.kind == kind] + \
        [a for a, n in ALIASES.items() if REGISTRY[n].kind == kind]
