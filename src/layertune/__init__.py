"""layertune: per-layer convolution autotuning for small CPU targets."""

from layertune.kernels import (
    Conv2D,
    conv2d,
    conv_methods,
    depthwise_conv2d,
    peak_gflops,
    profiler_path,
)

from layertune.model import Layer, Model, load

__version__ = "0.1.0"
__all__ = [
    "Conv2D",
    "Layer",
    "Model",
    "load",
    "conv2d",
    "conv_methods",
    "depthwise_conv2d",
    "peak_gflops",
    "profiler_path",
    "__version__",
]
