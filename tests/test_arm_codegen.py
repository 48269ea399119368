"""ARM code: every GEMM register tile computes the right answer in the cross-built profilers (under
qemu), and tools/arm_codegen.py reports what the hot loops compile to — the compiled-in default
tile is the one its report picks, and it does not spill."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import layertune
import layertune.methods
from layertune.tuner.build import build_profiler
from layertune.tuner.targets import BUILTIN

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() == "true"
QEMU = {"pi3_64": ["qemu-aarch64"], "pi3": ["qemu-arm", "-cpu", "max"], "pi0": ["qemu-arm", "-cpu", "arm1176"]}
TILES = [t for t in layertune.methods.methods()["unrolled"].param("gemm_tile").choices if t]
sys.path.insert(0, str(ROOT / "tools"))
import arm_codegen  # noqa: E402


def need(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            if IN_CI:
                pytest.fail(f"{tool} is required in CI (tools/test_all.sh installs it)")
            pytest.skip(f"{tool} is not installed")


def checked_run(base: str, profiler: Path, plan: Path, threads: str, tolerance: str, what, qemu=None, env=None) -> dict:
    """`run --check 1` of a plan under qemu: the engine's answer against its reference path."""
    proc = subprocess.run([*(qemu or QEMU[base]), str(profiler), "run", "--plan", str(plan), "--threads", threads,
                           "--check", "1", "--tolerance", tolerance, "--repeats", "1", "--warmup", "0"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (base, what, proc.stdout, proc.stderr)
    line = json.loads(proc.stdout)
    assert line["error"] is None and line["max_abs_ref"] > 0, (base, what, line)
    return line


# odd sizes: partial tiles in rows and columns, k not a multiple of four; blocks of 5 x 7, and k
# blocks long enough for the hand-scheduled loops (gemm_asm.inc: 16 k an iteration on aarch64, 4
# on armv7) with every tail length they leave: k = 117 (7 x 16 + 5), 40 in blocks of 33 (2 x 16 + 1,
# then 7), 117 in blocks of 17 (16 + 1, ..., then 15)
ARM_LAYERS = [
    (["--input", "2x7x9x13", "--filters", "19", "--kernel", "3x3"], ["block_m=5", "block_k=7"]),
    (["--input", "1x5x6x6", "--filters", "5", "--kernel", "1x1"], ["block_m=5", "block_k=7"]),
    (["--input", "2x7x9x13", "--filters", "19", "--kernel", "3x3"], []),
    (["--input", "2x7x9x13", "--filters", "37", "--kernel", "3x3"], ["block_k=17"]),
    (["--input", "1x5x6x40", "--filters", "37", "--kernel", "1x1"], ["block_m=9", "block_k=33"]),
]


@pytest.mark.parametrize("base", list(QEMU))
def test_every_gemm_tile_is_right_on_arm(base):
    need(QEMU[base][0], BUILTIN[base].compiler)
    profiler, _ = build_profiler(BUILTIN[base])
    for layer, params in ARM_LAYERS:
        for tile in TILES:
            extra = [a for p in params for a in ("--param", p)]
            proc = subprocess.run([*QEMU[base], str(profiler), "conv", *layer, "--method", "unrolled",
                                   "--param", f"gemm_tile={tile}", *extra, "--repeats", "1", "--warmup", "0"],
                                  capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, proc.stderr
            line = json.loads(proc.stdout)
            assert line["error"] is None, (base, tile, params, line)
            assert line["max_abs_diff"] <= 1e-4 * line["max_abs_ref"], (base, tile, params, line)


@pytest.mark.parametrize("base", list(QEMU))
def test_winograd_on_the_default_tile_is_right_on_arm(base):
    """Winograd's GEMM runs the ISA's default tile (on aarch64 the packed-A one: V packed per row
    block): every Winograd tile, whole and split channel blocks (a tail of 6, and blocks of 17 with the
    hand-scheduled loop's one-k tail)."""
    need(QEMU[base][0], BUILTIN[base].compiler)
    profiler, _ = build_profiler(BUILTIN[base])
    for tile in layertune.methods.methods()["winograd"].param("winograd_tile").choices:
        for depth in ([], ["--param", "nonseparable_channel_depth=17"]):
            proc = subprocess.run([*QEMU[base], str(profiler), "conv", "--input", "2x9x11x40", "--filters", "37",
                                   "--kernel", "3x3", "--method", "winograd", "--param", f"winograd_tile={tile}",
                                   *depth, "--repeats", "1", "--warmup", "0"],
                                  capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, proc.stderr
            line = json.loads(proc.stdout)
            assert line["error"] is None, (base, tile, depth, line)
            assert line["max_abs_diff"] <= 1e-4 * line["max_abs_ref"], (base, tile, depth, line)


@pytest.mark.parametrize("base", list(QEMU))
def test_fused_epilogues_are_right_on_arm(base):
    """The fused tails (graph/fusion.py) in the cross-built kernels: swish and hard-swish (the
    NEON reciprocal estimate and its Newton steps; a division on pi0) and a residual add, on every
    method's regular and depthwise path, against the reference kernel with the same epilogue."""
    need(QEMU[base][0], BUILTIN[base].compiler)
    profiler, _ = build_profiler(BUILTIN[base])
    layers = [(["--input", "2x7x9x13", "--filters", "19", "--kernel", "3x3"], ["simple", "unrolled", "winograd"]),
              (["--input", "1x6x5x40", "--filters", "37", "--kernel", "1x1"], ["simple", "unrolled"]),
              (["--input", "1x9x7x21", "--filters", "21", "--groups", "21", "--kernel", "3x3"], ["simple", "winograd"])]
    for layer, methods in layers:
        for method in methods:
            for epilogue in ("add:relu,swish", "hard_swish"):
                proc = subprocess.run([*QEMU[base], str(profiler), "conv", *layer, "--method", method, "--epilogue",
                                       epilogue, "--repeats", "1", "--warmup", "0"],
                                      capture_output=True, text=True, timeout=120)
                assert proc.returncode == 0, proc.stderr
                line = json.loads(proc.stdout)
                assert line["error"] is None, (base, method, epilogue, line)
                assert line["max_abs_diff"] <= 1e-4 * line["max_abs_ref"], (base, method, epilogue, line)


@pytest.mark.parametrize("base", list(QEMU))
def test_fused_groups_are_right_on_arm(base, tmp_path):
    """The ops that compute several nodes (graph/fusion.py) in the cross-built profiler, against the
    engine's reference path, which runs the nodes apart: an inverted-residual strip group (strips
    of 1 and 3 rows, stride 1 with a residual and stride 2, on 1 and 3 threads: chunks whose
    windows overlap; and one whose first convolution is a 3x3 stride-2 stem), squeeze-excite groups (batch 2 with channels off the NEON width, and
    enough pixels for several chunks, on 2 and 3 threads) and a project convolution that takes the
    gate as its input scale (simple and unrolled rescaling their packed weights)."""
    from test_fusion import inverted_residual, squeeze_excite

    from layertune.graph.fusion import fuse
    from layertune.graph.plan import plan_bytes

    need(QEMU[base][0], BUILTIN[base].compiler)
    profiler, _ = build_profiler(BUILTIN[base])
    for shape, stride, residual in [((1, 13, 11, 8), 1, True), ((2, 12, 9, 6), 2, False)]:
        g, _ = inverted_residual(shape, stride=stride, pads=(1, 1, 1, 1) if stride == 1 else (0, 1, 0, 1),
                                 residual=residual)
        for rows, threads in [(1, "1"), (3, "3")]:
            f = fuse(g, strip_rows=rows, strip_min_bytes=0)
            assert f.nodes[0].attrs["strip_rows"] == rows
            plan = tmp_path / f"strips_{stride}_{rows}.ltplan"
            plan.write_bytes(plan_bytes(f))
            line = checked_run(base, profiler, plan, threads, "1e-5", (stride, rows))
            assert line["max_abs_diff"] <= 1e-5 * line["max_abs_ref"], (base, stride, rows, line)
    # a dense 3x3 stride-2 first convolution (MobileNetV2's stem), its strips' padding at the edges
    g, _ = inverted_residual((2, 23, 21, 3), expand_c=20, stem=(3, 2, (0, 1, 0, 1)))
    f = fuse(g, strip_rows=2, strip_min_bytes=0)
    assert f.nodes[0].attrs["strip_rows"] == 2
    plan = tmp_path / "strips_stem.ltplan"
    plan.write_bytes(plan_bytes(f))
    line = checked_run(base, profiler, plan, "3", "1e-5", "stem")
    assert line["max_abs_diff"] <= 1e-5 * line["max_abs_ref"], (base, "stem", line)
    for shape, threads in [((2, 9, 7, 37), "2"), ((1, 40, 41, 20), "3")]:
        g, _ = squeeze_excite(shape, reduce_act="relu")
        f = fuse(g, ("squeeze_excite",))
        assert f.nodes[0].attrs["se_nodes"] == 6
        plan = tmp_path / f"se_{shape[3]}.ltplan"
        plan.write_bytes(plan_bytes(f))
        line = checked_run(base, profiler, plan, threads, "1e-5", shape)
        assert line["max_abs_diff"] <= 1e-5 * line["max_abs_ref"], (base, shape, line)
    for method, threads in [("unrolled", "1"), ("simple", "3")]:  # the gate folded into the project's weights
        g, _ = squeeze_excite((1, 40, 41, 20), after_k=1, after_c=20, residual=True)
        f = fuse(g, ("add", "input_scale", "squeeze_excite"))
        project = next(n for n in f.nodes if n.name == "after")
        assert len(project.inputs) == 5 and f.nodes[0].attrs["se_nodes"] == 5
        project.attrs["kernel.method"] = method
        plan = tmp_path / f"input_scale_{method}.ltplan"
        plan.write_bytes(plan_bytes(f))
        line = checked_run(base, profiler, plan, threads, "1e-5", method)
        assert line["max_abs_diff"] <= 1e-5 * line["max_abs_ref"], (base, method, line)


def test_the_hand_scheduled_loops_are_generated_from_their_script():
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_gemm_asm.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def report():
    need("llvm-mca-14", *(BUILTIN[t].compiler for t in ("pi3_64", "pi3", "pi0")))
    rows = {}
    for name in ("pi3_64", "pi3", "pi0"):
        rows[name] = arm_codegen.analyse(arm_codegen.TARGETS[name], tuple(arm_codegen.TILE_CODES))
    return rows


def test_the_default_tile_is_the_reports_pick_and_does_not_spill(report):
    defaults = arm_codegen.default_tiles()
    for name in ("pi3_64", "pi3", "pi0"):
        assert defaults[name] == arm_codegen.best_tile(report[name]), name
        (row,) = [r for r in report[name] if r.tile == defaults[name]]
        assert row.spills == 0, row
        rows_, vectors = divmod(row.tile % arm_codegen.PACKED_A, 10)
        assert row.fma > 0 and row.fma % (rows_ * vectors) == 0, row  # a whole number of k steps
        if name != "pi0":  # pi0: no model, the static mix only
            assert 0 < row.percent_of_peak <= 100, row
    # the target: the default tile at >= 85% of the modelled FMA peak (a model, so a fixed
    # figure for a given compiler: cortex-a53 for pi3_64, cortex-a72 for armv7)
    for name in ("pi3_64", "pi3"):
        (row,) = [r for r in report[name] if r.tile == defaults[name]]
        assert row.percent_of_peak >= 85, row


def test_the_report_covers_every_hot_loop_and_says_what_limits_it(report):
    wanted = {"depthwise 3x3 s1", "depthwise 3x3 s2", "winograd input F2", "winograd input F4",
              "winograd output F2", "winograd output F4", "im2col"}
    for name, rows in report.items():
        assert wanted <= {r.loop for r in rows}, name
        assert {r.tile for r in rows if r.tile} == set(arm_codegen.TILE_CODES)
        for r in rows:
            assert r.limit
            if name == "pi0":  # no LLVM model for ARMv6: the static mix alone
                assert r.cycles_per_iteration is None and r.limit.startswith("static mix")
            else:
                assert r.cycles_per_iteration > 0
        # the loops that compute: multiply-accumulates (depthwise) or other FP arithmetic (transforms)
        by_loop = {r.loop: r for r in rows}
        assert by_loop["depthwise 3x3 s1"].fma > 0
        assert by_loop["winograd input F2"].fp_other + by_loop["winograd input F2"].fma > 0
    # the int8 kernels' loops: the GEMM's NEON tile (a whole number of 8-k steps: rows x 4 quarter
    # vectors x 8 widening MACs), the dot-product tile on aarch64, the portable tile on pi0, and the
    # depthwise loop; on a Cortex-A53 the depthwise loop was at 2.7% of its modelled MAC peak
    # before it had a NEON form (36 of its 42 registers' worth of weights spilled)
    int8_rows = {"pi3_64": 4, "pi3": 2}
    for name, rows in report.items():
        by_loop = {r.loop: r for r in rows}
        wanted = {"int8 depthwise 3x3"} | ({"int8 gemm portable"} if name == "pi0" else {"int8 gemm neon"})
        assert wanted <= set(by_loop), name
        if name in int8_rows:
            neon = by_loop["int8 gemm neon"]
            assert neon.fma > 0 and neon.fma % (int8_rows[name] * 4 * 8) == 0 and neon.spills == 0, neon
        assert by_loop["int8 depthwise 3x3"].fma > 0, name
    assert {r.loop for r in report["pi3_64"]} >= {"int8 gemm dot"}
    assert {r.model for r in report["pi3_64"] if r.loop == "int8 gemm dot"} == {"cortex-a55 model"}
    assert next(r for r in report["pi3_64"] if r.loop == "int8 depthwise 3x3").percent_of_peak >= 10
    # NEON on armv7: the GEMM's FMAs are vector FMAs on q registers, not scalar VFP
    text = "\n".join(i.text for i in _default_gemm_loop("pi3"))
    assert re.search(r"v(fma|mla)\.f32\s+q", text), text


def _default_gemm_loop(name: str):
    import tempfile
    target = arm_codegen.TARGETS[name]
    tile = arm_codegen.default_tiles()[name]
    with tempfile.TemporaryDirectory() as tmp:
        commands = arm_codegen.compile_commands(target, Path(tmp) / "build")
        src = (ROOT / "csrc/kernels/gemm/gemm.cc").resolve()
        funcs = arm_codegen.functions(arm_codegen.assembly(commands[str(src)], src, Path(tmp) / "gemm.s"))
    (body,) = [b for n, b in funcs.items() if arm_codegen.tile_function(tile) in n]
    return arm_codegen.pick_loop(body, "most_fma")


# Each ARM target's int8 GEMM tiles (qgemm_tiles.h), as the profiler's `info` names them: the one a CPU
# gets (qemu's default aarch64 CPU has the dot product, a Cortex-A53 has not; armv6 has no NEON) and
# the portable code forced by LAYERTUNE_INT8_ISA.
INT8_TILES = {"pi3_64": [([], {}, "neon_dot"), (["-cpu", "cortex-a53"], {}, "neon"),
                         ([], {"LAYERTUNE_INT8_ISA": "portable"}, "portable")],
              "pi3": [([], {}, "neon"), ([], {"LAYERTUNE_INT8_ISA": "portable"}, "portable")],
              "pi0": [([], {}, "portable")]}


@pytest.mark.parametrize("base", list(QEMU))
def test_int8_kernels_are_bit_exact_on_arm(base, tmp_path):
    """The int8 kernels in the cross-built profilers, on every GEMM tile the target has (NEON's
    widening multiply-accumulate, aarch64's dot product, the portable code; VNNI is x86 only): a
    1x1 layer read in place, im2col layers (padded 3x3, strided 5x5), depthwise 3x3 and 5x5 with
    borders and strides, at 1 and 2 threads, in both requantization arithmetics (TFLite's fixed
    point, XNNPACK's fp32: its rounding must survive pi3's -funsafe-math-optimizations) — each plan
    against the profiler's own int8 reference kernel, exactly (tolerance 0), and on one input against
    the x86 engine (a fault both ARM kernels shared, such as a narrowing store that wrapped instead
    of saturating, shows only there)."""
    from test_int8 import DEPTHWISE, REGULAR, _layer, conv_graph  # the x86 tests' layer grid

    from layertune.graph.plan import plan_bytes

    need(QEMU[base][0], BUILTIN[base].compiler)
    profiler, _ = build_profiler(BUILTIN[base])
    # in place and packed rows; k (padded to 4) 16, 28, 48, 152, 20: every tail of NEON's 8 and sdot's 16 k steps
    cases = [(REGULAR[i], False) for i in (0, 1, 2, 4, 7)] + [(c, True) for c in DEPTHWISE[:4]]
    assert {-(-c[1] ** 2 * c[0][3] // 4) * 4 % 16 for c, dw in cases if not dw} == {0, 4, 8, 12}
    assert any(c[1] == 1 and c[0][3] % 4 == 0 for c, dw in cases if not dw)  # the in-place 1x1 path is among them
    for cpu, env, isa in INT8_TILES[base]:
        qemu, env = [QEMU[base][0], *cpu] if cpu else QEMU[base], {**os.environ, **env}
        info = subprocess.run([*qemu, str(profiler), "info"], env=env, capture_output=True, text=True, timeout=60)
        assert json.loads(info.stdout)["int8_isa"] == isa, (base, cpu, env.get("LAYERTUNE_INT8_ISA"), info.stdout)
        # the x86-only amx_bf16 methods are what an ARM device lacks, which the tuner then leaves out
        assert set(json.loads(info.stdout)["unavailable_methods"]) == {"amx_bf16x3", "amx_bf16x6"}, info.stdout
        for i, (case, depthwise) in enumerate(cases):
            w, bias, kw, q_x = _layer(case, depthwise)
            for requantization, threads in [(r, t) for r in ("tflite", "xnnpack") for t in ("1", "2")]:
                plan = tmp_path / f"int8_{i}_{requantization}.ltplan"
                graph = conv_graph(q_x.shape, w, bias, requantization=requantization, **kw)  # (its scales drawn now)
                plan.write_bytes(plan_bytes(graph))
                line = checked_run(base, profiler, plan, threads, "0", (isa, case, requantization), qemu, env)
                assert line["max_abs_diff"] == 0, (base, isa, case, requantization, line)
                if threads == "1":
                    x = np.random.default_rng(i).uniform(-8, 8, q_x.shape).astype(np.float32)  # past int8's range
                    x.tofile(tmp_path / "x.f32")
                    proc = subprocess.run([*qemu, str(profiler), "infer", "--plan", str(plan), "--count", "1",
                                           "--inputs", str(tmp_path / "x.f32"), "--outputs", str(tmp_path / "y.f32"),
                                           "--warmup", "0"], env=env, capture_output=True, text=True, timeout=120)
                    assert proc.returncode == 0, (base, isa, case, proc.stderr)
                    on_arm = np.fromfile(tmp_path / "y.f32", np.float32)
                    np.testing.assert_array_equal(on_arm, layertune.Model(graph).run(x).ravel(), f"{base} {isa} {case} {requantization}")


@pytest.fixture(scope="module")
def residual_int8_cnn():
    """A quantized CNN with the int8 ops of a classification net: convolutions (3x3 stride 2, 1x1),
    depthwise, a residual ADD, a bilinear upsampling (RESIZE_BILINEAR: its float32 coordinates under
    pi3's -funsafe-math-optimizations), MEAN and FULLY_CONNECTED; its flatbuffer and inputs."""
    from conftest import require
    from test_int8 import _quantized

    tf = require("tensorflow")
    tf.keras.utils.set_random_seed(5)
    inp = tf.keras.Input((12, 12, 3), batch_size=1)
    x = tf.keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(inp)
    y = tf.keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6")(x)
    y = tf.keras.layers.Conv2D(16, 1)(y)
    x = tf.keras.layers.Add()([x, y])
    x = tf.keras.layers.UpSampling2D(interpolation="bilinear")(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    out = tf.keras.layers.Dense(10)(x)
    return _quantized(tf.keras.Model(inp, out), np.random.default_rng(5))


@pytest.fixture(scope="module")
def mobilenet_v2_int8():
    """MobileNetV2 at 96x96 (random weights, calibrated batch norm), fully quantized by the converter."""
    from conftest import require
    from model_zoo import calibrated_application
    from tflite_helpers import convert_keras

    tf = require("tensorflow")
    calib = np.random.default_rng(3).uniform(-1, 1, (8, 1, 96, 96, 3)).astype(np.float32)
    return convert_keras(calibrated_application("MobileNetV2", 96), optimizations=[tf.lite.Optimize.DEFAULT],
                         representative_dataset=lambda: ([c] for c in calib),
                         target_spec=tf.lite.TargetSpec(supported_ops=[tf.lite.OpsSet.TFLITE_BUILTINS_INT8]),
                         inference_input_type=tf.int8, inference_output_type=tf.int8)


@pytest.mark.parametrize("base", list(QEMU))
@pytest.mark.parametrize("model", ["residual_cnn", "MobileNetV2"])
def test_whole_int8_models_are_exact_on_arm(base, model, tmp_path, request):
    """A whole int8 model in the cross-built profiler under qemu (`infer` at 2 threads: the small
    residual CNN on 8 samples, MobileNetV2 at 96x96 on 2), in both arithmetics: every output
    equals the x86 engine's bit for bit (integer arithmetic, and float32 steps in the same order;
    MobileNetV2's float SOFTMAX too), and in XNNPACK's arithmetic LiteRT's as well."""
    from layertune.graph.tflite_import import import_tflite_bytes
    from tflite_helpers import litert_run

    need(QEMU[base][0], BUILTIN[base].compiler)
    profiler, _ = build_profiler(BUILTIN[base])
    if model == "residual_cnn":
        fb, _ = request.getfixturevalue("residual_int8_cnn")
        xs = np.random.default_rng(1).uniform(-2, 2, (8, 1, 12, 12, 3)).astype(np.float32)
    else:
        fb = request.getfixturevalue("mobilenet_v2_int8")
        xs = np.random.default_rng(1).uniform(-1, 1, (2, 1, 96, 96, 3)).astype(np.float32)
    for requantization in ("tflite", "xnnpack"):
        net = layertune.Model(import_tflite_bytes(fb, model, requantization=requantization))
        assert {"ADD", "MEAN", "DEPTHWISE_CONV_2D"} <= {n.op for n in net.graph.nodes}
        int8_ops = {n.op for n in net.graph.nodes if net.graph.tensors[n.outputs[0]].dtype == "int8"}
        assert model != "residual_cnn" or "RESIZE_BILINEAR" in int8_ops, int8_ops
        q = net.graph.tensors[net.graph.inputs[0]].quantization
        xq = np.clip(np.round(xs / q.scale + q.zero_point), -128, 127)
        real = ((xq - q.zero_point) * q.scale).astype(np.float32)  # on the input's grid: the same integers everywhere
        net.save(tmp_path / f"{requantization}.ltplan")
        (tmp_path / "in.f32").write_bytes(real.tobytes())
        proc = subprocess.run([*QEMU[base], str(profiler), "infer", "--plan", str(tmp_path / f"{requantization}.ltplan"),
                               "--count", str(len(xs)), "--inputs", str(tmp_path / "in.f32"), "--outputs", str(tmp_path / "out.f32"),
                               "--threads", "2", "--warmup", "0"], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (base, proc.stderr)
        on_arm = np.fromfile(tmp_path / "out.f32", np.float32).reshape(len(xs), -1)
        on_x86 = np.stack([net.run(r).ravel() for r in real])
        np.testing.assert_array_equal(on_arm, on_x86, f"{base}, {requantization}")
        if model == "residual_cnn":  # fused as layertune.load fuses it: the 1x1 layer adds the residual
            from layertune.graph.fusion import fuse
            fused = layertune.Model(fuse(net.graph))
            assert any(n.attrs.get("epilogue") == "add:none" for n in fused.graph.nodes)
            fused.save(tmp_path / "fused.ltplan")
            proc = subprocess.run([*QEMU[base], str(profiler), "infer", "--plan", str(tmp_path / "fused.ltplan"),
                                   "--count", str(len(xs)), "--inputs", str(tmp_path / "in.f32"), "--outputs",
                                   str(tmp_path / "fused.f32"), "--threads", "2", "--warmup", "0"],
                                  capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, (base, proc.stderr)
            np.testing.assert_array_equal(np.fromfile(tmp_path / "fused.f32", np.float32).reshape(len(xs), -1), on_x86,
                                          f"{base}, {requantization}, fused")
        if requantization == "xnnpack":
            oq = net.graph.tensors[net.graph.outputs[0]].quantization
            litert = np.stack([litert_run(fb, [x.astype(np.int8)])[0].ravel() for x in xq])
            np.testing.assert_array_equal(np.round(on_arm / oq.scale + oq.zero_point), litert, base)
