"""The convolution-method table, as the C++ core defines it (csrc/kernels/methods.cc).

Everything in Python that needs to know what a method is — which methods can be tuned, which
parameters each takes, their ranges, which layers they mean something for, where an options file
lists their values, whether a method can compute a layer — asks here; nothing restates it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from layertune import _core


@dataclass(frozen=True)
class MethodParam:
    name: str
    doc: str
    choices: tuple[int, ...]  # allowed values; empty: any integer in [min, max]
    min: int
    max: int
    default: int  # 0 in a block parameter: chosen from the layer's shape
    layers: str  # "any", "regular" or "depthwise"
    options_key: str  # the options file's list key for its values ("" if none)
    sweep: tuple[int, ...]  # values tuned when the options file names none

    def problem(self, value: Any) -> str | None:
        """Why `value` is not allowed (naming the parameter), or None."""
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{self.name}: expected an integer, got {value!r}"
        if self.choices and value not in self.choices:
            *first, last = map(str, self.choices)
            allowed = f"{', '.join(first)} or {last}" if first else last
            return f"{self.name}: must be {allowed}, got {value}"
        if not self.choices and not self.min <= value <= self.max:
            return f"{self.name}: must be an integer in [{self.min}, {self.max}], got {value}"
        return None


@dataclass(frozen=True)
class Method:
    name: str
    doc: str
    tunable: bool
    params: tuple[MethodParam, ...]  # "threads" first
    dtype: str  # what its layers compute in: "float32" or "int8"
    # less accurate than its dtype's own arithmetic: kept only within the options' max_output_error
    approximate: bool = False

    def param(self, name: str) -> MethodParam | None:
        return next((p for p in self.params if p.name == name), None)


@lru_cache(maxsize=None)
def methods() -> dict[str, Method]:
    """Every method of the core, in table order (``reference`` is the oracle, not tunable)."""
    out = {}
    for m in json.loads(_core.methods_json()):
        params = tuple(MethodParam(p["name"], p["doc"], tuple(p["choices"]), p["min"], p["max"], p["default"],
                                   p["layers"], p["options_key"], tuple(p["sweep"])) for p in m["params"])
        out[m["name"]] = Method(m["name"], m["doc"], m["tunable"], params, m["dtype"], m["approximate"])
    return out


@lru_cache(maxsize=None)
def unavailable_methods() -> dict[str, str]:
    """The methods this machine's CPU cannot run (amx_bf16x3 without AMX-BF16), with the reason."""
    return json.loads(_core.unavailable_methods_json())


def tunable_methods(dtype: str | None = None) -> tuple[str, ...]:
    """The tunable methods (of layers computing in `dtype` only, if given), in table order."""
    return tuple(name for name, m in methods().items() if m.tunable and dtype in (None, m.dtype))


def why_not(conv: dict[str, Any], method: str, params: dict[str, int] | None = None) -> str | None:
    """Why the core cannot compute this convolution (``Graph.conv_info``, whose ``dtype`` says what
    it computes in) with this method and these parameters, or None when it can. No weights are
    packed."""
    return _core.why_not_applicable(*_layer_args(conv), method, dict(params or {}), conv.get("dtype", "float32")) or None


def default_int8_method(conv: dict[str, Any]) -> str:
    """An int8 convolution's kernel when none is chosen: the first tunable int8 method of the
    table that computes it, else the reference (the core's int8::default_method, the same rule)."""
    return next((m for m in tunable_methods("int8") if not why_not(conv, m)), "int8_reference")


def _layer_args(conv: dict[str, Any]) -> tuple:
    kh, kw, _, out_c = conv["weights"]
    return (tuple(conv["input"]), (kh, kw, out_c), tuple(conv["strides"]), tuple(conv["dilations"]),
            tuple(conv["pads"]), conv["groups"], conv["activation"])


def meaningful_params(conv: dict[str, Any], method: str) -> tuple[str, ...]:
    """The method's parameters that mean something for this convolution (their layer kind
    matches): the ones its variants vary."""
    return tuple(_core.meaningful_params(*_layer_args(conv), method))


def options_table() -> str:
    """The Markdown table of the tunable methods' parameters (profile_options/README.md holds a
    copy that a test keeps equal to this)."""
    rows = ["| method | parameter | values | kernel default | layers | options keys | tuned when not named |",
            "| --- | --- | --- | --- | --- | --- | --- |"]

    def row(method: str, p: MethodParam, keys: str) -> str:
        values = " / ".join(map(str, p.choices)) if p.choices else f"{p.min}..{p.max}"
        default = str(p.default) if p.default else ("the ISA's" if 0 in p.choices else "chosen from the shape")
        sweep = ", ".join(map(str, p.sweep)) if p.sweep else "-"
        return f"| {method} | `{p.name}`: {p.doc} | {values} | {default} | {p.layers} | {keys} | {sweep} |"

    tunable = [m for m in methods().values() if m.tunable]
    rows.append(row("every method", tunable[0].param("threads"), "`threads`, or `parallel` (true: every core, false: 1)"))
    for m in tunable:
        for p in m.params:
            if p.name != "threads":
                keys = (f"`{p.options_key}`, " if p.options_key else "") + f"`{m.name}_parameters.{p.name}`"
                rows.append(row(f"`{m.name}`", p, keys))
    return "\n".join(rows)
