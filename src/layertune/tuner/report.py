"""report.md and PNG plots for one model's profile_and_optimize run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from layertune.jsonfile import write_text_atomic
from layertune.tuner.result import ModelResult

log = logging.getLogger("layertune.report")
LAYERS_PLOTTED = 20


def _fmt_variant(params: dict[str, Any] | None) -> str:
    if not params:
        return "-"
    rest = ", ".join(f"{k}={v}" for k, v in params.items() if k != "method")
    return f"{params['method']}({rest})"


def write_report(out_dir: Path, result: ModelResult) -> None:
    lines = [f"# {result.model} on {result.target}", ""]
    whole = result.whole_model
    int8_model = any(r.precision == "int8" or r.float_time_ms is not None for r in result.layers)
    if whole.error is None:
        lat = whole.latency_ms
        lines += ["## Whole model", "",
                  f"Measured on {whole.device} ({result.device_cores} cores): every plan in the same interleaved "
                  "rounds (LiteRT in alternating chunks of rounds), median of the round times; the ratio is the "
                  "written plan's time over the plan's, with its 95% interval (an interval that holds 1 is no "
                  "difference). The written plan is the tuned one only when it is faster than the strongest "
                  "layertune baseline beyond noise (docs: src/layertune/tuner/confirm.py).", "",
                  f"Written as optimized.ltplan: **{whole.written}** (run with --threads {whole.threads}); strongest "
                  f"layertune baseline: **{whole.strongest_baseline}**.", "",
                  "| plan | latency (ms) | written / plan | 95% interval |", "| --- | ---: | ---: | --- |"]
        for name, ms in sorted(lat.items(), key=lambda kv: kv[1]):
            r = whole.ratios.get(name)
            interval = f"[{r['lo']:.3f}, {r['hi']:.3f}] ({r['rounds']} rounds)" if r else "(written)"
            lines.append(f"| {name} | {ms:.3f} | {r['ratio']:.3f} | {interval} |" if r else
                         f"| {name} | {ms:.3f} | 1 | {interval} |")
        if whole.fused:
            absorbed = sum(len(v) for v in whole.fused.values())
            lines += ["", f"Fused groups in the written plan (a `+fused` / `+<form>` plan is the plan before the `+` "
                      f"with those forms fused, graph/fusion.py): {len(whole.fused)} "
                      f"convolution{'s' if len(whole.fused) > 1 else ''} took {absorbed} op{'s' if absorbed > 1 else ''}: " + "; ".join(f"{conv} <- {', '.join(nodes)}" for conv, nodes in list(whole.fused.items())[:8])
                      + (" ..." if len(whole.fused) > 8 else "") + "."]
        if whole.litert_error:
            lines += ["", f"LiteRT was not measured: {whole.litert_error}."]
        if whole.accuracy:
            a = whole.accuracy
            kept = (f" The tuned plan kept {a['kept']} of its {a['approximate_layers']} approximate layers."
                    if "kept" in a else "")
            errors = "; ".join(f"{n} {e:.2g}" for n, e in a["plan_errors"].items())
            lines += ["", f"Approximate methods (tuner/accuracy.py): a plan with them is written only if its output "
                      f"is within {a['max_output_error']:.2g} of max |reference|.{kept} Output errors checked: {errors}."]
        check = whole.check
        lines += ["", f"Written plan's output vs the reference kernels (on {check.inputs} seeded inputs): max |diff| "
                  f"{check.max_abs_diff} (max |output| {check.max_abs_ref}), {'OK' if check.error is None else check.error}.", ""]
        for i, t in enumerate(whole.confirm_tries, 1):
            verdict = ("kept" if t["kept"] else "not kept: its output is over max_output_error" if t.get("over_tolerance")
                       else "not kept")
            lines.append(f"Confirmation {i}: {t['changes']} per-layer change(s), whole model {t['ratio']['ratio']:.3f}x "
                         f"[{t['ratio']['lo']:.3f}, {t['ratio']['hi']:.3f}]: {verdict}.")
        lines.append("")
    else:
        lines += ["## Whole model", "", f"Not verified: {whole.error}", ""]
    pool = result.pool
    lines += [f"Profiling: {pool.wall_seconds:.1f} s on {len(pool.busy_seconds)} device(s), "
              f"utilization {pool.utilization}; profiler build {result.build_seconds} s; "
              f"failed measurements {result.failed_measurements}.", "",
              "## Layers", "",
              *([f"An int8 model: each int8 layer was also timed in float32 (its twin, between DEQUANTIZE and "
                 f"QUANTIZE); {sum(r.precision == 'float32' for r in result.layers)} of its layers compute in float32 "
                 "in optimized.ltplan.", ""] if int8_model else []),
              "Isolated: the fastest variant timed alone (and the default's time alone). In the model: the kernel in "
              "optimized.ltplan, the plan it comes from, and its time inside the screening's whole-model runs beside "
              f"the strongest baseline's ({result.whole_model.strongest_baseline}); a speed-up only where the kernel "
              "changed.", "",
              "| # | op | layer | MFLOP | tuned (isolated) | ms | default | default ms | in the model: kept | from | ms | baseline ms | speedup |"
              + (" float32 twin (isolated) | ms | computes in |" if int8_model else ""),
              "| ---: | --- | --- | ---: | --- | ---: | --- | ---: | --- | --- | ---: | ---: | ---: |"
              + (" --- | ---: | --- |" if int8_model else "")]
    strongest = result.whole_model.strongest_baseline
    for row in result.layers:
        kept = row.in_model_ms.get(row.final_from)
        base = row.in_model_ms.get(strongest)
        speed = f"{base / kept:.2f}x" if kept and base and row.final_from != strongest else "-"
        lines.append(f"| {row.index} | {row.op} | {row.signature} | {row.flops / 1e6:.1f} | "
                     f"{_fmt_variant(row.chosen)} | {_ms(row.time_ms)} | {_fmt_variant(row.default)} | "
                     f"{_ms(row.default_time_ms)} | {_fmt_variant(row.final)} | {row.final_from} | {_ms(kept)} | {_ms(base)} | "
                     f"{speed} |" + (f" {_fmt_variant(row.float_chosen)} | {_ms(row.float_time_ms)} | {row.precision or '-'} |"
                                     if int8_model else ""))
    plots = _plots(out_dir, result)
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    write_text_atomic(out_dir / "report.md", "\n".join(lines) + "\n")


def _short_name(name: str) -> str:
    """A layer's name without the model's prefix and the converter's op suffixes
    ("model/conv4_block1_2_bn_1/batchnorm/sub1" -> "conv4_block1_2_bn_1")."""
    parts = [p for p in name.split("/") if p]
    return (parts[1] if len(parts) > 1 else parts[0] if parts else name)[:32]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _plots(out_dir: Path, result: ModelResult) -> list[Path]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib is not installed: report without plots (pip install matplotlib)")
        return []
    paths = []
    strongest = result.whole_model.strongest_baseline
    rows = [r for r in result.layers if strongest in r.in_model_ms]
    if rows:
        # The layers that matter: the heaviest inside the model, named, with the plans that decided.
        rows = sorted(rows, key=lambda r: -r.in_model_ms[strongest])[:LAYERS_PLOTTED]
        shown = [strongest, "tuned", *(r.final_from for r in rows)]
        plans = [p for p in dict.fromkeys(shown) if p in rows[0].in_model_ms]
        fig, ax = plt.subplots(figsize=(9, 1.2 + 0.32 * len(rows)))
        height = 0.8 / len(plans)
        for k, plan in enumerate(plans):
            ax.barh([i + k * height for i in range(len(rows))], [r.in_model_ms[plan] for r in rows], height, label=plan)
        labels = [f"#{r.index} {_short_name(r.name)}" + (" *" if r.final_from != strongest else "") for r in rows]
        ax.set_yticks([i + 0.4 - height / 2 for i in range(len(rows))], labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("ms inside whole-model runs (screening)")
        ax.set_title(f"the {len(rows)} heaviest convolutions (* = kernel changed from {strongest})", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        paths.append(out_dir / "layers.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    lat = result.whole_model.latency_ms
    if lat:
        written = result.whole_model.written
        fig, ax = plt.subplots(figsize=(7, 1.2 + 0.3 * len(lat)))
        names = sorted(lat, key=lat.get)
        colors = ["tab:green" if n == written else "tab:orange" if n.startswith("litert") else "tab:blue" for n in names]
        ax.barh(names, [lat[n] for n in names], color=colors)
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=8)
        if max(lat.values()) > 10 * min(lat.values()):
            ax.set_xscale("log")
        ax.set_xlabel("ms (median of the verification rounds)")
        litert = ", LiteRT (orange)" if any(n.startswith("litert") for n in names) else ""  # an ONNX model has none
        ax.set_title(f"whole-model latency: written = {written} (green){litert}", fontsize=9)
        fig.tight_layout()
        paths.append(out_dir / "whole_model.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths
