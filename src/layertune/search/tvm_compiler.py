"""The TVMCompiler block: a TFLite or ONNX model through TVM 0.27's Relax frontends to a compiled library,
optionally tuned by meta_schedule with a trial budget (the fused TIR functions get the best
schedules found; functions not tuned keep TVM's default schedules).

Tuning runs in a process of its own (`python -m layertune.search.tvm_compiler SRC OUT PARAMS`):
TVM registers its tensor intrinsics through TVMScript, whose parser calls inspect.stack(), and in
a process that has loaded TensorFlow (a Keras model, a TFLite conversion) that import took 131 s
instead of 18 s here.

Why not `relax.get_pipeline("static_shape_tuning")`: it gives every task the whole budget in
turn, so a small budget is spent on the first tasks (often the cheap matmul and mean) and the
convolutions get nothing; and its builder imports `tvm.s_tir.tensor_intrin` in every freshly
started build worker, about 18 s per batch on this machine. Here the budget is split evenly
over the tasks and the build function skips that import (the schedules are applied in this
process, where the intrinsics are registered, so the built module no longer needs them)."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from layertune.search.block import OPTIMIZER_PARAMS, Data, Optimizer, Param
from layertune.tuner.targets import Target

log = logging.getLogger(__name__)


def build_without_intrinsic_registry(mod: Any, target: Any, _params: Any) -> Any:
    """meta_schedule's default build, minus the tensor-intrinsic import (see the module doc).
    Module-level so that meta_schedule's build workers can unpickle it."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    return tvm_build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)


def with_core_count(target: dict[str, Any]) -> dict[str, Any]:
    """meta_schedule's CPU rules need `num-cores`; default it to this machine's CPU count."""
    if target.get("kind") == "llvm" and "num-cores" not in target:
        return {**target, "num-cores": os.cpu_count() or 1}
    return target


def check_runs_here(target: Any) -> None:
    """meta_schedule measures every candidate on this machine (its local runner), so a cross target
    cannot be tuned here: say so, rather than record nothing but failed runs."""
    from tvm.target import codegen

    if target.kind.name != "llvm":
        raise ValueError(f"TVMCompiler: tuning needs an llvm (CPU) target, got '{target.kind.name}'")
    arch, here = str(target.attrs.get("mtriple", "")).split("-")[0], codegen.llvm_get_system_triple().split("-")[0]
    if arch and arch != here:
        raise ValueError(f"TVMCompiler: tuning measures candidates on this {here} machine; the target is {arch} "
                         "(compile for it with tuning_trials 0)")


def tune_and_compile(mod: Any, target: Any, trials: int, work_dir: Path, seed: int = 0, opt_level: int = 3) -> Any:
    """Tunes `mod` (a Relax IRModule from a frontend) for `target` with at most `trials`
    measured candidates in total, records in `work_dir` (a JSON database), and returns the
    compiled executable."""
    import tvm
    from tvm import relax
    from tvm.relax import transform
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.relax_integration import extract_tasks, extracted_tasks_to_tune_contexts

    if trials < 1:
        raise ValueError(f"tuning_trials: must be positive, got {trials}")
    check_runs_here(target)
    work_dir.mkdir(parents=True, exist_ok=True)
    with target, tvm.transform.PassContext(opt_level=opt_level):
        # The same preparation as TVM's static_shape_tuning pipeline, so database keys match.
        mod = tvm.transform.Sequential([transform.DecomposeOpsForInference(), transform.CanonicalizeBindings(),
                                        relax.pipeline.zero_pipeline()])(mod)
    tasks = extract_tasks(mod, target)
    if not tasks:
        raise ValueError("TVMCompiler: the model has no functions to tune")
    per_task = max(1, math.ceil(trials / len(tasks)))
    log.info("meta_schedule: %d tasks, %d trials (%d per task)", len(tasks), trials, per_task)
    # meta_schedule's default population (512 sampled schedules a task) is sized for thousands of
    # trials; a budget of a few trials a task gets a smaller one (the genetic search is unchanged).
    strategy = ms.search_strategy.EvolutionarySearch(population_size=min(512, max(64, 16 * per_task)))
    contexts, weights = extracted_tasks_to_tune_contexts(tasks, work_dir=str(work_dir), strategy=strategy, seed=seed)
    ms.tune.tune_tasks(tasks=contexts, task_weights=weights, work_dir=str(work_dir),
                       max_trials_global=trials, max_trials_per_task=per_task,
                       num_trials_per_iter=min(64, per_task),
                       builder=ms.builder.LocalBuilder(f_build=build_without_intrinsic_registry),
                       database=ms.database.JSONDatabase(work_dir=str(work_dir)))
    with target, tvm.transform.PassContext(opt_level=opt_level):
        mod = transform.MetaScheduleApplyDatabase(str(work_dir))(mod)
        return tvm.compile(mod, target=target)


_LIST_ATTRS = ("mattr", "libs", "keys")


def target_dict(text: str) -> dict[str, Any]:
    """A target as Kenning (and TVM before 0.27) writes it, "llvm -mcpu=core-avx2 -mattr=+avx2,+fma",
    as the dict TVM 0.27 takes: {"kind": "llvm", "mcpu": "core-avx2", "mattr": ["+avx2", "+fma"]}."""
    kind, *options = text.split()
    out: dict[str, Any] = {"kind": kind}
    for option in options:
        if not option.startswith("-") or option == "-":
            raise ValueError(f"TVMCompiler: target '{text}': expected -key=value options, got '{option}'")
        key, eq, value = option.lstrip("-").partition("=")
        out[key] = (value.split(",") if key in _LIST_ATTRS else value) if eq else True
    return out


def tvm_target(params: dict[str, Any]) -> Any:
    """The block's `target` (with `target_attrs` appended, and `target_host`) as a tvm Target:
    "llvm" alone means this CPU (LLVM's -mcpu detection); a tuned llvm target gets this machine's
    core count unless it names one."""
    import tvm
    from tvm.target import codegen

    target = params.get("target", "llvm")
    if isinstance(target, str):
        target = target_dict(f"{target} {params.get('target_attrs') or ''}".strip())
    if target == {"kind": "llvm"}:
        target = {"kind": "llvm", "mcpu": codegen.llvm_get_system_cpu()}
    if params.get("tuning_trials"):
        target = with_core_count(target)
    host = params.get("target_host")
    if host:
        return tvm.target.Target(target, host=tvm.target.Target(target_dict(host) if isinstance(host, str) else host))
    return tvm.target.Target(target)


def for_device(params: dict[str, Any], device: Target) -> dict[str, Any]:
    """The block's parameters for a trial measured on a device of `device`: a plain "llvm"
    (this CPU) becomes the target's LLVM triple and CPU, and the library is linked with the
    target's cross compiler (`cross_compiler`). An explicit target is the user's and kept."""
    if device.is_host or device.llvm_target is None:
        return params
    target = params.get("target", "llvm")
    return {**params, "target": device.llvm_target if target == "llvm" else target, "cross_compiler": device.compiler}


def compile_model(params: dict[str, Any], src: Path, out: Path) -> Path:
    """The TVMCompiler block: `params` as in the config (target, opt_level, conv2d_data_layout,
    tuning_trials, tuning_seed; `cross_compiler` from for_device); writes the library to `out`,
    tuning records beside it."""
    import tvm
    from tvm import relax

    if src.suffix == ".onnx":
        import onnx
        from tvm.relax.frontend.onnx import from_onnx

        mod = from_onnx(onnx.load(str(src)), keep_params_in_input=False)
    else:
        import tflite
        from tvm.relax.frontend.tflite import from_tflite

        mod = from_tflite(tflite.Model.GetRootAsModel(src.read_bytes(), 0))
    layout = params.get("conv2d_data_layout", "NHWC")
    if layout != ("NCHW" if src.suffix == ".onnx" else "NHWC"):  # ONNX models come NCHW, TFLite ones NHWC
        mod = relax.transform.ConvertLayout({"relax.nn.conv2d": [layout, "OIHW" if layout == "NCHW" else "HWIO"]})(mod)
    target, opt_level, trials = tvm_target(params), int(params.get("opt_level", 3)), int(params.get("tuning_trials") or 0)
    if trials:
        executable = tune_and_compile(mod, target, trials, out.parent / "meta_schedule",
                                      seed=int(params.get("tuning_seed", 0)), opt_level=opt_level)
    else:
        with tvm.transform.PassContext(opt_level=opt_level):
            executable = tvm.compile(mod, target=target)
    if params.get("cross_compiler"):
        from tvm.support import cc

        executable.export_library(str(out), fcompile=cc.cross_compiler(params["cross_compiler"]))
    else:
        executable.export_library(str(out))
    return out


class TVMCompiler(Optimizer):
    """TFLite / ONNX -> a TVM 0.27 Relax library, optionally tuned by meta_schedule (`tuning_trials`)."""
    params_spec = {**OPTIMIZER_PARAMS, "target": Param((str, dict), "llvm"), "target_attrs": Param(str, ""),
                   "target_host": Param((str, dict)), "model_framework": Param(str, "any", ("any", "tflite", "onnx")),
                   "opt_level": Param(int, 3, (0, 1, 2, 3, 4)), "conv2d_data_layout": Param(str, "NHWC", ("NHWC", "NCHW")),
                   "use_tvm_vm": Param(bool, True), "tuning_trials": Param(int, 0, minimum=0),
                   "tuning_seed": Param(int, 0, minimum=0)}
    inputs, output = ("tflite", "onnx"), "tvm"
    kenning_paths = ("kenning.optimizers.tvm.TVMCompiler", "kenning.compilers.tvm.TVMCompiler")

    def unavailable(self) -> str | None:
        if not self.params["use_tvm_vm"]:
            return "TVMCompiler: use_tvm_vm false (TVM's graph executor) does not exist in TVM 0.27; Relax builds VM executables"
        if self.params.get("tuning_trials") and not self.placement.target.is_host:
            return (f"TVMCompiler: tuning_trials on the {self.placement.target.name} target would time the candidates "
                    "on this machine (meta_schedule's RPC runner to a device is not supported): use tuning_trials 0")
        return super().unavailable()

    def compile(self, src: Path, data: Data | None, out_dir: Path) -> Path:
        """compile_model, in a process of its own when it tunes (see the module doc). The child
        is in the caller's session, so a trial's timeout ends it too. A compiled_model_path ending
        in .tar gets TVM's .tar export (objects the runtime links on load), as Kenning writes."""
        framework = "onnx" if src.suffix == ".onnx" else "tflite"
        if self.params["model_framework"] not in ("any", framework):
            raise ValueError(f"TVMCompiler: model_framework is {self.params['model_framework']}, the model is {framework}")
        tar = str(self.params.get("compiled_model_path") or "").endswith(".tar")
        out = out_dir / ("model.tar" if tar else "model.so")
        if not self.params.get("tuning_trials"):
            return compile_model(for_device(self.params, self.placement.target), src, out)
        check_runs_here(tvm_target(self.params))  # a clear error now rather than from the child
        proc = subprocess.run([sys.executable, "-m", __name__, str(src), str(out), json.dumps(self.params)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0 or not out.exists():
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            raise RuntimeError(f"TVMCompiler: tuning failed: {lines[-1] if lines else f'exit code {proc.returncode}'}")
        return out


def main(argv: list[str]) -> int:
    compile_model(json.loads(argv[2]), Path(argv[0]), Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
