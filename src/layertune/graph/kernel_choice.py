"""The default kernel choice per convolution, a shape heuristic (as ncnn's) for layers that were
not tuned. Measured on this project's benchmarks (tools/bench_kernels.py): Winograd wins 3x3
stride-1 layers with enough channels, F(4x4) on larger maps; 1x1 layers are a GEMM; the
direct method wins depthwise layers and layers with few input channels."""

from __future__ import annotations

from typing import Any

import numpy as np

from layertune.graph.ir import Graph, Node
from layertune.methods import default_int8_method, why_not


def default_kernel(graph: Graph, node: Node) -> dict[str, Any]:
    info = graph.conv_info(node)
    if info["dtype"] == "int8":
        return {"method": default_int8_method(info)}
    kh, kw, cig, out_c = info["weights"]
    groups = info["groups"]
    cog = out_c // groups
    _, oh, ow, _ = info["output"]
    if groups > 1 and cig == 1:
        return {"method": "simple"}  # depthwise
    # Measured inside ResNet50 (interleaved, whole model): F(4x4) wins the 28x28 and larger maps,
    # F(2x2) the 14x14 stage. A 7x7 map is 16 padded 2x2 tiles, so each transformed weight (16/9
    # of the raw ones: 16.8 MB for 7x7x512, which stream from memory in a model) serves 16 rows
    # where unrolled's serve 49: since unrolled takes all 49 rows in one block, the 7x7 stage with
    # unrolled takes ResNet50 to 0.99x its time at one thread, 0.97x at two (an Intel Xeon). Alone,
    # with the weights in cache, Winograd still wins such a layer (1.23 against 1.78 ms): the
    # tuner's per-layer times favour it where the model does not.
    if (kh, kw) == (3, 3) and info["strides"] == (1, 1) and info["dilations"] == (1, 1) and cig >= 16 and cog >= 16 \
            and min(oh, ow) >= 14:
        return {"method": "winograd", "winograd_tile": 4 if min(oh, ow) >= 28 else 2}
    if cig <= 8:
        return {"method": "simple"}
    return {"method": "unrolled"}


def check_kernel(graph: Graph, node: Node, method: str, params: dict[str, Any]) -> None:
    """ValueError unless the C++ core can compute this convolution with this method and these
    parameters (asked of the core's method table: the one place that knows what applies)."""
    for name, value in params.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name}: expected an integer, got {value!r}")
    reason = why_not(graph.conv_info(node), method, {k: int(v) for k, v in params.items()})
    if reason:
        raise ValueError(reason)


def apply_default_kernels(graph: Graph, overwrite: bool = False) -> None:
    """Gives every convolution without a kernel choice (or every one, with overwrite) the default."""
    for node in graph.nodes:
        if graph.is_tunable_conv(node) and (overwrite or "kernel.method" not in node.attrs):
            choice = default_kernel(graph, node)
            node.set_kernel(choice.pop("method"), choice)
