"""Search strategies with one small interface (as Optuna's ask / tell): ask() proposes a
pipeline (None when there is nothing left to try), tell() reports its metric value, or None for
a failed or skipped trial — failures are recorded, never fatal."""

from __future__ import annotations

import random
from typing import Protocol

from layertune.search.config import SearchConfig
from layertune.search.space import Pipeline, Step, chains, enumerate_space, step_alternatives


class Strategy(Protocol):
    def ask(self) -> Pipeline | None: ...

    def tell(self, pipeline: Pipeline, value: float | None) -> None: ...


class GridSearch:
    """Every pipeline of the space, in order."""

    def __init__(self, space: list[Pipeline]):
        self._pending = list(space)

    def ask(self) -> Pipeline | None:
        return self._pending.pop(0) if self._pending else None

    def tell(self, pipeline: Pipeline, value: float | None) -> None:
        pass


class RandomSearch:
    """n_trials distinct pipelines drawn with a seeded generator (reproducible)."""

    def __init__(self, space: list[Pipeline], n_trials: int, seed: int):
        self._pending = random.Random(seed).sample(space, min(n_trials, len(space)))

    def ask(self) -> Pipeline | None:
        return self._pending.pop(0) if self._pending else None

    def tell(self, pipeline: Pipeline, value: float | None) -> None:
        pass


class TPESearch:
    """Optuna's TPE sampler over the structured space: which optimizer chain, each optimizer's
    parameter setting, which runtime and its setting (conditional, define-by-run)."""

    def __init__(self, cfg: SearchConfig, n_trials: int, seed: int, direction: str):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._study = optuna.create_study(direction=direction, sampler=optuna.samplers.TPESampler(seed=seed))
        self._cfg = cfg
        self._chains = chains(cfg)
        self._opt_alts = [step_alternatives(b, "optimizers" in cfg.optimizable) for b in cfg.optimizers]
        blocks = cfg.runtimes if "runtime" in cfg.optimizable else cfg.runtimes[:1]
        self._runtime_alts: list[Step] = [s for b in blocks for s in step_alternatives(b, "runtime" in cfg.optimizable)]
        self._budget = min(n_trials, len(enumerate_space(cfg)))
        self._asked = 0
        self._seen: dict[Pipeline, float | None] = {}
        self._trials: dict[Pipeline, object] = {}

    def _propose(self):
        trial = self._study.ask()
        chain = self._chains[trial.suggest_categorical("chain", list(range(len(self._chains))))]
        steps = tuple(self._opt_alts[i][trial.suggest_categorical(f"optimizer{i}", list(range(len(self._opt_alts[i]))))]
                      for i in chain)
        runtime = self._runtime_alts[trial.suggest_categorical("runtime", list(range(len(self._runtime_alts))))]
        return trial, Pipeline(steps, runtime)

    def ask(self) -> Pipeline | None:
        if self._asked >= self._budget:
            return None
        for _ in range(200):  # a proposal seen before is answered from memory, not run again
            trial, pipeline = self._propose()
            if pipeline not in self._seen:
                self._asked += 1
                self._trials[pipeline] = trial
                self._seen[pipeline] = None
                return pipeline
            self._finish(trial, self._seen[pipeline])
        return None  # the sampler keeps proposing known pipelines: the space is as good as explored

    def _finish(self, trial, value: float | None) -> None:
        import optuna
        if value is None:
            self._study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            self._study.tell(trial, value)

    def tell(self, pipeline: Pipeline, value: float | None) -> None:
        self._seen[pipeline] = value
        trial = self._trials.pop(pipeline, None)
        if trial is not None:
            self._finish(trial, value)


def make_strategy(cfg: SearchConfig) -> Strategy:
    space = enumerate_space(cfg)
    if cfg.strategy == "grid_search":
        return GridSearch(space)
    if cfg.strategy == "random_search":
        return RandomSearch(space, cfg.n_trials, cfg.seed)
    return TPESearch(cfg, cfg.n_trials, cfg.seed, "minimize" if cfg.policy == "min" else "maximize")
