"""The `layertune` command. Bad input ends with one line naming what is wrong and exit code 2
(a traceback only with --verbosity DEBUG)."""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
from pathlib import Path

import numpy as np

log = logging.getLogger("layertune")


def _cmd_run(args: argparse.Namespace) -> int:
    from layertune.model import load

    model = load(args.model, threads=args.threads)
    if args.input:
        try:
            x = np.load(args.input)
        except Exception as exc:
            raise ValueError(f"{args.input}: cannot read the input array ({exc})") from None
    else:
        rng = np.random.default_rng(0)
        x = [rng.uniform(-1, 1, s).astype(np.float32) for s in model.input_shapes]
        x = x[0] if len(x) == 1 else x
    outputs = model.run(x)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    times = model.time(x, warmup=args.warmup, repeats=args.repeat)
    print(f"{model.name}: {len(model.layers)} layers, {args.threads} thread(s)")
    print(f"latency: median {statistics.median(times) * 1e3:.3f} ms, min {min(times) * 1e3:.3f} ms "
          f"({args.repeat} runs after {args.warmup} warm-up)")
    print(f"memory: arena {model.arena_bytes / 2**20:.2f} MiB, weights {model.weight_bytes / 2**20:.2f} MiB")
    for i, y in enumerate(outputs):
        print(f"output {i}: shape {tuple(y.shape)}")
    if args.output:
        out = Path(args.output)
        tmp = out.with_name(out.name + ".tmp.npy")
        np.save(tmp, outputs[0])
        tmp.replace(out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="layertune", description="Per-layer convolution autotuning for small CPUs.")
    parser.add_argument("--verbosity", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="log level (DEBUG also shows tracebacks)")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a model (.tflite, .keras, .h5, .ltplan) and print its latency")
    run.add_argument("model", help="the model file")
    run.add_argument("--threads", type=int, default=1)
    run.add_argument("--repeat", type=int, default=10, help="timed runs")
    run.add_argument("--warmup", type=int, default=3, help="untimed runs first")
    run.add_argument("--input", help="a .npy file with the input (default: seeded random values)")
    run.add_argument("--output", help="write the first output to this .npy file")
    run.set_defaults(func=_cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.verbosity, format="%(levelname)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        if args.verbosity == "DEBUG":
            raise
        print(f"layertune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("layertune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
