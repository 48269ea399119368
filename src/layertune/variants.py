"""Options JSON -> the variants to time for each layer.

The file format is ELL's (`convolution_methods`, `parallel`, `winograd_parameters`: every N^3
combination of the values as separable_block_depth / nonseparable_filter_block_depth /
nonseparable_channel_depth), plus layertune's extensions, documented in profile_options/README.md:
`winograd_tiles`, `threads` and `unrolled_parameters`. Only variants that apply to a layer are
generated (no Winograd on a strided layer, no separable block depth on a regular convolution).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layertune import _core
from layertune.jsonfile import read_json

METHODS = ("simple", "unrolled", "winograd")
_KEYS = {"convolution_methods": list, "parallel": list, "winograd_parameters": list, "winograd_tiles": list,
         "threads": list, "unrolled_parameters": dict, "comment": str}


@dataclass(frozen=True)
class ProfileOptions:
    methods: tuple[str, ...]
    parallel: tuple[bool, ...]
    winograd_parameters: tuple[int, ...]
    winograd_tiles: tuple[int, ...] = (2, 4)
    threads: tuple[int, ...] | None = None  # overrides `parallel`
    block_m: tuple[int, ...] = ()
    block_k: tuple[int, ...] = ()


class OptionsError(ValueError):
    """An options file that is not valid: the message names the file and the key."""


def _ints(source: str, key: str, values: Any, allowed: set[int] | None = None) -> tuple[int, ...]:
    if not isinstance(values, list) or not values:
        raise OptionsError(f"{source}: '{key}' must be a non-empty list")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise OptionsError(f"{source}: '{key}' must hold positive integers, got {v!r}")
        if allowed is not None and v not in allowed:
            raise OptionsError(f"{source}: '{key}' values must be in {sorted(allowed)}, got {v!r}")
    return tuple(dict.fromkeys(values))


def parse_options(data: Any, source: str = "options") -> ProfileOptions:
    if not isinstance(data, dict):
        raise OptionsError(f"{source}: expected a JSON object")
    for key, value in data.items():
        if key not in _KEYS:
            raise OptionsError(f"{source}: unknown key '{key}' (known: {', '.join(k for k in _KEYS if k != 'comment')})")
        if not isinstance(value, _KEYS[key]):
            raise OptionsError(f"{source}: '{key}' must be a {_KEYS[key].__name__}, got {type(value).__name__}")
    for key in ("convolution_methods", "parallel"):
        if key not in data:
            raise OptionsError(f"{source}: missing key '{key}'")
    methods = data["convolution_methods"]
    if not methods or any(m not in METHODS for m in methods):
        raise OptionsError(f"{source}: 'convolution_methods' must be a non-empty list of {', '.join(METHODS)}")
    parallel = data["parallel"]
    if not parallel or any(not isinstance(p, bool) for p in parallel):
        raise OptionsError(f"{source}: 'parallel' must be a non-empty list of true / false")
    if "winograd" in methods and "winograd_parameters" not in data:
        raise OptionsError(f"{source}: 'winograd_parameters' is required when 'convolution_methods' has winograd")
    unrolled = data.get("unrolled_parameters", {})
    for key in unrolled:
        if key not in ("block_m", "block_k"):
            raise OptionsError(f"{source}: unknown key 'unrolled_parameters.{key}' (known: block_m, block_k)")
    return ProfileOptions(
        methods=tuple(dict.fromkeys(methods)),
        parallel=tuple(dict.fromkeys(parallel)),
        winograd_parameters=_ints(source, "winograd_parameters", data["winograd_parameters"]) if "winograd_parameters" in data else (),
        winograd_tiles=_ints(source, "winograd_tiles", data["winograd_tiles"], {2, 4}) if "winograd_tiles" in data else (2, 4),
        threads=_ints(source, "threads", data["threads"]) if "threads" in data else None,
        block_m=_ints(source, "unrolled_parameters.block_m", unrolled["block_m"]) if "block_m" in unrolled else (),
        block_k=_ints(source, "unrolled_parameters.block_k", unrolled["block_k"]) if "block_k" in unrolled else (),
    )


def load_options(path: str | Path) -> ProfileOptions:
    return parse_options(read_json(path, "options file", OptionsError), str(path))


def thread_counts(options: ProfileOptions, device_cores: int) -> tuple[int, ...]:
    """`threads` if given, else `parallel`: true = every core of the device, false = one."""
    if options.threads:
        return options.threads
    return tuple(dict.fromkeys(device_cores if p else 1 for p in options.parallel))


def layer_variants(conv: dict[str, Any], options: ProfileOptions, device_cores: int) -> list[dict[str, Any]]:
    """The variants ({"method": ..., params...}) that apply to one convolution (Graph.conv_info)."""
    kh, kw, cig, out_c = conv["weights"]
    depthwise = conv["groups"] > 1 and cig == 1
    winograd_ok = (kh, kw) == (3, 3) and conv["strides"] == (1, 1) and conv["dilations"] == (1, 1)
    out = []
    for threads in thread_counts(options, device_cores):
        for method in options.methods:
            if method == "simple":
                out.append({"method": "simple", "threads": threads})
            elif method == "unrolled":
                for bm, bk in itertools.product(options.block_m or (None,), options.block_k or (None,)):
                    v = {"method": "unrolled", "threads": threads}
                    if bm:
                        v["block_m"] = bm
                    if bk:
                        v["block_k"] = bk
                    out.append(v)
            elif method == "winograd" and winograd_ok:
                for tile in options.winograd_tiles:
                    if depthwise:
                        for sbd in options.winograd_parameters:
                            out.append({"method": "winograd", "threads": threads, "winograd_tile": tile,
                                        "separable_block_depth": sbd})
                    else:
                        for fbd, cd in itertools.product(options.winograd_parameters, repeat=2):
                            out.append({"method": "winograd", "threads": threads, "winograd_tile": tile,
                                        "nonseparable_filter_block_depth": fbd, "nonseparable_channel_depth": cd})
    known = _core.conv_methods()
    for v in out:  # the names here and the core's must agree
        assert set(v) - {"method"} <= set(known[v["method"]]), v
    return out
