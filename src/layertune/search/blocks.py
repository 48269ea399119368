"""The blocks layertune implements, one class each: a model, a dataset, optimizers (compilers)
and runtimes. `layertune.search.blocks.<Name>` is each one's class path in configs; Kenning's
class paths for the same blocks are aliases (`kenning_paths`). Each block runs inside a trial's
own process (search/trial.py), so a crash or hang costs one trial."""

from __future__ import annotations

import contextlib
import io
import math
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from layertune.examples.digits import load_split
from layertune.model import load
from layertune.runners.devices import Device
from layertune.search.block import (OPTIMIZER_PARAMS, RUNTIME_PARAMS, Data, Dataset, ModelInfo, ModelWrapper, Optimizer,
                                    Param, Runtime)
from layertune.search.tvm_compiler import TVMCompiler
from layertune.tuner.driver import RunSettings, profile_and_optimize
from layertune.tuner.options import load_options, shipped_options
from layertune.tuner.protocol import Settings

__all__ = ["KerasModel", "TFLiteModel", "ONNXModel", "SyntheticDataset", "DigitsDataset", "ImageFolderDataset",
           "TFLiteCompiler", "ONNXCompiler", "TVMCompiler", "LayerTuneCompiler", "TFLiteRuntime", "ONNXRuntime",
           "TVMRuntime", "LayerTuneRuntime", "NativeRuntime"]

_WRAPPER_PARAMS = {"model_path": Param(str, required=True), "num_classes": Param(int),
                   "input_scale": Param((int, float), 1.0)}
_THREADS = Param(int, 1)


def _tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    return tf


# -- models --------------------------------------------------------------------------------

class _FileModel(ModelWrapper, abstract=True):
    params_spec = _WRAPPER_PARAMS

    @classmethod
    def check(cls, params: dict[str, Any]) -> tuple[str, str] | None:
        path = str(params.get("model_path", ""))
        if path.startswith(("kenning://", "http://", "https://")):
            return "model_path", (f"{path} is a resource Kenning downloads, and layertune runs offline: give the path "
                                  "of a local .h5 / .keras / .tflite / .onnx file")
        return None

    def _info(self, shape: tuple[int, ...], classes: int) -> ModelInfo:
        return ModelInfo(self.model_path(), self.output, tuple(int(d) for d in shape),
                         int(self.params.get("num_classes") or classes), float(self.params["input_scale"]))

    def model_path(self) -> Path:
        path = Path(self.params["model_path"])
        if not path.is_file():
            raise ValueError(f"model_path: {path} does not exist")
        return path


class KerasModel(_FileModel):
    """A .keras / .h5 model (its input shape and class count read with TensorFlow). Kenning's
    wrappers whose own pre-processing is plain (the model runs on the data as given; the pet
    wrapper's normalization lives in its dataset) are aliases."""
    output = "keras"
    kenning_paths = ("kenning.modelwrappers.classification.tensorflow_pet_dataset.TensorFlowPetDatasetMobileNetV2",
                     "kenning.modelwrappers.classification.tflite_magic_wand.MagicWandModelWrapper")

    def info(self) -> ModelInfo:
        model = _tensorflow().keras.models.load_model(self.model_path(), compile=False)
        return self._info((1, *model.input_shape[1:]), int(model.output_shape[-1]))


class TFLiteModel(_FileModel):
    """A .tflite model (its shapes read with layertune's importer)."""
    output = "tflite"

    def info(self) -> ModelInfo:
        m = load(self.model_path())
        return self._info(m.input_shapes[0], int(m.output_shapes[0][-1]))


class ONNXModel(_FileModel):
    """An .onnx model with static input shapes (read with layertune's importer). NCHW inputs are
    fine: the datasets fill the model's input shape as it is."""
    output = "onnx"

    def info(self) -> ModelInfo:
        m = load(self.model_path())
        return self._info(m.input_shapes[0], int(m.output_shapes[0][-1]))


# -- datasets ------------------------------------------------------------------------------

def _fit(images: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(n, h, w) grey images -> (n, H, W, C): nearest-neighbour resize, channels repeated; a
    channels-first shape (C, H, W) with C of 1 or 3 and a last dimension that is not gets (n, C, H, W)."""
    if shape[0] in (1, 3) and shape[2] not in (1, 3):
        return np.ascontiguousarray(np.moveaxis(_fit(images, (shape[1], shape[2], shape[0])), 3, 1))
    n, h, w = images.shape
    H, W, C = shape
    rows = (np.arange(H) * h // H).clip(0, h - 1)
    cols = (np.arange(W) * w // W).clip(0, w - 1)
    out = images[:, rows][:, :, cols]
    return np.repeat(out[..., None], C, axis=3).astype(np.float32)


class SyntheticDataset(Dataset):
    """Uniform random inputs, no labels (performance metrics only)."""
    params_spec = {"num_samples": Param(int, 50), "seed": Param(int, 0)}
    kenning_paths = ("kenning.datasets.random_dataset.RandomizedClassificationDataset",)

    def load(self, model: ModelInfo) -> Data:
        rng = np.random.default_rng(self.params["seed"])
        x = rng.uniform(0, 1, (max(int(self.params["num_samples"]), 1), *model.input_shape[1:])).astype(np.float32)
        return Data(x * model.input_scale, None, x[:10] * model.input_scale)


class DigitsDataset(Dataset):
    """scikit-learn's digits, resized to the model's input (its test split; calibration from the train split)."""
    params_spec = {"num_samples": Param(int, 200), "seed": Param(int, 0), "calibration_samples": Param(int, 100)}

    def load(self, model: ModelInfo) -> Data:
        shape, n = model.input_shape[1:], int(self.params["num_samples"] or 0)
        x_train, _, x_test, y_test = load_split(seed=self.params["seed"])
        x = _fit(x_test[..., 0], shape) * model.input_scale
        cal = _fit(x_train[: self.params["calibration_samples"], ..., 0], shape) * model.input_scale
        return Data(x[:n] if n else x, y_test[:n] if n else y_test, cal)


class ImageFolderDataset(Dataset):
    """One folder of images per class, classes in sorted order."""
    params_spec = {"dataset_root": Param(str, required=True), "num_samples": Param(int, 0)}

    def load(self, model: ModelInfo) -> Data:
        from PIL import Image

        shape, n = model.input_shape[1:], int(self.params["num_samples"] or 0)
        root = Path(self.params["dataset_root"])
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

class TFLiteCompiler(Optimizer):
    """Keras -> TFLite with the TFLite converter (fp32, fp16 weights, or full int8)."""
    params_spec = {**OPTIMIZER_PARAMS, "target": Param(str, "default", ("default", "float16", "int8", "edgetpu")),
                   "model_framework": Param(str, "any", ("any", "keras")),
                   "inference_input_type": Param(str, "float32", ("float32", "int8", "uint8")),
                   "inference_output_type": Param(str, "float32", ("float32", "int8", "uint8")),
                   "dataset_percentage": Param((int, float), 0.25), "use_tf_select_ops": Param(bool, False)}
    inputs, output = ("keras",), "tflite"
    kenning_paths = ("kenning.optimizers.tflite.TFLiteCompiler", "kenning.compilers.tflite.TFLiteCompiler")

    def unavailable(self) -> str | None:
        if self.params["target"] == "edgetpu":
            return "TFLiteCompiler: target 'edgetpu' needs the Edge TPU compiler, which is not part of layertune " \
                   "(use default, int8 or float16)"
        if not 0 < float(self.params["dataset_percentage"]) <= 1:
            return f"TFLiteCompiler: dataset_percentage must be in (0, 1], got {self.params['dataset_percentage']}"
        return super().unavailable()

    def compile(self, src: Path, data: Data | None, out_dir: Path) -> Path:
        tf = _tensorflow()
        out = out_dir / "model.tflite"
        converter = tf.lite.TFLiteConverter.from_keras_model(tf.keras.models.load_model(src, compile=False))
        target = self.params["target"]
        builtins = tf.lite.OpsSet.TFLITE_BUILTINS_INT8 if target == "int8" else tf.lite.OpsSet.TFLITE_BUILTINS
        converter.target_spec.supported_ops = [builtins] + (
            [tf.lite.OpsSet.SELECT_TF_OPS] if self.params["use_tf_select_ops"] else [])
        if target in ("float16", "int8"):
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if target == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if target == "int8":  # calibrated on dataset_percentage of the calibration samples, as Kenning
            cal = data.calibration[: max(1, math.ceil(len(data.calibration) * float(self.params["dataset_percentage"])))]

            def representative():
                for i in range(len(cal)):
                    yield [cal[i: i + 1]]
            converter.representative_dataset = representative
            types = {"float32": tf.float32, "int8": tf.int8, "uint8": tf.uint8}
            converter.inference_input_type = types[self.params["inference_input_type"]]
            converter.inference_output_type = types[self.params["inference_output_type"]]
        with contextlib.redirect_stdout(io.StringIO()):
            out.write_bytes(converter.convert())
        return out


class ONNXCompiler(Optimizer):
    """Keras / TFLite -> ONNX with tf2onnx (Kenning's ONNXCompiler; torch models are not supported here)."""
    params_spec = {**OPTIMIZER_PARAMS, "model_framework": Param(str, "any", ("any", "keras", "tflite")),
                   "opset": Param(int, 17, minimum=11)}
    inputs, output = ("keras", "tflite"), "onnx"
    kenning_paths = ("kenning.optimizers.onnx.ONNXCompiler", "kenning.compilers.onnx.ONNXCompiler")

    def compile(self, src: Path, data: Data | None, out_dir: Path) -> Path:
        tf = _tensorflow()
        import tf2onnx

        framework = "tflite" if src.suffix == ".tflite" else "keras"
        if self.params["model_framework"] not in ("any", framework):
            raise ValueError(f"ONNXCompiler: model_framework is {self.params['model_framework']}, the model is {framework}")
        out, opset = out_dir / "model.onnx", int(self.params["opset"])
        with contextlib.redirect_stdout(io.StringIO()):
            if framework == "tflite":
                tf2onnx.convert.from_tflite(str(src), opset=opset, output_path=str(out))
            else:  # from_function: from_keras cannot name the outputs of a reloaded Keras 3 model
                model = tf.keras.models.load_model(src, compile=False)
                spec = (tf.TensorSpec((1, *model.input_shape[1:]), tf.float32, name="input"),)
                tf2onnx.convert.from_function(tf.function(lambda x: model(x)), input_signature=spec, opset=opset,
                                              output_path=str(out))
        _fix_batch(out)
        return out


def _fix_batch(path: Path) -> None:
    """A dynamic batch dimension of the model's inputs set to 1 (what every trial runs), so that
    the importers downstream see static shapes (tf2onnx keeps a TFLite model's dynamic batch)."""
    import onnx

    model = onnx.load(str(path))
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].Clear()
            dims[0].dim_value = 1
    onnx.save(model, str(path))


class LayerTuneCompiler(Optimizer):
    """Keras / TFLite / ONNX -> an optimized .ltplan, by profile_and_optimize on the trial's
    device (this machine, or the device the search measures on)."""
    params_spec = {**OPTIMIZER_PARAMS, "options": Param(str, "quick.json"), "repeats": Param(int, 3)}
    inputs, output = ("keras", "tflite", "onnx"), "ltplan"

    def compile(self, src: Path, data: Data | None, out_dir: Path) -> Path:
        options = self.params["options"]
        options_path = options if Path(options).is_file() else shipped_options(options)
        where = self.placement  # on a device, tuned there: the kernels chosen are the device's fastest
        settings = RunSettings(where.target, load_options(options_path), out_dir / "tuning", [where.device or Device(None)],
                               repeats=int(self.params["repeats"]), temp_dir=where.temp_dir, lease_wait=where.lease_wait,
                               whole_model=Settings(min_rounds=4, max_rounds=12, budget_s=20.0))
        (result,) = profile_and_optimize([src], settings).values()
        out = out_dir / "model.ltplan"
        os.replace(result.plan_path, out)
        return out


# -- runtimes ------------------------------------------------------------------------------

class TFLiteRuntime(Runtime):
    """LiteRT's interpreter (XNNPACK unless use_xnnpack is false); on a device, its own
    ai-edge-litert or tflite-runtime."""
    params_spec = {**RUNTIME_PARAMS, "num_threads": _THREADS, "use_xnnpack": Param(bool, True),
                   "delegates": Param(list, [])}
    inputs = ("tflite",)
    kenning_paths = ("kenning.runtimes.tflite.TFLiteRuntime",)

    def recipe(self, model_format: str) -> tuple[str, dict[str, Any]]:
        return "litert", {k: self.params[k] for k in ("num_threads", "use_xnnpack", "delegates")}


class ONNXRuntime(Runtime):
    """onnxruntime. `execution_providers` is a list in priority order, as in Kenning (in a searched
    runtime, a list of such lists); a provider this onnxruntime does not have skips the trial."""
    params_spec = {**RUNTIME_PARAMS, "execution_providers": Param(list, ["CPUExecutionProvider"]),
                   "num_threads": Param(int, 0, minimum=0)}
    inputs = ("onnx",)
    kenning_paths = ("kenning.runtimes.onnx.ONNXRuntime",)

    def recipe(self, model_format: str) -> tuple[str, dict[str, Any]]:
        return "onnxruntime", {k: self.params[k] for k in ("execution_providers", "num_threads")}


class TVMRuntime(Runtime):
    """TVM's Relax virtual machine on a library built by TVMCompiler."""
    params_spec = {**RUNTIME_PARAMS, "num_threads": _THREADS, "target_device_context": Param(str, "cpu"),
                   "use_tvm_vm": Param(bool, True)}
    inputs = ("tvm",)
    kenning_paths = ("kenning.runtimes.tvm.TVMRuntime",)

    def unavailable(self) -> str | None:
        if self.params["target_device_context"] != "cpu":
            return f"TVMRuntime: target_device_context '{self.params['target_device_context']}' is not available (cpu only)"
        if not self.params["use_tvm_vm"]:
            return "TVMRuntime: use_tvm_vm false (TVM's graph executor) does not exist in TVM 0.27; Relax runs on its VM"
        return super().unavailable()

    def recipe(self, model_format: str) -> tuple[str, dict[str, Any]]:
        return "tvm", {"num_threads": self.params["num_threads"]}


class LayerTuneRuntime(Runtime):
    """layertune's engine on a .ltplan, .tflite, .onnx or .keras model; on a device, the target's
    profiler runs the plan (`layertune-profiler infer`)."""
    params_spec = {**RUNTIME_PARAMS, "num_threads": _THREADS}
    inputs = ("ltplan", "tflite", "onnx", "keras")

    def recipe(self, model_format: str) -> tuple[str, dict[str, Any]]:
        return "layertune", {"num_threads": int(self.params["num_threads"])}

    def load(self, model_path: Path) -> Callable[[np.ndarray], np.ndarray]:
        model = load(model_path, threads=int(self.params["num_threads"]))
        return lambda x: np.asarray(model.run(x))


class NativeRuntime(Runtime):
    """The model in its own framework, what Kenning's native scenario (only a model wrapper and a
    dataset) measures: Keras / TensorFlow for .keras / .h5 (a traced tf.function, as Keras's
    predict runs it), LiteRT's default interpreter for .tflite, onnxruntime for .onnx."""
    params_spec = {**RUNTIME_PARAMS}
    inputs = ("keras", "tflite", "onnx")

    def recipe(self, model_format: str) -> tuple[str, dict[str, Any]]:
        return {"tflite": "litert", "onnx": "onnxruntime"}.get(model_format, "tensorflow"), {}
