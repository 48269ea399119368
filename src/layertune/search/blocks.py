"""The blocks of a pipeline: a model, a dataset, optimizers (compilers) and a runtime. Each one
runs inside a trial's own process (search/trial.py), so a crash or hang costs one trial."""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np


# -- models --------------------------------------------------------------------------------

@dataclass
class ModelInfo:
    path: Path
    format: str  # keras, tflite
    input_shape: tuple[int, ...]  # with the batch dimension (1, ...)
    num_classes: int
    input_scale: float


def load_model_info(name: str, params: dict[str, Any]) -> ModelInfo:
    path = Path(params["model_path"])
    if not path.is_file():
        raise ValueError(f"model_path: {path} does not exist")
    if name == "KerasModel":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import tensorflow as tf
        model = tf.keras.models.load_model(path, compile=False)
        shape = (1, *model.input_shape[1:])
        classes = int(model.output_shape[-1])
        fmt = "keras"
    else:
        from layertune.model import load
        m = load(path)
        shape, classes, fmt = m.input_shapes[0], int(m.output_shapes[0][-1]), "tflite"
    return ModelInfo(path, fmt, tuple(int(d) for d in shape), int(params.get("num_classes") or classes),
                     float(params.get("input_scale", 1.0)))


# -- datasets ------------------------------------------------------------------------------

@dataclass
class Data:
    x: np.ndarray  # (n, *input shape without batch), float32
    y: np.ndarray | None  # labels, or None (performance metrics only)
    calibration: np.ndarray  # inputs for int8 calibration


def _fit(images: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(n, h, w) grey images -> (n, H, W, C): nearest-neighbour resize, channels repeated."""
    n, h, w = images.shape
    H, W, C = shape
    rows = (np.arange(H) * h // H).clip(0, h - 1)
    cols = (np.arange(W) * w // W).clip(0, w - 1)
    out = images[:, rows][:, :, cols]
    return np.repeat(out[..., None], C, axis=3).astype(np.float32)


def load_data(name: str, params: dict[str, Any], model: ModelInfo) -> Data:
    shape = model.input_shape[1:]
    n = int(params.get("num_samples") or 0)
    if name == "SyntheticDataset":
        rng = np.random.default_rng(params.get("seed", 0))
        x = rng.uniform(0, 1, (max(n, 1), *shape)).astype(np.float32)
        return Data(x * model.input_scale, None, x[:10] * model.input_scale)
    if name == "DigitsDataset":
        from layertune.examples.digits import load_split
        x_train, _, x_test, y_test = load_split(seed=params.get("seed", 0))
        x = _fit(x_test[..., 0], shape) * model.input_scale
        cal = _fit(x_train[: params.get("calibration_samples", 100), ..., 0], shape) * model.input_scale
        return Data(x[:n] if n else x, y_test[:n] if n else y_test, cal)
    # ImageFolderDataset: one folder per class, classes in sorted order
    from PIL import Image
    root = Path(params["dataset_root"])
    classes = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not classes:
        raise ValueError(f"dataset_root: {root} has no class folders")
    xs, ys = [], []
    for label, folder in enumerate(classes):
        for f in sorted(folder.iterdir()):
            with Image.open(f) as img:
                img = img.convert("RGB" if shape[-1] == 3 else "L").resize((shape[1], shape[0]))
                arr = np.asarray(img, np.float32) / 255.0
            xs.append(arr.reshape(shape))
            ys.append(label)
    x, y = np.stack(xs) * model.input_scale, np.array(ys)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    return Data(x[:n] if n else x, y[:n] if n else y, x[:100])


# -- optimizers ----------------------------------------------------------------------------

def compile_step(name: str, params: dict[str, Any], src: Path, src_format: str, data: Data, out_dir: Path) -> Path:
    """Runs one optimizer; returns the path of the model it produced."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if name == "TFLiteCompiler":
        return _tflite_compile(params, src, data, out_dir / "model.tflite")
    if name == "TVMCompiler":
        from layertune.search.tvm_compiler import compile_step as tvm_compile_step
        return tvm_compile_step(params, src, out_dir / "model.so")
    return _layertune_compile(params, src, out_dir)


def _tflite_compile(params: dict[str, Any], src: Path, data: Data, out: Path) -> Path:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    converter = tf.lite.TFLiteConverter.from_keras_model(tf.keras.models.load_model(src, compile=False))
    target = params.get("target", "default")
    if target in ("float16", "int8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if target == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if target == "int8":
        cal = data.calibration

        def representative():
            for i in range(len(cal)):
                yield [cal[i: i + 1]]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        types = {"float32": tf.float32, "int8": tf.int8, "uint8": tf.uint8}
        converter.inference_input_type = types[params.get("inference_input_type", "float32")]
        converter.inference_output_type = types[params.get("inference_output_type", "float32")]
    with contextlib.redirect_stdout(io.StringIO()):
        out.write_bytes(converter.convert())
    return out


def _layertune_compile(params: dict[str, Any], src: Path, out_dir: Path) -> Path:
    from layertune.cli import _shipped_options
    from layertune.profile_and_optimize import Device, RunSettings, profile_and_optimize
    from layertune.targets import resolve_target
    from layertune.variants import load_options

    options = params.get("options", "quick.json")
    options_path = options if Path(options).is_file() else _shipped_options(options)
    settings = RunSettings(resolve_target("host"), load_options(options_path), out_dir / "tuning", [Device(None)],
                           repeats=int(params.get("repeats", 3)), verify_rounds=1)
    profile_and_optimize([src], settings)
    plans = list((out_dir / "tuning").glob("*/optimized.ltplan"))
    out = out_dir / "model.ltplan"
    os.replace(plans[0], out)
    return out


# -- runtimes ------------------------------------------------------------------------------

def make_runtime(name: str, params: dict[str, Any], model_path: Path, model_format: str) -> Callable[[np.ndarray], np.ndarray]:
    """A function: one input batch -> the model's first output as real values."""
    threads = int(params.get("num_threads", 1))
    if name == "TFLiteRuntime":
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
        kwargs = {}
        if not params.get("use_xnnpack", True):
            kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        it = Interpreter(model_path=str(model_path), num_threads=threads, **kwargs)
        it.allocate_tensors()
        inp, outp = it.get_input_details()[0], it.get_output_details()[0]

        def run_tflite(x: np.ndarray) -> np.ndarray:
            if inp["dtype"] != np.float32:
                scale, zero = inp["quantization"]
                info = np.iinfo(inp["dtype"])
                x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(inp["dtype"])
            it.set_tensor(inp["index"], x)
            it.invoke()
            y = it.get_tensor(outp["index"])
            if outp["dtype"] != np.float32:
                scale, zero = outp["quantization"]
                y = (y.astype(np.float32) - zero) * scale
            return y
        return run_tflite
    if name == "TVMRuntime":
        os.environ["TVM_NUM_THREADS"] = str(threads)
        import tvm
        from tvm import relax
        vm = relax.VirtualMachine(tvm.runtime.load_module(str(model_path)), tvm.cpu())
        main = vm["main"]
        return lambda x: main(tvm.runtime.tensor(np.ascontiguousarray(x, np.float32))).numpy()
    from layertune.model import load
    model = load(model_path, threads=threads)
    return lambda x: np.asarray(model.run(x))
