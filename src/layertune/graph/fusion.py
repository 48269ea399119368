"""Fusion: a pass over the IR that gives a convolution the ops around it that it can compute
itself, so that their tensors never make a round trip through memory.

Importers leave the graph as the model wrote it; this pass runs after them, and every form can be
switched on or off on its own (the tuner times the fused plan against the unfused chain, and
`layertune.load(..., fuse=...)` chooses). The forms:

- ``pad``: a zero PAD of height and width that only a convolution reads becomes that
  convolution's padding; a constant PAD that only a MAX_POOL_2D reads becomes the pool's padding
  (which the pool skips) when no value the pool can return is below the pad's (its input is at
  least the pad value, after a ReLU or at int8's lowest value, or the pool's own activation
  clamps above it) and every window keeps an element of the input (each pad smaller than the
  window): ResNet50's PAD before its first pooling (1.2% of its int8 time here);
- ``swish``: ``y * LOGISTIC(y)`` after a convolution (EfficientNet's swish);
- ``hard_swish``: HARD_SWISH after a convolution (MobileNetV3);
- ``add``: an ADD of the convolution's output and a tensor of the same shape (a residual), with
  the ADD's own fused activation. Also on an int8 convolution (the one form that applies there),
  whose ADD rescales: the node keeps its own output's quantization in ``conv_output_scale`` and
  ``conv_output_zero_point``, computes that int8 output in registers and then the ADD's
  arithmetic on it (kernels/int8/add_arithmetic.h), bit for bit the unfused pair;
- ``inverted_residual``: a 1x1 expand convolution, the depthwise convolution that alone reads it
  and the 1x1 project convolution that alone reads that (MobileNetV2's block, its residual ADD
  already in the project's epilogue) computed in strips of output rows, so that the expanded
  tensor stays in cache (kernels/ops/strip_group.cc). The first convolution may be any dense one
  (MobileNetV2's 3x3 stride-2 stem, which its first depthwise reads: the "expand" of a block
  without expansion; in the model, one thread, its three nodes took 0.84-0.89x the unfused time,
  two threads 0.92-0.95x). The expand node gets ``strip_rows``, the two others ``strip_group``
  (the expand's name), and the three become consecutive; each keeps its own kernel choice; the
  group runs on the engine's threads, pairs of them claiming strips from the two ends of the rows
  until they meet (kernels/ops/strip_group.cc). Applied where
  the expanded tensor is at least STRIP_MIN_BYTES.
- ``input_scale``: a MUL of a tensor by one value per channel (a squeeze-excite gate, batch 1)
  that only a 1x1 CONV_2D reads becomes that convolution's fifth input, its input scale, where the
  tensor has at least INPUT_SCALE_MIN_RATIO times as many elements as the weights: the
  convolution reads the unscaled tensor and the core folds the scale into its packed weights each
  run (EfficientNet's project convolutions up to its 28x28 blocks). The MUL's pass over the
  block's tensor (a read and a write of it) goes;
- ``squeeze_excite``: MEAN over height and width, an optional RESHAPE, a 1x1 reduce and a 1x1
  expand CONV_2D on the 1x1 map, LOGISTIC, and the MUL of the MEAN's input by that gate
  (EfficientNet's squeeze-and-excite) computed by one op (kernels/ops/squeeze_excite.cc). The
  reduce convolution's own swish or hard-swish is fused into it first; the MEAN gets
  ``se_nodes`` (how many nodes the group has, 4 to 6), the others ``se_group`` (the MEAN's
  name), and they become consecutive in the MEAN's place. Where a convolution took the gate as its
  input scale, the group ends at the LOGISTIC.

The last three become steps of the convolution's ``epilogue`` attribute (the core's `PostOps`,
applied by every kernel to each output block it finishes), an ``add`` step's tensor the
convolution's fourth input. The node records the names of the nodes it absorbed in ``fused``, so
that a plan says which groups were fused. A group takes the place of its last node in the order
(the residual of an ADD may be computed after the convolution)."""

from __future__ import annotations

import math
from typing import Iterable

from layertune.graph.ir import CONV_OPS, Graph, Node

FORMS = ("pad", "swish", "hard_swish", "add", "input_scale", "inverted_residual", "squeeze_excite")
EPILOGUE_FORMS = ("swish", "hard_swish", "add")
# input_scale: rescaling the weights each run costs a read and a write of them, as the MUL did of
# the tensor. Measured in EfficientNetB0 at 224x224, one thread, per layer (fused against the
# MUL in its squeeze-excite op, both ops): 112x112x32 -> 16 (784 elements a weight) 350 -> 277 us,
# 56x56x144 -> 24 (131) 427 -> 314 us, 28x28x240 -> 40 (20) 188 -> 163 us; the 14x14 blocks (1.7-2.4)
# even to 12 us slower.
INPUT_SCALE_MIN_RATIO = 8
# Below this an expanded tensor stays in cache anyway and strips only add their overhead. Measured
# in MobileNetV2 at 224x224 on a 2 MiB-L2 x86 core: the 28x28x192 groups (588 KiB) took 1.1-1.25x
# the unfused chain's time, the 56x56x144 and 112x112x96 ones (1.7 and 4.6 MiB) 0.7-1.0x, most
# gained at two threads; the stem's 112x112x32 (1.6 MiB) 0.84-0.95x. A Pi 3's L2 is 512 KiB for
# four cores: the tuner's variants lower it.
STRIP_MIN_BYTES = 1024 * 1024
# The default strip: as many output rows as keep the expanded rows it reads within this budget
# (2 rows of the 112x112 block at stride 2, 6 of the 56x56 ones; 1-16 rows measured within 5%).
STRIP_BUDGET_BYTES = 256 * 1024


def check_forms(forms: Iterable[str], where: str = "fusion") -> tuple[str, ...]:
    """The forms as a tuple; ValueError naming the first unknown one."""
    out = tuple(forms)
    for form in out:
        if form not in FORMS:
            raise ValueError(f"{where}: unknown fusion form {form!r} (expected some of {', '.join(FORMS)})")
    return out


def fuse(graph: Graph, forms: Iterable[str] = FORMS, strip_rows: int = 0,
         strip_min_bytes: int = STRIP_MIN_BYTES) -> Graph:
    """A copy of `graph` with the given forms fused wherever they apply (tensors are shared; the
    unused ones are pruned). `strip_rows`: the inverted-residual strips' height, 0 = each group's
    own from STRIP_BUDGET_BYTES; `strip_min_bytes`: the smallest expanded tensor grouped."""
    forms = check_forms(forms)
    g = graph.copy()
    for node in g.nodes:  # graph.copy shares the tensor-id lists: this pass rewires them
        node.inputs, node.outputs = list(node.inputs), list(node.outputs)
    if "pad" in forms:
        _fold_pads(g)
    while any(_fuse_one(g, node, forms) for node in list(g.nodes) if g.is_float_conv(node)):
        pass
    if "add" in forms:
        while any(_fuse_int8_add(g, node) for node in list(g.nodes) if _is_int8_conv(g, node)):
            pass
    if "input_scale" in forms:
        _fold_input_scales(g)
    g.prune()
    if "inverted_residual" in forms:  # after `add`: the residual ADD belongs to the project
        _group_inverted_residuals(g, strip_rows, strip_min_bytes)
    if "squeeze_excite" in forms:
        _group_squeeze_excites(g)
    return g


def fused_groups(graph: Graph) -> dict[str, list[str]]:
    """{convolution node: the nodes it absorbed; first node of a strip or squeeze-excite group: the
    group's other nodes} of a fused graph (or plan)."""
    groups = {n.name: str(n.attrs["fused"]).split(",") for n in graph.nodes if n.attrs.get("fused")}
    for n in graph.nodes:
        for key in ("strip_group", "se_group"):
            if key in n.attrs:
                groups.setdefault(str(n.attrs[key]), []).append(n.name)
    return groups


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

    if "add" in forms and not any(s.startswith("add") for s in steps):
        found = _residual_add(graph, conv)
        if found is not None:
            _absorb_add(graph, conv, *found)
            return True
    return False


def _residual_add(graph: Graph, conv: Node) -> tuple[Node, int] | None:
    """The ADD that alone reads `conv`'s output and a second tensor of its shape, and that tensor."""
    y = conv.outputs[0]
    readers = _readers(graph, y)
    if y in graph.outputs or len(readers) != 1 or readers[0].op != "ADD":
        return None
    add = readers[0]
    others = [t for t in add.inputs if t != y]
    shape = graph.tensors[y].shape
    if (len(add.inputs) != 2 or len(others) != 1 or graph.tensors[others[0]].shape != shape
            or graph.tensors[add.outputs[0]].shape != shape):
        return None
    return add, others[0]


def _absorb_add(graph: Graph, conv: Node, add: Node, residual: int) -> None:
    """`conv` takes `add` into its epilogue; the residual becomes its fourth input."""
    conv.inputs = _padded_inputs(conv.inputs, 3) + [residual]
    _absorb(graph, conv, [add], f"add:{add.attrs.get('activation', 'none')}", add.outputs[0])


def _is_int8_conv(graph: Graph, node: Node) -> bool:
    return node.op in CONV_OPS and graph.tensors[node.outputs[0]].dtype == "int8"


def _fuse_int8_add(graph: Graph, conv: Node) -> bool:
    """The int8 ADD that alone reads an int8 convolution's output and a residual of its shape, in
    the convolution's arithmetic (the `add` form on int8 layers; see the module's text)."""
    found = None if conv.attrs.get("epilogue") else _residual_add(graph, conv)
    if found is None:
        return False
    add, residual = found
    tensors = [graph.tensors[t] for t in [conv.outputs[0], residual, *add.outputs]]
    if (any(t.dtype != "int8" or t.quantization is None or not t.quantization.per_tensor for t in tensors)
            or add.attrs.get("requantization", "tflite") != conv.attrs.get("requantization", "tflite")):
        return False
    q = tensors[0].quantization
    conv.attrs["conv_output_scale"] = float(q.scales[0])
    conv.attrs["conv_output_zero_point"] = int(q.zero_points[0])
    _absorb_add(graph, conv, add, residual)
    return True


def _padded_inputs(inputs: list[int], count: int) -> list[int]:
    """The first `count` inputs, absent ones (a convolution without bias) as -1."""
    return (list(inputs) + [-1] * count)[:count]


def _fold_pads(graph: Graph) -> None:
    """A constant PAD of height and width that only a convolution or a max pooling reads, and that
    it can take as its own padding (see the module's text) -> that node's padding."""
    for pad in [n for n in graph.nodes if n.op in ("PAD", "PADV2")]:
        p = pad.attrs["pads"]
        if len(p) != 8 or pad.attrs.get("mode", "constant") != "constant" or any(p[i] for i in (0, 1, 6, 7)):
            continue
        readers = _readers(graph, pad.outputs[0])
        if len(readers) != 1 or pad.outputs[0] in graph.outputs or readers[0].inputs[0] != pad.outputs[0]:
            continue
        node = readers[0]
        value = float(pad.attrs.get("value", 0.0))
        if node.op in CONV_OPS:
            if value != 0.0 or pad.outputs[0] in node.inputs[1:]:
                continue
        elif node.op == "MAX_POOL_2D":
            floor = max(_lower_bound(graph, pad.inputs[0]), _activation_floor(node.attrs.get("activation", "none")))
            fh, fw = node.attrs["filter"]
            if value > floor or any(q >= f for q, f in zip(p[2:6], (fh, fh, fw, fw))):
                continue
        else:
            continue
        node.attrs["pads"] = [a + b for a, b in zip(node.attrs["pads"], p[2:6])]
        node.inputs[0] = pad.inputs[0]
        _record(node, [pad.name])
        pad.outputs = []
    graph.nodes = [n for n in graph.nodes if n.outputs]


_ACTIVATION_OPS = {"RELU": "relu", "RELU6": "relu6", "RELU_N1_TO_1": "relu_n1_to_1"}


def _activation_floor(activation: str) -> float:
    """The least value a fused activation returns."""
    return {"relu": 0.0, "relu6": 0.0, "relu_n1_to_1": -1.0}.get(activation, -math.inf)


def _lower_bound(graph: Graph, tensor: int) -> float:
    """A value no element of `tensor` is below, from its producer's activation and, for int8, the
    lowest value its quantization represents (-inf when nothing is known)."""
    bound = -math.inf
    t = graph.tensors[tensor]
    if t.dtype == "int8" and t.quantization is not None and t.quantization.per_tensor:
        bound = float(t.quantization.scales[0]) * (-128 - int(t.quantization.zero_points[0]))
    for node in graph.nodes:
        if tensor in node.outputs:
            bound = max(bound, _activation_floor(_ACTIVATION_OPS.get(node.op, node.attrs.get("activation", "none"))))
    return bound


def _pointwise(graph: Graph, node: Node) -> bool:
    """A float 1x1 CONV_2D with stride 1 and no padding (a matrix product over pixels)."""
    if node.op != "CONV_2D" or not graph.is_float_conv(node):
        return False
    kh, kw = graph.tensors[node.inputs[1]].shape[:2]
    return ((kh, kw) == (1, 1)
            and tuple(node.attrs["strides"]) == (1, 1) and not any(node.attrs["pads"])
            and int(node.attrs.get("groups", 1)) == 1)


def _adds_residual(node: Node) -> bool:
    return any(s.startswith("add") for s in node.attrs.get("epilogue", "").split(","))


def _group_inverted_residuals(graph: Graph, strip_rows: int, min_bytes: int) -> None:
    """Marks each expand -> depthwise -> project chain as a strip group (see the module's text)."""
    producer = graph.producers()
    for expand in list(graph.nodes):
        if (not _dense(graph, expand) or _adds_residual(expand) or "strip_group" in expand.attrs
                or "strip_rows" in expand.attrs):
            continue
        readers = _readers(graph, expand.outputs[0])
        if len(readers) != 1 or expand.outputs[0] in graph.outputs:
            continue
        dw = readers[0]
        x, mid = graph.tensors[dw.inputs[0]].shape, graph.tensors[dw.outputs[0]].shape
        if (dw.op != "DEPTHWISE_CONV_2D" or not graph.is_float_conv(dw) or dw.inputs[0] != expand.outputs[0]
                or x[3] != mid[3] or tuple(dw.attrs["dilations"]) != (1, 1) or _adds_residual(dw)):
            continue
        readers = _readers(graph, dw.outputs[0])
        if len(readers) != 1 or dw.outputs[0] in graph.outputs:
            continue
        project = readers[0]
        if not _pointwise(graph, project) or project.inputs[0] != dw.outputs[0]:
            continue
        if graph.tensors[expand.outputs[0]].size * 4 < min_bytes:
            continue
        first = graph.nodes.index(expand)
        residual = project.inputs[3] if len(project.inputs) > 3 else -1
        if residual >= 0 and producer.get(residual, -1) > first:
            continue  # the group runs in the expand's place: its residual must be there by then
        graph.nodes.remove(dw)
        graph.nodes.remove(project)
        graph.nodes[first + 1:first + 1] = [dw, project]
        producer = graph.producers()
        expand.attrs["strip_rows"] = strip_rows or _default_strip_rows(graph, dw)
        dw.attrs["strip_group"] = project.attrs["strip_group"] = expand.name


def _dense(graph: Graph, node: Node) -> bool:
    """A float CONV_2D without groups or dilation (what a strip group's first node may be)."""
    return (node.op == "CONV_2D" and graph.is_float_conv(node) and int(node.attrs.get("groups", 1)) == 1
            and tuple(node.attrs.get("dilations", (1, 1))) == (1, 1))


def _default_strip_rows(graph: Graph, dw: Node) -> int:
    """The most output rows whose expanded input rows fit STRIP_BUDGET_BYTES (at least one)."""
    _, _, w, c = graph.tensors[dw.inputs[0]].shape
    kh = graph.tensors[dw.inputs[1]].shape[0]
    stride = int(dw.attrs["strides"][0])
    row_bytes = w * c * 4
    rows = (STRIP_BUDGET_BYTES // row_bytes - kh) // stride + 1
    return max(1, int(rows))


def _only_reader(graph: Graph, tensor: int) -> Node | None:
    """The one node that reads `tensor`, if exactly one does and it is not a graph output."""
    readers = _readers(graph, tensor)
    return readers[0] if len(readers) == 1 and tensor not in graph.outputs else None


def _dense_on_one_pixel(graph: Graph, node: Node | None, reads: int) -> bool:
    """A float 1x1 CONV_2D reading `reads` into a 1x1 map, without a residual."""
    return (node is not None and _pointwise(graph, node) and node.inputs[0] == reads
            and graph.tensors[node.outputs[0]].shape[1:3] == (1, 1) and not _adds_residual(node))


def _group_squeeze_excites(graph: Graph) -> None:
    """Marks each MEAN -> [RESHAPE] -> CONV_2D -> CONV_2D -> LOGISTIC -> MUL chain as a squeeze-excite
    group (see the module's text)."""
    for mean in [n for n in graph.nodes if n.op == "MEAN"]:
        x = mean.inputs[0]
        shape = graph.tensors[x].shape
        if (len(shape) != 4 or graph.tensors[x].dtype != "float32" or "se_group" in mean.attrs
                or sorted(a % 4 for a in mean.attrs.get("axes", [])) != [1, 2]):
            continue
        chain = [mean]
        nxt = _only_reader(graph, mean.outputs[0])
        if nxt is not None and nxt.op == "RESHAPE":
            chain.append(nxt)
            nxt = _only_reader(graph, nxt.outputs[0])
        if not _dense_on_one_pixel(graph, nxt, chain[-1].outputs[0]):
            continue
        reduce = nxt
        while _fuse_one(graph, reduce, ("swish", "hard_swish")):
            pass
        expand = _only_reader(graph, reduce.outputs[0])
        if not _dense_on_one_pixel(graph, expand, reduce.outputs[0]) or graph.tensors[expand.outputs[0]].shape[3] != shape[3]:
            continue
        gate = _only_reader(graph, expand.outputs[0])
        if gate is None or gate.op != "LOGISTIC":
            continue
        mul = _only_reader(graph, gate.outputs[0])
        if mul is not None and _scales_input(mul, gate.outputs[0]):
            chain += [reduce, expand, gate]  # the convolution after it took the MUL (input_scale)
        elif (mul is not None and mul.op == "MUL" and sorted(mul.inputs) == sorted([x, gate.outputs[0]])
                and graph.tensors[mul.outputs[0]].shape == shape):
            chain += [reduce, expand, gate, mul]
        else:
            continue
        for node in chain[1:]:
            graph.nodes.remove(node)
        first = graph.nodes.index(mean)
        graph.nodes[first + 1:first + 1] = chain[1:]
        mean.attrs["se_nodes"] = len(chain)
        for node in chain[1:]:
            node.attrs["se_group"] = mean.name


def _scales_input(node: Node, scale: int) -> bool:
    """`node` is a convolution whose input scale (its fifth input) is `scale`."""
    return node.op in CONV_OPS and len(node.inputs) > 4 and node.inputs[4] == scale


def _fold_input_scales(graph: Graph) -> None:
    """Each MUL of a tensor by one value per channel that only a float 1x1 CONV_2D reads, with at
    least INPUT_SCALE_MIN_RATIO elements a weight -> that convolution's input scale (see the
    module's text)."""
    producer = graph.producers()
    for conv in list(graph.nodes):
        if not _pointwise(graph, conv) or len(conv.inputs) > 4 or conv.inputs[0] not in producer:
            continue
        mul = graph.nodes[producer[conv.inputs[0]]]
        if mul.op != "MUL" or len(mul.inputs) != 2 or mul.attrs.get("activation", "none") != "none":
            continue
        y = graph.tensors[mul.outputs[0]]
        if _only_reader(graph, mul.outputs[0]) is not conv or len(y.shape) != 4:
            continue
        n, _, _, c = y.shape
        if n != 1 or y.size < INPUT_SCALE_MIN_RATIO * graph.tensors[conv.inputs[1]].size:
            continue
        for x, scale in (mul.inputs, mul.inputs[::-1]):
            if (graph.tensors[x].shape == y.shape and graph.tensors[scale].shape == (n, 1, 1, c)
                    and graph.tensors[scale].dtype == "float32" and graph.tensors[scale].data is None):
                conv.inputs = _padded_inputs(conv.inputs, 4) + [scale]
                conv.inputs[0] = x
                _record(conv, [mul.name])
                graph.nodes.remove(mul)
                producer = graph.producers()
                break
