"""A bad day, on real processes: two runs sharing one SSH pool, the driver SIGKILLed at many points
and re-run, a changed host key, and a password that must never leak."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import served_by, start_sshd, stop_sshd
from test_profile_and_optimize import ROOT, SMALL_OPTIONS, _fails, check_outputs, run_cli, ssh_args, workspace  # noqa: F401

CLI = [sys.executable, str(ROOT / "tools" / "profile_and_optimize.py")]


def start_cli(args: list[str], cache: Path, extra_env: dict | None = None,
              command: list[str] = CLI) -> subprocess.Popen:
    env = dict(os.environ, LAYERTUNE_CACHE=str(cache), **(extra_env or {}))
    return subprocess.Popen([*command, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


def ok_keys(path: Path) -> tuple[list[tuple], int]:
    """The keys of the successful records in a results file, in order, and the number of lines
    that do not parse (torn by a kill)."""
    keys, torn = [], 0
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            torn += 1
            continue
        if r.get("error") is None and r.get("median_ms") is not None:
            keys.append((r["layer"], r["variant"], r["target"], r["build"], r.get("settings")))
    return keys, torn


def test_two_runs_at_once_share_a_two_device_pool(workspace, sshd, tmp_path):
    second = start_sshd(tmp_path / "sshd2")
    (second.dir / "authorized_keys").write_text(Path(sshd.key + ".pub").read_text())
    try:
        cluster = workspace / "cluster.txt"
        cluster.write_text(f"root@127.0.0.1:{sshd.port}\nroot@localhost:{second.port}\n")
        known = workspace / "known_hosts"
        known.write_text(Path(sshd.known_hosts).read_text() + Path(second.known_hosts).read_text())
        common = ["--model_path", str(workspace / "models"), "--options", str(workspace / "small.json"), "--repeats", "2",
                  "--cluster", str(cluster), "--username", "root", "--ssh_key", sshd.key, "--known_hosts", str(known),
                  "--parallel_run", "2", "--lease_wait", "600", "--no-cache"]
        runs = [start_cli([*common, "--output_path", str(tmp_path / f"out{i}")], tmp_path / f"cache{i}") for i in (0, 1)]
        results = [p.communicate(timeout=900) for p in runs]
        for p, (_, err) in zip(runs, results):
            assert p.returncode == 0, err
        intervals: dict[str, list[tuple[float, float]]] = {}
        for i, (_, err) in enumerate(results):
            summary = check_outputs(tmp_path / f"out{i}")
            planned = int(re.search(r"(\d+) variants on target", err).group(1))
            keys, _ = ok_keys(tmp_path / f"out{i}" / "results.jsonl")
            assert len(set(keys)) == planned, f"run {i}: {planned - len(set(keys))} variants not measured"
            for device, start, end in summary["pool"]["job_intervals"]:
                intervals.setdefault(device, []).append((start, end))
        assert len(intervals) == 2  # both devices did work
        for device, spans in intervals.items():
            spans.sort()
            for (_, end), (start, _) in zip(spans, spans[1:]):
                assert start >= end, f"{device} ran two jobs at once"
        assert any("waiting up to" in err for _, err in results)  # one run waited for the other's lease
    finally:
        stop_sshd(second)


def test_driver_killed_at_many_points_then_rerun(workspace, tmp_path):
    """SIGKILL (the whole process group, as a power loss would) at increasing delays, re-running the
    same command each time: it completes in the end, nothing stored is measured again, and a line
    torn by a kill breaks nothing later."""
    out = tmp_path / "out"
    options = dict(SMALL_OPTIONS, winograd_parameters=[8, 16, 32], winograd_tiles=[2, 4], parallel=[True, False])
    (tmp_path / "many.json").write_text(json.dumps(options))
    # --temp_dir: a killed local run cannot remove its work directory; keep those in this test's tmp
    args = ["--model_path", str(workspace / "models"), "--options", str(tmp_path / "many.json"), "--output_path",
            str(out), "--repeats", "20", "--no-cache", "--temp_dir", str(tmp_path)]
    stored: set[tuple] = set()
    seen = kills = 0
    phases = set()
    # small steps: ten kills even on a fast machine; the first ones before the run has imported
    # the model (it gets there within 0.2 s on a quiet machine)
    for delay in [0.05, 0.1, 0.15] + [0.2 + 0.1 * k for k in range(40)]:
        proc = start_cli(args, tmp_path / "cache")
        try:
            _, err = proc.communicate(timeout=delay)
            assert proc.returncode == 0, err
            break  # it finished before the kill
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, err = proc.communicate()
            kills += 1
            phases.add("verifying" if "verifying" in err else "screening" if "screening" in err else
                       "profiling" if "variants on target" in err else "starting")
        keys, _ = ok_keys(out / "results.jsonl")
        again = [k for k in keys[seen:] if k in stored]
        assert not again, f"measured again after a kill: {again[:3]}"
        stored |= set(keys[seen:])
        seen = len(keys)
    assert kills >= 10, f"only {kills} kills: the run is too short for this test"
    assert {"profiling", "starting"} <= phases, phases
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, LAYERTUNE_CACHE=str(tmp_path / "cache")))
    assert proc.returncode == 0, proc.stderr
    check_outputs(out)
    keys, _ = ok_keys(out / "results.jsonl")
    assert len(keys) == len(set(keys)), "a measurement was stored twice"


def test_a_changed_host_key_is_refused(workspace, sshd, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "impostor")], check=True)
    fake_key = (tmp_path / "impostor.pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {' '.join(fake_key)}\n")
    _fails(["--model_path", str(workspace / "models"), "--options", str(workspace / "small.json"),
            "--ipaddress", "127.0.0.1", "--port", str(sshd.port), "--username", "root", "--ssh_key", sshd.key,
            "--known_hosts", str(known)], workspace, "the host key changed")


def test_a_password_never_leaks(workspace, sshd, tmp_path):
    """The password is given (by --password, then by RPI_PASSWORD) while the key authenticates:
    it must appear in no log line (at DEBUG), no output file, and no process on the device."""
    password = "pw-" + secrets.token_hex(12)
    for how in ("option", "environment"):
        out = tmp_path / f"out-{how}"
        log = tmp_path / f"log-{how}.txt"
        args = ["--verbosity", "DEBUG", "--logfile", str(log), "profile-and-optimize", "--model_path",
                str(workspace / "models"), "--options", str(workspace / "small.json"), "--output_path", str(out),
                "--repeats", "2", *ssh_args(sshd)]
        if how == "option":
            args += ["--password", password]
        proc = start_cli(args, tmp_path / "cache", {"RPI_PASSWORD": password} if how == "environment" else None,
                         command=[sys.executable, "-m", "layertune.cli"])
        seen_remote: list[str] = []
        stop = threading.Event()

        def watch_device() -> None:  # the device's process list: everything sshd runs
            while not stop.is_set():
                seen_remote.extend(served_by(sshd.pid).values())
                time.sleep(0.005)

        watcher = threading.Thread(target=watch_device)
        watcher.start()
        try:
            stdout, stderr = proc.communicate(timeout=600)
        finally:
            stop.set()
            watcher.join()
        assert proc.returncode == 0, stderr
        assert any("layertune-profiler" in a for a in seen_remote), "the device's processes were not observed"
        assert password not in stdout + stderr + log.read_text()
        for f in out.rglob("*"):
            if f.is_file():
                assert password.encode() not in f.read_bytes(), f"the password is in {f}"
        assert not [a for a in seen_remote if password in a], "the password is in the device's process list"
