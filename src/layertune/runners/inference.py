"""A model loaded into a runtime and measured over a data set: the one loop every search trial
runs, on this machine or on a device. At import only the standard library and numpy, so that the
file also runs by itself with a device's Python (uploaded next to the model):

    python3 inference.py probe        -> {"machine": ..., "python": ..., "runtimes": {name: module or null}}
    python3 inference.py run SPEC     -> the measurement as JSON (outputs in SPEC's outputs .npy)

SPEC: {"runtime": litert | onnxruntime | tvm | tensorflow, "model": path, "params": {...},
"inputs": .npy, "outputs": .npy, "warmup": n, "measure": bool}. A runtime the device lacks prints
{"unavailable": why} (the trial is skipped with that reason)."""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import sys
import time
from typing import Any, Callable

import numpy as np

Run = Callable[[np.ndarray], np.ndarray]

# Where each runtime can come from on a device, in order of preference.
MODULES = {"litert": ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"),
           "onnxruntime": ("onnxruntime",), "tvm": ("tvm",), "tensorflow": ("tensorflow",)}


class Unavailable(RuntimeError):
    """A runtime or a setting this machine cannot provide (the trial is skipped, not failed)."""


def _module_of(runtime: str) -> str | None:
    for name in MODULES[runtime]:
        try:
            if importlib.util.find_spec(name) is not None:
                return name
        except (ImportError, ValueError):  # a parent package that is not there
            continue
    return None


def probe() -> dict[str, Any]:
    return {"machine": platform.machine(), "python": platform.python_version(),
            "runtimes": {runtime: _module_of(runtime) for runtime in MODULES}}


def _quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return x
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(detail["dtype"])


def litert(model: str, num_threads: int = 1, use_xnnpack: bool = True, delegates: list[str] = ()) -> Run:
    """LiteRT's interpreter (ai-edge-litert, or tflite-runtime on a device); int8 inputs and
    outputs are (de)quantized with the model's own parameters, so every runtime sees real values."""
    name = _module_of("litert")
    if name is None:
        raise Unavailable("neither ai_edge_litert nor tflite_runtime can be imported")
    interpreter = importlib.import_module(name)
    kwargs: dict[str, Any] = {}
    if not use_xnnpack:
        kwargs["experimental_op_resolver_type"] = interpreter.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    loaded = []
    for library in delegates:  # Kenning's: delegate libraries, e.g. libedgetpu.so.1
        try:
            loaded.append(interpreter.load_delegate(str(library)))
        except (ValueError, OSError) as exc:
            raise Unavailable(f"delegate {library} cannot be loaded ({' '.join(str(exc).split())[:120]})") from None
    if loaded:
        kwargs["experimental_delegates"] = loaded
    it = interpreter.Interpreter(model_path=model, num_threads=int(num_threads), **kwargs)
    it.allocate_tensors()
    inp, outp = it.get_input_details()[0], it.get_output_details()[0]

    def run(x: np.ndarray) -> np.ndarray:
        it.set_tensor(inp["index"], _quantize(x, inp))
        it.invoke()
        y = it.get_tensor(outp["index"])
        if outp["dtype"] != np.float32:
            scale, zero = outp["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y
    return run


def onnxruntime(model: str, execution_providers: list[str] = ("CPUExecutionProvider",), num_threads: int = 0) -> Run:
    if _module_of("onnxruntime") is None:
        raise Unavailable("onnxruntime cannot be imported")
    import onnxruntime as ort

    wanted, have = list(execution_providers), ort.get_available_providers()
    missing = [p for p in wanted if p not in have]
    if missing or not wanted:
        raise Unavailable(f"{', '.join(missing) or 'no execution provider'} is not available in this onnxruntime "
                          f"(available: {', '.join(have)})")
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(num_threads)  # 0: onnxruntime's default
    sess = ort.InferenceSession(model, options, providers=wanted)
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: np.ascontiguousarray(x, np.float32)})[0]


def tvm(model: str, num_threads: int = 1) -> Run:
    """TVM's Relax virtual machine on a library TVMCompiler exported."""
    os.environ["TVM_NUM_THREADS"] = str(num_threads)  # read when TVM's thread pool starts
    if _module_of("tvm") is None:
        raise Unavailable("TVM's runtime (the tvm package) cannot be imported")
    import tvm as tvm_
    from tvm import relax

    main = relax.VirtualMachine(tvm_.runtime.load_module(model), tvm_.cpu())["main"]
    return lambda x: main(tvm_.runtime.tensor(np.ascontiguousarray(x, np.float32))).numpy()


def tensorflow(model: str) -> Run:
    """A .keras / .h5 model in Keras, as a traced tf.function (as Keras's predict runs it)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if _module_of("tensorflow") is None:
        raise Unavailable("TensorFlow cannot be imported")
    import tensorflow as tf

    keras_model = tf.keras.models.load_model(model, compile=False)
    call = tf.function(lambda x: keras_model(x, training=False))
    return lambda x: call(tf.constant(x)).numpy()


LOADERS: dict[str, Callable[..., Run]] = {"litert": litert, "onnxruntime": onnxruntime, "tvm": tvm,
                                          "tensorflow": tensorflow}


def _resident_percent() -> float:
    """This process's resident memory as a share of the machine's (psutil's memory_percent)."""
    try:
        with open("/proc/self/statm") as f:
            resident = int(f.read().split()[1])
        return 100.0 * resident / os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError, IndexError):
        return 0.0


def measure(run: Run, x: np.ndarray, warmup: int = 3, performance: bool = True,
            period: float = 0.05) -> dict[str, Any]:
    """Runs every sample once, after `warmup` untimed runs, and times each call. CPU and memory
    are sampled every `period` seconds between calls (and once at the end): the CPU busy share
    over the window (this process's CPU time / wall time / CPUs, every thread counted; the process
    clock has nanosecond resolution, so a window of sub-millisecond calls is seen) and the resident
    memory. Not per call: reading them between every call was measured to add 3-5 us to a 7 us
    call (the system calls disturb the next call), so only a clock is read there.
    Returns {"outputs": (n, ...) array, "times_s", and per sample "cpus_percent_avg",
    "mem_percent" with their "timestamps" (seconds into the timed calls)}."""
    cpus = os.cpu_count() or 1
    for i in range(min(warmup, len(x)) if performance else 0):
        run(x[i: i + 1])
    outputs, times, cpu, mem, stamps = [], [], [], [], []
    start = window = time.perf_counter()
    cpu_at = time.process_time()
    for i in range(len(x)):
        t0 = time.perf_counter()
        y = run(x[i: i + 1])
        t1 = time.perf_counter()
        times.append(t1 - t0)
        outputs.append(np.asarray(y, np.float32).reshape(-1))
        if t1 - window >= period or i == len(x) - 1:
            now_cpu = time.process_time()
            cpu.append(min(max((now_cpu - cpu_at) / max(t1 - window, 1e-9) / cpus * 100.0, 0.0), 100.0))
            mem.append(_resident_percent())
            stamps.append(t1 - start)
            window, cpu_at = time.perf_counter(), time.process_time()
    return {"outputs": np.stack(outputs), "times_s": times, "cpus_percent_avg": cpu, "mem_percent": mem,
            "timestamps": stamps}


def _run(spec: dict[str, Any]) -> dict[str, Any]:
    try:
        run = LOADERS[spec["runtime"]](spec["model"], **spec.get("params", {}))
    except Unavailable as exc:
        return {"unavailable": str(exc)}
    result = measure(run, np.load(spec["inputs"]), int(spec.get("warmup", 3)), bool(spec.get("measure", True)))
    np.save(spec["outputs"], result.pop("outputs"))
    return result


def main(argv: list[str]) -> int:
    if argv[:1] == ["probe"]:
        print(json.dumps(probe()))
        return 0
    if len(argv) == 2 and argv[0] == "run":
        with open(argv[1]) as f:
            spec = json.load(f)
        print(json.dumps(_run(spec)))
        return 0
    print("usage: inference.py probe | run SPEC.json", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
