"""Measuring shared by the benchmarks: interleaved rounds, time-based warm-up, LiteRT timing.

Two systems are compared in one process, alternating round by round, so that drift on a
shared machine hits both alike. Before each measurement the other system's thread pool gets
an idle pause (thread pools spin after a run and would steal the second core), then at least
WARMUP_SECONDS of untimed runs (an idle virtual CPU needs a few ms to run at full speed again).
"""

from __future__ import annotations

import importlib.util
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from layertune.runners.litert_timer import timed_run

WARMUP_SECONDS = 0.02
IDLE_PAUSE_SECONDS = 0.01

# timer(warmup, repeats) -> seconds per timed run
Timer = Callable[[int, int], list]


@dataclass
class Measurement:
    label: str
    timer: Timer
    times: list[float] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def warmed(timer: Timer, warmup: int, repeats: int) -> list[float]:
    """timer(warmup, repeats) with at least WARMUP_SECONDS of warm-up runs."""
    single = timer(0, 1)[0]
    return timer(max(warmup, int(WARMUP_SECONDS / max(single, 1e-6))), repeats)


def measure_interleaved(items: list[Measurement], rounds: int, warmup: int, repeats: int) -> None:
    """Every item once per round, `rounds` times; times accumulate in item.times."""
    for _ in range(rounds):
        for item in items:
            time.sleep(IDLE_PAUSE_SECONDS)
            item.times += warmed(item.timer, warmup, repeats)


def litert_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("tensorflow", "ai_edge_litert"))


def litert_interpreter(flatbuffer: bytes, threads: int):
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_content=flatbuffer, num_threads=threads)
    interpreter.allocate_tensors()
    return interpreter


def litert_timer(interpreter, inputs: list[np.ndarray], copies: bool = True) -> Timer:
    """Times LiteRT on `inputs`. With `copies` a timed run is runners/litert_timer.py's `timed_run`
    (inputs set, invoke, outputs read: the work layertune's Engine.time does, which copies them in
    and out), so that whole-model ratios compare the same work; without (kernel benchmarks, whose
    layertune side times the kernel alone), invoke alone."""
    fed = [(detail["index"], x) for detail, x in zip(interpreter.get_input_details(), inputs)]
    outputs = [detail["index"] for detail in interpreter.get_output_details()]
    timed_run(interpreter, fed, outputs)  # the inputs are set for invoke alone too
    run = (lambda: timed_run(interpreter, fed, outputs)) if copies else interpreter.invoke

    def timer(warmup: int, repeats: int) -> list[float]:
        for _ in range(warmup):
            run()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        return times
    return timer
