"""A search trial measured on a device: the compiled model and the inputs go up, the runtime runs
there — runners/inference.py with the device's own Python and runtime (LiteRT / tflite-runtime,
onnxruntime, TVM, TensorFlow), or the target's cross-built profiler for layertune plans
(`layertune-profiler infer`) — and the outputs and timings come back, so that quality metrics
are computed on the host from what the device computed."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from layertune.model import load
from layertune.runners import inference
from layertune.runners.device import DeviceSession
from layertune.runners.inference import Unavailable
from layertune.runners.transport import DeviceError

SCRIPT = Path(inference.__file__)
_WHAT = {"litert": "ai_edge_litert or tflite_runtime", "onnxruntime": "onnxruntime", "tvm": "TVM's runtime (tvm)",
         "tensorflow": "TensorFlow"}


def check_runtime(session: DeviceSession, loader: str) -> None:
    """Unavailable (naming the device and what it lacks) unless the device can run `loader`: its
    Python has the runtime, and that Python runs on the architecture the target's profiler runs on
    (an emulated device, qemu on an x86 host, has only the host's Python: its runtimes would
    measure the host)."""
    if loader == "layertune":
        return  # the profiler itself, checked against the target when the session opened
    python = session.transport.python
    try:
        found = session.python_json(SCRIPT, ["probe"], timeout=120)
    except DeviceError as exc:
        raise Unavailable(f"{session.name}: its Python ({python}) cannot run layertune's helper, which needs numpy "
                          f"({exc})") from None
    machine = found["machine"].lower().replace("arm64", "aarch64").replace("amd64", "x86_64")
    if not machine.startswith(session.arch):
        raise Unavailable(f"{session.name}: its Python ({python}) runs on {found['machine']}, the {session.target.name} "
                          f"profiler on {session.arch} (an emulated device): {loader} would not measure the target")
    if found["runtimes"].get(loader) is None:
        raise Unavailable(f"{session.name}: its Python ({python}) has no {_WHAT[loader]}")


def measure_on_device(session: DeviceSession, loader: str, params: dict[str, Any], model: Path, x: np.ndarray,
                      warmup: int, performance: bool, timeout: float) -> dict[str, Any]:
    """inference.measure's result, measured on the device."""
    with tempfile.TemporaryDirectory() as tmp:
        if loader == "layertune":
            return _profiler_infer(session, params, model, x, warmup, Path(tmp), timeout)
        np.save(Path(tmp) / "inputs.npy", np.ascontiguousarray(x, np.float32))
        spec = {"runtime": loader, "params": params, "warmup": warmup, "measure": performance,
                "model": session.upload(model, "model" + "".join(model.suffixes[-1:])),
                "inputs": session.upload(Path(tmp) / "inputs.npy", "inputs.npy"),
                "outputs": f"{session.workdir}/outputs.npy"}
        (Path(tmp) / "spec.json").write_text(json.dumps(spec))
        result = session.python_json(SCRIPT, ["run", session.upload(Path(tmp) / "spec.json", "spec.json")], timeout)
        if "unavailable" in result:
            raise Unavailable(f"{session.name}: {result['unavailable']}")
        result["outputs"] = np.load(session.download("outputs.npy", Path(tmp) / "outputs.npy"))
        return result


def _profiler_infer(session: DeviceSession, params: dict[str, Any], model: Path, x: np.ndarray, warmup: int,
                    tmp: Path, timeout: float) -> dict[str, Any]:
    if model.suffix != ".ltplan":  # the engine imports other formats; the profiler runs plans
        load(model).save(tmp / "model.ltplan")
        model = tmp / "model.ltplan"
    np.ascontiguousarray(x, np.float32).tofile(tmp / "inputs.f32")
    plan, inputs = session.upload(model, "model.ltplan"), session.upload(tmp / "inputs.f32", "inputs.f32")
    result = session.profiler_json(["infer", "--plan", plan, "--inputs", inputs, "--count", str(len(x)),
                                    "--outputs", f"{session.workdir}/outputs.f32",
                                    "--threads", str(params.get("num_threads", 1)), "--warmup", str(warmup)], timeout)
    outputs = np.fromfile(session.download("outputs.f32", tmp / "outputs.f32"), np.float32)
    result["outputs"] = outputs.reshape(len(x), -1)
    return result
