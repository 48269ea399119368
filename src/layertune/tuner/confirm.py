"""From per-layer candidates to the plan that is written, confirmed on whole-model runs.

Per-layer timings alone mislead (a layer timed alone finds its weights in cache; inside a model
its neighbours and the thread count change it), so every decision here is taken on whole-model
runs on the device, by the protocol of tuner/protocol.py (interleaved rounds, ratios with
intervals, a difference within noise is no difference and the simpler plan wins):

1. **Screen.** Time, interleaved and with per-node times, layertune's baselines — the default
   kernel choice at every thread count the options allow, and each uniform-method plan at each
   of them — and the tuned plan (every layer's fastest variant timed alone, with its own thread
   count).
2. **Strongest baseline.** The simplest baseline (the default before uniform plans, fewer threads
   before more) that no other baseline beats beyond noise.
3. **Confirm per-layer changes, heaviest layers first.** Starting from the strongest baseline, a
   layer's change is proposed when another screened plan ran that layer faster inside the model,
   beyond noise (per-node interval below 1), taking that plan's kernel and its thread count
   (among plans of the same nodes: the tuned plan with some of an int8 model's layers in float32,
   which has conversions between them, competes only as a whole).
   All proposals are applied together and the result is timed against the current plan; kept
   only if the whole model is faster beyond noise (and its output within max_output_error),
   otherwise the heaviest half is tried, and so on, for a bounded number of tries.
4. **Verify.** The result is timed against every baseline (and LiteRT on the same .tflite where
   the device has it), and so are its fused forms (graph/fusion.py: the result with every fusion
   form the options allow, and with each form alone where more than one applies) — each fused
   plan is timed against the unfused chain it came from in the same rounds. The written plan is
   the result only if it is faster than the strongest baseline beyond noise in these rounds and
   no baseline beats it beyond noise; otherwise the strongest baseline is written — unless
   another plan in hand that is not a baseline (the per-layer composite, a fused plan) is faster
   than that choice beyond noise and no baseline beats it. Last, the choice's fused form (with every
   form) replaces it unless measured slower than it beyond noise, or beaten by a baseline: an
   imported model is fused when loaded untuned, so within noise the fused plan is the default, not
   the more complex one. The race drops plans on the rounds they ran, so relations measured on
   different rounds can form a cycle in which every choice is measured slower than some plan, or a
   chain that puts a plan within noise of the strongest baseline in its place; then every plan is
   timed again in the same rounds, none dropped, and the choice made on those. So the written plan
   is never one measured slower than a layertune baseline or a plan the tuner had in hand. Nor is
   it a plan whose output is over the options' max_output_error (tuner/accuracy.py: approximate
   methods); such plans do not race at all.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from layertune.graph.fusion import FORMS, fuse, fused_groups
from layertune.graph.ir import Graph
from layertune.graph.plan import write_plan
from layertune.runners.device import DeviceSession
from layertune.tuner.protocol import RatioCI, Settings, measure_until_narrow, ratio_ci

log = logging.getLogger("layertune")


@dataclass
class PlanCandidate:
    graph: Graph
    threads: int  # the engine's thread count (ops without their own; every convolution has its own)
    baseline: bool
    simplicity: int = 0  # lower is simpler: wins a tie within noise


@dataclass
class Outcome:
    written: str  # the name of the plan written as optimized.ltplan
    graph: Graph
    threads: int
    strongest: str  # the strongest layertune baseline in the verification rounds
    latency_ms: dict[str, float]  # median per plan (and LiteRT) in the verification rounds
    ratios: dict[str, RatioCI]  # the written plan's time over each other plan's
    screen_node_ms: dict[str, list[float]]  # per plan, each node's median time in the screening
    changes: list[tuple[int, str]] = field(default_factory=list)  # (node index of the unfused plan, source plan) kept
    litert_error: str | None = None
    confirm_tries: list[dict] = field(default_factory=list)


def pinned(graph: Graph, threads: int) -> Graph:
    """A copy in which every convolution names its thread count (its own, else `threads`)."""
    g = graph.copy()
    for node in g.nodes:
        if g.is_tunable_conv(node):
            params = dict(node.kernel)
            params.setdefault("threads", threads)
            node.set_kernel(params.pop("method"), params)
    return g


class Bench:
    """Whole plans timed on one device session: each plan uploaded once; LiteRT beside them."""

    def __init__(self, session: DeviceSession, folder: Path, settings: Settings, timeout: float,
                 tflite: Path | None = None, litert_threads: tuple[int, ...] = ()):
        self.session, self.folder, self.settings, self.timeout = session, folder, settings, timeout
        self.remote: dict[str, tuple[str, int]] = {}
        self.tflite_remote = session.upload(tflite, "model.tflite") if tflite else None
        self.litert_threads = litert_threads
        self.litert_error: str | None = None if tflite else "no .tflite of the model"

    def add(self, name: str, candidate: PlanCandidate) -> None:
        path = self.folder / f"{name.replace('@', '_t')}.ltplan"
        write_plan(candidate.graph, path)
        self.remote[name] = (self.session.upload(path, path.name), candidate.threads)

    def measure(self, names: list[str], baseline: str, layers: bool = False, litert: bool = False,
                keep: tuple[str, ...] = ()) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
        """Round series per plan (and per LiteRT thread count) by the protocol's race until each
        ratio to `baseline` is narrow; and, with layers, each node's median time per plan."""
        node_times: dict[str, list[list[float]]] = {n: [] for n in names}
        seen: set[str] = set()
        done = [0]  # rounds so far: the rotation of the order goes on from there

        def chunk(rounds: int, racing: list[str]) -> dict[str, list[float]]:
            s = self.settings
            plans = [n for n in racing if n in self.remote]
            r = self.session.compare([self.remote[n] for n in plans], rounds, s.warmup, s.repeats, layers, self.timeout,
                                     first_round=done[0])
            done[0] += rounds
            out = {n: p["rounds_ms"] for n, p in zip(plans, r["plans"])}
            if layers:
                for n, p in zip(plans, r["plans"]):
                    node_times[n].append(p["layer_median_ms"])
            # LiteRT in the chunk's wake: every thread count at first, then those still racing
            threads = [t for t in self.litert_threads if f"litert@{t}" in racing or f"litert@{t}" not in seen]
            if litert and threads and self.tflite_remote is not None and self.litert_error is None:
                lr = self.session.litert(self.tflite_remote, threads, rounds, s.warmup, s.repeats, self.timeout)
                if lr.get("error"):
                    self.litert_error = lr["error"]
                    log.info("LiteRT is not measured on %s: %s", self.session.name, lr["error"])
                else:
                    out.update(lr["series"])
            seen.update(out)
            return out

        series = measure_until_narrow(chunk, names, baseline, self.settings, keep)
        nodes = {n: [statistics.median(col) for col in zip(*chunks)] for n, chunks in node_times.items() if chunks}
        return series, nodes


def _strongest(series: dict[str, list[float]], candidates: dict[str, PlanCandidate]) -> str:
    """The simplest baseline that no other baseline beats beyond noise."""
    baselines = sorted((n for n in candidates if candidates[n].baseline and n in series),
                       key=lambda n: candidates[n].simplicity)
    for name in baselines:
        if not any(ratio_ci(series[other], series[name]).faster for other in baselines if other != name):
            return name
    return min(baselines, key=lambda n: statistics.median(series[n]))


def _proposals(nodes: dict[str, list[float]], base: str, candidates: dict[str, PlanCandidate],
               margin: float = 0.05) -> list[tuple[int, str]]:
    """(node index, plan) for each convolution some plan ran faster inside the model than `base`
    by more than `margin`, heaviest node of `base` first. Only plans with `base`'s nodes, one for
    one, take part (a plan with layers chosen in another precision has conversions between them:
    it competes as a whole)."""
    graph = candidates[base].graph
    same = [n for n in nodes if [x.name for x in candidates[n].graph.nodes] == [x.name for x in graph.nodes]]
    out = []
    for index, node in enumerate(graph.nodes):
        if not graph.is_tunable_conv(node):
            continue
        own = nodes[base][index]
        best = min(same, key=lambda n: nodes[n][index])
        kernel = pinned(candidates[best].graph, candidates[best].threads).nodes[index].kernel
        mine = pinned(graph, candidates[base].threads).nodes[index].kernel
        if best != base and nodes[best][index] < own * (1 - margin) and kernel != mine:
            out.append((index, best))
    return sorted(out, key=lambda c: -nodes[base][c[0]])


def _apply(base: PlanCandidate, changes: list[tuple[int, str]], candidates: dict[str, PlanCandidate]) -> PlanCandidate:
    g = pinned(base.graph, base.threads)
    for index, source in changes:
        src = pinned(candidates[source].graph, candidates[source].threads)
        g.nodes[index].attrs = dict(src.nodes[index].attrs)
    return PlanCandidate(g, base.threads, baseline=False)


def _written(series: dict[str, list[float]], current: str, strongest: str, baselines: list[str],
             others: list[str], acceptable: Callable[[str], bool] = lambda name: True) -> str:
    """Which verified plan to write. The confirmed plan (`current`) when it beat the strongest
    baseline beyond noise and no baseline beat it; else the strongest baseline. Then any plan in
    hand that is not a baseline (the per-layer composite, the confirmed plan) and measured faster
    than the choice beyond noise, beaten by no baseline, replaces it — repeated until none does
    (intervals need not be transitive: a plan passed over early may beat a later replacement), so
    that the written plan is never measured slower than a plan the tuner had in hand. Last, the
    choice's fused form replaces it unless measured slower beyond noise. A plan that is not
    `acceptable` (its output over the tolerance: tuner/accuracy.py) is never chosen; a baseline
    always is."""
    def beaten_by_a_baseline(name: str) -> bool:
        return any(ratio_ci(series[b], series[name]).faster for b in baselines if b != name)

    written = current
    if current != strongest and (not ratio_ci(series[current], series[strongest]).faster
                                 or beaten_by_a_baseline(current) or not acceptable(current)):
        written = strongest
    for _ in range(len(others) + 1):  # bounded: a cycle of "faster" among noisy intervals ends here
        better = [n for n in others if n != written and ratio_ci(series[n], series[written]).faster
                  and not beaten_by_a_baseline(n) and acceptable(n)]
        if not better:
            break
        written = min(better, key=lambda n: ratio_ci(series[n], series[written]).ratio)
    # A model loaded untuned is fused (Model.load): a tie goes to the written plan's fused form, so
    # that tuning never takes fusion away on noise (EfficientNet-B0 at 2 threads wrote the unfused
    # default on a tie, then measured 1.11x LiteRT against the fused default's 0.97x).
    fused_form = f"{written}+fused"
    if (fused_form in series and not ratio_ci(series[fused_form], series[written]).slower
            and not beaten_by_a_baseline(fused_form) and acceptable(fused_form)):
        written = fused_form
    return written


def _doubts(series: dict[str, list[float]], written: str, strongest: str, names: list[str],
            candidates: dict[str, PlanCandidate]) -> list[str]:
    """What speaks against the choice: the plans of `names` it was measured slower than, beyond
    noise; and the strongest baseline, when the choice is not a baseline nor a baseline's fused
    form and neither it nor the plan it was fused from beat that baseline beyond noise (it won a
    chain of replacements measured on different rounds: the tuned plan beat the default on the 4
    rounds it raced, the confirmed plan beat the tuned one on those, and over 40 rounds the
    confirmed plan and the default were within noise)."""
    out = [n for n in names if n != written and n in series and ratio_ci(series[written], series[n]).slower]
    source = written.split("+", 1)[0]
    if (written != strongest and source in candidates and not candidates[source].baseline
            and not any(n in series and ratio_ci(series[n], series[strongest]).faster for n in {written, source})):
        out.append(strongest)
    return out


def _verify(measure: Callable[[tuple[str, ...]], dict[str, list[float]]], names: list[str], current: str,
            candidates: dict[str, PlanCandidate], acceptable: Callable[[str], bool],
            progress: Callable[[str], None] = log.info, settles: int = 2) -> tuple[dict[str, list[float]], str, str]:
    """(series, written plan, strongest baseline) from the verification rounds. `measure(keep)`
    times `names` by the protocol's race, never dropping the plans in `keep`.

    The race drops a plan on the rounds it ran; if those rounds were unrepresentative (a chunk
    1.6x slower than the rest: a CI run), the relations measured on different rounds can form a
    cycle — A beat B on the first rounds, B beat C and C beat A on all of them — and then every
    plan the rule can write was measured slower than some plan in hand; or a chain — a plan that
    is no baseline chosen over the strongest baseline through one that beat it on a few rounds,
    though itself within noise of it. So when the choice is in doubt (`_doubts`), every plan is
    timed again in the same rounds, none dropped, and the choice is made on those."""
    baselines = [n for n in names if candidates[n].baseline]
    others = [n for n in names if not candidates[n].baseline]

    def choose(series: dict[str, list[float]]) -> tuple[str, str]:
        strongest = _strongest(series, candidates)
        return _written(series, current, strongest, baselines, others, acceptable), strongest

    series = measure((current,))
    written, strongest = choose(series)
    for _ in range(settles):
        doubts = _doubts(series, written, strongest, names, candidates)
        if not doubts:
            break
        progress(f"the choice {written} rests on relations measured on different rounds ({', '.join(doubts)}): "
                 f"timing all {len(names)} plans again in the same rounds")
        series = measure(tuple(names))
        written, strongest = choose(series)
    else:
        if doubts := _doubts(series, written, strongest, names, candidates):
            log.warning("the choice %s is still in doubt after timing every plan together (%s)", written,
                        ", ".join(doubts))
    return series, written, strongest


def fused_variants(name: str, candidate: PlanCandidate, forms: tuple[str, ...],
                   strip_rows: tuple[int, ...] = (0,)) -> dict[str, PlanCandidate]:
    """`candidate` with every form of `forms` fused ("<name>+fused"), and with each form alone
    ("<name>+<form>") where more than one of them applies; none where none applies. The strips of
    `inverted_residual` are `strip_rows[0]` high; each further height is one more plan with every
    form ("<name>+fused/rows=<n>")."""
    alone = {f: fuse(candidate.graph, (f,), strip_rows[0]) for f in forms}
    alone = {f: g for f, g in alone.items() if fused_groups(g)}
    if not alone:
        return {}
    out = {f"{name}+fused": PlanCandidate(fuse(candidate.graph, forms, strip_rows[0]), candidate.threads, baseline=False)}
    if len(alone) > 1:
        out.update({f"{name}+{f}": PlanCandidate(g, candidate.threads, baseline=False) for f, g in alone.items()})
    if "inverted_residual" in alone:
        out.update({f"{name}+fused/rows={rows}": PlanCandidate(fuse(candidate.graph, forms, rows), candidate.threads,
                                                               baseline=False) for rows in strip_rows[1:]})
    return out


def select_plan(candidates: dict[str, PlanCandidate], bench: Bench, reference: str,
                max_tries: int = 4, progress: Callable[[str], None] = log.info,
                fusion: tuple[str, ...] = FORMS, strip_rows: tuple[int, ...] = (0,),
                acceptable: Callable[[str, PlanCandidate], bool] = lambda name, candidate: True) -> Outcome:
    """The algorithm of this module's docstring. `reference` names the baseline the screening's
    intervals are taken against (the default plan); `fusion` the fusion forms tried, with the
    inverted-residual strip heights `strip_rows`; `acceptable` says whether a plan may be written
    (asked only of the plans that could be)."""
    names = list(candidates)
    for name in names:
        bench.add(name, candidates[name])
    progress(f"screening {len(names)} plans on {bench.session.name}")
    series, nodes = bench.measure(names, reference, layers=True)
    strongest = _strongest(series, candidates)
    current_name, kept = strongest, []
    batch, tries = _proposals(nodes, strongest, candidates), []
    while batch and len(tries) < max_tries:
        trial = _apply(candidates[strongest], batch, candidates)
        name = f"confirmed-{len(tries) + 1}"
        bench.add(name, trial)
        progress(f"confirming {len(batch)} per-layer change(s) on the whole model")
        s, _ = bench.measure([strongest, name], strongest, keep=(name,))
        ci = ratio_ci(s[name], s[strongest])
        # a faster mix of kernels over the output tolerance is no result either (the gate trimmed
        # the tuned plan, not this mix: ResNet50's default Winograd layers beside its tuned ones
        # were over); a smaller batch of the same changes would be tried in vain
        within = ci.faster and acceptable(name, trial)
        tries.append({"changes": len(batch), "ratio": ci.to_json(), "kept": within,
                      **({"over_tolerance": True} if ci.faster and not within else {})})
        if within:
            kept, current_name = batch, name
            candidates = {**candidates, current_name: trial}
        if ci.faster:
            break
        batch = batch[: len(batch) // 2]  # the heaviest half
    # Verification: the result and its fused forms against every baseline and LiteRT, in the same
    # rounds; a plan that may not be written does not race (a faster one would push the others
    # out of the race after a few rounds, then lose the choice).
    fused = fused_variants(current_name, candidates[current_name], fusion, strip_rows)
    for name, candidate in fused.items():
        bench.add(name, candidate)
    fused = {n: c for n, c in fused.items() if acceptable(n, c)}
    candidates = {**candidates, **fused}
    baselines = [n for n in names if candidates[n].baseline]
    others = [n for n in names if not candidates[n].baseline and acceptable(n, candidates[n])]
    final_names = list(dict.fromkeys([*baselines, current_name, *others, *fused]))
    progress(f"verifying against {len(baselines)} baselines" + (f", with {len(fused)} fused plans" if fused else "")
             + (" and LiteRT" if bench.tflite_remote else ""))
    series, written, final_strongest = _verify(
        lambda keep: bench.measure(final_names, strongest, litert=True, keep=keep)[0], final_names, current_name,
        {n: candidates[n] for n in final_names}, lambda name: candidates[name].baseline or acceptable(name, candidates[name]),
        progress)
    ratios = {n: ratio_ci(series[written], series[n]) for n in series if n != written}
    return Outcome(written, pinned(candidates[written].graph, candidates[written].threads), candidates[written].threads,
                   final_strongest, {n: statistics.median(v) for n, v in series.items()}, ratios, nodes,
                   kept if written == current_name or written in fused else [], bench.litert_error, tries)
