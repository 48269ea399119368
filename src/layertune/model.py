"""A whole model on layertune's engine: load (.tflite, .onnx, .keras / .h5, .ltplan), run, inspect the
layers and their kernel choices, change a choice, save the plan."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from layertune import _core
from layertune.graph.fusion import FORMS, check_forms
from layertune.graph.fusion import fuse as fuse_graph
from layertune.graph.ir import CONV_OPS, Graph
from layertune.graph.keras_import import import_keras
from layertune.graph.kernel_choice import apply_default_kernels, check_kernel
from layertune.graph.onnx_import import import_onnx
from layertune.graph.plan import graph_from_plan, plan_bytes, write_plan
from layertune.graph.precision import DEFAULT_REQUANTIZATION
from layertune.graph.tflite_import import import_tflite

SOURCE_SUFFIXES = (".tflite", ".onnx", ".keras", ".h5")  # what the tuner reads; plans are its output
MODEL_SUFFIXES = (*SOURCE_SUFFIXES, ".ltplan")
InputShapes = dict[str, tuple[int, ...]]


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """'images=1x3x640x640' -> ('images', (1, 3, 640, 640)), the --input_shape flag's value."""
    name, sep, dims = text.rpartition("=")
    try:
        shape = tuple(int(d) for d in dims.lower().split("x"))
    except ValueError:
        shape = ()
    if not sep or not name or not shape or min(shape) < 1:
        raise ValueError(f"--input_shape {text!r}: expected NAME=DxDx... with positive dimensions, e.g. images=1x3x640x640")
    return name, shape


@dataclass(frozen=True)
class Layer:
    index: int
    name: str
    op: str
    input_shapes: tuple[tuple[int, ...], ...]
    output_shapes: tuple[tuple[int, ...], ...]
    flops: int
    kernel: dict[str, Any] | None  # convolutions: {"method": ..., parameters...}


def import_graph(path: str | os.PathLike, input_shapes: InputShapes | None = None, int8: bool = True,
                 requantization: str = DEFAULT_REQUANTIZATION) -> Graph:
    """The graph of a .tflite, .onnx, .keras / .h5 or .ltplan file; ValueError with one line if it
    cannot be read. `input_shapes` fixes an ONNX model's dynamic input dimensions by input name;
    `int8` computes a quantized TFLite model's layers in int8 where the engine has the kernels
    (graph/precision.py), else everything in float32; `requantization` is their arithmetic
    (precision.REQUANTIZATIONS)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such model file")
    suffix = path.suffix.lower()
    if input_shapes and suffix != ".onnx":
        raise ValueError(f"{path}: input shapes can be set for ONNX models only (their dimensions may be dynamic)")
    if suffix == ".onnx":
        return import_onnx(path, input_shapes)
    if suffix == ".tflite":
        return import_tflite(path, int8, requantization)
    if suffix in (".keras", ".h5"):
        return import_keras(path)
    if suffix == ".ltplan":
        try:
            return graph_from_plan(path.read_bytes())
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    raise ValueError(f"{path}: unknown model format (expected one of {', '.join(MODEL_SUFFIXES)})")


class Model:
    def __init__(self, graph: Graph, threads: int = 1):
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads: expected a positive integer, got {threads!r}")
        apply_default_kernels(graph)
        self.graph = graph
        self.threads = threads
        self._engine: _core.Engine | None = None

    @property
    def engine(self) -> _core.Engine:
        if self._engine is None:
            self._engine = _core.Engine(plan_bytes(self.graph), self.threads)
        return self._engine

    @property
    def name(self) -> str:
        return self.graph.name

    @property
    def input_shapes(self) -> list[tuple[int, ...]]:
        return [self.graph.tensors[t].shape for t in self.graph.inputs]

    @property
    def output_shapes(self) -> list[tuple[int, ...]]:
        return [self.graph.tensors[t].shape for t in self.graph.outputs]

    @property
    def layers(self) -> list[Layer]:
        g = self.graph
        return [Layer(i, n.name, n.op, tuple(g.tensors[t].shape for t in n.inputs if t >= 0 and not g.tensors[t].constant),
                      tuple(g.tensors[t].shape for t in n.outputs), g.flops(n),
                      dict(n.kernel) if n.op in CONV_OPS else None)
                for i, n in enumerate(g.nodes)]

    def _node_index(self, layer: int | str) -> int:
        if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool):
            if not 0 <= layer < len(self.graph.nodes):
                raise ValueError(f"layer: index {layer} out of range (0..{len(self.graph.nodes) - 1})")
            return int(layer)
        matches = [i for i, n in enumerate(self.graph.nodes) if n.name == layer]
        if not matches:
            raise ValueError(f"layer: no layer named {layer!r}")
        return matches[0]

    def set_kernel(self, layer: int | str, method: str, threads: int | None = None, **params: Any) -> None:
        """Sets one convolution's kernel; checked now (ValueError naming the layer), used from the next run."""
        index = self._node_index(layer)
        node = self.graph.nodes[index]
        if node.op not in CONV_OPS:
            raise ValueError(f"layer {index} ({node.name}) is a {node.op}, not a convolution")
        if not self.graph.is_tunable_conv(node):
            raise ValueError(f"layer {index} ({node.name}) computes in {self.graph.tensors[node.outputs[0]].dtype}: "
                             "no kernel of the method table computes it")
        if threads is not None:
            params["threads"] = threads
        try:
            check_kernel(self.graph, node, method, params)
        except ValueError as exc:
            raise ValueError(f"layer {index} ({node.name}): {exc}") from None
        node.set_kernel(method, params)
        self._engine = None

    def _inputs(self, x: Any) -> list[np.ndarray]:
        if isinstance(x, np.ndarray) and x.dtype == np.float32 and x.flags.c_contiguous and len(self.graph.inputs) == 1 \
                and x.shape == self.graph.tensors[self.graph.inputs[0]].shape:
            return [x]  # the common case as it is: the general checks cost 2 us a call (a small model takes 5)
        xs = list(x) if isinstance(x, (list, tuple)) else [x]
        if len(xs) != len(self.graph.inputs):
            raise ValueError(f"x: the model has {len(self.graph.inputs)} inputs, got {len(xs)}")
        out = []
        for i, (value, t) in enumerate(zip(xs, self.graph.inputs)):
            tensor = self.graph.tensors[t]
            arr = np.asarray(value)
            if arr.shape != tensor.shape:
                raise ValueError(f"x[{i}] ('{tensor.name}'): expected shape {tensor.shape}, got {arr.shape}")
            q = tensor.quantization
            if tensor.dtype == "int8" and arr.dtype.kind in "iu":  # an int8 input's integers, as they are
                if arr.size and (arr.min() < -128 or arr.max() > 127):
                    raise ValueError(f"x[{i}] ('{tensor.name}'): int8 input values must lie in [-128, 127]")
                out.append(np.ascontiguousarray(arr, dtype=np.int8))
                continue
            if q is not None and arr.dtype.kind in "iu":  # quantized input: to real values
                arr = (arr.astype(np.float32) - q.zero_point) * q.scale
            out.append(np.ascontiguousarray(arr, dtype=np.float32))  # (the engine quantizes an int8 input's)
        return out

    def run(self, x: Any) -> np.ndarray | list[np.ndarray]:
        """numpy in, numpy out (a list if the model has several outputs). Quantized models take
        their integer input or real values, and return real (dequantized) values."""
        outs = self.engine.run(self._inputs(x))
        return outs[0] if len(outs) == 1 else outs

    def run_profiled(self, x: Any) -> tuple[list[np.ndarray], list[float]]:
        """Outputs and the seconds each layer took in one run (copying the inputs in is in no layer's time)."""
        return self.engine.run_profiled(self._inputs(x))

    def time(self, x: Any, warmup: int = 3, repeats: int = 10) -> list[float]:
        """Seconds per end-to-end run (model invocation only)."""
        return list(self.engine.time(self._inputs(x), int(warmup), int(repeats)))

    @property
    def arena_bytes(self) -> int:
        return int(self.engine.arena_bytes)

    @property
    def weight_bytes(self) -> int:
        return int(self.engine.weight_bytes)

    def save(self, path: str | os.PathLike) -> None:
        write_plan(self.graph, path)


def load(path: str | os.PathLike, threads: int = 1, input_shapes: InputShapes | None = None,
         fuse: bool | Iterable[str] = True, int8: bool = True,
         requantization: str = DEFAULT_REQUANTIZATION) -> Model:
    """A model from .tflite, .onnx (needs onnx; `input_shapes` fixes dynamic dimensions, e.g.
    ``{"images": (1, 3, 640, 640)}``), .keras / .h5 (needs TensorFlow) or .ltplan.

    `fuse`: the fusion forms (graph/fusion.py) applied to an imported model — True for all,
    False for none, or some of ``pad``, ``swish``, ``hard_swish``, ``add``. A plan is run as it
    was written (the tuner wrote it fused or not, whichever it measured faster).

    `int8`: a quantized .tflite model computes in int8 the layers the engine has int8 kernels for
    (the others in float32 between DEQUANTIZE and QUANTIZE nodes); False: all in float32.

    `requantization`: whose arithmetic int8 convolutions, fully-connected layers and ADDs follow
    when they round their sums to int8 — ``xnnpack`` (what LiteRT runs by default on a CPU: faster,
    and LiteRT's own output for those layers) or ``tflite`` (TFLite's reference kernels, bit for bit)."""
    graph = import_graph(path, input_shapes, int8, requantization)
    if Path(path).suffix.lower() != ".ltplan" and fuse is not False:
        graph = fuse_graph(graph, FORMS if fuse is True else check_forms(fuse, "fuse"))
    return Model(graph, threads)
