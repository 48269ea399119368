"""TVMCompiler's optional meta_schedule tuning: tune a Relax module's fused TIR functions with a
trial budget, then compile with the best schedules found (functions not tuned fall back to
TVM's default schedules).

Why not `relax.get_pipeline("static_shape_tuning")`: it gives every task the whole budget in
turn, so a small budget is spent on the first tasks (often the cheap matmul and mean) and the
convolutions get nothing; and its builder imports `tvm.s_tir.tensor_intrin` in every freshly
started build worker, about 18 s per batch on this machine. Here the budget is split evenly
over the tasks and the build function skips that import (the schedules are applied in this
process, where the intrinsics are registered, so the built module no longer needs them)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def build_without_intrinsic_registry(mod: Any, target: Any, _params: Any) -> Any:
    """meta_schedule's default build, minus the tensor-intrinsic import (see the module doc).
    Module-level so that meta_schedule's build workers can unpickle it."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    return tvm_build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)


def with_core_count(target: dict[str, Any]) -> dict[str, Any]:
    """meta_schedule's CPU rules need `num-cores`; default it to this machine's CPU count."""
    import os

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
