"""The variants to time for one layer: every tunable method the options name that can compute
the layer and that the device's CPU can run (for an int8 layer, every int8 method when the
options name none), times the product of the values of each of its parameters that applies to the
layer (the options' values, else the table's sweep; a parameter with neither is left to the
kernel), at each thread count. What applies is asked of the core's method table."""

from __future__ import annotations

import itertools
from typing import Any, Collection

from layertune.methods import meaningful_params, methods, tunable_methods, why_not
from layertune.tuner.options import ProfileOptions


def thread_counts(options: ProfileOptions, device_cores: int) -> tuple[int, ...]:
    """`threads` if given, else `parallel`: true = every core of the device, false = one, both =
    every count from 1 to the device's cores (threads per layer are a tuning dimension)."""
    if options.threads:
        return options.threads
    if set(options.parallel) == {True, False}:
        return tuple(range(1, device_cores + 1))
    return tuple(dict.fromkeys(device_cores if p else 1 for p in options.parallel))


def method_variants(conv: dict[str, Any], method: str, options: ProfileOptions) -> list[dict[str, int]]:
    """The parameter settings of one method for one convolution (Graph.conv_info), without
    threads; [] when the method cannot compute it."""
    if why_not(conv, method):
        return []
    axes = []
    meaningful = meaningful_params(conv, method)
    for p in methods()[method].params:
        values = options.values.get((method, p.name)) or p.sweep
        if p.name != "threads" and values and p.name in meaningful:
            axes.append([(p.name, v) for v in values])
    return [dict(combo) for combo in itertools.product(*axes)]


def layer_methods(conv: dict[str, Any], options: ProfileOptions) -> tuple[str, ...]:
    """The methods tried on a convolution: those of the options for its dtype; for an int8 layer
    whose options name no int8 method (ELL's files know none), every tunable int8 method."""
    dtype = conv.get("dtype", "float32")
    named = tuple(m for m in options.methods if methods()[m].dtype == dtype)
    return named or (tunable_methods("int8") if dtype == "int8" else ())


def layer_variants(conv: dict[str, Any], options: ProfileOptions, device_cores: int,
                   unavailable: Collection[str] = ()) -> list[dict[str, Any]]:
    """The variants ({"method": ..., "threads": ..., params...}) that apply to one convolution on a
    device whose CPU cannot run the `unavailable` methods (its profiler's `info` names them)."""
    chosen = tuple(m for m in layer_methods(conv, options) if m not in unavailable)
    per_method = {m: method_variants(conv, m, options) for m in chosen}
    return [{"method": m, "threads": threads, **params}
            for threads in thread_counts(options, device_cores)
            for m in chosen for params in per_method[m]]
