"""Fusion (graph/fusion.py and the kernels' epilogues): every kernel variant computes each fused
tail like the reference kernel and an independent numpy implementation; the pass fuses what it
may and nothing else; fused graphs give the unfused graph's answer, in plans too."""

from __future__ import annotations

import numpy as np
import pytest

import layertune
import numpy_conv
from layertune import _core
from layertune.graph.fusion import FORMS, fuse, fused_groups
from layertune.graph.ir import Graph, Node, Tensor
from layertune.graph.plan import plan_bytes
from test_kernels import LAYERS, Layer, assert_close, make_data, numpy_reference, variants

EPILOGUES = ["swish", "hard_swish", "add:relu", "add:none,swish", "add:relu6,hard_swish"]


def numpy_epilogue(y: np.ndarray, epilogue: str, residual: np.ndarray | None) -> np.ndarray:
    """The unfused ops' definitions, in float64."""
    y = y.astype(np.float64)
    for step in epilogue.split(","):
        if step == "swish":
            y = y / (1.0 + np.exp(-y))
        elif step == "hard_swish":
            y = y * np.clip(y + 3.0, 0.0, 6.0) / 6.0
        else:
            act = step.split(":")[1]
            y = y + residual
            lo, hi = {"none": (-np.inf, np.inf), "relu": (0, np.inf), "relu6": (0, 6)}[act]
            y = np.clip(y, lo, hi)
    return y


def run_fused(layer: Layer, x, w, bias, method: str, epilogue: str, residual, **params):
    kernel = layertune.Conv2D(x.shape, w, bias, strides=layer.strides, padding=layer.padding,
                              dilations=layer.dilations, groups=1 if layer.depthwise else layer.groups,
                              activation=layer.activation, method=method, depthwise=layer.depthwise,
                              epilogue=epilogue, **params)
    return kernel.run(x, residual if "add" in epilogue else None)


@pytest.mark.parametrize("index", range(len(LAYERS)), ids=[str(layer) for layer in LAYERS])
def test_every_variant_computes_the_epilogue(index):
    """Each layer of the kernel grid with one fused tail (they take turns), on every variant: the
    kernels call the epilogue per finished block (unrolled per register-tile row, Winograd per
    output tile, simple per output row), so odd blockings and partial tiles are what matter."""
    layer = LAYERS[index]
    epilogue = EPILOGUES[index % len(EPILOGUES)]
    x, w, bias = make_data(layer, seed=index)
    conv = numpy_reference(layer, x, w, bias)
    residual = np.random.default_rng(100 + index).uniform(-2, 2, conv.shape).astype(np.float32)
    want = numpy_epilogue(conv, epilogue, residual)
    ref = run_fused(layer, x, w, bias, "reference", epilogue, residual)
    assert_close(ref, want, f"reference + {epilogue} vs numpy on {layer}")
    for method, params in variants(layer):
        got = run_fused(layer, x, w, bias, method, epilogue, residual, **params)
        assert_close(got, ref.astype(np.float64), f"{method}{params} + {epilogue} vs reference on {layer}")
        assert_close(got, want, f"{method}{params} + {epilogue} vs numpy on {layer}")


@pytest.mark.parametrize("epilogue", EPILOGUES)
def test_each_epilogue_on_a_batch_of_two_at_two_threads(epilogue):
    layer = Layer(2, 9, 11, 13, 19, (3, 3))
    x, w, bias = make_data(layer, seed=7)
    conv = numpy_reference(layer, x, w, bias)
    residual = np.random.default_rng(8).uniform(-2, 2, conv.shape).astype(np.float32)
    want = numpy_epilogue(conv, epilogue, residual)
    for method in ("simple", "unrolled", "winograd"):
        assert_close(run_fused(layer, x, w, bias, method, epilogue, residual, threads=2), want, f"{method} + {epilogue}")


def test_bad_epilogues_and_residuals_are_refused():
    layer = Layer(1, 6, 6, 4, 8, (3, 3))
    x, w, bias = make_data(layer)
    with pytest.raises(ValueError, match="unknown step 'swizzle'"):
        layertune.Conv2D(x.shape, w, bias, epilogue="swish,swizzle")
    with pytest.raises(ValueError, match="add:sigmoid"):
        layertune.Conv2D(x.shape, w, bias, epilogue="add:sigmoid")
    kernel = layertune.Conv2D(x.shape, w, bias, epilogue="add:relu")
    with pytest.raises(ValueError, match="none was given"):
        kernel.run(x)
    with pytest.raises(ValueError, match="output's shape"):
        kernel.run(x, np.zeros((1, 6, 6, 7), np.float32))
    with pytest.raises(ValueError, match="adds none"):
        layertune.Conv2D(x.shape, w, bias, epilogue="swish").run(x, np.zeros((1, 6, 6, 8), np.float32))


# --- the pass, on graphs written out by hand ---------------------------------------------------

class Builder:
    """A tiny graph writer: tensors by name, convolutions with seeded weights."""

    def __init__(self, shape=(1, 7, 9, 6)):
        self.rng = np.random.default_rng(0)
        self.tensors: list[Tensor] = [Tensor("x", shape)]
        self.nodes: list[Node] = []

    def tensor(self, name: str, shape, data=None) -> int:
        self.tensors.append(Tensor(name, tuple(shape), data))
        return len(self.tensors) - 1

    def conv(self, name: str, x: int, out_c: int, k: int = 3, activation: str = "none", pads=None, stride: int = 1) -> int:
        shape = self.tensors[x].shape
        w = self.tensor(f"{name}/w", (k, k, shape[3], out_c), self.rng.uniform(-0.5, 0.5, (k, k, shape[3], out_c)).astype(np.float32))
        b = self.tensor(f"{name}/b", (out_c,), self.rng.uniform(-0.5, 0.5, out_c).astype(np.float32))
        pads = pads if pads is not None else [k // 2, k // 2, k // 2, k // 2]
        oh = (shape[1] + pads[0] + pads[1] - k) // stride + 1
        ow = (shape[2] + pads[2] + pads[3] - k) // stride + 1
        y = self.tensor(f"{name}/y", (shape[0], oh, ow, out_c))
        self.nodes.append(Node("CONV_2D", name, [x, w, b], [y], {"strides": [stride, stride], "dilations": [1, 1],
                                                                 "pads": pads,
                                                                 "groups": 1, "activation": activation}))
        return y

    def op(self, op: str, name: str, inputs: list[int], shape=None, **attrs) -> int:
        y = self.tensor(f"{name}/y", shape or self.tensors[inputs[0]].shape)
        self.nodes.append(Node(op, name, inputs, [y], {"activation": "none", **attrs}))
        return y

    def graph(self, *outputs: int) -> Graph:
        return Graph("hand", self.tensors, self.nodes, [0], list(outputs))


def same_answer(graph: Graph, fused: Graph, threads: int = 1) -> None:
    x = np.random.default_rng(1).uniform(-1, 1, graph.tensors[graph.inputs[0]].shape).astype(np.float32)
    want = layertune.Model(graph.copy(), threads).run(x)
    got = layertune.Model(fused, threads).run(x)
    for g, w in zip(got if isinstance(got, list) else [got], want if isinstance(want, list) else [want]):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * float(np.abs(w).max()))


def ops(graph: Graph) -> list[str]:
    return [n.op for n in graph.nodes]


def test_swish_hard_swish_and_a_residual_add_become_epilogues():
    b = Builder()
    y = b.conv("c1", 0, 6)
    s = b.op("MUL", "m1", [b.op("LOGISTIC", "l1", [y]), y])  # sigmoid first: either order is swish
    h = b.op("HARD_SWISH", "h2", [b.conv("c2", s, 6)])
    out = b.op("ADD", "a3", [b.conv("c3", h, 6), s], activation="relu")
    g = b.graph(out)
    f = fuse(g)
    assert ops(f) == ["CONV_2D"] * 3
    assert [n.attrs["epilogue"] for n in f.nodes] == ["swish", "hard_swish", "add:relu"]
    assert fused_groups(f) == {"c1": ["l1", "m1"], "c2": ["h2"], "c3": ["a3"]}
    assert ops(g) == ["CONV_2D", "LOGISTIC", "MUL", "CONV_2D", "HARD_SWISH", "CONV_2D", "ADD"]  # the input is kept
    for threads in (1, 2):
        same_answer(g, f, threads)


def test_a_chain_of_steps_and_a_residual_computed_after_the_convolution():
    """c1's ADD reads c2, which runs after c1: the fused c1 moves to the ADD's place. Then the ADD's
    HARD_SWISH joins the same epilogue."""
    b = Builder()
    y1 = b.conv("c1", 0, 5)
    y2 = b.conv("c2", 0, 5)
    out = b.op("HARD_SWISH", "h", [b.op("ADD", "a", [y1, y2])])
    g = b.graph(out)
    f = fuse(g)
    assert [n.name for n in f.nodes] == ["c2", "c1"]
    assert f.nodes[1].attrs["epilogue"] == "add:none,hard_swish"
    same_answer(g, f)


def test_what_may_not_be_fused_is_left_alone():
    b = Builder()
    y = b.conv("c1", 0, 6)
    m = b.op("MUL", "se", [y, b.op("MEAN", "mean", [y], shape=(1, 1, 1, 6), axes=[1, 2], keep_dims=1)])  # broadcast
    y2 = b.conv("c2", m, 6)
    biased = b.op("ADD", "bias", [y2, b.tensor("v", (1, 1, 1, 6), np.ones((1, 1, 1, 6), np.float32))], shape=(1, 7, 9, 6))
    y3 = b.conv("c3", biased, 6)
    l3 = b.op("LOGISTIC", "l3", [y3])
    s3 = b.op("MUL", "m3", [y3, l3])
    g = b.graph(s3, l3)  # the sigmoid is an output too: swish would lose it
    f = fuse(g)
    assert fused_groups(f) == {}
    assert ops(f) == ops(g)
    # a convolution that is a graph output keeps its output
    b2 = Builder()
    y = b2.conv("c", 0, 4)
    g2 = b2.graph(b2.op("HARD_SWISH", "h", [y]), y)
    assert fused_groups(fuse(g2)) == {}


def test_forms_switch_on_and_off():
    b = Builder()
    y = b.conv("c1", 0, 6)
    s = b.op("MUL", "m1", [y, b.op("LOGISTIC", "l1", [y])])
    out = b.op("ADD", "a2", [b.conv("c2", s, 6), s])
    g = b.graph(out)
    assert ops(fuse(g, ())) == ops(g)
    assert ops(fuse(g, ("swish",))) == ["CONV_2D", "CONV_2D", "ADD"]
    assert ops(fuse(g, ("add",))) == ["CONV_2D", "LOGISTIC", "MUL", "CONV_2D"]
    assert ops(fuse(g)) == ["CONV_2D", "CONV_2D"]
    with pytest.raises(ValueError, match="unknown fusion form 'relu'"):
        fuse(g, ("relu",))
    assert set(FORMS) == {"pad", "swish", "hard_swish", "add", "input_scale", "inverted_residual", "squeeze_excite"}


def test_a_zero_pad_becomes_the_convolutions_padding():
    b = Builder()
    p = b.op("PAD", "pad", [0], shape=(1, 8, 12, 6), pads=[0, 0, 1, 0, 2, 1, 0, 0], mode="constant")
    y = b.conv("c", p, 4, pads=[0, 0, 0, 0])
    half = b.op("PADV2", "pad_half", [y], shape=(1, 8, 11, 4), pads=[0, 0, 1, 1, 0, 1, 0, 0], mode="constant", value=0.5)
    y2 = b.conv("c2", half, 3, pads=[0, 0, 0, 0])
    g = b.graph(y2)
    f = fuse(g)
    assert ops(f) == ["CONV_2D", "PADV2", "CONV_2D"]  # a pad of 0.5 is no convolution padding
    assert f.nodes[0].attrs["pads"] == [1, 0, 2, 1]
    assert fused_groups(f) == {"c": ["pad"]}
    same_answer(g, f)


def test_a_pad_before_a_max_pool_becomes_its_padding_where_the_pool_skips_it():
    def pad_pool(activation: str, pool_activation: str = "none", pads=(1, 1, 1, 1), value: float = 0.0) -> Graph:
        b = Builder((1, 9, 8, 5))
        y = b.conv("c", 0, 6, activation=activation)
        p = b.op("PADV2", "pad", [y], shape=(1, 9 + pads[0] + pads[1], 8 + pads[2] + pads[3], 6),
                 pads=[0, 0, *pads, 0, 0], mode="constant", value=value)
        oh, ow = (9 + pads[0] + pads[1] - 3) // 2 + 1, (8 + pads[2] + pads[3] - 3) // 2 + 1
        return b.graph(b.op("MAX_POOL_2D", "pool", [p], shape=(1, oh, ow, 6), filter=[3, 3], strides=[2, 2],
                            pads=[0, 0, 0, 0], activation=pool_activation))

    for folded in (pad_pool("relu"), pad_pool("relu6", pads=(2, 0, 1, 2)), pad_pool("none", "relu"),
                   pad_pool("relu", value=-1.0)):
        f = fuse(folded)
        assert ops(f) == ["CONV_2D", "MAX_POOL_2D"] and fused_groups(f) == {"pool": ["pad"]}
        same_answer(folded, f)
        same_answer(folded, f, threads=2)
    assert fuse(pad_pool("relu")).nodes[1].attrs["pads"] == [1, 1, 1, 1]
    # a pad above values the input may hold, a pad as wide as the window, a pad the form is off for
    for kept in (pad_pool("none"), pad_pool("relu", value=0.5), pad_pool("relu", pads=(3, 0, 0, 0))):
        assert "PADV2" in ops(fuse(kept))
        same_answer(kept, fuse(kept))
    assert "PADV2" in ops(fuse(pad_pool("relu"), ("swish",)))


def test_plans_record_fused_groups_and_are_run_as_written(tmp_path):
    b = Builder()
    y = b.conv("c1", 0, 6)
    out = b.op("MUL", "m1", [y, b.op("LOGISTIC", "l1", [y])])
    g = b.graph(out)
    layertune.Model(fuse(g)).save(tmp_path / "fused.ltplan")
    layertune.Model(g.copy()).save(tmp_path / "unfused.ltplan")
    assert fused_groups(layertune.load(tmp_path / "fused.ltplan").graph) == {"c1": ["l1", "m1"]}
    assert ops(layertune.load(tmp_path / "unfused.ltplan").graph) == ["CONV_2D", "LOGISTIC", "MUL"]  # not fused again
    assert ops(layertune.load(tmp_path / "unfused.ltplan", fuse=True).graph) == ["CONV_2D", "LOGISTIC", "MUL"]


def test_a_bad_epilogue_in_a_plan_names_the_node():
    b = Builder()
    b.conv("conv_a", 0, 4)
    g = b.graph(len(b.tensors) - 1)
    g.nodes[0].attrs["epilogue"] = "swish,warp"
    with pytest.raises(ValueError, match="conv_a.*unknown step 'warp'"):
        layertune.Model(g).run(np.zeros((1, 7, 9, 6), np.float32))
    g.nodes[0].attrs["epilogue"] = "add:none"
    with pytest.raises(ValueError, match="conv_a.*missing input 3"):
        layertune.Model(g).run(np.zeros((1, 7, 9, 6), np.float32))


# --- inverted-residual strips (kernels/ops/strip_group.cc) -------------------------------------

def inverted_residual(shape=(1, 13, 11, 8), expand_c=24, stride=1, pads=(1, 1, 1, 1), residual=True,
                      k=3, epilogues=("", ""), stem=None) -> tuple[Graph, Builder]:
    """x -> 1x1 expand (relu6) -> kxk depthwise (relu6) -> 1x1 project (+ x): MobileNetV2's block.
    With stem = (k, stride, pads) the first convolution is that dense one instead (MobileNetV2's
    3x3 stride-2 stem before its first depthwise), and there is no residual."""
    b = Builder(shape)
    if stem:
        e = b.conv("expand", 0, expand_c, k=stem[0], activation="relu6", pads=list(stem[2]), stride=stem[1])
        residual = False
    else:
        e = b.conv("expand", 0, expand_c, k=1, activation="relu6", pads=[0, 0, 0, 0])
    n, h, w, c = b.tensors[e].shape
    wd = b.tensor("dw/w", (k, k, 1, c), b.rng.uniform(-0.5, 0.5, (k, k, 1, c)).astype(np.float32))
    bd = b.tensor("dw/b", (c,), b.rng.uniform(-0.5, 0.5, c).astype(np.float32))
    oh = (h + pads[0] + pads[1] - k) // stride + 1
    ow = (w + pads[2] + pads[3] - k) // stride + 1
    d = b.tensor("dw/y", (n, oh, ow, c))
    b.nodes.append(Node("DEPTHWISE_CONV_2D", "dw", [e, wd, bd], [d], {"strides": [stride, stride], "dilations": [1, 1],
                                                                       "pads": list(pads), "groups": c,
                                                                       "activation": "relu6"}))
    for node, step in zip(b.nodes, epilogues):
        if step:
            node.attrs["epilogue"] = step
    y = b.conv("project", d, shape[3] if not stem else 5, k=1, pads=[0, 0, 0, 0])
    if residual:
        y = b.op("ADD", "add", [y, 0], activation="none")
    return b.graph(y), b


def numpy_inverted_residual(graph: Graph, x: np.ndarray) -> np.ndarray:
    """The block by numpy_conv, from the graph's own weights (float64)."""
    y = x
    for node in graph.nodes:
        if node.op == "ADD":
            y = y + x
            continue
        w, bias = (graph.tensors[t].data for t in node.inputs[1:3])
        y = numpy_conv.conv2d(y, w, bias, tuple(node.attrs["strides"]), tuple(node.attrs["pads"]), (1, 1),
                              int(node.attrs["groups"]), node.attrs["activation"])
        if node.attrs.get("epilogue") == "hard_swish":
            y = y * np.clip(y + 3.0, 0.0, 6.0) / 6.0
    return y


def reference_engine(graph: Graph, x: np.ndarray) -> np.ndarray:
    """The plan on the engine's reference path (which runs a strip group's nodes one by one)."""
    engine = _core.Engine(plan_bytes(graph), 1, True)
    return engine.run([x])[0]


def group_is_right(graph: Graph, fused: Graph, x: np.ndarray, want: np.ndarray, threads: int) -> None:
    """A fused group's plan equals the independent numpy answer, the reference engine (which runs
    the group's nodes one by one) and the unfused graph."""
    got = layertune.Model(fused, threads).run(x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))
    np.testing.assert_allclose(got, reference_engine(fused, x), rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))
    same_answer(graph, fused, threads)


STEM_CASES = [  # shape, stem (k, stride, pads), depthwise stride, depthwise pads, strip rows, threads
    ((1, 23, 21, 3), (3, 2, (0, 1, 0, 1)), 1, (1, 1, 1, 1), 2, 1),  # MobileNetV2's stem: SAME at stride 2
    ((2, 24, 19, 3), (3, 2, (1, 1, 1, 1)), 1, (1, 1, 1, 1), 3, 2),
    ((1, 17, 13, 4), (3, 1, (1, 1, 1, 1)), 2, (0, 1, 0, 1), 1, 3),
    ((1, 19, 11, 3), (5, 2, (2, 2, 2, 2)), 1, (1, 1, 1, 1), 100, 2),
    ((1, 15, 9, 6), (3, 1, (0, 0, 0, 0)), 1, (0, 0, 0, 0), 2, 2),   # VALID both: fewer rows at each step
]


@pytest.mark.parametrize("case", STEM_CASES, ids=[f"{c[0]}-k{c[1][0]}s{c[1][1]}-dw{c[2]}-rows{c[4]}-t{c[5]}"
                                                  for c in STEM_CASES])
def test_a_dense_first_convolution_strips_like_an_expand(case):
    """MobileNetV2's stem -> depthwise -> project chain (no expansion) strips like an inverted
    residual: each strip computes the first convolution's rows its depthwise window needs from the
    input rows those read, with the layer's padding at the image's edges. 3x3 and 5x5, strides 1
    and 2, SAME and VALID, batch 2, 1-3 threads: the fused plan equals the unfused one and numpy."""
    shape, stem, stride, pads, rows, threads = case
    g, _ = inverted_residual(shape, expand_c=20, stride=stride, pads=pads, stem=stem)
    f = fuse(g, strip_rows=rows, strip_min_bytes=0)
    assert [n.attrs.get("strip_rows") for n in f.nodes] == [rows, None, None]
    assert fused_groups(f) == {"expand": ["dw", "project"]}
    x = np.random.default_rng(5).uniform(-1, 1, shape).astype(np.float32)
    group_is_right(g, f, x, numpy_inverted_residual(g, x), threads)


STRIP_CASES = [  # shape, stride, pads (top, bottom, left, right), residual, strip rows, threads
    ((1, 13, 11, 8), 1, (1, 1, 1, 1), True, 1, 1),
    ((1, 13, 11, 8), 1, (1, 1, 1, 1), True, 4, 2),
    ((1, 13, 11, 8), 1, (1, 1, 1, 1), True, 100, 3),
    ((2, 12, 9, 6), 2, (0, 1, 0, 1), False, 2, 2),   # TensorFlow's SAME at stride 2 on even rows
    ((2, 13, 10, 6), 2, (1, 1, 1, 1), False, 3, 3),
    ((1, 9, 7, 5), 1, (0, 0, 0, 0), False, 2, 2),    # VALID: the output has fewer rows
    ((1, 17, 5, 4), 2, (2, 1, 0, 2), False, 1, 2),   # odd pads, a pad larger than the stride
]


@pytest.mark.parametrize("case", STRIP_CASES, ids=[f"{c[0]}-s{c[1]}-p{c[2]}-rows{c[4]}-t{c[5]}" for c in STRIP_CASES])
def test_inverted_residual_strips_give_the_unfused_answer(case):
    """Strips of every height (1 row; rows that do not divide the output; more rows than it has), on
    1-3 threads (chunks whose windows overlap), strides 1 and 2, batch 2: the fused plan equals the
    unfused one and the independent numpy chain."""
    shape, stride, pads, residual, rows, threads = case
    g, _ = inverted_residual(shape, stride=stride, pads=pads, residual=residual)
    f = fuse(g, strip_rows=rows, strip_min_bytes=0)
    assert [n.attrs.get("strip_rows") for n in f.nodes] == [rows, None, None]
    assert fused_groups(f) == {"expand": ["dw", "project"] + (["add"] if residual else [])} or \
        fused_groups(f) == {"project": ["add"], "expand": ["dw", "project"]}
    x = np.random.default_rng(3).uniform(-1, 1, shape).astype(np.float32)
    group_is_right(g, f, x, numpy_inverted_residual(g, x), threads)


@pytest.mark.parametrize("stride, residual", [(1, True), (2, False)])
def test_strip_threads_meet_wherever_their_speeds_put_them(stride, residual):
    """Two or three threads claim strips from the two ends of their segment until they meet, so
    where they meet changes from run to run (and each fills its buffer from the strip above, the
    strip below, or afresh at the start of a segment and after the other's strips): every run of
    one-row strips equals the numpy chain."""
    g, _ = inverted_residual((2, 23, 9, 8), stride=stride, residual=residual)
    f = fuse(g, strip_rows=1, strip_min_bytes=0)
    x = np.random.default_rng(8).uniform(-1, 1, (2, 23, 9, 8)).astype(np.float32)
    want = numpy_inverted_residual(g, x)
    for threads in (2, 3):
        model = layertune.Model(f, threads)
        for _ in range(40):
            np.testing.assert_allclose(model.run(x), want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


@pytest.mark.parametrize("method", ["simple", "unrolled"])
def test_strip_groups_use_each_nodes_kernel_choice(method, tmp_path):
    """Each node keeps its kernel (the depthwise on `simple` or on `unrolled`) and a hard-swish
    epilogue on the expand (MobileNetV3's block); the plan round-trips and runs as written."""
    g, _ = inverted_residual((1, 14, 12, 8), epilogues=("hard_swish", ""))
    f = fuse(g, ("add", "inverted_residual"), strip_rows=3, strip_min_bytes=0)
    for node in f.nodes:
        node.set_kernel(method if node.op == "DEPTHWISE_CONV_2D" else "unrolled", {"threads": 2})
    layertune.Model(f).save(tmp_path / "strips.ltplan")
    loaded = layertune.load(tmp_path / "strips.ltplan", threads=2)
    assert loaded.graph.nodes[0].attrs["strip_rows"] == 3
    assert [n.attrs.get("strip_group") for n in loaded.graph.nodes] == [None, "expand", "expand"]
    x = np.random.default_rng(4).uniform(-1, 1, (1, 14, 12, 8)).astype(np.float32)
    want = numpy_inverted_residual(g, x)
    np.testing.assert_allclose(loaded.run(x), want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


def test_what_may_not_be_strip_grouped_is_left_alone():
    """An expanded tensor that is also a graph output and a dilated first convolution are no strip
    groups; small expanded tensors stay unfused by default."""
    g, b = inverted_residual()
    assert "strip_rows" not in fuse(g).nodes[0].attrs  # 13x11x24 floats: below STRIP_MIN_BYTES
    assert "strip_rows" in fuse(g, strip_min_bytes=0).nodes[0].attrs
    g.outputs.append(1 + 2)  # the expanded tensor is a graph output too ("expand/y" is tensor 3)
    assert b.tensors[3].name == "expand/y"
    assert not any("strip_rows" in n.attrs for n in fuse(g, strip_min_bytes=0).nodes)
    g3, _ = inverted_residual(stem=(3, 1, (1, 1, 1, 1)))
    assert "strip_rows" in fuse(g3, strip_min_bytes=0).nodes[0].attrs  # a dense 3x3 first convolution is grouped
    g3.nodes[0].attrs["dilations"] = [2, 2]  # a dilated one is not
    g3.nodes[0].attrs["pads"] = [2, 2, 2, 2]
    assert not any("strip_rows" in n.attrs for n in fuse(g3, strip_min_bytes=0).nodes)


def test_a_bad_strip_group_in_a_plan_names_the_node():
    g, _ = inverted_residual(residual=False)
    f = fuse(g, strip_rows=2, strip_min_bytes=0)
    f.nodes[0].attrs["strip_rows"] = 0
    with pytest.raises(ValueError, match="'expand'.*strip_rows must be positive"):
        layertune.Model(f).run(np.zeros((1, 13, 11, 8), np.float32))
    f.nodes[0].attrs["strip_rows"] = 2
    f.nodes[1], f.nodes[2] = f.nodes[2], f.nodes[1]  # the project before the depthwise
    with pytest.raises(ValueError, match="'expand'.*strip group: the node after it, 'project', must be a depthwise"):
        layertune.Model(f).run(np.zeros((1, 13, 11, 8), np.float32))


# --- squeeze-and-excite as one op (kernels/ops/squeeze_excite.cc) ---------------------------------

def squeeze_excite(shape=(1, 9, 7, 37), reduced=5, reshape=True, reduce_act="none", swish=True,
                   mul_act="none", gate_first=False, after_k=3, after_c=4, residual=False) -> tuple[Graph, Builder]:
    """x -> MEAN(1, 2) -> [RESHAPE] -> 1x1 reduce (+ swish) -> 1x1 expand -> LOGISTIC -> x * gate
    -> an after_k x after_k convolution (so that the block's output is read by a layer, as in
    EfficientNet; 1x1: its project convolution), + x when `residual`."""
    b = Builder(shape)
    n, _, _, c = shape
    m = b.op("MEAN", "se/mean", [0], shape=(n, c) if reshape else (n, 1, 1, c), axes=[1, 2] if reshape else [2, -3])
    b.nodes[-1].attrs.pop("activation")
    if reshape:
        m = b.op("RESHAPE", "se/reshape", [m], shape=(n, 1, 1, c))
        b.nodes[-1].attrs.pop("activation")
    r = b.conv("se/reduce", m, reduced, k=1, activation=reduce_act, pads=[0, 0, 0, 0])
    if swish:
        r = b.op("MUL", "se/swish", [r, b.op("LOGISTIC", "se/swish_gate", [r])])
    e = b.conv("se/expand", r, c, k=1, pads=[0, 0, 0, 0])
    gate = b.op("LOGISTIC", "se/gate", [e])
    y = b.op("MUL", "se/excite", [gate, 0] if gate_first else [0, gate], shape=shape, activation=mul_act)
    out = b.conv("after", y, after_c, k=after_k, pads=[after_k // 2] * 4)
    if residual:
        out = b.op("ADD", "add", [out, 0], activation="none")
    return b.graph(out), b


def numpy_squeeze_excite(graph: Graph, x: np.ndarray) -> np.ndarray:
    """The block by its definition, in float64, from the graph's own weights; then the 3x3 layer."""
    nodes = {n.name: n for n in graph.nodes}
    weights = lambda name: [graph.tensors[t].data.astype(np.float64) for t in nodes[name].inputs[1:3]]
    act = {"none": lambda v: v, "relu": lambda v: np.maximum(v, 0), "relu6": lambda v: np.clip(v, 0, 6)}
    w1, b1 = weights("se/reduce")
    w2, b2 = weights("se/expand")
    h = act[nodes["se/reduce"].attrs["activation"]](x.astype(np.float64).mean(axis=(1, 2)) @ w1[0, 0] + b1)
    if "se/swish" in nodes:
        h = h / (1.0 + np.exp(-h))
    gate = 1.0 / (1.0 + np.exp(-(h @ w2[0, 0] + b2)))
    y = act[nodes["se/excite"].attrs["activation"]](x * gate[:, None, None, :])
    w3, b3 = weights("after")
    k = w3.shape[0] // 2
    out = numpy_conv.conv2d(y, w3, b3, (1, 1), (k, k, k, k), (1, 1), 1, "none")
    return out + x if "add" in nodes else out


SE_CASES = [  # shape, reshape, reduce activation, swish, MUL activation, gate first, threads
    ((1, 9, 7, 37), True, "none", True, "none", False, 1),
    ((2, 9, 7, 37), True, "relu", False, "relu6", True, 2),
    ((1, 40, 41, 20), False, "none", True, "none", False, 2),   # 1640 pixels: several chunks per thread
    ((2, 33, 30, 48), True, "relu6", True, "none", True, 3),
    ((1, 1, 1, 300), True, "none", True, "none", False, 2),     # one pixel; channels past 16 vectors
]


@pytest.mark.parametrize("case", SE_CASES, ids=[f"{c[0]}-reshape{int(c[1])}-{c[2]}-swish{int(c[3])}-{c[4]}-t{c[6]}"
                                                 for c in SE_CASES])
def test_squeeze_excite_groups_give_the_unfused_answer(case):
    """MEAN with and without a RESHAPE after it (keepdims), the reduce layer's activation and swish,
    the MUL's own activation and either operand order, batch 2, 1-3 threads, channels off the SIMD
    width: the group equals the independent numpy block, the reference engine (which runs its
    nodes one by one) and the unfused graph."""
    shape, reshape, reduce_act, swish, mul_act, gate_first, threads = case
    g, _ = squeeze_excite(shape, reshape=reshape, reduce_act=reduce_act, swish=swish, mul_act=mul_act,
                          gate_first=gate_first)
    f = fuse(g, ("squeeze_excite",))
    count = 5 + reshape
    assert f.nodes[0].op == "MEAN" and f.nodes[0].attrs["se_nodes"] == count
    assert [n.attrs.get("se_group") for n in f.nodes[1:count]] == ["se/mean"] * (count - 1)
    assert fused_groups(f)["se/mean"] == [n.name for n in f.nodes[1:count]]
    if swish:  # the reduce layer's swish went into its epilogue on the way
        assert f.nodes[1 + reshape].attrs["epilogue"] == "swish"
    x = np.random.default_rng(5).uniform(-1, 1, shape).astype(np.float32)
    group_is_right(g, f, x, numpy_squeeze_excite(g, x), threads)


def test_what_is_no_squeeze_excite_is_left_alone():
    """A MEAN over one axis, a gate that another node reads too, a MUL by another tensor than the
    MEAN's input: no group (and the graphs still run as written)."""
    g, b = squeeze_excite()
    g.nodes[0].attrs["axes"] = [1]
    g.tensors[g.nodes[0].outputs[0]] = Tensor("se/mean/y", (1, 7, 37))
    assert not any("se_nodes" in n.attrs for n in fuse(g).nodes)
    g, b = squeeze_excite()
    gate = next(n for n in g.nodes if n.name == "se/gate").outputs[0]
    g.outputs.append(gate)
    assert not any("se_nodes" in n.attrs for n in fuse(g).nodes)
    g, b = squeeze_excite()
    other = b.tensor("other", (1, 9, 7, 37))
    mul = next(n for n in g.nodes if n.name == "se/excite")
    g.nodes.insert(0, Node("RELU", "other", [0], [other], {}))
    mul.inputs[0] = other
    assert not any("se_nodes" in n.attrs for n in fuse(g).nodes)
    same_answer(g, fuse(g))


def test_a_bad_squeeze_excite_group_in_a_plan_names_the_node():
    g, _ = squeeze_excite()
    f = fuse(g, ("squeeze_excite",))
    f.nodes[0].attrs["se_nodes"] = 3
    x = np.zeros((1, 9, 7, 37), np.float32)
    with pytest.raises(ValueError, match="'se/mean'.*se_nodes must be 4 to 6"):
        layertune.Model(f).run(x)
    f.nodes[0].attrs["se_nodes"] = 6
    f.nodes[2], f.nodes[3] = f.nodes[3], f.nodes[2]  # the expand before the reduce
    with pytest.raises(ValueError, match="'se/mean'.*squeeze-excite group: 'se/expand' must read"):
        layertune.Model(f).run(x)


# --- a squeeze-excite gate taken by the project convolution (input_scale) ---------------------------

INPUT_SCALE_CASES = [  # shape, method, residual, threads
    ((1, 9, 7, 37), "unrolled", False, 1),
    ((1, 9, 7, 37), "simple", False, 2),
    ((1, 40, 41, 20), "unrolled", True, 2),   # the project's residual ADD in its epilogue too
    ((1, 40, 41, 20), "simple", True, 3),
    ((1, 33, 30, 48), "reference", False, 2),  # a kernel that cannot fold: the op scales the input
]


@pytest.mark.parametrize("case", INPUT_SCALE_CASES, ids=[f"{c[0]}-{c[1]}-res{int(c[2])}-t{c[3]}" for c in INPUT_SCALE_CASES])
def test_a_project_convolution_takes_the_squeeze_excite_gate_as_its_input_scale(case):
    """The MUL goes into the 1x1 convolution after it (its weights rescaled each run by the kernels
    that can, the input scaled by the op for the others) and the squeeze-excite group ends at the
    gate: equal to the numpy block, the reference engine and the unfused graph, run after run
    (the rescaled weights start from the unscaled copy each time)."""
    shape, method, residual, threads = case
    c = shape[3]
    g, _ = squeeze_excite(shape, after_k=1, after_c=c if residual else 6, residual=residual)
    f = fuse(g, ("add", "input_scale", "squeeze_excite"))
    project = next(n for n in f.nodes if n.name.startswith("after"))
    gate = next(n for n in f.nodes if n.name == "se/gate").outputs[0]
    assert project.inputs[0] == 0 and project.inputs[4] == gate, project.inputs
    assert "se/excite" in project.attrs["fused"] and not any(n.op == "MUL" and n.name == "se/excite" for n in f.nodes)
    assert f.nodes[0].attrs["se_nodes"] == 5  # MEAN, RESHAPE, reduce, expand, LOGISTIC
    if method != "unrolled":
        project.attrs["kernel.method"] = method
    model = layertune.Model(f, threads)
    for seed in (5, 6):
        x = np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)
        want = numpy_squeeze_excite(g, x)
        np.testing.assert_allclose(model.run(x), want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))
    np.testing.assert_allclose(reference_engine(f, x), want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))
    same_answer(g, f, threads)
    same_answer(g, fuse(g, ("input_scale",)), threads)  # the gate from the unfused chain


def test_an_input_scale_on_a_batch_of_two_is_computed_by_the_op():
    """Batch 2 (a gate per image; the fusion pass leaves it alone, a plan may still say so): the
    op scales each image's input by its own gate."""
    shape = (2, 12, 10, 24)
    g, _ = squeeze_excite(shape, after_k=1, after_c=8)
    assert not any(len(n.inputs) > 4 for n in fuse(g).nodes)
    f = fuse(g, ())
    mul = next(n for n in f.nodes if n.name == "se/excite")
    project = next(n for n in f.nodes if n.name == "after")
    project.inputs = [mul.inputs[0], *project.inputs[1:3], -1, mul.inputs[1]]
    f.nodes.remove(mul)
    for threads in (1, 2):
        x = np.random.default_rng(threads).uniform(-1, 1, shape).astype(np.float32)
        want = numpy_squeeze_excite(g, x)
        np.testing.assert_allclose(layertune.Model(f.copy(), threads).run(x), want, rtol=1e-5,
                                   atol=1e-5 * float(np.abs(want).max()))


def test_what_takes_no_input_scale_is_left_alone():
    """A 3x3 convolution after the MUL, a tensor with fewer than INPUT_SCALE_MIN_RATIO elements a
    weight, a MUL that another node reads too: the MUL stays (in the squeeze-excite group)."""
    for g, _ in (squeeze_excite(), squeeze_excite((1, 4, 4, 37), after_k=1, after_c=8)):
        f = fuse(g)
        assert not any(len(n.inputs) > 4 for n in f.nodes)
        assert f.nodes[0].attrs["se_nodes"] == 6
        same_answer(g, f)
    g, b = squeeze_excite(after_k=1)
    mul = next(n for n in g.nodes if n.name == "se/excite")
    g.outputs.append(mul.outputs[0])
    assert not any(len(n.inputs) > 4 for n in fuse(g).nodes)


def test_a_bad_input_scale_in_a_plan_names_the_node():
    g, _ = squeeze_excite(after_k=1)
    f = fuse(g, ("input_scale",))
    project = next(n for n in f.nodes if n.name == "after")
    project.inputs[4] = project.inputs[0]  # the whole tensor, not one value a channel
    with pytest.raises(ValueError, match="'after'.*input scale .* must have one value per image and input channel"):
        layertune.Model(f).run(np.zeros((1, 9, 7, 37), np.float32))
