"""Fusion: a pass over the IR that gives a convolution the ops around it that it can compute
itself, so that their tensors never make a round trip through memory.

Importers leave the graph as the model wrote it; this pass runs after them, and every form can be
switched on or off on its own (the tuner times the fused plan against the unfused chain, and
`layertune.load(..., fuse=...)` chooses). The forms:

- ``pad``: a zero PAD of height and width that only a convolution reads becomes that
  convolution's padding;
- ``swish``: ``y * LOGISTIC(y)`` after a convolution (EfficientNet's swish);
- ``hard_swish``: HARD_SWISH after a convolution (MobileNetV3);
- ``add``: an ADD of the convolution's output and a tensor of the same shape (a residual), with
  the ADD's own fused activation.

The last three become steps of the convolution's ``epilogue`` attribute (the core's `PostOps`,
applied by every kernel to each output block it finishes), an ``add`` step's tensor the
convolution's fourth input. The node records the names of the nodes it absorbed in ``fused``, so
that a plan says which groups were fused. A group takes the place of its last node in the order
(the residual of an ADD may be computed after the convolution)."""

from __future__ import annotations

from typing import Iterable

from layertune.graph.ir import CONV_OPS, Graph, Node

FORMS = ("pad", "swish", "hard_swish", "add")
EPILOGUE_FORMS = ("swish", "hard_swish", "add")


def check_forms(forms: Iterable[str], where: str = "fusion") -> tuple[str, ...]:
    """The forms as a tuple; ValueError naming the first unknown one."""
    out = tuple(forms)
    for form in out:
        if form not in FORMS:
            raise ValueError(f"{where}: unknown fusion form {form!r} (expected some of {', '.join(FORMS)})")
    return out


def fuse(graph: Graph, forms: Iterable[str] = FORMS) -> Graph:
    """A copy of `graph` with the given forms fused wherever they apply (tensors are shared; the
    unused ones are pruned)."""
    forms = check_forms(forms)
    g = graph.copy()
    for node in g.nodes:  # graph.copy shares the tensor-id lists: this pass rewires them
        node.inputs, node.outputs = list(node.inputs), list(node.outputs)
    if "pad" in forms:
        _fold_pads(g)
    while any(_fuse_one(g, node, forms) for node in list(g.nodes) if g.is_float_conv(node)):
        pass
    g.prune()
    return g


def fused_groups(graph: Graph) -> dict[str, list[str]]:
    """{convolution node: the nodes it absorbed} of a fused graph (or plan)."""
    return {n.name: str(n.attrs["fused"]).split(",") for n in graph.nodes if n.attrs.get("fused")}


def _readers(graph: Graph, tensor: int) -> list[Node]:
    return [n for n in graph.nodes if tensor in n.inputs]


def _only_read_by(graph: Graph, tensor: int, nodes: list[Node]) -> bool:
    """`tensor` is read by exactly these nodes and is not a graph output."""
    readers = _readers(graph, tensor)
    return tensor not in graph.outputs and len(readers) == len(nodes) and all(any(r is n for r in readers) for n in nodes)


def _record(conv: Node, names: list[str]) -> None:
    """Appends the names of the nodes `conv` absorbed to its `fused` attribute."""
    before = [conv.attrs["fused"]] if conv.attrs.get("fused") else []
    conv.attrs["fused"] = ",".join(before + names)


def _absorb(graph: Graph, conv: Node, absorbed: list[Node], step: str, output: int) -> None:
    """`conv` now also computes `absorbed` (the epilogue step `step`) and writes `output`; it moves
    to the place of the last absorbed node."""
    epilogue = conv.attrs.get("epilogue", "")
    conv.attrs["epilogue"] = f"{epilogue},{step}" if epilogue else step
    _record(conv, [n.name for n in absorbed])
    conv.outputs = [output]
    last = max(graph.nodes.index(n) for n in absorbed)
    graph.nodes.insert(last + 1, conv)
    graph.nodes.remove(conv)  # the first occurrence: its old place, before `last`
    for node in absorbed:
        graph.nodes.remove(node)


def _fuse_one(graph: Graph, conv: Node, forms: tuple[str, ...]) -> bool:
    """Fuses the one elementwise op (or pair, for swish) that reads `conv`'s output, if it can."""
    y = conv.outputs[0]
    readers = _readers(graph, y)
    if y in graph.outputs or not readers:
        return False
    shape = graph.tensors[y].shape
    steps = conv.attrs.get("epilogue", "").split(",")

    if "hard_swish" in forms and len(readers) == 1 and readers[0].op == "HARD_SWISH":
        _absorb(graph, conv, readers, "hard_swish", readers[0].outputs[0])
        return True

    if "swish" in forms and len(readers) == 2:
        logistic = next((r for r in readers if r.op == "LOGISTIC"), None)
        mul = next((r for r in readers if r.op == "MUL"), None)
        if (logistic is not None and mul is not None and sorted(mul.inputs) == sorted([y, logistic.outputs[0]])
                and mul.attrs.get("activation", "none") == "none"
                and _only_read_by(graph, logistic.outputs[0], [mul])
                and graph.tensors[mul.outputs[0]].shape == shape):
            _absorb(graph, conv, [logistic, mul], "swish", mul.outputs[0])
            return True

    if "add" in forms and len(readers) == 1 and readers[0].op == "ADD" and not any(s.startswith("add") for s in steps):
        add = readers[0]
        others = [t for t in add.inputs if t != y]
        if (len(add.inputs) == 2 and len(others) == 1 and graph.tensors[others[0]].shape == shape
                and graph.tensors[add.outputs[0]].shape == shape):
            conv.inputs = _padded_inputs(conv.inputs, 3) + [others[0]]
            _absorb(graph, conv, [add], f"add:{add.attrs.get('activation', 'none')}", add.outputs[0])
            return True
    return False


def _padded_inputs(inputs: list[int], count: int) -> list[int]:
    """The first `count` inputs, absent ones (a convolution without bias) as -1."""
    return (list(inputs) + [-1] * count)[:count]


def _fold_pads(graph: Graph) -> None:
    """A zero PAD of height and width that only a convolution reads -> that convolution's padding."""
    for pad in [n for n in graph.nodes if n.op in ("PAD", "PADV2")]:
        p = pad.attrs["pads"]
        if (len(p) != 8 or pad.attrs.get("mode", "constant") != "constant" or pad.attrs.get("value", 0.0) != 0.0
                or any(p[i] for i in (0, 1, 6, 7))):
            continue
        readers = _readers(graph, pad.outputs[0])
        if (len(readers) != 1 or pad.outputs[0] in graph.outputs or readers[0].op not in CONV_OPS
                or readers[0].inputs[0] != pad.outputs[0] or pad.outputs[0] in readers[0].inputs[1:]):
            continue
        conv = readers[0]
        conv.attrs["pads"] = [a + b for a, b in zip(conv.attrs["pads"], p[2:6])]
        conv.inputs[0] = pad.inputs[0]
        _record(conv, [pad.name])
        pad.outputs = []
    graph.nodes = [n for n in graph.nodes if n.outputs]
