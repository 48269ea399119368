"""TFLite flatbuffer -> layertune's graph IR, read directly (no interpreter).

* A quantized model keeps its quantization: every tensor's scales and zero points, and its
  weights as the integers it stores. `graph/precision.py` then computes in int8 the layers the
  engine has int8 kernels for (with int8=False, none) and dequantizes what the others read; fp16
  weights become float32. A quantized graph input or output keeps its scale and zero point so
  that `Model.run` converts integers at the edges.
* Shape arithmetic on constants (SHAPE, STRIDED_SLICE, PACK, ... — the dynamic-reshape idiom of
  Keras models) is folded at import, since every shape is static.
* SPACE_TO_BATCH_ND -> CONV_2D / DEPTHWISE_CONV_2D -> BATCH_TO_SPACE_ND (how the converter
  lowers dilated convolutions) is folded back into one dilated convolution.
* Anything else — a custom op, a second subgraph, a dynamic shape, an op outside SUPPORTED_OPS —
  is refused before any work starts, with one line naming the model, the op and its index.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any, Callable

import numpy as np
import tflite

from layertune import _core
from layertune.graph.ir import Graph, Node, Quantization, Tensor
from layertune.graph.precision import DEFAULT_REQUANTIZATION, assign_precision, check_requantization
from layertune.graph.transposed_conv import lower_transposed_convs

_OP_NAMES = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_, 7: np.int16,
           9: np.int8, 10: np.float64}
_ACTIVATIONS = {0: "none", 1: "relu", 2: "relu_n1_to_1", 3: "relu6"}
_FOLDABLE = {"SHAPE", "STRIDED_SLICE", "PACK", "CONCATENATION", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "CAST",
             "DEQUANTIZE", "QUANTIZE", "ADD", "SUB", "MUL", "DIV", "TRANSPOSE", "GATHER", "DENSIFY"}

# What the engine runs; SPACE_TO_BATCH_ND / BATCH_TO_SPACE_ND only around a convolution (folded).
SUPPORTED_OPS = sorted(set(_core.supported_ops()) - {"MAX_POOL_WITH_ARGMAX_2D", "MAX_UNPOOLING_2D"})
# The custom ops of published segmentation models that XNNPACK implements (MediaPipe's), and the
# engine op each becomes. Their options are C structs: TfLiteTransposeConvParams / TfLitePoolParams.
CUSTOM_OPS = {"Convolution2DTransposeBias": "TRANSPOSE_CONV", "MaxPoolingWithArgmax2D": "MAX_POOL_WITH_ARGMAX_2D",
              "MaxUnpooling2D": "MAX_UNPOOLING_2D"}


class ImportError_(ValueError):
    """A model layertune cannot import (its message is the one line to show)."""


def _index_vector(kind: int, table) -> np.ndarray:
    """A DimensionMetadata's array_segments / array_indices (a union of int32 / uint16 / uint8 vectors)."""
    cls = {1: tflite.Int32Vector, 2: tflite.Uint16Vector, 3: tflite.Uint8Vector}.get(kind)
    if cls is None or table is None:
        raise ValueError(f"sparse index vector of type {kind}")
    vec = cls()
    vec.Init(table.Bytes, table.Pos)
    return vec.ValuesAsNumpy().astype(np.int64) if vec.ValuesLength() else np.zeros(0, np.int64)


def _densify(sparsity, values: np.ndarray, shape: tuple[int, ...], where: str) -> np.ndarray:
    """A tensor stored in TFLite's sparse format (traversal order over the dimensions and their
    blocks, each level dense or CSR) -> the dense array. Vectorized: every level maps the parents'
    positions to their children's, as TFLite's format converter walks it one element at a time."""
    order = [int(d) for d in sparsity.TraversalOrderAsNumpy()]
    block_map = [int(d) for d in sparsity.BlockMapAsNumpy()] if sparsity.BlockMapLength() else []
    rank = len(shape)
    pos = np.zeros(1, np.int64)  # where each partial path points into the next level
    coords: list[np.ndarray] = []  # per level, the coordinate of every partial path
    block_size = {}
    for level, dim in enumerate(order):
        meta = sparsity.DimMetadata(level)
        if meta.Format() == 0:  # DENSE
            size = int(meta.DenseSize())
            coords = [np.repeat(c, size) for c in coords] + [np.tile(np.arange(size), len(pos))]
            pos = (pos[:, None] * size + np.arange(size)).ravel()
            if dim >= rank:
                block_size[block_map[dim - rank]] = size
        else:  # SPARSE_CSR
            segments = _index_vector(meta.ArraySegmentsType(), meta.ArraySegments())
            indices = _index_vector(meta.ArrayIndicesType(), meta.ArrayIndices())
            start, count = segments[pos], segments[pos + 1] - segments[pos]
            child = np.repeat(start - np.concatenate(([0], np.cumsum(count)[:-1])), count) + np.arange(count.sum())
            coords = [np.repeat(c, count) for c in coords] + [indices[child]]
            pos = child
    if len(pos) != len(values):
        raise ImportError_(f"{where}: its sparse format describes {len(pos)} values, the buffer holds {len(values)}")
    by_dim = dict(zip(order, coords))
    index = tuple(by_dim[d] * block_size[d] + by_dim[rank + block_map.index(d)] if d in block_size else by_dim[d]
                  for d in range(rank))
    dense = np.zeros(shape, values.dtype)
    dense[index] = values
    return dense


def _options(op, cls):
    table = op.BuiltinOptions()
    if table is None:
        return None
    opt = cls()
    opt.Init(table.Bytes, table.Pos)
    return opt


def _same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    if stride < 1 or dilation < 1:
        raise ValueError(f"strides and dilations must be positive, got {stride} and {dilation}")
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class TFLiteImporter:
    def __init__(self, data: bytes, name: str, source: str, int8: bool = True,
                 requantization: str = DEFAULT_REQUANTIZATION, float_layers: frozenset[str] = frozenset()):
        self.source = source
        self.int8 = int8
        self.requantization = requantization
        self.float_layers = float_layers
        self._layouts: dict[int, str] = {}  # constants converted to the layout an op reads: tensor -> op
        if len(data) < 8 or data[4:8] != b"TFL3":
            raise ImportError_(f"{source}: not a TFLite model (no TFL3 identifier)")
        try:
            self.model = tflite.Model.GetRootAsModel(data, 0)
            subgraphs = self.model.SubgraphsLength()
        except Exception as exc:  # a corrupt flatbuffer
            raise ImportError_(f"{source}: corrupt TFLite model ({exc.__class__.__name__})") from None
        if subgraphs != 1:
            raise ImportError_(f"{source}: has {subgraphs} subgraphs; layertune supports models with exactly one")
        self.data = data
        self.sg = self.model.Subgraphs(0)
        self.name = name
        self.tensors: list[Tensor] = []
        self.nodes: list[Node] = []

    # -- tensors ---------------------------------------------------------------------------
    def _read_tensors(self) -> None:
        for i in range(self.sg.TensorsLength()):
            t = self.sg.Tensors(i)
            name = t.Name().decode(errors="replace") or f"tensor_{i}"
            shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
            if t.ShapeSignatureLength():
                signature = [int(d) for d in t.ShapeSignatureAsNumpy()]
                if any(d < 0 for d in signature[1:]):
                    raise ImportError_(f"{self.source}: tensor '{name}' has a dynamic shape {signature}; "
                                       "layertune needs static shapes (only the batch may be dynamic, taken as "
                                       f"{shape[0] if shape else 1})")
            dtype = _DTYPES.get(t.Type())
            quant = self._quantization(t)
            data = self._buffer(t)
            tensor = Tensor(name, shape)
            if data is not None and len(data):
                if dtype is None:
                    raise ImportError_(f"{self.source}: constant tensor '{name}' has unsupported type {t.Type()}")
                arr = np.frombuffer(data, dtype=dtype)
                arr = _densify(t.Sparsity(), arr, shape, f"{self.source}: tensor '{name}'") if t.Sparsity() else arr.reshape(shape)
                tensor.data = arr.astype(np.float32) if arr.dtype.kind == "f" else arr.copy()
            if quant and dtype in (np.int8, np.uint8, np.int16, np.int32):
                scale, zp, axis = quant
                tensor.quantization = Quantization(np.dtype(dtype).name, tuple(float(v) for v in scale),
                                                   tuple(int(v) for v in zp), int(axis))
            self.tensors.append(tensor)

    def _buffer(self, t) -> bytes | None:
        buf = self.model.Buffers(t.Buffer())
        if buf is None:
            return None
        offset = buf.Offset() if hasattr(buf, "Offset") else 0
        if offset > 1:  # large models keep buffers after the flatbuffer
            return self.data[offset: offset + buf.Size()]
        return buf.DataAsNumpy().tobytes() if buf.DataLength() else None

    @staticmethod
    def _quantization(t):
        q = t.Quantization()
        if q is None or q.ScaleLength() == 0:
            return None
        zp = q.ZeroPointAsNumpy() if q.ZeroPointLength() else np.zeros(q.ScaleLength(), np.int64)
        return q.ScaleAsNumpy().astype(np.float64), np.asarray(zp, np.int64), q.QuantizedDimension()

    # -- helpers ---------------------------------------------------------------------------
    def _const(self, tid: int, what: str, index: int, op: str) -> np.ndarray:
        t = self.tensors[tid]
        if not t.constant:
            raise ImportError_(f"{self.source}: op {index} ({op}): {what} must be a constant")
        return t.data

    def _real_const(self, tid: int, what: str, index: int, op: str) -> np.ndarray:
        """A constant as real values, made float32 in place (for ops without int8 kernels)."""
        t = self.tensors[tid]
        self._const(tid, what, index, op)
        if t.quantization is not None and t.data.dtype.kind in "iu":
            t.data = t.quantization.dequantize(t.data)
        t.quantization = None
        return t.data

    def _relayout(self, tid: int, op: str, convert: Callable[[np.ndarray], np.ndarray],
                  axis_from_old: dict[int, int]) -> np.ndarray:
        """A constant in the layout `op` reads (its dtype kept; a per-channel axis follows its
        dimension), converted once: the converter stores identical constants once, so two
        layers may read the same weights."""
        t = self.tensors[tid]
        done = self._layouts.get(tid)
        if done == op:
            return t.data
        if done is not None:
            raise ImportError_(f"{self.source}: constant tensor '{t.name}' is read as {done} weights and as {op} "
                               "weights; layertune needs one layout per constant")
        data = np.ascontiguousarray(convert(t.data))
        t.data, t.shape = data, data.shape
        if t.quantization is not None and not t.quantization.per_tensor:
            t.quantization.axis = axis_from_old.get(t.quantization.axis, t.quantization.axis)
        self._layouts[tid] = op
        return data

    def _transposed_conv_kernel(self, tid: int, index: int, op: str) -> np.ndarray:
        """A transposed convolution's OHWI weights as float32 HWIO (the builtin and the custom op alike)."""
        self._real_const(tid, "the weights", index, op)
        return self._relayout(tid, "TRANSPOSE_CONV", lambda w: np.transpose(w, (1, 2, 3, 0)).astype(np.float32), {})

    def _activation(self, code: int, index: int, op: str) -> str:
        if code not in _ACTIVATIONS:
            raise ImportError_(f"{self.source}: op {index} ({op}): fused activation {code} is not supported")
        return _ACTIVATIONS[code]

    def _node(self, op: str, index: int, inputs: list[int], outputs: list[int], **attrs: Any) -> None:
        name = self.tensors[outputs[0]].name if outputs else f"{op}_{index}"
        self.nodes.append(Node(op, name, inputs, outputs, attrs))

    # -- conversion ------------------------------------------------------------------------
    def run(self) -> Graph:
        self._read_tensors()
        ops = []
        for i in range(self.sg.OperatorsLength()):
            op = self.sg.Operators(i)
            code = self.model.OperatorCodes(op.OpcodeIndex())
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            name = _OP_NAMES.get(builtin, f"builtin {builtin}")
            if name == "CUSTOM":
                custom = code.CustomCode().decode(errors="replace") if code.CustomCode() else "?"
                if custom not in CUSTOM_OPS:
                    raise ImportError_(f"{self.source}: op {i} is the custom op '{custom}'; layertune supports the "
                                       f"builtin ops {', '.join(SUPPORTED_OPS)} and the custom ops "
                                       f"{', '.join(CUSTOM_OPS)}")
                name = custom
            ins = [int(v) for v in op.InputsAsNumpy()] if op.InputsLength() else []
            outs = [int(v) for v in op.OutputsAsNumpy()] if op.OutputsLength() else []
            ops.append((i, name, op, ins, outs))
        dilated = self._find_dilated_convs(ops)
        skipped = {j for chain in dilated.values() for j in chain[:2]}
        # Refuse unsupported ops before converting anything.
        for i, name, _, ins, _ in ops:
            if (i in skipped or name in _FOLDABLE or name in SUPPORTED_OPS or name in CUSTOM_OPS
                    or name in ("SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND")):
                continue
            raise ImportError_(f"{self.source}: op {i} ({name}) is not supported; supported ops: "
                               f"{', '.join(SUPPORTED_OPS)}")
        for i, name, op, ins, outs in ops:
            if i in skipped:
                continue
            if self._fold(i, name, op, ins, outs):
                continue
            if name not in SUPPORTED_OPS and name not in CUSTOM_OPS:
                raise ImportError_(f"{self.source}: op {i} ({name}) is not supported here (only on constant inputs, "
                                   f"or SPACE_TO_BATCH_ND / BATCH_TO_SPACE_ND around a convolution); supported ops: "
                                   f"{', '.join(SUPPORTED_OPS)}")
            self._convert(i, name, op, ins, outs, dilated.get(i))
        inputs = [int(v) for v in self.sg.InputsAsNumpy()]
        outputs = [int(v) for v in self.sg.OutputsAsNumpy()]
        for t in outputs:
            if self.tensors[t].constant:
                raise ImportError_(f"{self.source}: output '{self.tensors[t].name}' is a constant")
        graph = Graph(self.name, self.tensors, self.nodes, inputs, outputs)
        graph.prune()
        self.why_float = assign_precision(graph, self.int8, self.requantization, self.float_layers)
        lower_transposed_convs(graph)
        graph.prune()
        return graph

    def _find_dilated_convs(self, ops) -> dict[int, tuple[int, int, int, tuple[int, int, int, int]]]:
        """conv op index -> (space_to_batch index, batch_to_space index, dilation, pads)."""
        by_output = {o: k for k, (_, _, _, _, outs) in enumerate(ops) for o in outs}
        users: dict[int, list[int]] = {}
        for k, (_, _, _, ins, _) in enumerate(ops):
            for t in ins:
                users.setdefault(t, []).append(k)
        found = {}
        for k, (i, name, op, ins, outs) in enumerate(ops):
            if name not in ("CONV_2D", "DEPTHWISE_CONV_2D") or ins[0] not in by_output:
                continue
            s = ops[by_output[ins[0]]]
            if s[1] != "SPACE_TO_BATCH_ND" or len(users.get(outs[0], [])) != 1:
                continue
            b = ops[users[outs[0]][0]]
            if b[1] != "BATCH_TO_SPACE_ND" or len(users.get(ins[0], [])) != 1:
                continue
            block, paddings = self.tensors[s[3][1]].data, self.tensors[s[3][2]].data
            block2, crops = self.tensors[b[3][1]].data, self.tensors[b[3][2]].data
            if block is None or paddings is None or block2 is None or crops is None:
                continue
            block, block2 = [int(v) for v in block.ravel()], [int(v) for v in block2.ravel()]
            opts = _options(op, tflite.Conv2DOptions if name == "CONV_2D" else tflite.DepthwiseConv2DOptions)
            if block != block2 or len(block) != 2 or block[0] != block[1] or (opts and (opts.StrideH() != 1 or opts.StrideW() != 1)):
                continue
            d = block[0]
            kh, kw = self.tensors[ins[1]].shape[1:3]
            phase_h, phase_w = self.tensors[ins[0]].shape[1:3]
            it = ib = il = ir = 0
            if opts and opts.Padding() == 0:  # SAME inside: pads on each phase
                it, ib = _same_pads(phase_h, kh, 1, 1)
                il, ir = _same_pads(phase_w, kw, 1, 1)
            p = paddings.reshape(2, 2).astype(int)
            c = crops.reshape(2, 2).astype(int)
            pads = (p[0, 0] + it * d - c[0, 0], p[0, 1] + ib * d - c[0, 1], p[1, 0] + il * d - c[1, 0], p[1, 1] + ir * d - c[1, 1])
            if min(pads) < 0:
                continue
            found[i] = (s[0], b[0], d, tuple(int(v) for v in pads))
            ops[k] = (i, name, op, [s[3][0]] + ins[1:], list(b[4]))
        return found

    def _fold(self, index: int, name: str, op, ins: list[int], outs: list[int]) -> bool:
        """Evaluates an op on constant inputs with numpy; True when folded."""
        if name not in _FOLDABLE:
            return False
        if name == "SHAPE":
            self.tensors[outs[0]].data = np.array(self.tensors[ins[0]].shape, np.int32)
            return True
        if not ins or not all(t >= 0 and self.tensors[t].constant for t in ins):
            return False
        vals = [self.tensors[t].data if self.tensors[t].quantization is None or self.tensors[t].data.dtype.kind == "f"
                else self.tensors[t].quantization.dequantize(self.tensors[t].data) for t in ins]
        out_shape = self.tensors[outs[0]].shape
        folds: dict[str, Callable[[], np.ndarray]] = {
            "PACK": lambda: np.stack(vals, axis=_options(op, tflite.PackOptions).Axis()),
            "CONCATENATION": lambda: np.concatenate(vals, axis=_options(op, tflite.ConcatenationOptions).Axis()),
            "RESHAPE": lambda: vals[0].reshape(out_shape),
            "SQUEEZE": lambda: vals[0].reshape(out_shape),
            "EXPAND_DIMS": lambda: vals[0].reshape(out_shape),
            "CAST": lambda: vals[0],
            "DENSIFY": lambda: vals[0],  # the sparse constant was made dense when it was read
            "DEQUANTIZE": lambda: vals[0].astype(np.float32),
            "QUANTIZE": lambda: vals[0].astype(np.float32),
            "ADD": lambda: vals[0] + vals[1],
            "SUB": lambda: vals[0] - vals[1],
            "MUL": lambda: vals[0] * vals[1],
            "DIV": lambda: vals[0] / vals[1],
            "TRANSPOSE": lambda: np.transpose(vals[0], vals[1]),
            "GATHER": lambda: np.take(vals[0], vals[1], axis=_options(op, tflite.GatherOptions).Axis()),
            "STRIDED_SLICE": lambda: self._slice_const(vals[0], op, ins, index),
        }
        out = np.asarray(folds[name]())
        if out.dtype.kind == "f":
            out = out.astype(np.float32)
        self.tensors[outs[0]].data = out.reshape(out_shape) if out.size == int(np.prod(out_shape)) else out
        self.tensors[outs[0]].quantization = None  # folded to real values
        return True

    def _slice_const(self, x: np.ndarray, op, ins, index) -> np.ndarray:
        begin, stride, size, _ = self._strided_slice(op, ins, index, x.shape)
        idx = tuple(slice(b, b + (n - 1) * s + (1 if s > 0 else -1), s) if n > 0 else slice(0, 0)
                    for b, s, n in zip(begin, stride, size))
        return x[idx].copy()

    def _strided_slice(self, op, ins, index, shape) -> tuple[list[int], list[int], list[int], bool]:
        """TF's strided-slice rules -> begin, stride, size per input dimension."""
        begin = [int(v) for v in self._const(ins[1], "begin", index, "STRIDED_SLICE").ravel()]
        end = [int(v) for v in self._const(ins[2], "end", index, "STRIDED_SLICE").ravel()]
        strides = [int(v) for v in self._const(ins[3], "strides", index, "STRIDED_SLICE").ravel()]
        opts = _options(op, tflite.StridedSliceOptions)
        bm, em, sm = (opts.BeginMask(), opts.EndMask(), opts.ShrinkAxisMask()) if opts else (0, 0, 0)
        if opts and (opts.EllipsisMask() or opts.NewAxisMask()):
            raise ImportError_(f"{self.source}: op {index} (STRIDED_SLICE): ellipsis / new-axis masks are not supported")
        offset = bool(opts.Offset()) if opts and hasattr(opts, "Offset") else False
        out_b, out_s, out_n = [], [], []
        for d, n in enumerate(shape):
            if d >= len(begin):
                out_b.append(0), out_s.append(1), out_n.append(n)
                continue
            b, e, s = begin[d], end[d] + (begin[d] if offset else 0), strides[d]
            if s == 0:
                raise ImportError_(f"{self.source}: op {index} (STRIDED_SLICE): stride 0")
            if sm >> d & 1:
                b = b + n if b < 0 else b
                out_b.append(b), out_s.append(1), out_n.append(1)
                continue
            lo, hi = (0, n) if s > 0 else (-1, n - 1)
            b = (0 if s > 0 else n - 1) if bm >> d & 1 else min(max(b + n if b < 0 else b, lo), hi)
            e = (n if s > 0 else -1) if em >> d & 1 else min(max(e + n if e < 0 else e, lo), hi)
            count = max(0, math.ceil((e - b) / s))
            out_b.append(b if count else 0), out_s.append(s), out_n.append(count)
        return out_b, out_s, out_n, True

    def _pads(self, padding: int, x_shape, kernel, strides, dilations) -> list[int]:
        if padding == 1:  # VALID
            return [0, 0, 0, 0]
        return [*_same_pads(x_shape[1], kernel[0], strides[0], dilations[0]),
                *_same_pads(x_shape[2], kernel[1], strides[1], dilations[1])]

    def _custom_params(self, op, i: int, name: str, count: int) -> list[int]:
        """The first `count` int32 fields of a custom op's C-struct options (missing ones 0)."""
        raw = op.CustomOptionsAsNumpy().tobytes() if op.CustomOptionsLength() else b""
        raw = (raw + bytes(4 * count))[: 4 * count]
        values = list(struct.unpack(f"<{count}i", raw))
        if values[0] not in (1, 2):
            raise ImportError_(f"{self.source}: op {i} ({name}): padding {values[0]} is neither SAME (1) nor VALID (2)")
        return values

    def _convert_custom(self, i: int, name: str, op, ins: list[int], outs: list[int]) -> None:
        T = self.tensors
        if name == "Convolution2DTransposeBias":  # input, OHWI weights, bias
            padding, stride_w, stride_h = self._custom_params(op, i, name, 3)
            kernel = self._transposed_conv_kernel(ins[1], i, name)
            out_shape = T[outs[0]].shape
            pads = [0, 0] if padding == 2 else [_same_pads(out_shape[1], kernel.shape[0], stride_h, 1)[0],
                                                _same_pads(out_shape[2], kernel.shape[1], stride_w, 1)[0]]
            bias = ins[2] if len(ins) > 2 and ins[2] >= 0 else -1
            self._node("TRANSPOSE_CONV", i, [ins[0], ins[1], bias], outs, strides=[stride_h, stride_w], pads=pads,
                       activation="none")
            return
        padding, stride_w, stride_h, filter_w, filter_h, act = self._custom_params(op, i, name, 6)
        if act:
            raise ImportError_(f"{self.source}: op {i} ({name}): a fused activation is not supported")
        if name == "MaxPoolingWithArgmax2D":
            kernel, strides = (filter_h, filter_w), (stride_h, stride_w)
            self._node("MAX_POOL_WITH_ARGMAX_2D", i, [ins[0]], outs[:2], filter=list(kernel), strides=list(strides),
                       pads=self._pads(0 if padding == 1 else 1, T[ins[0]].shape, kernel, strides, (1, 1)))
        else:  # MaxUnpooling2D: values, indices
            self._node("MAX_UNPOOLING_2D", i, ins[:2], outs, filter=[filter_h, filter_w])

    def _convert(self, i: int, name: str, op, ins: list[int], outs: list[int], dilated) -> None:
        T = self.tensors
        if name in CUSTOM_OPS:
            self._convert_custom(i, name, op, ins, outs)
            return
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            depthwise = name == "DEPTHWISE_CONV_2D"
            opts = _options(op, tflite.DepthwiseConv2DOptions if depthwise else tflite.Conv2DOptions)
            self._const(ins[1], "the weights", i, name)
            x_shape = T[ins[0]].shape
            if depthwise:  # (1, kh, kw, C*m) -> HWIO (kh, kw, 1, C*m), groups = C
                hwio = self._relayout(ins[1], name, lambda w: w.reshape(w.shape[1], w.shape[2], 1, w.shape[3]), {})
                groups = x_shape[3]
            else:  # OHWI -> HWIO
                hwio = self._relayout(ins[1], name, lambda w: np.transpose(w, (1, 2, 3, 0)), {0: 3, 1: 0, 2: 1, 3: 2})
                groups = x_shape[3] // hwio.shape[2]
            strides = (opts.StrideH(), opts.StrideW()) if opts else (1, 1)
            if dilated:
                dilations, pads = (dilated[2], dilated[2]), list(dilated[3])
            else:
                dilations = (opts.DilationHFactor(), opts.DilationWFactor()) if opts else (1, 1)
                pads = self._pads(opts.Padding() if opts else 0, x_shape, hwio.shape[:2], strides, dilations)
            bias = ins[2] if len(ins) > 2 and ins[2] >= 0 else -1
            self._node(name, i, [ins[0], ins[1], bias], outs, strides=list(strides), dilations=list(dilations),
                       pads=pads, groups=groups,
                       activation=self._activation(opts.FusedActivationFunction() if opts else 0, i, name))
        elif name == "FULLY_CONNECTED":
            opts = _options(op, tflite.FullyConnectedOptions)
            if opts and opts.WeightsFormat() != 0:
                raise ImportError_(f"{self.source}: op {i} (FULLY_CONNECTED): shuffled weights are not supported")
            self._const(ins[1], "the weights", i, name)
            self._relayout(ins[1], name, lambda w: w.T, {0: 1, 1: 0})
            bias = ins[2] if len(ins) > 2 and ins[2] >= 0 else -1
            self._node(name, i, [ins[0], ins[1], bias], outs,
                       activation=self._activation(opts.FusedActivationFunction() if opts else 0, i, name))
        elif name == "TRANSPOSE_CONV":
            opts = _options(op, tflite.TransposeConvOptions)
            kernel = self._transposed_conv_kernel(ins[1], i, name)
            strides = (opts.StrideH(), opts.StrideW()) if opts else (1, 1)
            out_shape = T[outs[0]].shape
            pads = [0, 0]
            if not opts or opts.Padding() == 0:
                pads = [_same_pads(out_shape[1], kernel.shape[0], strides[0], 1)[0],
                        _same_pads(out_shape[2], kernel.shape[1], strides[1], 1)[0]]
            bias = ins[3] if len(ins) > 3 and ins[3] >= 0 else -1
            act = self._activation(opts.FusedActivationFunction(), i, name) if opts and hasattr(opts, "FusedActivationFunction") else "none"
            self._node(name, i, [ins[2], ins[1], bias], outs, strides=list(strides), pads=pads, activation=act)
        elif name in ("ADD", "SUB", "MUL", "DIV"):
            cls = {"ADD": tflite.AddOptions, "SUB": tflite.SubOptions, "MUL": tflite.MulOptions, "DIV": tflite.DivOptions}[name]
            opts = _options(op, cls)
            self._node(name, i, ins[:2], outs,
                       activation=self._activation(opts.FusedActivationFunction() if opts else 0, i, name))
        elif name in ("MAXIMUM", "MINIMUM", "PRELU", "SQUARED_DIFFERENCE"):
            self._node(name, i, ins[:2], outs)
        elif name in ("CONCATENATION", "PACK"):
            if name == "CONCATENATION":
                opts = _options(op, tflite.ConcatenationOptions)
                axis, act = opts.Axis(), self._activation(opts.FusedActivationFunction(), i, name)
            else:
                axis, act = _options(op, tflite.PackOptions).Axis(), "none"
            rank = len(T[outs[0]].shape)
            self._node(name, i, ins, outs, axis=axis + rank if axis < 0 else axis, activation=act)
        elif name in ("PAD", "PADV2", "MIRROR_PAD"):
            pads = self._const(ins[1], "the paddings", i, name).astype(int).ravel().tolist()
            attrs: dict[str, Any] = {"pads": pads, "mode": "constant"}
            if name == "PADV2" and len(ins) > 2 and ins[2] >= 0:
                attrs["value"] = float(np.asarray(self._real_const(ins[2], "the pad value", i, name)).ravel()[0])
            if name == "MIRROR_PAD":
                attrs["mode"] = "reflect" if _options(op, tflite.MirrorPadOptions).Mode() == 0 else "symmetric"
            self._node(name, i, [ins[0]], outs, **attrs)
        elif name in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
            opts = _options(op, tflite.Pool2DOptions)
            kernel, strides = (opts.FilterHeight(), opts.FilterWidth()), (opts.StrideH(), opts.StrideW())
            self._node(name, i, [ins[0]], outs, filter=list(kernel), strides=list(strides),
                       pads=self._pads(opts.Padding(), T[ins[0]].shape, kernel, strides, (1, 1)),
                       activation=self._activation(opts.FusedActivationFunction(), i, name))
        elif name == "MEAN":
            axes = self._const(ins[1], "the axes", i, name).astype(int).ravel().tolist()
            self._node(name, i, [ins[0]], outs, axes=axes)
        elif name in ("RESHAPE", "SQUEEZE", "EXPAND_DIMS", "QUANTIZE", "DEQUANTIZE"):
            self._node(name, i, [ins[0]], outs)
        elif name in ("STRIDED_SLICE", "SLICE"):
            shape = T[ins[0]].shape
            if name == "SLICE":
                begin = [int(v) for v in self._const(ins[1], "begin", i, name).ravel()]
                size = [int(v) for v in self._const(ins[2], "size", i, name).ravel()]
                size = [n - b if s < 0 else s for b, s, n in zip(begin, size, shape)]
                stride = [1] * len(shape)
            else:
                begin, stride, size, _ = self._strided_slice(op, ins, i, shape)
            self._node(name, i, [ins[0]], outs, begin=begin, stride=stride, size=size)
        elif name == "TRANSPOSE":
            self._node(name, i, [ins[0]], outs, perm=self._const(ins[1], "perm", i, name).astype(int).ravel().tolist())
        elif name in ("DEPTH_TO_SPACE", "SPACE_TO_DEPTH"):
            cls = tflite.DepthToSpaceOptions if name == "DEPTH_TO_SPACE" else tflite.SpaceToDepthOptions
            self._node(name, i, [ins[0]], outs, block_size=_options(op, cls).BlockSize())
        elif name == "SOFTMAX":
            opts = _options(op, tflite.SoftmaxOptions)
            self._node(name, i, [ins[0]], outs, beta=float(opts.Beta()) if opts else 1.0)
        elif name == "LEAKY_RELU":
            opts = _options(op, tflite.LeakyReluOptions)
            self._node(name, i, [ins[0]], outs, alpha=float(opts.Alpha()) if opts else 0.2)
        elif name in ("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"):
            cls = tflite.ResizeBilinearOptions if name == "RESIZE_BILINEAR" else tflite.ResizeNearestNeighborOptions
            opts = _options(op, cls)
            self._node(name, i, [ins[0]], outs, align_corners=int(bool(opts and opts.AlignCorners())),
                       half_pixel_centers=int(bool(opts and opts.HalfPixelCenters())))
        else:  # element-wise ops without options
            self._node(name, i, [ins[0]], outs)


def import_tflite(path: str | Path, int8: bool = True, requantization: str = DEFAULT_REQUANTIZATION) -> Graph:
    """int8: compute a quantized model's layers in int8 where the engine can (graph/precision.py),
    requantizing in `requantization`'s arithmetic; False: every layer in float32 on dequantized
    weights."""
    path = Path(path)
    return import_tflite_bytes(path.read_bytes(), path.stem, str(path), int8, requantization)


def import_tflite_bytes(data: bytes, name: str = "model", source: str = "model", int8: bool = True,
                        requantization: str = DEFAULT_REQUANTIZATION, float_layers: frozenset[str] = frozenset()) -> Graph:
    """`float_layers`: names of nodes computed in float32 even where int8 kernels could (the
    tuner's per-layer precision choice)."""
    check_requantization(requantization)
    try:
        return TFLiteImporter(data, name, source, int8, requantization, frozenset(float_layers)).run()
    except ImportError_:
        raise
    except (IndexError, KeyError, TypeError, AttributeError, UnicodeDecodeError, OverflowError, ValueError,
            struct.error) as exc:
        # a flatbuffer cut or damaged where the reader trips over it
        why = " ".join(str(exc).split())[:120]  # one line, whatever the damaged file made the reader say
        raise ImportError_(f"{source}: corrupt TFLite model ({exc.__class__.__name__}: {why})") from None
