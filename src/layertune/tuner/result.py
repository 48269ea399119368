"""What profile_and_optimize returns per model: typed records that the CLI, the report, the
search's LayerTuneCompiler and summary.json (to_json) all read."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class OutputCheck:
    """The optimized plan's output against the reference kernels' on the device."""
    max_abs_diff: float | None = None
    max_abs_ref: float | None = None
    error: str | None = None


@dataclass
class Verification:
    """Whole-model latency of each plan, timed interleaved on one device; `error` when no device
    could verify the model (then the other fields are empty)."""
    device: str = ""
    latency_ms: dict[str, float] = field(default_factory=dict)
    check: OutputCheck = field(default_factory=OutputCheck)
    arena_bytes: int | None = None
    peak_rss_bytes: int | None = None
    error: str | None = None

    @property
    def speedup_over_default(self) -> float | None:
        lat = self.latency_ms
        return lat["default"] / lat["optimized"] if "default" in lat and "optimized" in lat else None


@dataclass
class LayerRow:
    """One convolution: what was measured alone, inside the model, and what was kept."""
    index: int
    name: str
    op: str
    signature: str
    flops: int
    chosen: dict[str, Any] | None  # the fastest variant timed alone
    time_ms: float | None
    default: dict[str, Any]  # the default kernel choice
    default_time_ms: float | None
    in_model_ms: dict[str, float] = field(default_factory=dict)  # candidate plan -> time inside the model
    final: dict[str, Any] | None = None  # the kernel in optimized.ltplan
    final_from: str = ""  # which candidate plan it came from


@dataclass
class PoolSummary:
    busy_seconds: dict[str, float] = field(default_factory=dict)
    setup_seconds: dict[str, float] = field(default_factory=dict)
    cleanup_seconds: dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0
    utilization: float | None = None
    failed_devices: dict[str, str] = field(default_factory=dict)


@dataclass
class ModelResult:
    model: str  # the model's file name
    name: str  # its output folder's name
    target: str
    plan_path: Path  # the written optimized.ltplan
    profiler_build: str
    device_cores: int
    layers: list[LayerRow]
    whole_model: Verification
    pool: PoolSummary
    build_seconds: float
    failed_measurements: int

    def to_json(self) -> dict[str, Any]:
        """summary.json's content."""
        data = asdict(self)
        data["plan_path"] = str(self.plan_path)
        whole = data["whole_model"]
        if self.whole_model.error is None:
            whole["speedup_over_default"] = self.whole_model.speedup_over_default
        else:
            whole = {"error": self.whole_model.error}
        data["whole_model"] = whole
        return data

    def summary_line(self) -> str:
        """The CLI's line for this model."""
        whole = self.whole_model
        if whole.error is not None:
            return f"{self.name}: {whole.error}"
        lat = whole.latency_ms
        return (f"{self.name}: optimized {lat['optimized']:.3f} ms, default {lat['default']:.3f} ms "
                f"({whole.speedup_over_default:.2f}x); output check: "
                f"{'OK' if whole.check.error is None else whole.check.error}; -> {self.plan_path}")
