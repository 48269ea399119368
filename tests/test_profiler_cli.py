"""The standalone layertune-profiler executable (the seed of the on-device profiler)."""

from __future__ import annotations

import json
import subprocess

import pytest

import layertune

LAYER = ["--input", "1x10x12x8", "--filters", "16", "--kernel", "3x3", "--repeats", "3", "--warmup", "1"]


def profiler(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(layertune.profiler_path()), *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("method, params", [
    ("simple", []), ("unrolled", ["--param", "block_m=24"]),
    ("winograd", ["--param", "winograd_tile=2", "--param", "nonseparable_channel_depth=4"]),
])
def test_conv_times_one_variant_and_checks_it(method, params):
    proc = profiler("conv", *LAYER, "--method", method, "--threads", "2", "--activation", "relu", *params)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["error"] is None
    assert record["method"] == method and record["threads"] == 2 and record["repeats"] == 3
    assert 0 < record["min_ms"] <= record["median_ms"]
    assert record["max_abs_diff"] <= 1e-4 * record["max_abs_ref"]
    assert record["flops"] == 2 * 10 * 12 * 16 * 9 * 8


def test_info_and_peak():
    info = json.loads(profiler("info").stdout)
    assert info["isa"] == layertune._core.isa() and info["simd_lanes"] >= 4
    peak = json.loads(profiler("peak", "--seconds", "0.05").stdout)
    assert peak["peak_gflops"] > 0


@pytest.mark.parametrize("args, fragment", [
    (["conv", *LAYER, "--method", "winograd", "--stride", "2x2"], "stride"),
    (["conv", *LAYER, "--method", "unrolled", "--param", "winograd_tile=2"], "winograd_tile"),
    (["conv", *LAYER], "--method"),
    (["conv", *LAYER, "--method", "simple", "--kernel", "3"], "--kernel"),
    (["conv", *LAYER, "--method", "simple", "--colour", "red"], "--colour"),
    (["tune"], "unknown command"),
])
def test_bad_arguments_give_one_line_and_exit_2(args, fragment):
    proc = profiler(*args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], proc.stderr
