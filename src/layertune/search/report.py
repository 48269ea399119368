"""Markdown report with PNG plots from fine-tune-optimizers measurements (OUT_<id>.json files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from layertune.jsonfile import write_text_atomic
from layertune.search.metrics import QUALITY, pareto_flags

_PATHS = ("compiled_model_path", "save_model_path")


def run_labels(runs: list[dict[str, Any]]) -> dict[str, str]:
    """A label per run id: each block with the parameters whose values differ between the runs
    (tuned and untuned TVM differ in tuning_trials), paths left out."""
    def blocks(run):
        pipeline = run["pipeline"]
        return [*[(o, "Compiler") for o in pipeline["optimizers"]], (pipeline["runtime"], "Runtime")]
    seen: dict[tuple[str, str], set[str]] = {}
    for run in runs:
        for b, _ in blocks(run):
            for k, v in b["parameters"].items():
                seen.setdefault((b["type"], k), set()).add(json.dumps(v, sort_keys=True))

    def block(b: dict[str, Any], suffix: str) -> str:
        params = ",".join(f"{k}={v}" for k, v in sorted(b["parameters"].items())
                          if k not in _PATHS and len(seen[(b["type"], k)]) > 1)
        return b["type"].rsplit(".", 1)[-1].replace(suffix, "") + (f"[{params}]" if params else "")
    return {run["id"]: " > ".join(block(b, suffix) for b, suffix in blocks(run)) for run in runs}


def write_report(measurement_files: list[Path], report_path: Path) -> list[Path]:
    """Writes report_path (Markdown) and its PNG plots beside it; returns every file written."""
    runs = []
    for f in measurement_files:
        data = json.loads(Path(f).read_text())
        if "pipeline" in data and "inferencetime_mean" in data.get("metrics", {}):
            runs.append(data)
    if not runs:
        raise ValueError("--measurements: no run files with timing metrics")
    report_path = Path(report_path)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    labels = run_labels(runs)
    plots = _plots(runs, report_path, labels)
    runs.sort(key=lambda r: r["metrics"]["inferencetime_mean"])
    native = next((r for r in runs if not r["pipeline"]["optimizers"]
                   and r["pipeline"]["runtime"]["type"].endswith(".NativeRuntime")), None)
    pareto = pareto_flags([r["metrics"] for r in runs])
    lines = ["# fine-tune-optimizers report", "", f"{len(runs)} run(s); **fastest** is the lowest mean inference "
             "time, *pareto* the runs no other beats on time, accuracy and size together"
             + (f"; speed-up and size reduction are against the model in its own framework (run {native['id']})"
                if native else "; no run is the model in its own framework, so there is no speed-up column "
                "(on a device without that framework the native baseline is skipped: see OUT_all_results.json)")
             + ".", "", _where(runs), "",
             "| run | pipeline | inference time mean (ms) | median (ms) | speed-up | model size (KiB) | size reduction | "
             "accuracy | precision | sensitivity | g-mean | top-5 | CPU % | mem % | |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]

    def num(m: dict[str, Any], key: str) -> str:
        return f"{m[key]:.3f}" if key in m else "-"
    for i, (r, front) in enumerate(zip(runs, pareto)):
        m = r["metrics"]
        marks = ", ".join((["**fastest**"] if i == 0 else []) + (["*pareto*"] if front else [])
                          + (["native"] if r is native else []))
        n = native["metrics"] if native else None
        speedup = f"{n['inferencetime_mean'] / m['inferencetime_mean']:.2f}x" if n else "-"
        smaller = f"{n['compiled_model_size'] / m['compiled_model_size']:.2f}x" if n else "-"
        lines.append(f"| {r['id']} | {labels[r['id']]} | {m['inferencetime_mean'] * 1e3:.4f} | "
                     f"{m['inferencetime_median'] * 1e3:.4f} | {speedup} | {m['compiled_model_size'] / 1024:.1f} | {smaller} | "
                     + " | ".join(num(m, k) for k in QUALITY[:5])
                     + f" | {m.get('session_utilization_cpus_percent_avg_mean', 0):.1f} | "
                     f"{m.get('session_utilization_mem_percent_mean', 0):.2f} | {marks} |")
    lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    write_text_atomic(report_path, "\n".join(lines) + "\n")
    return [report_path, *plots]


def _where(runs: list[dict[str, Any]]) -> str:
    """Which device measured the runs (a run file without one was measured on the search's machine)."""
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.get("device", "local")] = counts.get(r.get("device", "local"), 0) + 1
    return "Measured on " + ", ".join(f"{'this machine' if d == 'local' else d} ({n} run{'s' if n > 1 else ''})"
                                      for d, n in counts.items()) + "."


def _plots(runs: list[dict[str, Any]], report_path: Path, labels: dict[str, str]) -> list[Path]:
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
    fig, ax = plt.subplots(figsize=(7, 5))
    for r in runs:  # the labels in the legend: beside the bubbles they overlap
        m = r["metrics"]
        y = m[quality] if quality else 0.0
        ax.scatter(m["inferencetime_mean"] * 1e3, y, s=30 + 300 * m["compiled_model_size"] / max(
            rr["metrics"]["compiled_model_size"] for rr in runs), alpha=0.6, label=labels[r["id"]])
    ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, markerscale=0.4)
    ax.set_xscale("log")
    ax.set_xlabel("inference time mean (ms, log)")
    ax.set_ylabel(quality or "-")
    ax.set_title("inference time vs quality (bubble: model size)")
    save(fig, "time_vs_quality")

    fig, ax = plt.subplots(figsize=(7, 4))
    # log-spaced bins up to the 99th percentile: runs differ by orders of magnitude, and a few slow
    # samples (the first calls, a descheduled one) would squash every histogram against 0
    times = np.concatenate([np.asarray(r["inference_times"]) * 1e3 for r in runs])
    lo, hi = max(float(times.min()), 1e-6), float(np.percentile(times, 99))
    bins = np.geomspace(lo, max(hi, lo * 1.01), 40)
    for r in runs:
        ax.hist(np.clip(np.asarray(r["inference_times"]) * 1e3, lo, bins[-1]), bins=bins, alpha=0.5, label=labels[r["id"]])
    ax.set_xscale("log")
    ax.set_xlabel("inference time (ms, log; the slowest 1% in the last bin)")
    ax.set_ylabel("samples")
    ax.set_title("per-run inference time")
    ax.legend(fontsize=6)
    save(fig, "time_histograms")

    fig, (a1, a2) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    for r in runs:
        res = r.get("resources", {})
        # markers: a short run has a single sample, which a line alone would not show
        a1.plot(res.get("timestamps", []), res.get("cpus_percent_avg", []), "o-", markersize=3, label=labels[r["id"]])
        a2.plot(res.get("timestamps", []), res.get("mem_percent", []), "o-", markersize=3)
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
