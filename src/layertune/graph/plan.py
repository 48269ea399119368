"""The .ltplan writer (the C++ reader, csrc/graph/plan_reader.cc, is its only other reader; the
layout is documented in csrc/include/layertune/plan_format.h) and loading through that reader."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from layertune import _core
from layertune.graph.ir import Graph, Node, Quantization, Tensor

MAGIC = b"LTPLAN\0\0"
VERSION = 2
DTYPES = {"float32": (0, np.float32), "int8": (1, np.int8), "int32": (2, np.int32)}
HEADER = struct.Struct("<8sIIQQQQQ")  # magic, version, reserved, file size, meta offset/size, blob offset/size


def _str(s: str) -> bytes:
    data = s.encode()
    return struct.pack("<I", len(data)) + data


def _attr(key: str, value) -> bytes:
    if isinstance(value, str):
        return _str(key) + struct.pack("<B", 2) + _str(value)
    values = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
    if all(isinstance(v, (bool, int, np.integer)) for v in values):
        return _str(key) + struct.pack(f"<BI{len(values)}q", 0, len(values), *[int(v) for v in values])
    return _str(key) + struct.pack(f"<BI{len(values)}f", 1, len(values), *[float(v) for v in values])


def plan_bytes(graph: Graph) -> bytes:
    """The graph as a plan: every constant in its dtype at a 64-byte aligned blob offset."""
    blob = bytearray()
    meta = bytearray(_str(graph.name))
    meta += struct.pack("<I", len(graph.tensors))
    for t in graph.tensors:
        offset = nbytes = 0
        code, np_dtype = DTYPES[t.dtype]
        if t.constant:
            data = np.ascontiguousarray(t.data, dtype=np_dtype).tobytes()
            blob += b"\0" * (-len(blob) % 64)
            offset, nbytes = len(blob), len(data)
            blob += data
        meta += _str(t.name) + struct.pack(f"<I{len(t.shape)}i", len(t.shape), *t.shape)
        meta += struct.pack("<BQQB", int(t.constant), offset, nbytes, code)
        q = t.quantization
        meta += _str(q.dtype if q else "")
        scales, zeros = (q.scales, q.zero_points) if q else ((), ())
        meta += struct.pack(f"<I{len(scales)}fI{len(zeros)}ii", len(scales), *scales, len(zeros), *zeros, q.axis if q else 0)
    meta += struct.pack("<I", len(graph.nodes))
    for n in graph.nodes:
        meta += _str(n.op) + _str(n.name)
        meta += struct.pack(f"<I{len(n.inputs)}i", len(n.inputs), *n.inputs)
        meta += struct.pack(f"<I{len(n.outputs)}i", len(n.outputs), *n.outputs)
        meta += struct.pack("<I", len(n.attrs))
        for key, value in n.attrs.items():
            meta += _attr(key, value)
    meta += struct.pack(f"<I{len(graph.inputs)}i", len(graph.inputs), *graph.inputs)
    meta += struct.pack(f"<I{len(graph.outputs)}i", len(graph.outputs), *graph.outputs)
    meta_offset = HEADER.size
    blob_offset = meta_offset + len(meta)
    blob_offset += -blob_offset % 64
    total = blob_offset + len(blob)
    header = HEADER.pack(MAGIC, VERSION, 0, total, meta_offset, len(meta), blob_offset, len(blob))
    return header + bytes(meta) + b"\0" * (blob_offset - meta_offset - len(meta)) + bytes(blob)


def write_plan(graph: Graph, path: str | os.PathLike) -> None:
    """Writes atomically: a temporary file renamed into place, never a half-written plan."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(plan_bytes(graph))
    os.replace(tmp, path)


def graph_from_plan(data: bytes) -> Graph:
    """A Graph from plan bytes, parsed by the C++ reader (clear ValueError on a bad file)."""
    d = _core.parse_plan(data)
    tensors = [Tensor(name, tuple(shape), None if arr is None else np.asarray(arr),
                      Quantization(q[0], tuple(q[1]), tuple(q[2]), q[3]) if q else None, dtype)
               for name, shape, arr, dtype, q in d["tensors"]]
    nodes = [Node(op, name, list(ins), list(outs), dict(attrs)) for op, name, ins, outs, attrs in d["nodes"]]
    for node in nodes:  # the plan stores every number as a list: one-element lists are scalars
        for key, value in node.attrs.items():
            if isinstance(value, list) and len(value) == 1:
                node.attrs[key] = value[0]
    return Graph(d["name"], tensors, nodes, list(d["inputs"]), list(d["outputs"]))
