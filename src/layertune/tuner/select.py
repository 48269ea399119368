"""Layer signatures, variant keys, and the choice of the fastest correct variant per layer."""

from __future__ import annotations

from typing import Any

from layertune.tuner.database import Record
from layertune.graph.ir import Graph, Node


def layer_signature(graph: Graph, node: Node) -> str:
    """Identical layers (in one model or across models) share a signature and are measured once."""
    c = graph.conv_info(node)
    n, h, w, ch = c["input"]
    kh, kw, _, oc = c["weights"]
    return (f"{n}x{h}x{w}x{ch}-k{kh}x{kw}-o{oc}-s{c['strides'][0]}x{c['strides'][1]}"
            f"-d{c['dilations'][0]}x{c['dilations'][1]}-p{'.'.join(map(str, c['pads']))}-g{c['groups']}-{c['activation']}"
            + _int8_suffix(c, "-"))


def _int8_suffix(c: dict[str, Any], sep: str) -> str:
    """An int8 layer's dtype and, unless TFLite's fixed point (the older signatures), its arithmetic."""
    if c["dtype"] != "int8":
        return ""
    return f"{sep}int8" + ("" if c["requantization"] == "tflite" else f"{sep}{c['requantization']}")


def layer_line(graph: Graph, node: Node, signature: str) -> str:
    """The profiler job file's line for the layer."""
    c = graph.conv_info(node)
    n, h, w, ch = c["input"]
    kh, kw, _, oc = c["weights"]
    fields = [n, h, w, ch, oc, kh, kw, *c["strides"], *c["dilations"], *c["pads"], c["groups"]]
    return f"L {signature} {' '.join(map(str, fields))} {c['activation']}" + _int8_suffix(c, " ")


def variant_key(params: dict[str, Any]) -> str:
    return params["method"] + "".join(f",{k}={params[k]}" for k in sorted(params) if k != "method")


def conv_nodes(graph: Graph) -> list[tuple[int, Node]]:
    return [(i, n) for i, n in enumerate(graph.nodes) if graph.is_tunable_conv(n)]


def best_records(records: list[Record], target: str, build: str, settings: str,
                 wanted: dict[str, set[str]] | None = None) -> dict[str, Record]:
    """Per layer signature, the variant with the lowest median among those that passed the check
    (a candidate only: tuner/confirm.py decides on whole-model runs); with `wanted`, only among
    each layer's variants of this run (a store also holds other runs' options)."""
    best: dict[str, Record] = {}
    for r in records:
        if r.target != target or r.build != build or r.settings != settings or not r.ok:
            continue
        if wanted is not None and r.variant not in wanted.get(r.layer, ()):
            continue
        if r.layer not in best or r.median_ms < best[r.layer].median_ms:
            best[r.layer] = r
    return best
