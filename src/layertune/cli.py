"""The `layertune` command. Bad input ends with one line naming what is wrong and exit code 2
(a traceback only with --verbosity DEBUG)."""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from layertune.graph.precision import DEFAULT_REQUANTIZATION, REQUANTIZATIONS
from layertune.model import load, parse_input_shape
from layertune.runners.devices import Device, devices_from_arguments
from layertune.search.block import Placement
from layertune.search.config import load_config
from layertune.search.report import write_report
from layertune.search.runner import run_search, usable_placements
from layertune.search.scenarios import measure_pipeline, write_scenarios
from layertune.tuner.build import build_profiler
from layertune.tuner.driver import RunSettings, find_models, profile_and_optimize
from layertune.tuner.options import load_options, shipped_options
from layertune.tuner.protocol import Settings
from layertune.tuner.targets import Target, resolve_target

log = logging.getLogger("layertune")


def _cmd_run(args: argparse.Namespace) -> int:
    model = load(args.model, threads=args.threads, input_shapes=dict(args.input_shape or []) or None,
                 requantization=args.requantization)
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


def _cmd_profile(args: argparse.Namespace) -> int:
    if args.apikey or args.ell_root:
        raise ValueError("--apikey and --ell_root are ELL options that do not apply to layertune "
                         "(devices are reached over SSH; there is no ELL installation)")
    for name in ("repeats", "rounds", "warmup", "parallel_run", "parallel_build", "concurrent_models", "port"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "warmup" else 1):
            raise ValueError(f"--{name}: must be {'>= 0' if name == 'warmup' else 'positive'}, got {value}")
    target, devices = target_and_devices(args)
    options = load_options(args.options or shipped_options("default.json"))
    models = find_models(args.model_path, args.models)
    if args.ci_width <= 0 or args.verify_budget <= 0:
        raise ValueError("--ci_width and --verify_budget must be positive")
    whole_model = Settings(warmup=args.warmup, repeats=args.repeats, ci_width=args.ci_width, budget_s=args.verify_budget)
    settings = RunSettings(target, options, Path(args.output_path), devices, warmup=args.warmup, repeats=args.repeats,
                           rounds=args.rounds, timeout=args.timeout, parallel_run=args.parallel_run,
                           parallel_build=args.parallel_build, use_cache=not args.no_cache, temp_dir=args.temp_dir,
                           flush_bytes=args.flush_bytes, lease_wait=args.lease_wait, whole_model=whole_model,
                           input_shapes=dict(args.input_shape or []), requantization=args.requantization)
    for result in profile_and_optimize(models, settings).values():
        print(result.summary_line())
    return 0


def add_requantization_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--requantization", choices=REQUANTIZATIONS, default=DEFAULT_REQUANTIZATION,
                   help="an int8 model's arithmetic: xnnpack (LiteRT's on a CPU, the default) or tflite "
                        "(TFLite's reference kernels, bit for bit)")


def add_input_shape_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input_shape", action="append", type=_input_shape, metavar="NAME=DxDx...",
                   help="fix an ONNX input's dynamic dimensions, e.g. images=1x3x640x640 (repeat for several inputs)")


def _input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    try:
        return parse_input_shape(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix(f"--input_shape {text!r}: ")) from None


def add_device_arguments(p: argparse.ArgumentParser) -> None:
    """Which target, which devices and how to reach them: the same options for every command
    that measures on devices (profile-and-optimize, fine-tune-optimizers)."""
    p.add_argument("--target", default="host", help="host, pi3, pi3_64, pi0, aarch64, or a target from --targets")
    p.add_argument("--targets", help="a JSON file of user-defined targets")
    p.add_argument("--platform_regex", help="override the target's /proc/cpuinfo regex")
    p.add_argument("--cluster", help="a file listing devices, one [user@]host[:port] per line")
    p.add_argument("--ipaddress", nargs="+", help="device hosts (SSH)")
    p.add_argument("--username", help="SSH user")
    p.add_argument("--password", help="SSH password (or RPI_PASSWORD; never logged or written)")
    p.add_argument("--ssh_key", help="SSH private key file (default: your SSH agent-free default keys)")
    p.add_argument("--port", type=int, default=22, help="SSH port")
    p.add_argument("--known_hosts", help="a known_hosts file to check host keys against (besides ~/.ssh/known_hosts)")
    p.add_argument("--device_python", help="the devices' Python for layertune's helpers (LiteRT and other runtimes; "
                                           "default: python3 over SSH, this Python locally)")
    p.add_argument("--lease_wait", type=float, default=0.0,
                   help="seconds to wait for a device another run has leased (default: do not wait)")
    p.add_argument("--temp_dir", help="where local runs keep their work directories")


def target_and_devices(args: argparse.Namespace) -> tuple[Target, list[Device]]:
    """The target (its cross compiler checked before any work) and the devices of the options."""
    if args.port < 1 or args.lease_wait < 0:
        raise ValueError("--port must be positive, --lease_wait >= 0")
    target = resolve_target(args.target, args.targets)
    if not target.is_host:
        target.check_compiler()  # before any model is imported: a missing package is said at once
    if args.platform_regex:
        target = replace(target, cpuinfo_regex=args.platform_regex)
    devices = devices_from_arguments(args.ipaddress, args.cluster, args.username, args.port, args.ssh_key,
                                     args.password, args.known_hosts, args.device_python)
    return target, devices


def add_profile_arguments(p: argparse.ArgumentParser) -> None:
    """ELL's profile_and_optimize.py options (those that apply) and layertune's additions."""
    p.add_argument("--options", help="options JSON (default: profile_options/default.json shipped with layertune)")
    p.add_argument("--model_path", required=True,
                   help="a model file, or a folder searched for *.tflite, *.onnx, *.keras, *.h5")
    add_input_shape_argument(p)
    add_requantization_argument(p)
    p.add_argument("--models", nargs="+", help="only these models (file stems)")
    p.add_argument("--output_path", "-o", required=True, help="output folder: results, plans, reports")
    p.add_argument("--concurrent_models", type=int, default=1, help="(accepted for ELL compatibility; models share one job queue)")
    p.add_argument("--parallel_build", type=int, default=1, help="profiler builds at once")
    p.add_argument("--include_exercise_models", action="store_true",
                   help="(accepted for ELL compatibility: each uniform-method plan is always timed as a baseline)")
    p.add_argument("--parallel_run", type=int, default=1, help="devices used at once")
    add_device_arguments(p)
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each candidate per interleaved round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per layer variant (with the layer's default)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs of each candidate first")
    p.add_argument("--ci_width", type=float, default=0.04,
                   help="whole-model rounds are added until every ratio's 95%% interval is narrower than this")
    p.add_argument("--verify_budget", type=float, default=60.0,
                   help="seconds each whole-model comparison may take at most")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds a device may take for one job")
    p.add_argument("--flush-bytes", type=int, default=0,
                   help="write this many bytes before each timed run (cold caches, as inside a model)")
    p.add_argument("--no-cache", action="store_true", help="do not reuse (or add to) the user-level results cache")
    p.add_argument("--apikey", help=argparse.SUPPRESS)
    p.add_argument("--ell_root", help=argparse.SUPPRESS)


def placements_from_arguments(args: argparse.Namespace) -> list[Placement] | None:
    """Where trials run: None (this machine) unless devices or a target other than host are given;
    then each usable device of the target (the target's profiler built once, here)."""
    target, devices = target_and_devices(args)
    if not (args.ipaddress or args.cluster or not target.is_host):
        return None
    profiler, _ = build_profiler(target)
    return usable_placements([Placement(target, d, str(profiler), args.temp_dir, args.lease_wait) for d in devices])


def _cmd_fine_tune(args: argparse.Namespace) -> int:
    cfg = load_config(args.json_cfg)
    if args.generate_scenarios:
        count = write_scenarios(cfg, Path(args.generate_scenarios))
        print(f"wrote {count} scenarios to {args.generate_scenarios}")
    best = run_search(cfg, Path(args.output), placements_from_arguments(args))
    out = Path(args.output)
    runs = sorted(out.parent.glob(f"{out.stem}_*.json"))
    runs = [r for r in runs if not r.name.endswith("_all_results.json")]
    write_report(runs, out.with_name(f"{out.stem}_report.md"))
    print(f"best pipeline ({cfg.metric}, {cfg.policy}): {best['id']}: {cfg.metric} = {best['metrics'][cfg.metric]:.6g}")
    print(f"results: {args.output}, {out.with_suffix('')}_all_results.json, report {out.with_name(out.stem + '_report.md')}")
    return 0


def _cmd_test_pipeline(args: argparse.Namespace) -> int:
    placements = placements_from_arguments(args)
    result, recorded = measure_pipeline(Path(args.pipeline), args.json_cfg and Path(args.json_cfg),
                                        Path(args.measurements), args.cache and Path(args.cache), args.timeout,
                                        placements[0] if placements else None)
    for name, value in sorted(result["metrics"].items()):
        before = recorded.get(name)
        change = f"  (search recorded {before:.6g}: {value / before - 1:+.1%})" if before else ""
        print(f"{name} = {value:.6g}{change}")
    print(f"measurements: {args.measurements}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    files = write_report([Path(m) for m in args.measurements], Path(args.report_path))
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="layertune", description="Per-layer convolution autotuning for small CPUs.")
    parser.add_argument("--verbosity", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="log level (DEBUG also shows tracebacks)")
    parser.add_argument("--silence", action="store_true", help="errors only")
    parser.add_argument("--logfile", help="also write the log to this file")
    parser.add_argument("--logmode", choices=["a", "w"], default="a", help="append to or overwrite --logfile")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a model (.tflite, .onnx, .keras, .h5, .ltplan) and print its latency")
    run.add_argument("model", help="the model file")
    add_input_shape_argument(run)
    add_requantization_argument(run)
    run.add_argument("--threads", type=int, default=1)
    run.add_argument("--repeat", type=int, default=10, help="timed runs")
    run.add_argument("--warmup", type=int, default=3, help="untimed runs first")
    run.add_argument("--input", help="a .npy file with the input (default: seeded random values)")
    run.add_argument("--output", help="write the first output to this .npy file")
    run.set_defaults(func=_cmd_run)
    prof = sub.add_parser("profile-and-optimize", help="tune every convolution layer on a target's devices",
                          description="Times every variant of every unique convolution layer on the target's devices "
                                      "(this machine, or over SSH), keeps the fastest correct one per layer, writes "
                                      "<output>/<model>/optimized.ltplan, and verifies it end to end. ELL's --apikey "
                                      "(HTTP cluster service) and --ell_root do not apply.")
    add_profile_arguments(prof)
    prof.set_defaults(func=_cmd_profile)
    fine = sub.add_parser("fine-tune-optimizers", help="search optimizer / runtime pipelines (Kenning-compatible config)")
    fine.add_argument("--json-cfg", required=True, help="the search config (Kenning's format)")
    fine.add_argument("--output", required=True, help="OUT.json: the best pipeline; OUT_all_results.json, OUT_<id>.json beside it")
    fine.add_argument("--generate-scenarios", help="also write every pipeline of the space as a scenario JSON into this folder")
    add_device_arguments(fine)  # with devices (or a target other than host), every trial is measured on one
    fine.set_defaults(func=_cmd_fine_tune)
    test = sub.add_parser("test-pipeline", help="run one pipeline alone (a scenario, or a search's OUT_<id>.json) "
                                                "and measure it again")
    test.add_argument("pipeline", help="a scenario JSON (--generate-scenarios) or a run file OUT_<id>.json")
    test.add_argument("--json-cfg", help="the search config whose model wrapper and dataset to use (needed for a run file)")
    test.add_argument("--measurements", required=True, help="write the measurements (a run file's format) here")
    test.add_argument("--cache", help="a compile cache to reuse, e.g. the search's .OUT_cache (default: compile afresh)")
    test.add_argument("--timeout", type=float, default=3600.0, help="seconds the run may take")
    add_device_arguments(test)  # measured on the (first usable) device, as the search's trials are
    test.set_defaults(func=_cmd_test_pipeline)
    report = sub.add_parser("report", help="Markdown report with plots from fine-tune-optimizers measurements")
    report.add_argument("--measurements", nargs="+", required=True, help="OUT_<run id>.json files")
    report.add_argument("--report-path", required=True, help="the report's Markdown file (plots beside it)")
    report.set_defaults(func=_cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.verbosity, format="%(levelname)s: %(message)s")
    # TensorFlow's logger has a handler of its own: without this its lines are printed twice.
    logging.getLogger("tensorflow").propagate = False
    if getattr(args, "silence", False):
        logging.getLogger().setLevel(logging.ERROR)
    if getattr(args, "logfile", None):
        handler = logging.FileHandler(args.logfile, mode=args.logmode)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        if args.verbosity == "DEBUG":
            raise
        print(f"layertune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("layertune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
