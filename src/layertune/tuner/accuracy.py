"""The output-error gate: what keeps approximate methods honest.

A method the table marks `approximate` (amx_bf16x3: fp32 products from bf16 ones) is accurate
per layer, but its error adds up over a deep model. So a plan with such layers is written only if
the whole model's output, on the device and on CHECK_INPUTS seeded inputs, stays within the
options' `max_output_error` × max|reference| of the reference kernels (double accumulation). A plan
without approximate layers passes unchecked: its error is fp32's own.

The tuned plan, when over, is trimmed before the screening. Each approximate layer is checked
alone (on the exact plan: its share of the error is its error squared less the exact plan's,
as independent roundings add), the layers are ordered by the time they save (per-layer medians
against the layer's fastest exact variant) per share, and the largest count of the first ones
that stays within is found by bisection (the error grows with that count, though not strictly:
every count kept is one measured within); the other layers take their fastest exact variant.
All these checks run one uploaded plan with kernel overrides (profiler `run --kernels`), the
reference outputs computed once (`--reference`). Any other plan that is over (a confirmed or
fused plan) is never written (tuner/confirm.py asks `acceptable`).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from layertune.graph.ir import Graph
from layertune.methods import methods
from layertune.tuner.confirm import Bench, PlanCandidate
from layertune.tuner.select import variant_key

log = logging.getLogger("layertune")

# Seeded inputs each check runs (profiler `run --check N`). The largest error on one input says
# little of another's: ResNet50's tuned plan was at 3.6e-5 of max|reference| on the gate's one
# input and at 1.2e-4 on the next seed.
CHECK_INPUTS = 4


def approximate_layers(graph: Graph) -> list[int]:
    """The node indices of the convolutions on an approximate method."""
    table = methods()
    return [i for i, n in enumerate(graph.nodes)
            if graph.is_tunable_conv(n) and table[n.kernel["method"]].approximate]


@dataclass
class Fallback:
    """An approximate layer of the tuned plan: its fastest exact variant and the time the
    approximate one saves over it (ms, per-layer medians)."""
    index: int
    exact: dict[str, Any]  # the exact variant's parameters, with "method"
    saved_ms: float


@dataclass
class OutputGate:
    bench: Bench
    tolerance: float  # relative to max|reference|
    errors: dict[str, float] = field(default_factory=dict)  # per plan name: max|diff| / max|ref|
    trimmed: dict[str, Any] = field(default_factory=dict)  # what trim did, for the report

    def reference(self, graph: Graph) -> str:
        """Where the device keeps the reference outputs of this model's plans that compute the same
        layers in int8 (profiler `run --reference`): an int8 model's plan with some layers in float32
        has a reference of its own."""
        int8 = sorted(n.name for n in graph.nodes if graph.is_tunable_conv(n) and graph.tensors[n.outputs[0]].dtype == "int8")
        digest = hashlib.sha256("\n".join(int8).encode()).hexdigest()[:12]
        return f"{self.bench.session.workdir}/{self.bench.folder.name}-{digest}-reference{CHECK_INPUTS}.f32"

    def to_json(self) -> dict[str, Any]:
        """What the report shows: empty when no plan had an approximate layer."""
        if not self.errors and not self.trimmed:
            return {}
        return {"max_output_error": self.tolerance, **self.trimmed,
                "plan_errors": {n: float(f"{e:.3g}") for n, e in self.errors.items()}}

    def error(self, name: str, graph: Graph) -> float:
        """The output error of plan `name` (`graph`, already added to the bench) on the device."""
        if name not in self.errors:
            self.errors[name] = self._measure(name, graph)
        return self.errors[name]

    def check(self, remote: str, threads: int, graph: Graph, kernels: str = "") -> dict[str, Any]:
        """Profiler `run --check` of the plan uploaded at `remote` (`graph`) on CHECK_INPUTS seeded
        inputs against the model's reference outputs, its kernels overridden by `kernels`
        (`--kernels`): the profiler's JSON (max_abs_diff, max_abs_ref, error)."""
        return self.bench.session.profiler_json(
            ["run", "--plan", remote, "--threads", str(threads), "--warmup", "0", "--repeats", "1",
             "--check", str(CHECK_INPUTS), "--reference", self.reference(graph),
             *(["--kernels", kernels] if kernels else [])], self.bench.timeout)

    def _measure(self, uploaded: str, graph: Graph, kernels: str = "") -> float:
        """The output error of the uploaded plan `uploaded` (`graph`), its kernels overridden by
        `kernels`."""
        r = self.check(*self.bench.remote[uploaded], graph, kernels)
        diff, ref = r.get("max_abs_diff"), r.get("max_abs_ref")
        return float("inf") if diff is None else diff / (ref or 1.0)

    def acceptable(self, name: str, candidate: PlanCandidate) -> bool:
        """Whether the plan may be written: no approximate layer, or an output within the tolerance."""
        if not approximate_layers(candidate.graph):
            return True
        if name not in self.bench.remote:
            self.bench.add(name, candidate)
        measured = name in self.errors
        ok = self.error(name, candidate.graph) <= self.tolerance
        if not ok and not measured:  # said once, however often it is asked
            log.info("plan %s left out: output error %.2g of max|reference|, over max_output_error %.2g",
                     name, self.errors[name], self.tolerance)
        return ok

    def trim(self, name: str, candidate: PlanCandidate, fallbacks: list[Fallback],
             progress: Callable[[str], None] = log.info) -> PlanCandidate:
        """`candidate` if within the tolerance, else with as many of its approximate layers as stay
        within, the others on their exact variant. Every check runs the exact plan, uploaded once,
        with the approximate layers to keep as kernel overrides (profiler `run --kernels`)."""
        if not fallbacks:
            return candidate
        exact = self._keeping(candidate, fallbacks)
        self.bench.add(f"{name}-exact", exact)
        approximate = {f.index: candidate.graph.nodes[f.index].kernel for f in fallbacks}

        def check(layers: list[Fallback]) -> float:  # a variant key is --kernels' "method,k=v,..."
            spec = ";".join(f"{f.index}={variant_key(approximate[f.index])}" for f in layers)
            return self._measure(f"{name}-exact", exact.graph, spec)

        probes = [{"kept": len(fallbacks), "error": check(fallbacks)}]
        if probes[0]["error"] <= self.tolerance:
            self.errors[name] = probes[0]["error"]
            self.trimmed = {"approximate_layers": len(fallbacks), "kept": len(fallbacks), "probes": probes}
            return candidate
        # Each layer's share of the error: its error alone over the exact plan's (errors from
        # independent roundings add as squares); then the layers by time saved per share.
        progress(f"output error {probes[0]['error']:.2g} of max|reference| is over max_output_error "
                 f"{self.tolerance:.2g}: checking each of the {len(fallbacks)} approximate layers alone")
        floor = self._measure(f"{name}-exact", exact.graph, "")
        share = {f.index: max(check([f]) ** 2 - floor ** 2, 1e-30) for f in fallbacks}
        order = sorted(fallbacks, key=lambda f: -max(f.saved_ms, 0.0) / share[f.index])
        within, over = 0, len(order)  # keeping none is exact: within by definition
        while over - within > 1:
            mid = (within + over) // 2
            probes.append({"kept": mid, "error": check(order[:mid])})
            within, over = (mid, over) if probes[-1]["error"] <= self.tolerance else (within, mid)
        log.info("plan %s: %d of its %d approximate layers kept within max_output_error %.2g (%d checks)",
                 name, within, len(order), self.tolerance, len(probes) + len(order) + 1)
        self.trimmed = {"approximate_layers": len(order), "kept": within, "exact_error": floor, "probes": probes}
        result = self._keeping(candidate, order[within:])
        if within:
            self.errors[name] = next(p["error"] for p in probes if p["kept"] == within)
        return result

    @staticmethod
    def _keeping(candidate: PlanCandidate, fallbacks: list[Fallback]) -> PlanCandidate:
        """`candidate` with the layers of `fallbacks` on their exact variant."""
        g = candidate.graph.copy()
        for f in fallbacks:
            params = dict(f.exact)
            g.nodes[f.index].set_kernel(params.pop("method"), params)
        return PlanCandidate(g, candidate.threads, candidate.baseline, candidate.simplicity)
