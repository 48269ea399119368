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
    inputs: int = 1  # seeded inputs it ran (profiler `run --check N`)


@dataclass
class Verification:
    """The whole-model decision on one device (tuner/confirm.py): every plan timed in the same
    interleaved rounds; `error` when no device could measure the model."""
    device: str = ""
    written: str = ""  # which plan optimized.ltplan is: "confirmed-N" (the tuned changes), or a baseline
    threads: int = 0  # the engine thread count it was measured with (every convolution names its own)
    strongest_baseline: str = ""  # the fastest layertune baseline (the simpler one within noise)
    latency_ms: dict[str, float] = field(default_factory=dict)  # median per plan (and litert@T)
    ratios: dict[str, dict[str, float]] = field(default_factory=dict)  # written / other: ratio, lo, hi, rounds
    check: OutputCheck = field(default_factory=OutputCheck)
    arena_bytes: int | None = None
    peak_rss_bytes: int | None = None
    litert_error: str | None = None  # why LiteRT was not measured beside, if it was not
    confirm_tries: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    fused: dict[str, list[str]] = field(default_factory=dict)  # the written plan's fused groups: conv -> absorbed nodes
    # the output-error gate of approximate methods (tuner/accuracy.py): max_output_error, the tuned
    # plan's approximate layers and how many were kept, each check; empty when no plan had any
    accuracy: dict[str, Any] = field(default_factory=dict)

    @property
    def speedup_over_strongest(self) -> float | None:
        """The strongest baseline's time over the written plan's (1.0 when it is that baseline)."""
        if self.written == self.strongest_baseline:
            return 1.0
        r = self.ratios.get(self.strongest_baseline)
        return 1 / r["ratio"] if r else None


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
    # an int8 layer's float32 twin (the per-layer precision choice): its fastest variant and time
    float_chosen: dict[str, Any] | None = None
    float_time_ms: float | None = None
    precision: str = ""  # what the layer computes in, in optimized.ltplan: "float32" or "int8"


@dataclass
class PoolSummary:
    busy_seconds: dict[str, float] = field(default_factory=dict)
    setup_seconds: dict[str, float] = field(default_factory=dict)
    cleanup_seconds: dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0
    utilization: float | None = None
    failed_devices: dict[str, str] = field(default_factory=dict)
    job_intervals: list[tuple[str, float, float]] = field(default_factory=list)  # (device, start, end) per job

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
            whole["speedup_over_strongest_baseline"] = self.whole_model.speedup_over_strongest
        else:
            whole = {"error": self.whole_model.error}
        data["whole_model"] = whole
        return data

    def summary_line(self) -> str:
        """The CLI's line for this model: what was written, and its ratio to each baseline."""
        whole = self.whole_model
        if whole.error is not None:
            return f"{self.name}: {whole.error}"
        source, _, fused = whole.written.partition("+")
        if not source.startswith(("default@", "uniform-")):  # confirmed-N, tuned, tuned-mixed, and their fused forms
            what = f"the tuned plan ({whole.written})"
        elif fused:
            what = f"baseline {source} with fusion ({fused}; no per-layer change was faster beyond noise)"
        else:
            what = f"baseline {whole.written} (no tuned change was faster beyond noise)"
        ratios = ", ".join(f"{name} {r['ratio']:.2f}x [{r['lo']:.2f}, {r['hi']:.2f}]"
                           for name, r in sorted(whole.ratios.items()))
        return (f"{self.name}: wrote {what}, {whole.latency_ms[whole.written]:.3f} ms at --threads {whole.threads}; "
                f"time over each plan (95% interval): {ratios}; strongest baseline {whole.strongest_baseline}; "
                f"output check {'OK' if whole.check.error is None else whole.check.error}; -> {self.plan_path}")
