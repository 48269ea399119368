"""layertune's graph IR: tensors with static NHWC shapes, nodes with TFLite op names and plain
attributes, constants as numpy arrays (float32; int8 weights and int32 biases in the layers a
quantized model computes in int8, graph/precision.py). Convolution weights are HWIO
``(kh, kw, in_c / groups, out_c)`` (depthwise: groups = in_c); fully-connected weights
``(in, out)``; transposed-convolution weights ``(kh, kw, in_c, out_c)``."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CONV_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")


@dataclass
class Quantization:
    """How the source model quantized a tensor: real = scale * (q - zero_point), with one scale per
    tensor, or one per channel along `axis` (weights and biases)."""
    dtype: str  # "int8", "uint8", "int16", "int32"
    scales: tuple[float, ...]
    zero_points: tuple[int, ...]
    axis: int = 0

    @property
    def scale(self) -> float:
        return self.scales[0]

    @property
    def zero_point(self) -> int:
        return self.zero_points[0]

    @property
    def per_tensor(self) -> bool:
        return len(self.scales) == 1

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        scale, zero = np.asarray(self.scales, np.float64), np.asarray(self.zero_points, np.float64)
        if not self.per_tensor:
            shape = [1] * q.ndim
            shape[self.axis] = len(self.scales)
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        return ((q.astype(np.float64) - zero) * scale).astype(np.float32)


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    data: np.ndarray | None = None  # constants only (float32, or int for import-time shape values)
    # The source model's quantization (a quantized model's tensors; kept on a float tensor too: a
    # graph input / output, so that Model.run converts integers at the edges).
    quantization: Quantization | None = None
    dtype: str = "float32"  # how the engine stores it: "float32", or "int8" / "int32" in int8 layers

    @property
    def constant(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass
class Node:
    op: str
    name: str
    inputs: list[int]  # tensor ids, -1 for an absent optional input
    outputs: list[int]
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def kernel(self) -> dict[str, Any]:
        """The kernel choice ({"method": ..., params...}) of a convolution node."""
        return {k[len("kernel."):]: v for k, v in self.attrs.items() if k.startswith("kernel.")}

    def set_kernel(self, method: str, params: dict[str, int]) -> None:
        for key in [k for k in self.attrs if k.startswith("kernel.")]:
            del self.attrs[key]
        self.attrs["kernel.method"] = method
        for name, value in params.items():
            self.attrs[f"kernel.{name}"] = int(value)


@dataclass
class Graph:
    name: str
    tensors: list[Tensor]
    nodes: list[Node]
    inputs: list[int]
    outputs: list[int]

    def copy(self) -> "Graph":
        """A copy whose nodes (and their attributes, e.g. kernel choices) can be changed without
        touching this graph; tensors and weights are shared."""
        g = copy.copy(self)
        g.nodes = [copy.copy(n) for n in self.nodes]
        for n in g.nodes:
            n.attrs = dict(n.attrs)
        return g

    def add_tensor(self, tensor: Tensor) -> int:
        self.tensors.append(tensor)
        return len(self.tensors) - 1

    def producers(self) -> dict[int, int]:
        return {t: i for i, n in enumerate(self.nodes) for t in n.outputs}

    def consumers(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for i, n in enumerate(self.nodes):
            for t in n.inputs:
                if t >= 0:
                    out.setdefault(t, []).append(i)
        return out

    def is_float_conv(self, node: Node) -> bool:
        """A convolution computed in float32 (the one kind fusion's epilogues apply to)."""
        return node.op in CONV_OPS and self.tensors[node.outputs[0]].dtype == "float32"

    def is_tunable_conv(self, node: Node) -> bool:
        """A convolution the method table's kernels compute: in float32, or in int8 (its own rows)."""
        return node.op in CONV_OPS and self.tensors[node.outputs[0]].dtype in ("float32", "int8")

    def conv_info(self, node: Node) -> dict[str, Any]:
        """The convolution a CONV_2D / DEPTHWISE_CONV_2D node computes, as layertune.Conv2D arguments."""
        x = self.tensors[node.inputs[0]].shape
        w = self.tensors[node.inputs[1]].shape
        y = self.tensors[node.outputs[0]].shape
        return {"input": x, "weights": w, "output": y, "strides": tuple(node.attrs["strides"]),
                "dilations": tuple(node.attrs["dilations"]), "pads": tuple(node.attrs["pads"]),
                "groups": int(node.attrs.get("groups", 1)), "activation": node.attrs.get("activation", "none"),
                "dtype": self.tensors[node.outputs[0]].dtype,
                # an int8 layer's arithmetic (graph/precision.py; a plan without it: fixed point)
                "requantization": node.attrs.get("requantization", "tflite")}

    def flops(self, node: Node) -> int:
        """Multiply-adds x 2 of the layer's direct algorithm (0 for ops that are not layers)."""
        if node.op in CONV_OPS:
            kh, kw, cig, _ = self.tensors[node.inputs[1]].shape
            return 2 * self.tensors[node.outputs[0]].size * kh * kw * cig
        if node.op == "FULLY_CONNECTED":
            return 2 * self.tensors[node.outputs[0]].size * self.tensors[node.inputs[1]].shape[0]
        if node.op == "TRANSPOSE_CONV":
            kh, kw, ic, _ = self.tensors[node.inputs[1]].shape
            return 2 * self.tensors[node.inputs[0]].size // ic * kh * kw * ic * self.tensors[node.outputs[0]].shape[-1]
        return 0

    def prune(self) -> None:
        """Drops nodes whose outputs nothing uses and tensors nothing refers to (renumbering)."""
        needed = set(self.outputs)
        keep = []
        for node in reversed(self.nodes):
            if any(t in needed for t in node.outputs):
                keep.append(node)
                needed.update(t for t in node.inputs if t >= 0)
        self.nodes = keep[::-1]
        used = sorted(set(self.inputs) | set(self.outputs) | {t for n in self.nodes for t in n.inputs + n.outputs if t >= 0})
        remap = {old: new for new, old in enumerate(used)}
        self.tensors = [self.tensors[t] for t in used]
        for node in self.nodes:
            node.inputs = [remap[t] if t >= 0 else -1 for t in node.inputs]
            node.outputs = [remap[t] for t in node.outputs]
        self.inputs = [remap[t] for t in self.inputs]
        self.outputs = [remap[t] for t in self.outputs]
