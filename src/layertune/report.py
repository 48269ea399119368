"""report.md and PNG plots for one model's profile_and_optimize run."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("layertune.report")


def _fmt_variant(params: dict[str, Any] | None) -> str:
    if not params:
        return "-"
    rest = ", ".join(f"{k}={v}" for k, v in params.items() if k != "method")
    return f"{params['method']}({rest})"


def write_report(out_dir: Path, summary: dict[str, Any]) -> None:
    lines = [f"# {summary['model']} on {summary['target']}", ""]
    whole = summary.get("whole_model", {})
    if "latency_ms" in whole:
        lat = whole["latency_ms"]
        lines += ["## Whole model", "", f"Measured on {whole['device']} ({summary['device_cores']} cores), "
                  "interleaved rounds, median of each round's median.", "",
                  "| plan | latency (ms) | vs default |", "| --- | ---: | ---: |"]
        for name, ms in sorted(lat.items(), key=lambda kv: kv[1]):
            lines.append(f"| {name} | {ms:.3f} | {lat['default'] / ms:.2f}x |")
        check = whole.get("check", {})
        lines += ["", f"Optimized output vs the reference kernels: max |diff| {check.get('max_abs_diff')} "
                  f"(max |output| {check.get('max_abs_ref')}), {'OK' if check.get('error') is None else check.get('error')}.", ""]
    else:
        lines += ["## Whole model", "", f"Not verified: {whole.get('error')}", ""]
    pool = summary.get("pool", {})
    lines += [f"Profiling: {pool.get('wall_seconds', 0):.1f} s on {len(pool.get('busy_seconds', {}))} device(s), "
              f"utilization {pool.get('utilization')}; profiler build {summary.get('build_seconds')} s; "
              f"failed measurements {summary.get('failed_measurements')}.", "",
              "## Layers", "", "| # | op | layer | MFLOP | chosen variant | ms | default | default ms | speedup |",
              "| ---: | --- | --- | ---: | --- | ---: | --- | ---: | ---: |"]
    for row in summary["layers"]:
        t, d = row["time_ms"], row["default_time_ms"]
        speed = f"{d / t:.2f}x" if t and d else "-"
        lines.append(f"| {row['index']} | {row['op']} | {row['signature']} | {row['flops'] / 1e6:.1f} | "
                     f"{_fmt_variant(row['chosen'])} | {t if t is None else f'{t:.3f}'} | {_fmt_variant(row['default'])} | "
                     f"{d if d is None else f'{d:.3f}'} | {speed} |")
    plots = _plots(out_dir, summary)
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    tmp = out_dir / "report.md.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, out_dir / "report.md")


def _plots(out_dir: Path, summary: dict[str, Any]) -> list[Path]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib is not installed: report without plots (pip install matplotlib)")
        return []
    paths = []
    rows = [r for r in summary["layers"] if r["time_ms"]]
    if rows:
        fig, ax = plt.subplots(figsize=(max(6, len(rows) * 0.35), 4))
        x = range(len(rows))
        ax.bar([i - 0.2 for i in x], [r["default_time_ms"] or 0 for r in rows], 0.4, label="default")
        ax.bar([i + 0.2 for i in x], [r["time_ms"] for r in rows], 0.4, label="chosen")
        ax.set_xticks(list(x), [str(r["index"]) for r in rows], fontsize=7)
        ax.set_xlabel("layer")
        ax.set_ylabel("ms")
        ax.set_title("per-layer time: default vs chosen variant")
        ax.legend()
        fig.tight_layout()
        paths.append(out_dir / "layers.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    lat = summary.get("whole_model", {}).get("latency_ms")
    if lat:
        fig, ax = plt.subplots(figsize=(6, 3))
        names = sorted(lat, key=lat.get)
        ax.barh(names, [lat[n] for n in names])
        ax.set_xlabel("ms")
        ax.set_title("whole-model latency")
        fig.tight_layout()
        paths.append(out_dir / "whole_model.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths
