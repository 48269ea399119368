"""The results store: append-only JSON lines, one record per (layer, variant) measurement or
failure, keyed by (layer signature, variant, target, profiler build, measurement settings). Records are written as
they arrive and flushed, so an interrupted run loses nothing; re-running reads them back and
measures only what is missing. A user-level cache file lets later runs (and other models with
the same layer shapes) reuse measurements."""

from __future__ import annotations

import fcntl
import json
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from layertune.tuner.protocol import RatioCI, ratio_ci


Key = tuple[str, str, str, str, str]  # (layer, variant, target, build, settings)


@dataclass
class Record:
    layer: str  # layer signature
    variant: str  # variant key
    target: str
    build: str  # profiler build hash
    params: dict[str, Any] = field(default_factory=dict)  # {"method": ..., params...}
    median_ms: float | None = None  # the median of the round times
    min_ms: float | None = None
    mean_ms: float | None = None
    std_ms: float | None = None
    repeats: int = 0
    max_abs_diff: float | None = None
    max_abs_ref: float | None = None
    error: str | None = None  # None, or: build, connect, timeout, crash, wrong-answer, invalid
    message: str = ""
    device: str = ""
    settings: str = ""  # every measurement setting (protocol version, warm-up, rounds, repeats, flush)
    rounds_ms: list[float] | None = None  # the variant's time per interleaved round
    baseline: str = ""  # the variant it was timed with (the layer's default choice)
    baseline_rounds_ms: list[float] | None = None

    @classmethod
    def from_profiler(cls, layer: str, params: dict[str, Any], target: str, build: str, settings: str,
                      line: dict[str, Any], device: str) -> "Record":
        """A record from one JSON line of `layertune-profiler job`."""
        return cls(layer, line["variant"], target, build, params, line.get("median_ms"), line.get("min_ms"),
                   line.get("mean_ms"), line.get("std_ms"), line.get("repeats", 0), line.get("max_abs_diff"),
                   line.get("max_abs_ref"), line.get("error"), line.get("message", ""), device, settings,
                   line.get("rounds_ms"), line.get("baseline", ""), line.get("baseline_rounds_ms"))

    @property
    def key(self) -> Key:
        return self.layer, self.variant, self.target, self.build, self.settings

    @property
    def ok(self) -> bool:
        return self.error is None and self.median_ms is not None

    def ratio_to_baseline(self) -> RatioCI | None:
        """Its time over its baseline's, from the rounds they were timed in together."""
        if not self.ok or not self.rounds_ms or not self.baseline_rounds_ms:
            return None
        return ratio_ci(self.rounds_ms, self.baseline_rounds_ms)


class ResultsStore:
    """Append-only JSON lines in `path`, mirrored to `cache` (if given). Thread-safe."""

    def __init__(self, path: Path, cache: Path | None = None):
        self.path = Path(path)
        self.cache = Path(cache) if cache else None
        self._lock = threading.Lock()
        self._records: dict[Key, Record] = {}
        for source in [p for p in (self.cache, self.path) if p]:
            for record in self._read(source):
                if record.ok or record.key not in self._records:  # a success overrides a failure
                    self._records[record.key] = record

    @staticmethod
    def _read(path: Path) -> Iterable[Record]:
        if not path.exists():
            return []
        out = []
        known = set(Record.__dataclass_fields__)
        with open(path) as f:
            for line in f:
                try:
                    data = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a power loss: that measurement is taken again
                if isinstance(data, dict) and {"layer", "variant", "target", "build"} <= set(data):
                    out.append(Record(**{k: v for k, v in data.items() if k in known}))
        return out

    def get(self, key: Key) -> Record | None:
        with self._lock:
            return self._records.get(key)

    def measured(self, key: Key) -> bool:
        r = self.get(key)
        return r is not None and r.ok

    def add(self, record: Record) -> None:
        line = json.dumps(asdict(record)) + "\n"
        with self._lock:
            if record.ok or record.key not in self._records or not self._records[record.key].ok:
                self._records[record.key] = record
            for path in [p for p in (self.path, self.cache) if p]:
                _append_line(path, line)

    def records(self) -> list[Record]:
        with self._lock:
            return list(self._records.values())


def _append_line(path: Path, line: str) -> None:
    """Appends one whole line, durably, under an exclusive lock (another run may share the
    cache). A line left torn at the end by a killed run is closed first, so that it costs only
    its own measurement, never the next one's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            if f.tell() > 0:
                with open(path, "rb") as r:
                    r.seek(-1, os.SEEK_END)
                    if r.read(1) != b"\n":
                        f.write(b"\n")
            f.write(line.encode())
            f.flush()
            os.fsync(f.fileno())
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
