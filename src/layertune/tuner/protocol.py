"""The statistics of the measurement protocol (the timing itself is the core's
time_interleaved: warm-up, then rounds in which every candidate runs in turn).

Candidates are judged by their ratio to a baseline, never by absolute times: per round the
ratio of the two round times (paired, so the machine's drift cancels), and over the rounds the
median ratio with a distribution-free confidence interval (order statistics of the median, no
normality assumed: timings have long right tails). A candidate is faster only when the whole
interval lies below 1; an interval that holds 1 is a difference within noise, and then the
simpler (baseline / default) choice wins. Rounds are added until every interval is narrower
than a set width or the budget is spent.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

PROTOCOL_VERSION = 2  # part of every cached measurement's key


@dataclass(frozen=True)
class RatioCI:
    """candidate time / baseline time: the median over paired rounds and its interval."""
    ratio: float
    lo: float
    hi: float
    rounds: int

    @property
    def faster(self) -> bool:
        return self.hi < 1.0

    @property
    def slower(self) -> bool:
        return self.lo > 1.0

    @property
    def width(self) -> float:
        return (self.hi - self.lo) / self.ratio if self.ratio > 0 else math.inf

    def to_json(self) -> dict[str, float]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}

    def __str__(self) -> str:
        return f"{self.ratio:.3f}x [{self.lo:.3f}, {self.hi:.3f}]"


def _binom_cdf(k: int, n: int) -> float:
    return sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(median, lo, hi): the order-statistic interval [x_(k), x_(n+1-k)] with the largest k whose
    coverage is at least `confidence` (min and max when there are too few values for it)."""
    x = sorted(values)
    n = len(x)
    if n == 0:
        raise ValueError("no values")
    median = x[n // 2] if n % 2 else 0.5 * (x[n // 2 - 1] + x[n // 2])
    best = 0  # the largest 1-based k whose interval covers the median with `confidence`
    for k in range(1, n // 2 + 1):
        if 1 - 2 * _binom_cdf(k - 1, n) < confidence:
            break
        best = k
    if best == 0:
        return median, x[0], x[-1]
    return median, x[best - 1], x[n - best]


def ratio_ci(candidate: list[float], baseline: list[float], confidence: float = 0.95) -> RatioCI:
    """The candidate's time over the baseline's, from rounds timed together: round i of one with
    round i of the other (a candidate dropped from later rounds is paired on the rounds it ran)."""
    n = min(len(candidate), len(baseline))
    ratios = [c / b for c, b in zip(candidate[:n], baseline[:n]) if b > 0]
    if not ratios:
        raise ValueError("ratio_ci needs rounds timed together")
    median, lo, hi = median_interval(ratios, confidence)
    return RatioCI(median, lo, hi, len(ratios))


@dataclass(frozen=True)
class Settings:
    """How long to measure: rounds come in chunks of `chunk` until each ratio's relative interval
    width is below `ci_width`, or `max_rounds` / `budget_s` is reached."""
    warmup: int = 2
    repeats: int = 3
    chunk: int = 4
    min_rounds: int = 8
    max_rounds: int = 40
    ci_width: float = 0.04
    budget_s: float = 60.0


def _median(values: list[float]) -> float:
    return median_interval(values)[0]


def measure_until_narrow(measure_chunk: Callable[[int, list[str]], dict[str, list[float]]], names: list[str],
                         baseline: str, settings: Settings, keep: tuple[str, ...] = ()) -> dict[str, list[float]]:
    """Calls measure_chunk(rounds, names still raced) -> {name: round times} (all of them timed in
    the same rounds) until every raced candidate's ratio to `baseline` is narrow enough, or the
    rounds or the budget run out. A candidate measured slower than the fastest one beyond noise
    leaves the race (its rounds so far are kept): it can win nothing more, and every round it
    stayed would cost its time. `baseline` and `keep` always stay. Returns every series."""
    series: dict[str, list[float]] = {}
    racing = list(names)
    started = time.monotonic()
    while True:
        for name, times in measure_chunk(settings.chunk, racing).items():
            series.setdefault(name, []).extend(times)
        racing += [n for n in series if n not in racing and n not in names]  # extra series (LiteRT)
        leader = min(racing, key=lambda n: _median(series[n]))
        racing = [n for n in racing if n in (baseline, leader, *keep) or not ratio_ci(series[n], series[leader]).slower]
        rounds = len(series[baseline])
        if rounds >= settings.max_rounds or time.monotonic() - started > settings.budget_s:
            return series
        if rounds >= settings.min_rounds and all(ratio_ci(series[n], series[baseline]).width < settings.ci_width
                                                 for n in racing if n != baseline):
            return series
