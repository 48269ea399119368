"""ONNX model -> layertune's graph IR (the `layertune[onnx]` extra: the `onnx` package).

ONNX computes in NCHW, the engine in NHWC. Rather than transposing around every convolution, each
value keeps a *layout*: the permutation ``perm`` with ``stored = np.transpose(logical, perm)``.
Convolution and pooling outputs are stored NHWC (perm (0, 2, 3, 1)); element-wise ops, Concat,
Split, Slice, Gather, ReduceMean and Softmax work in whatever layout their input has (axes are
mapped); a Transpose changes only the layout, never data. A TRANSPOSE node is emitted only where
an op needs a layout its input does not have (a Conv reading NCHW graph input, a Reshape whose
input order differs from ONNX's), and graph outputs are returned in ONNX's layout.

* Weights are transposed once at import; BatchNormalization after a convolution is folded into
  its weights, a Relu / Clip(0, 6) into its activation; HardSigmoid(x) * x becomes HARD_SWISH.
* Shape arithmetic on constants (Shape, Gather, Concat, Unsqueeze, ...) is folded at import with
  onnx's reference evaluator, since every shape is static.
* Dynamic input dimensions must be fixed by the caller (``input_shapes={"images": (1, 3, 640, 640)}``);
  an op outside ``SUPPORTED_ONNX_OPS`` is refused before any work, naming the model, node and op.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from layertune.graph.ir import Graph, Node, Tensor
from layertune.graph.tflite_import import ImportError_
from layertune.graph.transposed_conv import lower_transposed_convs

NHWC = (0, 2, 3, 1)

# ops computed on activations (anything else must have only constant inputs, and is folded)
_ELEMENTWISE = {"Add": "ADD", "Sub": "SUB", "Mul": "MUL", "Div": "DIV", "Max": "MAXIMUM", "Min": "MINIMUM",
                "PRelu": "PRELU", "Sum": "ADD"}
_UNARY = {"Relu": "RELU", "Sigmoid": "LOGISTIC", "Tanh": "TANH", "HardSwish": "HARD_SWISH", "Sqrt": "SQRT",
          "LeakyRelu": "LEAKY_RELU"}
_ALIASES = {"Identity", "Dropout", "Cast"}
_HANDLED = (set(_ELEMENTWISE) | set(_UNARY) | _ALIASES |
            {"Conv", "ConvTranspose", "BatchNormalization", "Gemm", "MatMul", "Clip", "HardSigmoid", "Softmax",
             "Pow", "Concat", "Split", "Slice", "Gather", "MaxPool", "AveragePool", "GlobalAveragePool",
             "GlobalMaxPool", "ReduceMean", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Resize",
             "Upsample", "Pad", "DepthToSpace", "SpaceToDepth", "Neg"})
# ops that appear in shape arithmetic: folded when their inputs are constants
_FOLD_ONLY = {"Shape", "Size", "Constant", "ConstantOfShape", "Range", "Equal", "Less", "Greater", "Where",
              "Expand", "Floor", "Ceil", "ReduceProd", "ReduceSum", "ReduceMax", "ReduceMin", "Not", "And", "Or",
              "Abs", "Exp", "Log", "Tile", "NonZero", "ScatterND", "Round", "Mod", "CumSum", "Sign"}
SUPPORTED_ONNX_OPS = sorted(_HANDLED | _FOLD_ONLY)
_OPSETS = (7, 21)


class Value:
    """An ONNX value: a constant (numpy, ONNX's layout) or an activation (IR tensor id + layout)."""
    __slots__ = ("const", "tid", "perm", "shape")

    def __init__(self, const: np.ndarray | None = None, tid: int = -1, perm: tuple[int, ...] = (),
                 shape: tuple[int, ...] = ()):
        self.const, self.tid, self.perm = const, tid, perm
        self.shape = tuple(const.shape) if const is not None else tuple(shape)  # logical (ONNX) shape

    @property
    def is_const(self) -> bool:
        return self.const is not None


def _inverse(perm: tuple[int, ...]) -> tuple[int, ...]:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


def _keeps_order(shape: tuple[int, ...], perm: tuple[int, ...]) -> bool:
    """True if storing `shape` with `perm` leaves the elements in ONNX's memory order (the axes
    that move have size 1), so that a reshape can read the stored tensor as it is."""
    big = [p for p in perm if shape[p] != 1]
    return big == sorted(big)


def _same_pads(size: int, kernel: int, stride: int, dilation: int, upper: bool) -> tuple[int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    small, big = total // 2, total - total // 2
    return (small, big) if upper else (big, small)


class OnnxImporter:
    def __init__(self, model, name: str, source: str, input_shapes: dict[str, tuple[int, ...]] | None,
                 other_inputs_ok: bool = False):
        self.model, self.name, self.source = model, name, source
        self.other_inputs_ok = other_inputs_ok  # input_shapes may name other models' inputs
        self.input_shapes = {k: tuple(int(d) for d in v) for k, v in (input_shapes or {}).items()}
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        self.values: dict[str, Value] = {}
        self.tensors: list[Tensor] = []
        self.nodes: list[Node] = []
        self.layout_cache: dict[tuple[int, tuple[int, ...]], int] = {}
        self.conv_of: dict[str, int] = {}  # ONNX name of a convolution's output -> its IR node index
        self.uses: dict[str, int] = {}
        self.onnx_node: Any = None
        self.hardsigmoid_of: dict[str, str] = {}  # HardSigmoid(1/6, 1/2) output -> its input

    # -- errors --------------------------------------------------------------------------------
    def fail(self, why: str) -> ImportError_:
        n = self.onnx_node
        where = f"node '{n.name or n.output[0]}' ({n.op_type})" if n is not None else "graph"
        return ImportError_(f"{self.source}: {where}: {why}")

    # -- values and tensors ----------------------------------------------------------------
    def add_tensor(self, name: str, stored_shape: tuple[int, ...], data: np.ndarray | None = None) -> int:
        self.tensors.append(Tensor(name, tuple(int(d) for d in stored_shape), data))
        return len(self.tensors) - 1

    def new_act(self, onnx_name: str, shape: tuple[int, ...], perm: tuple[int, ...] | None = None) -> Value:
        perm = tuple(range(len(shape))) if perm is None else tuple(perm)
        if any(int(d) <= 0 for d in shape):
            raise self.fail(f"output '{onnx_name}' would have shape {tuple(shape)}")
        tid = self.add_tensor(onnx_name, tuple(shape[p] for p in perm))
        v = Value(tid=tid, perm=perm, shape=tuple(int(d) for d in shape))
        self.values[onnx_name] = v
        return v

    def const_tensor(self, data: np.ndarray, name: str) -> int:
        data = np.ascontiguousarray(data, np.float32)
        return self.add_tensor(name, data.shape, data)

    def emit(self, op: str, inputs: list[int], outputs: list[int], **attrs: Any) -> int:
        name = self.tensors[outputs[0]].name
        self.nodes.append(Node(op, name, inputs, outputs, attrs))
        return len(self.nodes) - 1

    def value(self, name: str) -> Value:
        if name not in self.values:
            raise self.fail(f"input '{name}' is not produced by any earlier node")
        return self.values[name]

    def const(self, name: str, what: str) -> np.ndarray:
        v = self.value(name)
        if not v.is_const:
            raise self.fail(f"{what} ('{name}') must be a constant")
        return v.const

    def in_layout(self, v: Value, perm: tuple[int, ...], name: str = "") -> int:
        """The IR tensor holding `v` stored with `perm` (a TRANSPOSE when its layout differs)."""
        perm = tuple(perm)
        if v.is_const:
            return self.const_tensor(np.transpose(v.const.astype(np.float32), perm), name or "const")
        if v.perm == perm:
            return v.tid
        key = (v.tid, perm)
        if key not in self.layout_cache:
            # stored_new = transpose(stored_old, q) with perm_old[q[i]] = perm[i]
            q = [_inverse(v.perm)[p] for p in perm]
            tid = self.add_tensor(f"{self.tensors[v.tid].name}/layout", tuple(v.shape[p] for p in perm))
            moved = [[p for p in order if v.shape[p] != 1] for order in (v.perm, perm)]
            if moved[0] == moved[1]:  # only size-1 axes move: the data stays as it is
                self.emit("RESHAPE", [v.tid], [tid])
            else:
                self.emit("TRANSPOSE", [v.tid], [tid], perm=q)
            self.layout_cache[key] = tid
        return self.layout_cache[key]

    def plain(self, v: Value) -> int:
        """`v` in ONNX's memory order (possibly with its size-1 axes elsewhere), for reshapes."""
        if not v.is_const and _keeps_order(v.shape, v.perm):
            return v.tid
        return self.in_layout(v, tuple(range(len(v.shape))))

    def const_like(self, arr: np.ndarray, like: Value, name: str) -> int:
        """A constant operand broadcast against `like`, stored in `like`'s layout."""
        arr = np.asarray(arr, np.float32)
        rank = len(like.shape)
        if arr.ndim > rank:
            raise self.fail(f"constant '{name}' has a higher rank than the other input")
        arr = arr.reshape((1,) * (rank - arr.ndim) + arr.shape)
        return self.const_tensor(np.transpose(arr, like.perm), name)

    # -- attributes ----------------------------------------------------------------------------
    def attrs(self, node) -> dict[str, Any]:
        from onnx import helper
        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def optional(self, node, i: int) -> str | None:
        return node.input[i] if len(node.input) > i and node.input[i] else None

    # -- the conversion --------------------------------------------------------------------
    def run(self) -> Graph:
        from onnx import numpy_helper
        g = self.model.graph
        if not _OPSETS[0] <= self.opset <= _OPSETS[1] and self.opset:
            raise ImportError_(f"{self.source}: opset {self.opset} is outside the supported {_OPSETS[0]}..{_OPSETS[1]}")
        for n in g.node:
            if n.domain not in ("", "ai.onnx"):
                self.onnx_node = n
                raise self.fail(f"op of domain '{n.domain}' is not supported")
            if n.op_type not in _HANDLED and n.op_type not in _FOLD_ONLY:
                self.onnx_node = n
                raise self.fail(f"op {n.op_type} is not supported; supported ops: {', '.join(SUPPORTED_ONNX_OPS)}")
        for init in g.initializer:
            self.values[init.name] = Value(const=numpy_helper.to_array(init))
        unknown = set(self.input_shapes) - {i.name for i in g.input if i.name not in self.values}
        if unknown and not self.other_inputs_ok:
            raise ImportError_(f"{self.source}: input_shapes names {', '.join(sorted(unknown))}, which the model does "
                               f"not have (inputs: {', '.join(i.name for i in g.input if i.name not in self.values)})")
        inputs = []
        for inp in g.input:
            if inp.name in self.values:
                continue  # an initializer listed as an input (old exporters)
            inputs.append(self._graph_input(inp).tid)
        for n in g.node:
            for name in n.input:
                self.uses[name] = self.uses.get(name, 0) + 1
        for o in g.output:
            self.uses[o.name] = self.uses.get(o.name, 0) + 1
        for n in g.node:
            self.onnx_node = n
            self._convert(n)
        self.onnx_node = None
        outputs = []
        for o in g.output:
            v = self.value(o.name)
            if v.is_const:
                raise ImportError_(f"{self.source}: output '{o.name}' is a constant")
            tid = self.in_layout(v, tuple(range(len(v.shape))))
            if tid in inputs or tid in outputs:  # an output must be a tensor of its own
                copy = self.add_tensor(o.name, self.tensors[tid].shape)
                self.emit("RESHAPE", [tid], [copy])
                tid = copy
            self.tensors[tid].name = o.name
            outputs.append(tid)
        graph = Graph(self.name, self.tensors, self.nodes, inputs, outputs)
        lower_transposed_convs(graph)
        _fold_reshapes(graph)
        _fuse_activations(graph)
        graph.prune()
        return graph

    def _graph_input(self, inp) -> Value:
        from onnx import TensorProto
        tt = inp.type.tensor_type
        if tt.elem_type not in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE):
            raise ImportError_(f"{self.source}: input '{inp.name}' has element type "
                               f"{TensorProto.DataType.Name(tt.elem_type)}; layertune takes float inputs")
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?")
                for d in tt.shape.dim]
        if inp.name in self.input_shapes:
            shape = self.input_shapes[inp.name]
            fixed = [(i, d) for i, d in enumerate(dims) if isinstance(d, int)]
            if len(shape) != len(dims) or any(shape[i] != d for i, d in fixed) or min(shape, default=1) < 1:
                raise ImportError_(f"{self.source}: input_shapes['{inp.name}'] = {'x'.join(map(str, shape))} does "
                                   f"not fit the input's shape {'x'.join(map(str, dims))}")
        else:
            dynamic = [f"{i} ({d})" for i, d in enumerate(dims) if not isinstance(d, int)]
            if dynamic:
                example = "x".join(str(d) if isinstance(d, int) else "N" for d in dims)
                raise ImportError_(f"{self.source}: input '{inp.name}' has dynamic dimensions {', '.join(dynamic)} "
                                   f"of {'x'.join(map(str, dims))}; fix them with --input_shape {inp.name}={example} "
                                   f"(or input_shapes= in layertune.load)")
            shape = tuple(dims)
        return self.new_act(inp.name, tuple(shape))

    def _convert(self, n) -> None:
        ins = [i for i in n.input]
        if n.op_type == "Constant":
            self._fold(n)
            return
        present = [self.value(i) for i in ins if i]
        if n.op_type == "Shape":
            self._shape(n)
            return
        if n.op_type == "Size":
            self.values[n.output[0]] = Value(const=np.array(int(np.prod(present[0].shape)), np.int64))
            return
        if present and all(v.is_const for v in present):
            self._fold(n)
            return
        if n.op_type in _FOLD_ONLY:
            raise self.fail(f"{n.op_type} is supported only on constant inputs (shape arithmetic)")
        handler: Callable = getattr(self, f"_op_{n.op_type}", None) or self._by_table
        handler(n, self.attrs(n))

    def _fold(self, n) -> None:
        from onnx import helper
        from onnx.reference import ReferenceEvaluator
        feeds = {i: self.values[i].const for i in n.input if i}
        try:
            graph = helper.make_graph(
                [n], "fold",
                [helper.make_tensor_value_info(i, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
                 for i, a in feeds.items()],
                [helper.make_empty_tensor_value_info(o) for o in n.output if o])
            ev = ReferenceEvaluator(helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset or 13)]))
            outs = ev.run(None, feeds)
        except Exception as exc:
            raise self.fail(f"cannot fold on constants ({exc.__class__.__name__}: {str(exc).splitlines()[0][:120]})") from None
        for name, arr in zip([o for o in n.output if o], outs):
            self.values[name] = Value(const=np.asarray(arr))

    def _shape(self, n) -> None:
        shape = np.array(self.value(n.input[0]).shape, np.int64)
        a = self.attrs(n)
        start, end = a.get("start", 0), a.get("end", None)
        self.values[n.output[0]] = Value(const=shape[start:end])

    # -- element-wise --------------------------------------------------------------------------
    def _by_table(self, n, a) -> None:
        op = n.op_type
        if op in _ALIASES:
            if op == "Cast" and a.get("to") not in (1, 10, 11):  # float, float16, double
                raise self.fail("a Cast of an activation to a non-float type is not supported")
            self.values[n.output[0]] = self.value(n.input[0])
            return
        if op in _UNARY:
            x = self.value(n.input[0])
            out = self.new_act(n.output[0], x.shape, x.perm)
            attrs = {"alpha": float(a.get("alpha", 0.01))} if op == "LeakyRelu" else {}
            self.emit(_UNARY[op], [x.tid], [out.tid], **attrs)
            return
        if op in _ELEMENTWISE:
            if op == "Sum" and len(n.input) != 2 or op in ("Max", "Min") and len(n.input) != 2:
                raise self.fail(f"{op} with {len(n.input)} inputs is not supported (2 only)")
            if op == "Mul" and self._hard_swish(n):
                return
            if op in ("Add", "Sub", "Mul", "Div") and self._fold_into_conv(n):
                return
            self.binary(_ELEMENTWISE[op], n.input[0], n.input[1], n.output[0])
            return
        raise self.fail(f"op {op} is not supported")

    def binary(self, ir_op: str, a_name: str, b_name: str, out_name: str, **attrs: Any) -> Value:
        a, b = self.value(a_name), self.value(b_name)
        try:
            shape = tuple(np.broadcast_shapes(a.shape, b.shape))
        except ValueError:
            raise self.fail(f"inputs of shapes {a.shape} and {b.shape} do not broadcast") from None
        acts = [v for v in (a, b) if not v.is_const]
        full = [v for v in acts if len(v.shape) == len(shape)]
        ref = full[0] if full else self.full_rank(acts[0], len(shape), out_name)

        def operand(v: Value, name: str) -> int:
            if v.is_const:
                return self.const_like(v.const, ref, name)
            return self.in_layout(self.full_rank(v, len(shape), name), ref.perm)
        ia, ib = operand(a, a_name), operand(b, b_name)
        out = self.new_act(out_name, shape, ref.perm)
        self.emit(ir_op, [ia, ib], [out.tid], **attrs)
        return out

    def full_rank(self, v: Value, rank: int, name: str) -> Value:
        """`v` with leading size-1 axes up to `rank` (ONNX's broadcasting aligns shapes on the right)."""
        if len(v.shape) == rank:
            return v
        return self.reshaped(v, (1,) * (rank - len(v.shape)) + v.shape, f"{name}/rank{rank}")

    def _fold_into_conv(self, n) -> bool:
        """conv(x) * c, / c, + c or - c with a per-channel constant c -> the convolution's weights or
        bias (exporters leave batch norm as such a Mul and Add)."""
        x_name, c_name = n.input[0], n.input[1]
        if n.op_type in ("Add", "Mul") and self.value(x_name).is_const:
            x_name, c_name = c_name, x_name
        conv = self.conv_of.get(x_name)
        c = self.value(c_name).const
        if conv is None or c is None or self.uses.get(x_name, 0) != 1 or c.ndim > 4:
            return False
        c4 = c.astype(np.float64).reshape((1,) * (4 - c.ndim) + c.shape)
        node = self.nodes[conv]
        w = self.tensors[node.inputs[1]]
        out_c = w.shape[3]
        if c4.shape[0] != 1 or c4.shape[2:] != (1, 1) or c4.shape[1] not in (1, out_c):
            return False
        c1 = np.broadcast_to(c4.reshape(-1), (out_c,))
        if node.inputs[2] < 0:
            node.inputs[2] = self.const_tensor(np.zeros(out_c), n.output[0] + "/bias")
        b = self.tensors[node.inputs[2]]
        if n.op_type in ("Mul", "Div"):
            scale = c1 if n.op_type == "Mul" else 1.0 / c1
            w.data = (w.data * scale.reshape(1, 1, 1, -1)).astype(np.float32)
            b.data = (b.data * scale).astype(np.float32)
        else:
            b.data = (b.data + (c1 if n.op_type == "Add" else -c1)).astype(np.float32)
        self.values[n.output[0]] = self.value(x_name)
        self.conv_of[n.output[0]] = conv
        return True

    def _hard_swish(self, n) -> bool:
        """x * HardSigmoid(x; 1/6, 1/2) -> HARD_SWISH(x)."""
        a, b = n.input[0], n.input[1]
        for hs, x in ((a, b), (b, a)):
            if self.hardsigmoid_of.get(hs) == x:
                v = self.value(x)
                out = self.new_act(n.output[0], v.shape, v.perm)
                self.emit("HARD_SWISH", [v.tid], [out.tid])
                return True
        return False

    def _op_HardSigmoid(self, n, a) -> None:
        alpha, beta = float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))
        if abs(alpha - 1 / 6) < 1e-6 and abs(beta - 0.5) < 1e-6:
            self.hardsigmoid_of[n.output[0]] = n.input[0]
        x = self.value(n.input[0])
        scaled = self.new_act(n.output[0] + "/scaled", x.shape, x.perm)
        self.emit("MUL", [x.tid, self.const_tensor(np.array([alpha]), n.output[0] + "/alpha")], [scaled.tid])
        shifted = self.new_act(n.output[0] + "/shifted", x.shape, x.perm)
        self.emit("ADD", [scaled.tid, self.const_tensor(np.array([beta]), n.output[0] + "/beta")], [shifted.tid])
        self.clamp(shifted, n.output[0], 0.0, 1.0)

    def clamp(self, x: Value, out_name: str, lo: float | None, hi: float | None) -> None:
        named = {(0.0, 6.0): "RELU6", (0.0, None): "RELU", (-1.0, 1.0): "RELU_N1_TO_1"}.get((lo, hi))
        if named:
            out = self.new_act(out_name, x.shape, x.perm)
            self.emit(named, [x.tid], [out.tid])
            return
        if lo is None and hi is None:
            self.values[out_name] = x
            return
        cur = x
        for op, bound in (("MAXIMUM", lo), ("MINIMUM", hi)):
            if bound is None:
                continue
            last = op == "MINIMUM" or hi is None
            out = self.new_act(out_name if last else out_name + "/low", x.shape, x.perm)
            self.emit(op, [cur.tid, self.const_tensor(np.array([bound]), f"{out_name}/{op.lower()}")], [out.tid])
            cur = out

    def _op_Clip(self, n, a) -> None:
        if self.opset >= 11:
            lo = self.optional(n, 1)
            hi = self.optional(n, 2)
            lo = float(self.const(lo, "min").ravel()[0]) if lo else None
            hi = float(self.const(hi, "max").ravel()[0]) if hi else None
        else:
            lo, hi = a.get("min"), a.get("max")
        lo = None if lo is not None and lo <= -3.4e38 else lo
        hi = None if hi is not None and hi >= 3.4e38 else hi
        self.clamp(self.value(n.input[0]), n.output[0], lo, hi)

    def _op_Neg(self, n, a) -> None:
        x = self.value(n.input[0])
        out = self.new_act(n.output[0], x.shape, x.perm)
        self.emit("MUL", [x.tid, self.const_tensor(np.array([-1.0]), n.output[0] + "/minus1")], [out.tid])

    def _op_Pow(self, n, a) -> None:
        x = self.value(n.input[0])
        e = self.const(n.input[1], "the exponent")
        if e.size != 1 or float(e.ravel()[0]) not in (0.5, 1.0, 2.0):
            raise self.fail("Pow of an activation is supported for the exponents 0.5, 1 and 2 only")
        p = float(e.ravel()[0])
        if p == 1.0:
            self.values[n.output[0]] = x
            return
        out = self.new_act(n.output[0], x.shape, x.perm)
        if p == 2.0:
            self.emit("MUL", [x.tid, x.tid], [out.tid])
        else:
            self.emit("SQRT", [x.tid], [out.tid])

    def _op_Softmax(self, n, a) -> None:
        x = self.value(n.input[0])
        rank = len(x.shape)
        axis = a.get("axis", -1 if self.opset >= 13 else 1)
        axis = axis + rank if axis < 0 else axis
        if self.opset >= 13 or axis == rank - 1:
            perm = tuple(p for p in x.perm if p != axis) + (axis,)  # the reduced axis last, the rest as stored
            out = self.new_act(n.output[0], x.shape, perm)
            self.emit("SOFTMAX", [self.in_layout(x, perm)], [out.tid], beta=1.0)
            return
        # opset < 13: softmax over the axes from `axis` on, flattened
        inner = int(np.prod(x.shape[axis:]))
        flat = self.reshaped(x, (int(np.prod(x.shape[:axis])), inner), n.output[0] + "/flat")
        y = self.new_act(n.output[0] + "/softmax", flat.shape)
        self.emit("SOFTMAX", [flat.tid], [y.tid], beta=1.0)
        self.values[n.output[0]] = self.reshaped(y, x.shape, n.output[0])

    # -- convolutions and friends --------------------------------------------------------
    def _spatial(self, a, x_shape, kernel, strides, dilations) -> list[int]:
        """IR pads (top, bottom, left, right) from ONNX's pads / auto_pad."""
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            up = auto == "SAME_UPPER"
            t, b = _same_pads(x_shape[2], kernel[0], strides[0], dilations[0], up)
            l, r = _same_pads(x_shape[3], kernel[1], strides[1], dilations[1], up)
            return [t, b, l, r]
        if auto == "VALID":
            return [0, 0, 0, 0]
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if len(pads) != 4:
            raise self.fail(f"pads {pads}: only 2-D ops are supported")
        return [pads[0], pads[2], pads[1], pads[3]]

    def need_4d(self, v: Value, what: str = "input") -> None:
        if len(v.shape) != 4:
            raise self.fail(f"{what} has shape {v.shape}; only 2-D (N, C, H, W) ops are supported")

    def _op_Conv(self, n, a) -> None:
        x = self.value(n.input[0])
        self.need_4d(x)
        w = self.const(n.input[1], "the weights").astype(np.float32)
        bias = self.optional(n, 2)
        b = self.const(bias, "the bias").astype(np.float32) if bias else None
        m, cig, kh, kw = w.shape
        groups = int(a.get("group", 1))
        c = x.shape[1]
        if cig * groups != c:
            raise self.fail(f"weights {w.shape} with group {groups} do not match {c} input channels")
        strides = tuple(a.get("strides", [1, 1]))
        dilations = tuple(a.get("dilations", [1, 1]))
        pads = self._spatial(a, x.shape, (kh, kw), strides, dilations)
        oh = (x.shape[2] + pads[0] + pads[1] - (kh - 1) * dilations[0] - 1) // strides[0] + 1
        ow = (x.shape[3] + pads[2] + pads[3] - (kw - 1) * dilations[1] - 1) // strides[1] + 1
        depthwise = groups > 1 and groups == c and cig == 1
        hwio = np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)))
        out = self.new_act(n.output[0], (x.shape[0], m, oh, ow), NHWC)
        wt = self.const_tensor(hwio, n.input[1])
        bt = self.const_tensor(b, bias) if b is not None else -1
        idx = self.emit("DEPTHWISE_CONV_2D" if depthwise else "CONV_2D", [self.in_layout(x, NHWC), wt, bt], [out.tid],
                        strides=list(strides), dilations=list(dilations), pads=pads, groups=groups, activation="none")
        self.conv_of[n.output[0]] = idx

    def _op_ConvTranspose(self, n, a) -> None:
        x = self.value(n.input[0])
        self.need_4d(x)
        w = self.const(n.input[1], "the weights").astype(np.float32)  # (C_in, M / group, kh, kw)
        if int(a.get("group", 1)) != 1:
            raise self.fail("grouped ConvTranspose is not supported")
        if any(d != 1 for d in a.get("dilations", [1, 1])):
            raise self.fail("dilated ConvTranspose is not supported")
        bias = self.optional(n, 2)
        _, m, kh, kw = w.shape
        strides = list(a.get("strides", [1, 1]))
        out_pad = list(a.get("output_padding", [0, 0]))
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        full = [strides[i] * (x.shape[2 + i] - 1) + out_pad[i] + (kh, kw)[i] for i in range(2)]
        if "output_shape" in a or auto in ("SAME_UPPER", "SAME_LOWER"):
            size = list(a["output_shape"])[-2:] if "output_shape" in a else [x.shape[2 + i] * strides[i] for i in range(2)]
            total = [full[i] - size[i] for i in range(2)]
            if min(total) < 0:
                raise self.fail(f"output_shape {size} is larger than the transposed convolution makes")
            begin = [t // 2 if auto == "SAME_UPPER" else t - t // 2 for t in total]
        else:
            pads = list(a.get("pads", [0, 0, 0, 0]))
            begin = pads[:2]
            size = [full[i] - pads[i] - pads[2 + i] for i in range(2)]
        out = self.new_act(n.output[0], (x.shape[0], m, size[0], size[1]), NHWC)
        wt = self.const_tensor(np.ascontiguousarray(np.transpose(w, (2, 3, 0, 1))), n.input[1])
        bt = self.const_tensor(self.const(bias, "the bias"), bias) if bias else -1
        self.emit("TRANSPOSE_CONV", [self.in_layout(x, NHWC), wt, bt], [out.tid], strides=strides, pads=begin,
                  activation="none")

    def _op_BatchNormalization(self, n, a) -> None:
        x = self.value(n.input[0])
        scale, bias, mean, var = (self.const(n.input[i], what).astype(np.float64)
                                  for i, what in ((1, "scale"), (2, "bias"), (3, "mean"), (4, "var")))
        mul = scale / np.sqrt(var + float(a.get("epsilon", 1e-5)))
        add = bias - mean * mul
        conv = self.conv_of.get(n.input[0])
        if conv is not None and self.uses.get(n.input[0], 0) == 1:  # nothing else reads the convolution
            node = self.nodes[conv]
            w = self.tensors[node.inputs[1]]
            w.data = (w.data * mul.reshape(1, 1, 1, -1)).astype(np.float32)
            if node.inputs[2] < 0:
                node.inputs[2] = self.const_tensor(np.zeros(w.shape[3]), n.output[0] + "/bias")
            b = self.tensors[node.inputs[2]]
            b.data = (b.data * mul + add).astype(np.float32)
            self.values[n.output[0]] = x
            return
        shape = (1, -1) + (1,) * (len(x.shape) - 2)
        scaled = self.new_act(n.output[0] + "/scaled", x.shape, x.perm)
        self.emit("MUL", [x.tid, self.const_like(mul.reshape(shape), x, n.input[1])], [scaled.tid])
        out = self.new_act(n.output[0], x.shape, x.perm)
        self.emit("ADD", [scaled.tid, self.const_like(add.reshape(shape), x, n.input[2])], [out.tid])

    def _fully_connected(self, n, x: Value, w: np.ndarray, bias: np.ndarray | None) -> None:
        """x (..., K) @ w (K, N) + bias."""
        if x.shape[-1] != w.shape[0]:
            raise self.fail(f"input {x.shape} does not match weights {w.shape}")
        xt = self.plain(x)
        out = self.new_act(n.output[0], x.shape[:-1] + (w.shape[1],))
        bt = self.const_tensor(np.broadcast_to(bias, (w.shape[1],)), n.output[0] + "/bias") if bias is not None else -1
        self.emit("FULLY_CONNECTED", [xt, self.const_tensor(w, n.input[1]), bt], [out.tid], activation="none")

    def _op_Gemm(self, n, a) -> None:
        x = self.value(n.input[0])
        if len(x.shape) != 2 or a.get("transA", 0):
            raise self.fail("Gemm is supported for a 2-D activation A without transA")
        w = self.const(n.input[1], "B").astype(np.float32)
        w = (w.T if a.get("transB", 0) else w) * float(a.get("alpha", 1.0))
        c = self.optional(n, 2)
        bias = None
        if c:
            bias = self.const(c, "C").astype(np.float32) * float(a.get("beta", 1.0))
            if bias.size not in (1, w.shape[1]):
                raise self.fail(f"C of shape {bias.shape} is not a per-output bias")
            bias = bias.ravel()
        self._fully_connected(n, x, np.ascontiguousarray(w), bias)

    def _op_MatMul(self, n, a) -> None:
        x = self.value(n.input[0])
        b = self.value(n.input[1])
        if not b.is_const or b.const.ndim != 2:
            raise self.fail("MatMul is supported with a constant 2-D second input only")
        self._fully_connected(n, x, b.const.astype(np.float32), None)

    # -- pooling and reductions ----------------------------------------------------------
    def _pool(self, n, a, op: str) -> None:
        x = self.value(n.input[0])
        self.need_4d(x)
        kernel = tuple(a["kernel_shape"])
        strides = tuple(a.get("strides", [1, 1]))
        if any(d != 1 for d in a.get("dilations", [1, 1])):
            raise self.fail("dilated pooling is not supported")
        pads = self._spatial(a, x.shape, kernel, strides, (1, 1))
        src = self.in_layout(x, NHWC)
        if op == "AVERAGE_POOL_2D" and a.get("count_include_pad", 0) and any(pads):
            padded = self.add_tensor(n.output[0] + "/padded", (x.shape[0], x.shape[2] + pads[0] + pads[1],
                                                                x.shape[3] + pads[2] + pads[3], x.shape[1]))
            self.emit("PAD", [src], [padded], pads=[0, 0, pads[0], pads[1], pads[2], pads[3], 0, 0], mode="constant")
            src, h, w, pads = padded, x.shape[2] + pads[0] + pads[1], x.shape[3] + pads[2] + pads[3], [0, 0, 0, 0]
        else:
            h, w = x.shape[2], x.shape[3]
        size = []
        for i, (length, k, s) in enumerate(((h, kernel[0], strides[0]), (w, kernel[1], strides[1]))):
            span = length + pads[2 * i] + pads[2 * i + 1] - k
            o = (-(-span // s) if a.get("ceil_mode", 0) else span // s) + 1
            if a.get("ceil_mode", 0) and (o - 1) * s >= length + pads[2 * i]:
                o -= 1  # the last window must start inside the input or its left padding
            pads[2 * i + 1] = max(pads[2 * i + 1], (o - 1) * s + k - length - pads[2 * i])
            size.append(o)
        out = self.new_act(n.output[0], (x.shape[0], x.shape[1], size[0], size[1]), NHWC)
        self.emit(op, [src], [out.tid], filter=list(kernel), strides=list(strides), pads=pads, activation="none")

    def _op_MaxPool(self, n, a) -> None:
        if len(n.output) > 1 and n.output[1]:
            raise self.fail("MaxPool's Indices output is not supported")
        self._pool(n, a, "MAX_POOL_2D")

    def _op_AveragePool(self, n, a) -> None:
        self._pool(n, a, "AVERAGE_POOL_2D")

    def _op_GlobalAveragePool(self, n, a) -> None:
        x = self.value(n.input[0])
        self.reduce_mean(x, list(range(2, len(x.shape))), True, n.output[0])

    def _op_GlobalMaxPool(self, n, a) -> None:
        x = self.value(n.input[0])
        self.need_4d(x)
        self._pool(n, {"kernel_shape": x.shape[2:], "strides": [1, 1]}, "MAX_POOL_2D")

    def _op_ReduceMean(self, n, a) -> None:
        x = self.value(n.input[0])
        axes = a.get("axes")
        if self.opset >= 18 and self.optional(n, 1):
            axes = self.const(n.input[1], "axes").ravel().tolist()
        if axes is None or len(axes) == 0:
            if a.get("noop_with_empty_axes", 0):
                self.values[n.output[0]] = x
                return
            axes = list(range(len(x.shape)))
        rank = len(x.shape)
        self.reduce_mean(x, sorted(int(v) + rank if v < 0 else int(v) for v in axes), bool(a.get("keepdims", 1)),
                         n.output[0])

    def reduce_mean(self, x: Value, axes: list[int], keepdims: bool, out_name: str) -> None:
        if x.is_const:
            raise self.fail("mean of a constant")
        stored_axes = sorted(x.perm.index(ax) for ax in axes)
        if keepdims:
            shape, perm = tuple(1 if i in axes else d for i, d in enumerate(x.shape)), x.perm
        else:
            shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
            perm = tuple(p - sum(1 for ax in axes if ax < p) for p in x.perm if p not in axes)
        out = self.new_act(out_name, shape, perm)
        self.emit("MEAN", [x.tid], [out.tid], axes=stored_axes)

    # -- shapes --------------------------------------------------------------------------
    def reshaped(self, x: Value, shape: tuple[int, ...], out_name: str) -> Value:
        if int(np.prod(shape)) != int(np.prod(x.shape)):
            raise self.fail(f"cannot reshape {x.shape} to {shape}")
        src = self.plain(x)
        out = self.new_act(out_name, tuple(int(d) for d in shape))
        self.emit("RESHAPE", [src], [out.tid])
        return out

    def _op_Reshape(self, n, a) -> None:
        x = self.value(n.input[0])
        target = [int(d) for d in self.const(n.input[1], "the shape").ravel()]
        allowzero = a.get("allowzero", 0)
        shape = [x.shape[i] if d == 0 and not allowzero else d for i, d in enumerate(target)]
        if shape.count(-1) > 1:
            raise self.fail(f"shape {target} has more than one -1")
        if -1 in shape:
            known = int(np.prod([d for d in shape if d != -1]))
            if known == 0 or int(np.prod(x.shape)) % known:
                raise self.fail(f"cannot reshape {x.shape} to {target}")
            shape[shape.index(-1)] = int(np.prod(x.shape)) // known
        self.reshaped(x, tuple(shape), n.output[0])

    def _op_Flatten(self, n, a) -> None:
        x = self.value(n.input[0])
        axis = int(a.get("axis", 1))
        axis = axis + len(x.shape) if axis < 0 else axis
        self.reshaped(x, (int(np.prod(x.shape[:axis])), int(np.prod(x.shape[axis:]))), n.output[0])

    def _axes(self, n, a, what: str = "axes") -> list[int] | None:
        if self.optional(n, 1):
            return [int(v) for v in self.const(n.input[1], what).ravel()]
        return list(a[what]) if what in a else None

    def _op_Squeeze(self, n, a) -> None:
        x = self.value(n.input[0])
        axes = self._axes(n, a)
        rank = len(x.shape)
        axes = [i for i, d in enumerate(x.shape) if d == 1] if axes is None else [v + rank if v < 0 else v for v in axes]
        self.reshaped(x, tuple(d for i, d in enumerate(x.shape) if i not in axes), n.output[0])

    def _op_Unsqueeze(self, n, a) -> None:
        x = self.value(n.input[0])
        axes = self._axes(n, a) or []
        rank = len(x.shape) + len(axes)
        axes = sorted(v + rank if v < 0 else v for v in axes)
        shape = list(x.shape)
        for ax in axes:
            shape.insert(ax, 1)
        self.reshaped(x, tuple(shape), n.output[0])

    def _op_Transpose(self, n, a) -> None:
        x = self.value(n.input[0])
        q = tuple(a.get("perm", list(range(len(x.shape)))[::-1]))
        perm = tuple(_inverse(q)[p] for p in x.perm)  # same stored data, new logical order
        self.values[n.output[0]] = Value(tid=x.tid, perm=perm, shape=tuple(x.shape[i] for i in q))

    def _op_Concat(self, n, a) -> None:
        vals = [self.value(i) for i in n.input if i]
        acts = [v for v in vals if not v.is_const]
        rank = len(acts[0].shape)
        axis = int(a["axis"]) + (rank if int(a["axis"]) < 0 else 0)
        perm = acts[0].perm
        vals = [v for v in vals if int(np.prod(v.shape)) > 0]
        tids = [self.in_layout(v, perm, f"{n.output[0]}/const") for v in vals]
        shape = list(acts[0].shape)
        shape[axis] = sum(v.shape[axis] for v in vals)
        out = self.new_act(n.output[0], tuple(shape), perm)
        self.emit("CONCATENATION", tids, [out.tid], axis=perm.index(axis), activation="none")

    def slice(self, x: Value, begin: list[int], stride: list[int], size: list[int], out_name: str,
              drop_axis: int | None = None) -> Value:
        """x[begin + k * stride for k < size] per logical axis (an axis of size 1 dropped if asked)."""
        shape = tuple(size)
        perm = x.perm
        if drop_axis is not None:
            shape = tuple(d for i, d in enumerate(size) if i != drop_axis)
            perm = tuple(p - (p > drop_axis) for p in x.perm if p != drop_axis)
        out = self.new_act(out_name, shape, perm)
        self.emit("STRIDED_SLICE", [x.tid], [out.tid], begin=[begin[p] for p in x.perm],
                  stride=[stride[p] for p in x.perm], size=[size[p] for p in x.perm])
        return out

    def _op_Split(self, n, a) -> None:
        x = self.value(n.input[0])
        rank = len(x.shape)
        axis = int(a.get("axis", 0))
        axis = axis + rank if axis < 0 else axis
        parts = self._axes(n, a, "split")
        outs = [o for o in n.output]
        if not parts:
            count = int(a.get("num_outputs", len(outs)))
            step = -(-x.shape[axis] // count)
            parts = [min(step, x.shape[axis] - step * i) for i in range(count)]
        if sum(parts) != x.shape[axis] or len(parts) != len(outs):
            raise self.fail(f"split {parts} does not cover axis {axis} of {x.shape}")
        start = 0
        for o, length in zip(outs, parts):
            begin = [0] * rank
            begin[axis] = start
            size = list(x.shape)
            size[axis] = length
            if o:
                self.slice(x, begin, [1] * rank, size, o)
            start += length

    def _op_Slice(self, n, a) -> None:
        x = self.value(n.input[0])
        rank = len(x.shape)
        if self.opset >= 10:
            starts = [int(v) for v in self.const(n.input[1], "starts").ravel()]
            ends = [int(v) for v in self.const(n.input[2], "ends").ravel()]
            axes = [int(v) for v in self.const(n.input[3], "axes").ravel()] if self.optional(n, 3) else None
            steps = [int(v) for v in self.const(n.input[4], "steps").ravel()] if self.optional(n, 4) else None
        else:
            starts, ends, axes, steps = list(a["starts"]), list(a["ends"]), a.get("axes"), None
        axes = list(range(len(starts))) if axes is None else [v + rank if v < 0 else v for v in axes]
        steps = steps or [1] * len(starts)
        begin, stride, size = [0] * rank, [1] * rank, list(x.shape)
        for ax, s, e, st in zip(axes, starts, ends, steps):
            dim = x.shape[ax]
            if st == 0:
                raise self.fail("a Slice step of 0")
            s = s + dim if s < 0 else s
            e = e + dim if e < 0 else e
            if st > 0:
                s, e = min(max(s, 0), dim), min(max(e, 0), dim)
            else:
                s, e = min(max(s, 0), dim - 1), min(max(e, -1), dim - 1)
            count = max(0, math.ceil((e - s) / st))
            if count == 0:
                raise self.fail(f"slice of axis {ax} is empty")
            begin[ax], stride[ax], size[ax] = s, st, count
        self.slice(x, begin, stride, size, n.output[0])

    def _op_Gather(self, n, a) -> None:
        x = self.value(n.input[0])
        idx = self.const(n.input[1], "the indices").astype(np.int64)
        rank = len(x.shape)
        axis = int(a.get("axis", 0))
        axis = axis + rank if axis < 0 else axis
        dim = x.shape[axis]
        idx = np.where(idx < 0, idx + dim, idx)
        begin, stride, size = [0] * rank, [1] * rank, list(x.shape)
        if idx.ndim == 0:
            begin[axis], size[axis] = int(idx), 1
            self.slice(x, begin, stride, size, n.output[0], drop_axis=axis)
            return
        flat = idx.ravel()
        steps = set(np.diff(flat).tolist())
        if idx.ndim != 1 or len(steps) > 1 or steps == {0}:
            raise self.fail("Gather of an activation takes a scalar or an evenly spaced 1-D list of indices")
        begin[axis], stride[axis], size[axis] = int(flat[0]), (steps.pop() if steps else 1), len(flat)
        self.slice(x, begin, stride, size, n.output[0])

    def _op_Pad(self, n, a) -> None:
        x = self.value(n.input[0])
        rank = len(x.shape)
        mode = a.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if self.opset >= 11:
            pads = [int(v) for v in self.const(n.input[1], "pads").ravel()]
            cv = self.optional(n, 2)
            value = float(self.const(cv, "constant_value").ravel()[0]) if cv else 0.0
            axes = [int(v) for v in self.const(n.input[3], "axes").ravel()] if self.optional(n, 3) else list(range(rank))
        else:
            pads, value, axes = list(a["pads"]), float(a.get("value", 0.0)), list(range(rank))
        axes = [v + rank if v < 0 else v for v in axes]
        before, after = [0] * rank, [0] * rank
        for k, ax in enumerate(axes):
            before[ax], after[ax] = pads[k], pads[k + len(axes)]
        if min(before + after) < 0:
            raise self.fail("negative pads are not supported")
        if mode not in ("constant", "reflect"):
            raise self.fail(f"pad mode '{mode}' is not supported (constant, reflect)")
        shape = tuple(d + b + e for d, b, e in zip(x.shape, before, after))
        out = self.new_act(n.output[0], shape, x.perm)
        flat = [v for p in x.perm for v in (before[p], after[p])]
        if mode == "constant":
            self.emit("PAD", [x.tid], [out.tid], pads=flat, mode="constant", value=value)
        else:
            self.emit("MIRROR_PAD", [x.tid], [out.tid], pads=flat, mode="reflect")

    def _space_depth(self, n, a, op: str) -> None:
        x = self.value(n.input[0])
        self.need_4d(x)
        mode = a.get("mode", b"DCR")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode != "DCR":
            raise self.fail(f"mode {mode} is not supported (DCR)")
        bs = int(a["blocksize"])
        nb, c, h, w = x.shape
        shape = (nb, c // (bs * bs), h * bs, w * bs) if op == "DEPTH_TO_SPACE" else (nb, c * bs * bs, h // bs, w // bs)
        out = self.new_act(n.output[0], shape, NHWC)
        self.emit(op, [self.in_layout(x, NHWC)], [out.tid], block_size=bs)

    def _op_DepthToSpace(self, n, a) -> None:
        self._space_depth(n, a, "DEPTH_TO_SPACE")

    def _op_SpaceToDepth(self, n, a) -> None:
        self._space_depth(n, a, "SPACE_TO_DEPTH")

    # -- resize --------------------------------------------------------------------------
    def _op_Upsample(self, n, a) -> None:
        scales = self.const(n.input[1], "scales") if len(n.input) > 1 else np.array(a["scales"])
        self.resize(n, a, scales, None)

    def _op_Resize(self, n, a) -> None:
        if self.opset < 11:
            self.resize(n, a, self.const(n.input[1], "scales"), None)
            return
        scales = self.const(n.input[2], "scales") if self.optional(n, 2) else None
        sizes = self.const(n.input[3], "sizes") if self.optional(n, 3) else None
        self.resize(n, a, scales if scales is not None and scales.size else None, sizes)

    def resize(self, n, a, scales, sizes) -> None:
        x = self.value(n.input[0])
        self.need_4d(x)
        def text(key: str, default: str) -> str:
            v = a.get(key, default)
            return v.decode() if isinstance(v, bytes) else v
        mode = text("mode", "nearest")
        coord = text("coordinate_transformation_mode", "asymmetric" if n.op_type == "Upsample" or self.opset < 11
                     else "half_pixel")
        if "axes" in a:
            raise self.fail("Resize's axes attribute is not supported")
        if sizes is not None:
            size = [int(v) for v in np.asarray(sizes).ravel()]
            ratio = [size[i] / x.shape[i] for i in range(4)]
        elif scales is not None:
            ratio = [float(v) for v in np.asarray(scales).ravel()]
            size = [int(math.floor(x.shape[i] * ratio[i])) for i in range(4)]
        else:
            raise self.fail("Resize needs scales or sizes")
        if size[:2] != list(x.shape[:2]):
            raise self.fail("Resize of the batch or channel axis is not supported")
        if a.get("antialias", 0) and min(ratio[2:]) < 1:
            raise self.fail("antialiased downscaling is not supported")
        out_shape = tuple(size)
        if mode == "linear":
            table = {"half_pixel": (0, 1), "align_corners": (1, 0), "asymmetric": (0, 0)}
            if coord == "pytorch_half_pixel" and min(size[2:]) > 1:
                coord = "half_pixel"
            if coord not in table:
                raise self.fail(f"linear Resize with coordinate_transformation_mode '{coord}' is not supported")
            if coord != "align_corners" and any(abs(ratio[i] - size[i] / x.shape[i]) > 1e-6 for i in (2, 3)):
                raise self.fail(f"linear Resize with scales {ratio[2:]} that do not give whole sizes is not supported")
            align, half = table[coord]
            op = "RESIZE_BILINEAR"
        elif mode == "nearest":
            align, half = self._nearest_mode(x.shape[2:], size[2:], ratio[2:], coord, text("nearest_mode", "round_prefer_floor"))
            op = "RESIZE_NEAREST_NEIGHBOR"
        else:
            raise self.fail(f"Resize mode '{mode}' is not supported (nearest, linear)")
        out = self.new_act(n.output[0], out_shape, NHWC)
        self.emit(op, [self.in_layout(x, NHWC)], [out.tid], align_corners=align, half_pixel_centers=half)

    def _nearest_mode(self, ins, outs, ratio, coord, nearest) -> tuple[int, int]:
        """The engine's (align_corners, half_pixel_centers) that picks the same source pixels as
        ONNX's nearest Resize on these sizes, compared index by index."""
        def onnx_index(o: np.ndarray, size_in: int, size_out: int, r: float) -> np.ndarray:
            if coord == "half_pixel":
                x = (o + 0.5) / r - 0.5
            elif coord == "pytorch_half_pixel":
                x = (o + 0.5) / r - 0.5 if size_out > 1 else np.zeros_like(o)
            elif coord == "align_corners":
                x = o * (size_in - 1) / (size_out - 1) if size_out > 1 else np.zeros_like(o)
            elif coord == "asymmetric":
                x = o / r
            elif coord == "tf_half_pixel_for_nn":
                x = (o + 0.5) / r
            else:
                raise self.fail(f"nearest Resize with coordinate_transformation_mode '{coord}' is not supported")
            rounding = {"floor": np.floor, "ceil": np.ceil, "round_prefer_floor": lambda v: np.ceil(v - 0.5),
                        "round_prefer_ceil": lambda v: np.floor(v + 0.5)}
            if nearest not in rounding:
                raise self.fail(f"nearest_mode '{nearest}' is not supported")
            return np.clip(rounding[nearest](x), 0, size_in - 1).astype(np.int64)

        def engine_index(o: np.ndarray, size_in: int, size_out: int, align: int, half: int) -> np.ndarray:
            f32 = np.float32
            s = f32(size_in - 1) / f32(size_out - 1) if align and size_out > 1 else f32(size_in) / f32(size_out)
            v = ((o + (0.5 if half else 0.0)) * np.float64(s)).astype(np.float32)  # exact product, rounded once
            i = np.sign(v) * np.floor(np.abs(v) + 0.5) if align else np.floor(v)
            return np.clip(i, 0, size_in - 1).astype(np.int64)

        for align, half in ((0, 0), (0, 1), (1, 0)):
            if all(np.array_equal(onnx_index(np.arange(so, dtype=np.float64), si, so, r),
                                  engine_index(np.arange(so, dtype=np.float64), si, so, align, half))
                   for si, so, r in zip(ins, outs, ratio)):
                return align, half
        raise self.fail(f"nearest Resize ({coord}, {nearest}) from {tuple(ins)} to {tuple(outs)} picks pixels the "
                        "engine's nearest resize does not")


def _sole_reader(graph: Graph, tensor: int) -> Node | None:
    """The one node reading `tensor` (None if several do, or it is a graph output)."""
    readers = [n for n in graph.nodes if tensor in n.inputs]
    return readers[0] if len(readers) == 1 and tensor not in graph.outputs else None


def _fold_reshapes(graph: Graph) -> None:
    """RESHAPE of a MEAN's or RESHAPE's output that nothing else reads -> that op writes the
    reshaped tensor itself (neither cares about its output's shape, only its size)."""
    producers = {t: n for n in graph.nodes for t in n.outputs}
    for node in [n for n in graph.nodes if n.op == "RESHAPE"]:
        src = producers.get(node.inputs[0])
        if src is None or src.op not in ("MEAN", "RESHAPE") or _sole_reader(graph, node.inputs[0]) is not node:
            continue
        src.outputs = list(node.outputs)
        producers[node.outputs[0]] = src
        node.outputs = []
    graph.nodes = [n for n in graph.nodes if n.outputs]


_FUSABLE = {"RELU": "relu", "RELU6": "relu6", "RELU_N1_TO_1": "relu_n1_to_1"}


def _fuse_activations(graph: Graph) -> None:
    """CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED followed by RELU / RELU6 / RELU_N1_TO_1 that is
    its only reader -> the activation fused into the layer (as TFLite's converter does)."""
    producers, consumers = graph.producers(), graph.consumers()
    outputs = set(graph.outputs)
    for node in graph.nodes:
        if node.op not in _FUSABLE:
            continue
        src = node.inputs[0]
        p = producers.get(src)
        if p is None or src in outputs or len(consumers.get(src, [])) != 1:
            continue
        layer = graph.nodes[p]
        if layer.op not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") or layer.attrs.get("activation", "none") != "none":
            continue
        layer.attrs["activation"] = _FUSABLE[node.op]
        layer.outputs = list(node.outputs)
        node.outputs = []  # dead: pruned
    graph.nodes = [n for n in graph.nodes if n.outputs]


def import_onnx(path: str | Path, input_shapes: dict[str, tuple[int, ...]] | None = None,
                other_inputs_ok: bool = False) -> Graph:
    path = Path(path)
    try:
        import onnx
    except ImportError:
        raise ImportError_(f"{path}: ONNX models need the onnx package: pip install 'layertune[onnx]'") from None
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise ImportError_(f"{path}: corrupt ONNX model ({exc.__class__.__name__}: "
                           f"{' '.join(str(exc).split())[:120]})") from None
    return import_onnx_model(model, path.stem, str(path), input_shapes, other_inputs_ok)


def import_onnx_model(model, name: str = "model", source: str = "model",
                      input_shapes: dict[str, tuple[int, ...]] | None = None, other_inputs_ok: bool = False) -> Graph:
    if not model.graph.node:
        raise ImportError_(f"{source}: the ONNX graph has no nodes (not a model, or a corrupt file)")
    return OnnxImporter(model, name, source, input_shapes, other_inputs_ok).run()
