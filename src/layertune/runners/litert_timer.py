"""Times a .tflite model with LiteRT on a device — the yardstick layertune's plans are compared
with. Standalone (copied to the device and run with its python3; no layertune import), using
ai_edge_litert or, on 32-bit ARM boards, tflite_runtime:

    python3 litert_timer.py MODEL --threads 1,2 --rounds 4 --repeats 3 --warmup 2

prints one JSON line: {"series": {"litert@1": [ms per round, ...], ...}, "error": null}, the
rounds interleaved over the thread counts as the core's time_interleaved does; or
{"error": "..."} when no LiteRT can be imported or the model cannot be loaded. A timed run is
`timed_run`: inputs in, invoke, outputs out, as a timed run of layertune's engine."""

import argparse
import json
import statistics
import sys
import time


def interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise ImportError("neither ai_edge_litert nor tflite_runtime can be imported "
                              "(pip install ai-edge-litert)") from None
    return Interpreter


def timed_run(interpreter, fed, outputs):
    """One timed run: set the inputs ((index, array) pairs), invoke, read the outputs (indices):
    the work a timed run of layertune's engine does (tools/benchlib.py times LiteRT with it too)."""
    for index, x in fed:
        interpreter.set_tensor(index, x)
    interpreter.invoke()
    for index in outputs:
        interpreter.get_tensor(index)


def main(argv):
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--threads", default="1")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args(argv)
    try:
        import numpy as np
        Interpreter = interpreter_class()
        runs = {}  # name: (interpreter, inputs fed, output indices)
        for t in [int(v) for v in args.threads.split(",")]:
            it = Interpreter(model_path=args.model, num_threads=t)
            it.allocate_tensors()
            rng = np.random.default_rng(0)
            fed = []
            for d in it.get_input_details():
                if np.issubdtype(d["dtype"], np.integer):
                    info = np.iinfo(d["dtype"])
                    x = rng.integers(info.min, info.max, d["shape"], endpoint=True).astype(d["dtype"])
                else:
                    x = rng.uniform(-1, 1, d["shape"]).astype(d["dtype"])
                fed.append((d["index"], x))
            runs[f"litert@{t}"] = (it, fed, [d["index"] for d in it.get_output_details()])
    except Exception as exc:  # no LiteRT here, or a model it cannot load: a reason, not a crash
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"[:300]}))
        return 0
    for run in runs.values():
        for _ in range(args.warmup):
            timed_run(*run)
    series = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                timed_run(*run)
                times.append((time.perf_counter() - t0) * 1e3)
            series[name].append(statistics.median(times))
    print(json.dumps({"series": series, "error": None}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
