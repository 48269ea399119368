"""What a pipeline block is: a class holding its parameter spec (Param per name), the model
formats it takes and gives, Kenning's class paths for it, and its implementation (in
search/blocks.py and search/tvm_compiler.py). Every concrete block class registers itself; the
config resolves a `type` to one of them or fails naming the key and the known types."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

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


class Unavailable(RuntimeError):
    """A block that cannot run on this machine (a missing execution provider, ...): the trial is
    skipped with this reason rather than failed."""


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

    def load(self, model_path: Path) -> Callable[[np.ndarray], np.ndarray]:
        """A function: one input batch -> the model's first output as real values."""
        raise NotImplementedError


def resolve(type_name: Any, kind: str) -> type[Block] | None:
    """The block class a config's `type` names (layertune's class path or Kenning's), if it is
    of this kind."""
    name = ALIASES.get(type_name, type_name[len(PREFIX):] if str(type_name).startswith(PREFIX) else None)
    cls = REGISTRY.get(name) if name else None
    return cls if cls is not None and cls.kind == kind else None


def known_paths(kind: str) -> list[str]:
    return [c.path for c in REGISTRY.values() if c.kind == kind] + \
        [a for a, n in ALIASES.items() if REGISTRY[n].kind == kind]
