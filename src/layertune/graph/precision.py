"""Which layers of a quantized model the engine computes in int8, and the conversions between them.

An importer leaves a quantized model's tensors with their source quantization (`Tensor.quantization`)
and its weights as the integers the model stores. This pass decides, node by node in graph order:
a node runs in int8 when the engine has an int8 kernel for its op (`_core.supported_int8_ops()`)
and its tensors are quantized the way that kernel needs (`int8_blocker` says why not, otherwise);
every other node runs in float32 on dequantized values. Where a tensor passes between the two, a
QUANTIZE or DEQUANTIZE node is inserted. An input quantized to int8 is an int8 tensor of the plan:
the engine takes its integers as they are (what LiteRT takes) or quantizes real values given for
it as QUANTIZE does. Outputs stay real values (float32): the last node dequantizes them.
"""

from __future__ import annotations

import numpy as np

from layertune import _core
from layertune.graph.ir import CONV_OPS, Graph, Node, Tensor

INT8_OPS = frozenset(_core.supported_int8_ops())
# Whose integer arithmetic an int8 convolution, fully-connected layer, ADD, MUL or MEAN follows when it
# rescales its int32 sums to int8 (the node attribute `requantization`; kernels/int8/requantize.h):
# - "xnnpack": XNNPACK's, which LiteRT runs by default on a CPU (convolutions and MUL: the sum or
#   product times the real multiplier in float32, rounded to nearest even; ADD: 21-bit multipliers, one rounding shift;
#   MEAN: the sum times the scales' ratio over the count in float32);
# - "tflite": TFLite's reference kernels' (Q31 fixed-point multipliers, gemmlowp's rounding).
# RESIZE_BILINEAR rescales nothing but rounds its interpolation as one of the two does (XNNPACK's Q11
# weights, TFLite's Q10 ones), so it takes the attribute too.
# xnnpack is the default: it is the cheaper, and it gives those layers LiteRT's own output.
REQUANTIZATIONS = ("xnnpack", "tflite")
DEFAULT_REQUANTIZATION = "xnnpack"
REQUANTIZED_OPS = CONV_OPS + ("FULLY_CONNECTED", "ADD", "MUL", "SWISH", "MEAN", "RESIZE_BILINEAR")
_SAME_QUANT_OPS = {"AVERAGE_POOL_2D", "MAX_POOL_2D", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "PAD", "PADV2",
                   "RESIZE_NEAREST_NEIGHBOR", "RESIZE_BILINEAR"}


def _int8(t: Tensor) -> bool:
    q = t.quantization
    return q is not None and q.dtype == "int8" and q.per_tensor


def _weights_ok(graph: Graph, node: Node, channels: int) -> str:
    w = graph.tensors[node.inputs[1]]
    q = w.quantization
    if not w.constant or q is None or q.dtype != "int8":
        return "its weights are not int8"
    if any(q.zero_points) or len(q.scales) not in (1, channels):
        return "its weights are not symmetric per-tensor or per-channel int8"
    if len(node.inputs) > 2 and node.inputs[2] >= 0:
        b = graph.tensors[node.inputs[2]]
        if not b.constant or b.quantization is None or b.quantization.dtype != "int32":
            return "its bias is not int32"
    return ""


def int8_blocker(graph: Graph, node: Node) -> str:
    """"" when the engine can compute `node` in int8, else why not."""
    T = graph.tensors
    if node.op not in INT8_OPS:
        return f"no int8 kernel for {node.op}"
    acts = [t for t in node.inputs if t >= 0 and not T[t].constant]
    if node.op == "QUANTIZE":
        return "" if _int8(T[node.outputs[0]]) else "its output is not int8"
    if node.op == "DEQUANTIZE":
        return "" if _int8(T[acts[0]]) else "its input is not int8"
    if not all(_int8(T[t]) for t in acts + node.outputs):
        return "its tensors are not per-tensor int8"
    x, y = T[acts[0]], T[node.outputs[0]]
    if node.op in CONV_OPS:
        return _weights_ok(graph, node, y.shape[-1])
    if node.op == "FULLY_CONNECTED":
        return _weights_ok(graph, node, T[node.inputs[1]].shape[1])
    if node.op == "ADD" and not (len(acts) == 2 and T[acts[0]].shape == T[acts[1]].shape == y.shape):
        return "int8 ADD needs two inputs of the output's shape"
    if node.op == "MEAN" and (len(x.shape) != 4 or sorted(node.attrs.get("axes", [])) != [1, 2]):
        return "int8 MEAN reduces height and width only"
    if node.op in _SAME_QUANT_OPS:
        if (x.quantization.scale, x.quantization.zero_point) != (y.quantization.scale, y.quantization.zero_point):
            return "input and output are quantized differently"
        if node.op in ("PAD", "PADV2") and node.attrs.get("mode", "constant") != "constant":
            return "int8 PAD pads with a constant only"
    if node.op == "CONCATENATION" and node.attrs.get("activation", "none") != "none":
        return "int8 CONCATENATION has no fused activation"
    if len(acts) != len([t for t in node.inputs if t >= 0]) and node.op not in CONV_OPS + ("FULLY_CONNECTED",):
        return "a constant operand"
    return ""


def _real(t: Tensor) -> np.ndarray:
    """A constant's real values as float32."""
    if t.quantization is not None and t.data.dtype.kind in "iu":
        return t.quantization.dequantize(t.data)
    return np.asarray(t.data, np.float32)


def check_requantization(requantization: str) -> None:
    """ValueError unless `requantization` is one of REQUANTIZATIONS."""
    if requantization not in REQUANTIZATIONS:
        raise ValueError(f"requantization must be one of {', '.join(REQUANTIZATIONS)}, got {requantization!r}")


def assign_precision(graph: Graph, int8: bool = True, requantization: str = DEFAULT_REQUANTIZATION,
                     float_layers: frozenset[str] = frozenset()) -> dict[str, str]:
    """Sets every tensor's engine dtype (in place) and inserts the conversions; with int8=False
    every node runs in float32, and so do the nodes named in `float_layers` (the tuner's per-layer
    precision choice). int8 convolutions and fully-connected layers get `requantization`
    (REQUANTIZATIONS). Returns, for each quantized node left in float, why."""
    check_requantization(requantization)
    T = graph.tensors
    readers: dict[int, list[bool]] = {}
    decided: list[tuple[Node, bool]] = []
    # A graph input quantized to int8 stays int8 (the engine takes its bytes, or quantizes real
    # values as QUANTIZE does): no QUANTIZE node, and no float32 copy of the input, as in LiteRT.
    stored: dict[int, str] = {t: "int8" if int8 and _int8(T[t]) else "float32" for t in graph.inputs}
    why_float: dict[str, str] = {}
    converted: dict[tuple[int, str], int] = {}
    nodes: list[Node] = []

    def convert(t: int, to: str) -> int:
        if (t, to) not in converted:
            src = T[t]
            op, suffix = ("QUANTIZE", "quantized") if to == "int8" else ("DEQUANTIZE", "dequantized")
            new = graph.add_tensor(Tensor(f"{src.name}/{suffix}", src.shape, quantization=src.quantization, dtype=to))
            nodes.append(Node(op, f"{src.name}/{suffix}", [t], [new]))
            converted[(t, to)] = new
        return converted[(t, to)]

    for node in graph.nodes:
        reason = ("int8 off" if not int8 else "chosen in float32" if node.name in float_layers
                  else int8_blocker(graph, node))
        if node.op == "DEQUANTIZE" and not reason and stored.get(node.inputs[0]) != "int8":
            reason = "its input is computed in float"
        on = not reason
        if int8 and not on and node.op not in ("QUANTIZE", "DEQUANTIZE") and any(
                T[t].quantization is not None for t in node.inputs + node.outputs if t >= 0):
            why_float[node.name] = reason
        ins = list(node.inputs)
        for k, t in enumerate(ins):
            if t < 0 or T[t].constant:
                if t >= 0:
                    readers.setdefault(t, []).append(on)
                continue
            have = stored.get(t, "float32")
            need = have if (on and node.op == "QUANTIZE") else ("int8" if on else "float32")
            if have != need:
                ins[k] = convert(t, need)
        node.inputs = ins
        for o in node.outputs:
            stored[o] = "int8" if on and node.op != "DEQUANTIZE" else "float32"
        if on and node.op in REQUANTIZED_OPS:
            node.attrs["requantization"] = requantization
        decided.append((node, on))
        nodes.append(node)
    graph.nodes = nodes
    graph.outputs = [convert(t, "float32") if stored.get(t) == "int8" else t for t in graph.outputs]
    for t, dtype in stored.items():
        T[t].dtype = dtype
    for (_, to), new in converted.items():
        T[new].dtype = to
    # Constants: the integers for int8 readers, real values for float ones (a copy if both read one).
    for t, on in readers.items():
        tensor, q = T[t], T[t].quantization
        if not any(on) or q is None or q.dtype not in ("int8", "int32"):
            continue
        tensor.dtype = q.dtype
        tensor.data = np.ascontiguousarray(tensor.data, np.int8 if q.dtype == "int8" else np.int32)
        if not all(on):
            real = graph.add_tensor(Tensor(tensor.name + "/real", tensor.shape, _real(tensor)))
            for node, node_on in decided:
                if not node_on:
                    node.inputs = [real if i == t else i for i in node.inputs]
    for tensor in T:
        if tensor.constant and tensor.dtype == "float32" and tensor.data.dtype != np.float32:
            tensor.data = _real(tensor)
    _fold_int8_swish(graph)
    return why_float


def _fold_int8_swish(graph: Graph) -> None:
    """An int8 LOGISTIC whose only reader is a MUL of its input by it (swish: EfficientNet computes
    x * sigmoid(x) so) becomes one SWISH node: both steps depend on x alone, so the engine's
    256-entry table holds the MUL's rounding of x times the LOGISTIC's rounded output (the
    LOGISTIC's quantization kept as sigmoid_scale / sigmoid_zero_point): the two ops' output bit
    for bit, in one pass over the tensor instead of two."""
    T = graph.tensors
    producer = {o: n for n in graph.nodes for o in n.outputs}
    readers: dict[int, int] = {}
    for n in graph.nodes:
        for t in n.inputs:
            readers[t] = readers.get(t, 0) + 1
    folded: set[int] = set()
    for mul in graph.nodes:
        if mul.op != "MUL" or len(mul.inputs) != 2 or T[mul.outputs[0]].dtype != "int8":
            continue
        for s, x in (mul.inputs, mul.inputs[::-1]):
            logistic = producer.get(s)
            if (logistic is not None and logistic.op == "LOGISTIC" and logistic.inputs == [x] and T[s].dtype == "int8"
                    and readers.get(s) == 1 and s not in graph.outputs):
                q = T[s].quantization
                mul.op, mul.inputs = "SWISH", [x]
                mul.attrs.update(sigmoid_scale=float(q.scale), sigmoid_zero_point=int(q.zero_point))
                folded.add(id(logistic))
                break
    graph.nodes = [n for n in graph.nodes if id(n) not in folded]
