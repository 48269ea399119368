"""Markdown report with PNG plots from fine-tune-optimizers measurements (OUT_<id>.json files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from layertune.jsonfile import write_text_atomic

QUALITY = ("accuracy", "mean_precision", "mean_sensitivity", "g_mean", "top_5_accuracy")


def _label(run: dict[str, Any]) -> str:
    steps = [o["type"].rsplit(".", 1)[-1].replace("Compiler", "") + (f"[{o['parameters'].get('target')}]" if "target" in o["parameters"] else "")
             for o in run["pipeline"]["optimizers"]]
    rt = run["pipeline"]["runtime"]
    return " > ".join(steps + [rt["type"].rsplit(".", 1)[-1].replace("Runtime", "") + f" t{rt['parameters'].get('num_threads', 1)}"])


def write_report(measurement_files: list[Path], report_path: Path) -> list[Path]:
    """Writes report_path (Markdown) and its PNG plots beside it; returns every file written."""
    runs = []
    for f in measurement_files:
        data = json.loads(Path(f).read_text())
        if "metrics" in data and "pipeline" in data:
            runs.append(data)
    if not runs:
        raise ValueError("--measurements: no run files with metrics")
    report_path = Path(report_path)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    plots = _plots(runs, report_path)
    lines = ["# fine-tune-optimizers report", "", f"{len(runs)} run(s).", "",
             "| run | pipeline | inference time mean (ms) | median (ms) | accuracy | model size (KiB) | CPU % | mem % |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in sorted(runs, key=lambda r: r["metrics"]["inferencetime_mean"]):
        m = r["metrics"]
        acc = f"{m['accuracy']:.3f}" if "accuracy" in m else "-"
        lines.append(f"| {r['id']} | {_label(r)} | {m['inferencetime_mean'] * 1e3:.4f} | {m['inferencetime_median'] * 1e3:.4f} | "
                     f"{acc} | {m['compiled_model_size'] / 1024:.1f} | {m.get('session_utilization_cpus_percent_avg_mean', 0):.1f} | "
                     f"{m.get('session_utilization_mem_percent_mean', 0):.2f} |")
    lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    write_text_atomic(report_path, "\n".join(lines) + "\n")
    return [report_path, *plots]


def _plots(runs: list[dict[str, Any]], report_path: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stem, out = report_path.stem, []

    def save(fig, name):
        path = report_path.with_name(f"{stem}_{name}.png")
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        out.append(path)

    quality = next((q for q in QUALITY if all(q in r["metrics"] for r in runs)), None)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in runs:
        m = r["metrics"]
        y = m[quality] if quality else 0.0
        ax.scatter(m["inferencetime_mean"] * 1e3, y, s=30 + 300 * m["compiled_model_size"] / max(
            rr["metrics"]["compiled_model_size"] for rr in runs), alpha=0.6)
        ax.annotate(_label(r), (m["inferencetime_mean"] * 1e3, y), fontsize=6)
    ax.set_xscale("log")
    ax.set_xlabel("inference time mean (ms, log)")
    ax.set_ylabel(quality or "-")
    ax.set_title("inference time vs quality (bubble: model size)")
    save(fig, "time_vs_quality")

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in runs:
        ax.hist(np.asarray(r["inference_times"]) * 1e3, bins=30, alpha=0.5, label=_label(r))
    ax.set_xlabel("inference time (ms)")
    ax.set_ylabel("samples")
    ax.set_title("per-run inference time")
    ax.legend(fontsize=6)
    save(fig, "time_histograms")

    fig, (a1, a2) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    for r in runs:
        res = r.get("resources", {})
        a1.plot(res.get("timestamps", []), res.get("cpus_percent_avg", []), label=_label(r))
        a2.plot(res.get("timestamps", []), res.get("mem_percent", []))
    a1.set_ylabel("CPU % (avg)")
    a2.set_ylabel("memory %")
    a2.set_xlabel("seconds into inference")
    a1.legend(fontsize=6)
    save(fig, "cpu_memory")

    best = min((r for r in runs if r.get("confusion_matrix")), key=lambda r: r["metrics"]["inferencetime_mean"], default=None)
    if best:
        fig, ax = plt.subplots(figsize=(4.5, 4))
        ax.imshow(np.asarray(best["confusion_matrix"]), cmap="Blues")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"confusion matrix: {best['id']}")
        save(fig, "confusion_matrix")
    return out
