"""The Python face of the C++ convolution kernels.

Arguments follow ``tf.nn.conv2d`` / ``tf.nn.depthwise_conv2d``: NHWC float32 activations, conv
weights HWIO ``(kh, kw, C/groups, C_out)``, depthwise weights ``(kh, kw, C, multiplier)``.
Bad arguments raise ``ValueError`` naming the argument.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

from layertune import _core
from layertune.methods import methods

Padding = Union[str, Sequence[Sequence[int]]]

_ACTIVATIONS = {None: "none", "none": "none", "linear": "none", "relu": "relu", "relu6": "relu6",
                "relu_n1_to_1": "relu_n1_to_1"}


def conv_methods(dtype: str = "float32") -> dict[str, tuple[str, ...]]:
    """The convolution methods of layers computing in `dtype` and the parameters each accepts:
    by default the float32 ones that conv2d / Conv2D take (``reference`` is the oracle); "int8"
    lists the int8 rows (quantized models' layers). The whole table, with ranges and defaults, is
    ``layertune.methods.methods()``."""
    return {name: tuple(p.name for p in m.params) for name, m in methods().items() if m.dtype == dtype}


def peak_gflops(threads: int = 1, seconds: float = 0.5) -> float:
    """This CPU's measured fp32 peak (an FMA loop in the core), in GFLOP/s."""
    return float(_core.peak_gflops(int(threads), float(seconds)))


def profiler_path() -> Path:
    """The host build of ``layertune-profiler`` that ships inside the installed package."""
    bundled = Path(__file__).parent / "bin" / "layertune-profiler"
    if bundled.exists():
        return bundled
    found = shutil.which("layertune-profiler")
    if found:
        return Path(found)
    raise FileNotFoundError("layertune-profiler is not installed; reinstall layertune with `pip install .`")


def _as_float_array(name: str, value: Any, ndim: int | None) -> np.ndarray:
    """float32, C-contiguous copy/view of `value`; ValueError for what cannot be converted."""
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{name}: cannot be converted to a float32 array ({exc})") from None
    if arr.dtype.kind not in "fiub" or arr.dtype.kind == "b":
        raise ValueError(f"{name}: expected real numbers, got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _pair(name: str, value: Any) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    try:
        items = [int(v) for v in value]
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected an int or a pair of ints, got {value!r}") from None
    if len(items) == 4 and items[0] == items[3] == 1:  # TensorFlow's NHWC form (1, sh, sw, 1)
        items = items[1:3]
    if len(items) != 2:
        raise ValueError(f"{name}: expected an int or a pair of ints, got {value!r}")
    return items[0], items[1]


def _pads(padding: Padding, in_hw: tuple[int, int], kernel: tuple[int, int], strides: tuple[int, int],
          dilations: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) from "SAME", "VALID" or ((top, bottom), (left, right))."""
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "VALID":
            return 0, 0, 0, 0
        if mode == "SAME":
            top, bottom = _core.same_padding(in_hw[0], kernel[0], strides[0], dilations[0])
            left, right = _core.same_padding(in_hw[1], kernel[1], strides[1], dilations[1])
            return top, bottom, left, right
        raise ValueError(f"padding: expected 'SAME', 'VALID' or ((top, bottom), (left, right)), got {padding!r}")
    try:
        (top, bottom), (left, right) = padding
        pads = tuple(int(v) for v in (top, bottom, left, right))
    except (TypeError, ValueError):
        raise ValueError(f"padding: expected 'SAME', 'VALID' or ((top, bottom), (left, right)), got {padding!r}") from None
    if min(pads) < 0:
        raise ValueError(f"padding: pads must not be negative, got {padding!r}")
    return pads  # type: ignore[return-value]


def _activation(activation: str | None) -> str:
    key = activation.lower() if isinstance(activation, str) else activation
    if key not in _ACTIVATIONS:
        raise ValueError(f"activation: expected None, 'relu', 'relu6' or 'relu_n1_to_1', got {activation!r}")
    return _ACTIVATIONS[key]


def _epilogue(epilogue: str) -> str:
    """The fused tail after bias and activation: comma-separated steps, each ``swish``,
    ``hard_swish`` or ``add:<activation>`` (adds `run`'s residual, then clamps)."""
    if not isinstance(epilogue, str):
        raise ValueError(f"epilogue: expected a string such as 'swish' or 'add:relu', got {epilogue!r}")
    return epilogue


def _method_params(method: str, threads: Any, method_params: dict[str, Any]) -> dict[str, int]:
    if not isinstance(method, str):
        raise ValueError(f"method: expected a method name, got {method!r}")
    params = {"threads": threads, **method_params}
    out = {}
    for name, value in params.items():
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name}: expected an integer, got {value!r}")
        out[name] = int(value)
    return out


class Conv2D:
    """A prepared convolution: weights packed / transformed once, then `run` many times.

    Takes the arguments of `conv2d` with the input's shape instead of the input.
    `depthwise=True` reads `w` as ``(kh, kw, C, multiplier)``.
    """

    def __init__(self, input_shape: Sequence[int], w: Any, bias: Any = None, *, strides: Any = (1, 1),
                 padding: Padding = "SAME", dilations: Any = (1, 1), groups: int = 1,
                 activation: str | None = None, method: str = "unrolled", threads: int = 1,
                 depthwise: bool = False, epilogue: str = "", **method_params: Any) -> None:
        try:
            shape = tuple(int(v) for v in input_shape)
        except (TypeError, ValueError):
            raise ValueError(f"x: expected a 4-D shape, got {input_shape!r}") from None
        if len(shape) != 4:
            raise ValueError(f"x: expected a 4-D array (N, H, W, C), got shape {shape}")
        w = _as_float_array("w", w, 4)
        if depthwise:
            kh, kw, channels, multiplier = w.shape
            if channels != shape[3]:
                raise ValueError(f"w: depthwise weights have {channels} channels, the input has {shape[3]}")
            w = w.reshape(kh, kw, 1, channels * multiplier)
            groups = channels
        if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
            raise ValueError(f"groups: expected a positive integer, got {groups!r}")
        if shape[3] % groups or w.shape[2] * groups != shape[3]:
            raise ValueError(f"w: shape {w.shape} does not fit an input with {shape[3]} channels and groups={groups} "
                             f"(expected w.shape[2] == {shape[3] // groups if shape[3] % groups == 0 else '?'})")
        if w.shape[3] % groups:
            raise ValueError(f"w: output channels ({w.shape[3]}) are not divisible by groups ({groups})")
        b = None
        if bias is not None:
            b = _as_float_array("bias", bias, 1)
            if b.shape != (w.shape[3],):
                raise ValueError(f"bias: expected shape ({w.shape[3]},), got {b.shape}")
        strides_hw = _pair("strides", strides)
        dilations_hw = _pair("dilations", dilations)
        pads = _pads(padding, (shape[1], shape[2]), (w.shape[0], w.shape[1]), strides_hw, dilations_hw)
        self.method = method
        self._kernel = _core.ConvKernel(shape, w, b, strides_hw, dilations_hw, pads, int(groups),
                                        _activation(activation), method, _method_params(method, threads, method_params),
                                        _epilogue(epilogue))
        self.input_shape = shape
        self.epilogue = epilogue

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        return tuple(self._kernel.output_shape)

    @property
    def flops(self) -> int:
        """FLOPs of the direct algorithm (2 x multiply-adds), whatever the method."""
        return int(self._kernel.flops)

    def run(self, x: Any, residual: Any = None) -> np.ndarray:
        """The output; `residual` is the tensor an epilogue's ``add`` step adds (the output's shape)."""
        if residual is not None:
            residual = _as_float_array("residual", residual, 4)
        return self._kernel.run(self._checked(x), residual)

    def time(self, x: Any, warmup: int = 3, repeats: int = 10) -> list[float]:
        """Seconds per run of the kernel alone (after `warmup` untimed runs)."""
        return list(self._kernel.time(self._checked(x), int(warmup), int(repeats)))

    def _checked(self, x: Any) -> np.ndarray:
        x = _as_float_array("x", x, 4)
        if x.shape != self.input_shape:
            raise ValueError(f"x: expected shape {self.input_shape}, got {x.shape}")
        return x

    def __repr__(self) -> str:
        return f"Conv2D({self._kernel!r})"


def conv2d(x: Any, w: Any, bias: Any = None, *, strides: Any = (1, 1), padding: Padding = "SAME",
           dilations: Any = (1, 1), groups: int = 1, activation: str | None = None, method: str = "unrolled",
           threads: int = 1, **method_params: Any) -> np.ndarray:
    """2-D convolution of NHWC `x` with HWIO `w` (as ``tf.nn.conv2d``, plus groups, bias and a fused activation)."""
    x = _as_float_array("x", x, 4)
    return Conv2D(x.shape, w, bias, strides=strides, padding=padding, dilations=dilations, groups=groups,
                  activation=activation, method=method, threads=threads, **method_params).run(x)


def depthwise_conv2d(x: Any, w: Any, bias: Any = None, *, strides: Any = (1, 1), padding: Padding = "SAME",
                     dilations: Any = (1, 1), activation: str | None = None, method: str = "simple",
                     threads: int = 1, **method_params: Any) -> np.ndarray:
    """Depthwise convolution with `w` of shape ``(kh, kw, C, multiplier)`` (as ``tf.nn.depthwise_conv2d``)."""
    x = _as_float_array("x", x, 4)
    return Conv2D(x.shape, w, bias, strides=strides, padding=padding, dilations=dilations, activation=activation,
                  method=method, threads=threads, depthwise=True, **method_params).run(x)
