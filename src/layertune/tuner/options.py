"""Options files: which variants profile_and_optimize times (profile_options/README.md).

ELL's format is accepted unchanged (`convolution_methods`, `parallel`, `winograd_parameters` as a
list: the values of every Winograd block depth), plus the keys the method table gives every
parameter: its list key where it has one (`winograd_tiles`, `threads`) and
`"<method>_parameters": {"<parameter>": [values]}`. Every key, method, parameter and value range
comes from the core's method table; nothing here restates it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layertune.graph.fusion import FORMS
from layertune.jsonfile import read_json
from layertune.methods import methods, tunable_methods
from layertune.paths import shipped

DEFAULT_MAX_OUTPUT_ERROR = 5e-5  # of max|reference|: about fp32's own rounding in a deep model


PRECISIONS = ("int8", "float32")


@dataclass(frozen=True)
class ProfileOptions:
    methods: tuple[str, ...]
    parallel: tuple[bool, ...] = ()
    threads: tuple[int, ...] | None = None  # exact thread counts; overrides `parallel`
    values: dict[tuple[str, str], tuple[int, ...]] = field(default_factory=dict)  # (method, param) -> values
    fusion: tuple[str, ...] = FORMS  # the fusion forms whose plans are timed against the unfused chain
    # what an int8 model's convolutions are timed in: float32 too = each may be chosen in float32
    # (between DEQUANTIZE and QUANTIZE) where that measured faster
    precisions: tuple[str, ...] = PRECISIONS
    # the heights of the inverted-residual strips tried (fusion form `inverted_residual`); 0 = each
    # group's own (graph/fusion.py's budget)
    strip_rows: tuple[int, ...] = (0,)
    # the largest whole-model output error (of max|reference|) a plan with approximate methods may
    # have to be written (tuner/accuracy.py)
    max_output_error: float = DEFAULT_MAX_OUTPUT_ERROR


class OptionsError(ValueError):
    """An options file that is not valid: the message names the file and the key."""


def shipped_options(name: str) -> Path:
    """profile_options/<name> as shipped with layertune (package data, or this checkout's)."""
    return shipped(f"profile_options/{name}", f"profile_options/{name}", f"profile_options/{name}")


def _list_keys() -> dict[str, list[tuple[str, str]]]:
    """Each list key of the table -> the (method, parameter) pairs it gives values to."""
    keys: dict[str, list[tuple[str, str]]] = {}
    for name in tunable_methods():
        for p in methods()[name].params:
            if p.options_key and p.name != "threads":
                keys.setdefault(p.options_key, []).append((name, p.name))
    return keys


def _values(source: str, key: str, values: Any, method: str, param: str) -> tuple[int, ...]:
    if not isinstance(values, list) or not values:
        raise OptionsError(f"{source}: '{key}' must be a non-empty list")
    spec = methods()[method].param(param)
    for v in values:
        problem = spec.problem(v)
        if problem:
            raise OptionsError(f"{source}: '{key}': {problem}")
    return tuple(dict.fromkeys(values))


def parse_options(data: Any, source: str = "options") -> ProfileOptions:
    if not isinstance(data, dict):
        raise OptionsError(f"{source}: expected a JSON object")
    list_keys = _list_keys()
    method_keys = {f"{m}_parameters": m for m in tunable_methods()}
    known = ["convolution_methods", "parallel", "threads", "fusion", "precisions", "strip_rows", "max_output_error",
             *list_keys,
             *(k for k in method_keys if k not in list_keys)]
    for key in data:
        if key not in known and key != "comment":
            raise OptionsError(f"{source}: unknown key '{key}' (known: {', '.join(known)})")
    if "convolution_methods" not in data:
        raise OptionsError(f"{source}: missing key 'convolution_methods'")
    if "parallel" not in data and "threads" not in data:
        raise OptionsError(f"{source}: missing key 'parallel' (or 'threads')")
    chosen = data["convolution_methods"]
    if not isinstance(chosen, list) or not chosen or any(m not in tunable_methods() for m in chosen):
        raise OptionsError(f"{source}: 'convolution_methods' must be a non-empty list of {', '.join(tunable_methods())}")
    parallel = data.get("parallel", [])
    if not isinstance(parallel, list) or ("parallel" in data and not parallel) or any(not isinstance(p, bool) for p in parallel):
        raise OptionsError(f"{source}: 'parallel' must be a non-empty list of true / false")
    threads = None
    if "threads" in data:
        threads = _values(source, "threads", data["threads"], tunable_methods()[0], "threads")
    values: dict[tuple[str, str], tuple[int, ...]] = {}
    for key, value in data.items():
        if key in list_keys and not isinstance(value, dict):
            for method, param in list_keys[key]:
                values[(method, param)] = _values(source, key, value, method, param)
        elif key in method_keys:
            method = method_keys[key]
            if not isinstance(value, dict):
                raise OptionsError(f"{source}: '{key}' must be an object of parameter lists")
            for param, items in value.items():
                spec = methods()[method].param(param)
                if spec is None or param == "threads":
                    own = ", ".join(p.name for p in methods()[method].params if p.name != "threads")
                    raise OptionsError(f"{source}: unknown key '{key}.{param}' (known: {own})")
                values[(method, param)] = _values(source, f"{key}.{param}", items, method, param)
    fusion = data.get("fusion", list(FORMS))
    if not isinstance(fusion, list) or any(f not in FORMS for f in fusion):
        raise OptionsError(f"{source}: 'fusion' must be a list of some of {', '.join(FORMS)} ([] tries no fusion)")
    precisions = data.get("precisions", list(PRECISIONS))
    if not isinstance(precisions, list) or not precisions or any(p not in PRECISIONS for p in precisions):
        raise OptionsError(f"{source}: 'precisions' must be a non-empty list of {', '.join(PRECISIONS)}")
    strip_rows = data.get("strip_rows", [0])
    if (not isinstance(strip_rows, list) or not strip_rows
            or any(isinstance(r, bool) or not isinstance(r, int) or r < 0 for r in strip_rows)):
        raise OptionsError(f"{source}: 'strip_rows' must be a non-empty list of row counts (0: each group's own)")
    max_error = data.get("max_output_error", DEFAULT_MAX_OUTPUT_ERROR)
    if isinstance(max_error, bool) or not isinstance(max_error, (int, float)) or not 0 <= max_error < 1:
        raise OptionsError(f"{source}: 'max_output_error' must be a number in [0, 1) (of max|output|)")
    return ProfileOptions(methods=tuple(dict.fromkeys(chosen)), parallel=tuple(dict.fromkeys(parallel)),
                          threads=threads, values=values, fusion=tuple(dict.fromkeys(fusion)),
                          precisions=tuple(dict.fromkeys(precisions)), strip_rows=tuple(dict.fromkeys(strip_rows)),
                          max_output_error=float(max_error))


def load_options(path: str | Path) -> ProfileOptions:
    return parse_options(read_json(path, "options file", OptionsError), str(path))
