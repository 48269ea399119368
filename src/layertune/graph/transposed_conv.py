"""TRANSPOSE_CONV as stride-1 convolutions the tuner can tune (the sub-pixel decomposition, as
XNNPACK's deconvolution computes it).

A transposed convolution with stride s scatters each input pixel over a kh x kw window at s
times its position. Output row u (before the top padding is cut) takes kernel rows
ky = r, r + s, ... where r = u mod s, from input rows u // s, u // s - 1, ...: for each of the
s x s output phases it is an ordinary correlation of the input with a sub-kernel of
ceil(kh / s) x ceil(kw / s) taps (rows and columns reversed). So the node becomes

    s*s CONV_2D (stride 1, one per phase; each tuned like any convolution: direct, im2col + GEMM, ...)
    -> CONCATENATION over channels -> DEPTH_TO_SPACE (the phases interleaved) -> STRIDED_SLICE (the padding cut)

Bias and activation go into every phase's convolution. Only equal strides are lowered (one
DEPTH_TO_SPACE block); other nodes stay TRANSPOSE_CONV (the engine's direct scatter loop)."""

from __future__ import annotations

import numpy as np

from layertune.graph.ir import Graph, Node, Tensor


def _phase_kernel(w: np.ndarray, ry: int, rx: int, s: int, ah: int, aw: int) -> np.ndarray:
    """HWIO (ah, aw, in, out) kernel of output phase (ry, rx): tap j takes kernel row ry + s * (ah - 1 - j)
    (zero where that row is past the kernel), columns alike."""
    kh, kw, cin, cout = w.shape
    out = np.zeros((ah, aw, cin, cout), np.float32)
    for j in range(ah):
        ky = ry + s * (ah - 1 - j)
        for i in range(aw):
            kx = rx + s * (aw - 1 - i)
            if ky < kh and kx < kw:
                out[j, i] = w[ky, kx]
    return out


def lower_transposed_convs(graph: Graph) -> None:
    """Replaces every TRANSPOSE_CONV with equal strides by its phase convolutions (in place)."""
    nodes: list[Node] = []
    for node in graph.nodes:
        lowered = _lower(graph, node) if node.op == "TRANSPOSE_CONV" else None
        nodes.extend(lowered or [node])
    graph.nodes = nodes


def _lower(graph: Graph, node: Node) -> list[Node] | None:
    T = graph.tensors
    x, w_id, bias = node.inputs[0], node.inputs[1], node.inputs[2] if len(node.inputs) > 2 else -1
    sh, sw = node.attrs["strides"]
    pt, pl = node.attrs["pads"]
    w = T[w_id].data  # (kh, kw, in, out)
    if w is None or sh != sw or sh < 1:
        return None
    s = sh
    n, h, wd, cin = T[x].shape
    kh, kw, _, cout = w.shape
    _, oh, ow, _ = T[node.outputs[0]].shape
    ah, aw = -(-kh // s), -(-kw // s)  # taps per phase
    qh, qw = h + ah - 1, wd + aw - 1  # phase output size: every input row's reach
    if pt < 0 or pl < 0 or pt + oh > qh * s or pl + ow > qw * s:
        return None  # the output reaches past what the phases compute (e.g. a large output_padding)
    name = node.name
    act = node.attrs.get("activation", "none")
    phases = []
    out: list[Node] = []
    for ry in range(s):
        for rx in range(s):
            k = _phase_kernel(w, ry, rx, s, ah, aw)
            kt = graph.add_tensor(Tensor(f"{name}/phase{ry}{rx}/weights", k.shape, np.ascontiguousarray(k)))
            y = graph.add_tensor(Tensor(f"{name}/phase{ry}{rx}", (n, qh, qw, cout)))
            out.append(Node("CONV_2D", f"{name}/phase{ry}{rx}", [x, kt, bias], [y],
                            {"strides": [1, 1], "dilations": [1, 1], "pads": [ah - 1, ah - 1, aw - 1, aw - 1], "groups": 1,
                             "activation": act}))
            phases.append(y)
    if s == 1:
        stacked = interleaved = phases[0]
    else:
        stacked = graph.add_tensor(Tensor(f"{name}/phases", (n, qh, qw, s * s * cout)))
        out.append(Node("CONCATENATION", f"{name}/phases", phases, [stacked], {"axis": 3, "activation": "none"}))
        interleaved = graph.add_tensor(Tensor(f"{name}/full", (n, qh * s, qw * s, cout)))
        out.append(Node("DEPTH_TO_SPACE", f"{name}/full", [stacked], [interleaved], {"block_size": s}))
    out.append(Node("STRIDED_SLICE", name, [interleaved], list(node.outputs),
                    {"begin": [0, pt, pl, 0], "stride": [1, 1, 1, 1], "size": [n, oh, ow, cout]}))
    return out
