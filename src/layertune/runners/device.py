"""One leased device for one run — the skeleton both transports share: lease, work directory,
profiler upload, target check, jobs with streamed results, cleanup in every outcome."""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shlex
import socket
import time
from pathlib import Path
from typing import Callable, TypeVar

from layertune.runners.transport import DeviceError
from layertune.tuner.targets import Target

log = logging.getLogger("layertune.device")

# mkdir is atomic: the lease is a directory with an owner token, the owning run (host and pid of
# the driver) and an expiry, so a crashed run does not hold the device forever and a release
# never removes someone else's lease. BUSY reports the holder, so that a run on the same host can
# see that the holder is dead (a killed driver) and break its lease at once.
_LEASE = r"""
d={dir}; now=$(date +%s)
take() {{ mkdir "$d" 2>/dev/null || return 1; echo {token} > "$d/owner"; echo {holder} > "$d/holder"; echo $((now + {seconds})) > "$d/expires"; echo LEASED; exit 0; }}
take
exp=$(cat "$d/expires" 2>/dev/null || echo 0)
if [ "$now" -gt "$exp" ]; then rm -rf "$d"; take; fi
echo "BUSY $(cat "$d/owner" 2>/dev/null) $(cat "$d/holder" 2>/dev/null)"
"""
_BREAK = 'd={dir}; [ "$(cat "$d/owner" 2>/dev/null)" = {token} ] && rm -rf "$d"; true'
_RENEW = 'd={dir}; [ "$(cat "$d/owner" 2>/dev/null)" = {token} ] && echo $(($(date +%s) + {seconds})) > "$d/expires"'


class DeviceSession:
    def __init__(self, transport, target: Target, profiler: Path, lease_seconds: int = 900, lease_wait: float = 0.0):
        self.transport, self.target, self.profiler = transport, target, profiler
        self.lease_seconds, self.lease_wait = lease_seconds, lease_wait
        self.name = transport.name
        self._lease_dir = "/tmp/layertune-lease-" + re.sub(r"[^A-Za-z0-9_.-]", "_", transport.name)
        self._token = secrets.token_hex(8)
        self._leased = False
        self.workdir: str | None = None
        self._litert_script: str | None = None
        self._scripts: dict[str, str] = {}  # uploaded Python helpers
        self.remote_profiler: str | None = None
        self.cores = 1
        self.arch = "unknown"
        self.unavailable_methods: dict[str, str] = {}

    def _sh(self, script: str, timeout: float = 60.0) -> tuple[int, str]:
        lines: list[str] = []
        code, err = self.transport.run(["sh", "-c", script], lines.append, timeout)
        return code, "\n".join(lines) + err

    def open(self) -> None:
        """Connect, lease, upload the profiler, check the device is of the target's kind."""
        self.transport.connect()
        waited, started = False, time.monotonic()
        holder = shlex.quote(f"{socket.gethostname()}:{os.getpid()}")
        while True:
            code, out = self._sh(_LEASE.format(dir=shlex.quote(self._lease_dir), token=self._token, holder=holder,
                                               seconds=self.lease_seconds))
            if "LEASED" in out:
                break
            if self._break_if_dead(out):
                continue
            if time.monotonic() - started >= self.lease_wait:
                raise DeviceError("busy", f"{self.name}: leased by another run ({self._lease_dir})"
                                          + (f"; waited {self.lease_wait:.0f} s" if self.lease_wait else ""))
            if not waited:
                log.info("%s: leased by another run; waiting up to %.0f s for it (--lease_wait)", self.name,
                         self.lease_wait)
                waited = True
            time.sleep(min(2.0, max(0.1, self.lease_wait / 20)))
        self._leased = True
        self._renewed = time.monotonic()
        self.workdir = self.transport.make_dir("layertune-run-")
        self.remote_profiler = f"{self.workdir}/layertune-profiler"
        self.transport.put(self.profiler, self.remote_profiler, 0o755)
        info = self.profiler_json(["info"], timeout=120)
        cpuinfo = info.get("cpuinfo", "")
        if not re.search(self.target.cpuinfo_regex, cpuinfo):
            raise DeviceError("cpuinfo", f"{self.name}: not a {self.target.name} device: /proc/cpuinfo says "
                                         f"'{cpuinfo[:120]}', which does not match /{self.target.cpuinfo_regex}/")
        self.cores = int(info.get("cores", 1))
        self.arch = str(info.get("arch", "unknown"))  # what the profiler was built for
        # methods this device's CPU cannot run (amx_bf16x3 without AMX), with the reason
        self.unavailable_methods = {str(k): str(v) for k, v in info.get("unavailable_methods", {}).items()}
        log.info("%s: leased, profiler uploaded (%s, %d cores)", self.name, info.get("isa"), self.cores)

    def _break_if_dead(self, busy: str) -> bool:
        """Breaks the lease of a run of this host whose driver no longer exists (killed); True if
        it did. A holder on another host is left to its expiry: its process cannot be seen here."""
        words = busy.split()
        if len(words) < 3 or words[0] != "BUSY":
            return False
        token, (host, _, pid) = words[1], words[2].rpartition(":")
        if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            return False
        log.info("%s: the run holding its lease (pid %s on this host) is gone: lease broken", self.name, pid)
        self._sh(_BREAK.format(dir=shlex.quote(self._lease_dir), token=shlex.quote(token)))
        return True

    def renew(self) -> None:
        """Extends the lease once a third of it has passed (each renewal is a round trip)."""
        if self._leased and time.monotonic() - self._renewed > self.lease_seconds / 3:
            self._sh(_RENEW.format(dir=shlex.quote(self._lease_dir), token=self._token, seconds=self.lease_seconds))
            self._renewed = time.monotonic()

    def close(self) -> None:
        """Removes the run's work directory (only that) and releases the lease, reconnecting
        once if the connection died; never raises. (A device that stays unreachable keeps its
        lease until it expires.)"""
        for attempt in range(2):
            try:
                if attempt:
                    self.transport.close()
                    self.transport.connect()
                if self.workdir:
                    self.transport.remove_dir(self.workdir)
                    self.workdir = self._litert_script = None
                    self._scripts.clear()
                if self._leased:
                    self._sh(_BREAK.format(dir=shlex.quote(self._lease_dir), token=self._token))
                    self._leased = False
                break
            except DeviceError as exc:
                if attempt:
                    log.warning("%s: cleanup failed (the lease expires by itself): %s", self.name, exc)
        self.transport.close()

    def command(self, args: list[str]) -> list[str]:
        return [*self.target.run_prefix, self.remote_profiler, *args]

    def profiler_json(self, args: list[str], timeout: float = 600.0) -> dict:
        lines: list[str] = []
        code, err = self.transport.run(self.command(args), lines.append, timeout)
        if code not in (0, 3):  # 3: a wrong answer, reported in the JSON
            raise DeviceError("crash", f"{self.name}: profiler {args[0]} exited with {code}: {err.strip()[-300:]}")
        try:
            return json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError):
            raise DeviceError("crash", f"{self.name}: profiler {args[0]} printed no result: {err.strip()[-300:]}") from None

    def run_job(self, job_text: str, on_record: Callable[[dict], None], options: list[str], timeout: float) -> None:
        """Runs a job (inline when small, else as an uploaded file), handing over each
        measurement as its line arrives."""
        if len(job_text) <= 32 * 1024:
            source = ["--text", job_text]
        else:
            source = ["--file", f"{self.workdir}/job.txt"]
            self.transport.write_text(source[1], job_text)

        def on_line(line: str) -> None:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                return
            on_record(record)

        code, err = self.transport.run(self.command(["job", *source, *options]), on_line, timeout)
        if code != 0:
            raise DeviceError("crash", f"{self.name}: profiler job exited with {code}: {err.strip()[-300:]}")

    def compare(self, plans: list[tuple[str, int]], rounds: int, warmup: int, repeats: int, layers: bool,
                timeout: float, first_round: int = 0) -> dict:
        """`layertune-profiler compare` on uploaded plans [(remote path, threads)]."""
        return self.profiler_json(["compare", "--plans", ",".join(p for p, _ in plans), "--threads",
                                   ",".join(str(t) for _, t in plans), "--rounds", str(rounds), "--warmup", str(warmup),
                                   "--repeats", str(repeats), "--layers", "1" if layers else "0",
                                   "--first-round", str(first_round)], timeout)

    def litert(self, remote_model: str, threads: list[int], rounds: int, warmup: int, repeats: int,
               timeout: float) -> dict:
        """LiteRT on the device (runners/litert_timer.py with the device's Python): {"series": ...}
        or {"error": why not}."""
        if self._litert_script is None:
            self._litert_script = self.upload(Path(__file__).with_name("litert_timer.py"), "litert_timer.py")
        lines: list[str] = []
        code, err = self.transport.run([self.transport.python, self._litert_script, remote_model, "--threads",
                                        ",".join(map(str, threads)), "--rounds", str(rounds), "--warmup", str(warmup),
                                        "--repeats", str(repeats)], lines.append, timeout)
        try:
            return json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError):
            return {"error": f"no Python on the device can run LiteRT ({err.strip()[-200:] or f'exit code {code}'})"}

    def upload(self, local: Path, name: str) -> str:
        remote = f"{self.workdir}/{name}"
        self.transport.put(local, remote)
        return remote

    def download(self, name: str, local: Path) -> Path:
        self.transport.get(f"{self.workdir}/{name}", local)
        return local

    def python_json(self, script: Path, args: list[str], timeout: float) -> dict:
        """A layertune script (standalone: stdlib and numpy) run with the device's Python, its
        last stdout line as JSON; uploaded once per session."""
        remote = self._scripts.get(script.name) or self.upload(script, script.name)
        self._scripts[script.name] = remote
        lines: list[str] = []
        code, err = self.transport.run([self.transport.python, remote, *args], lines.append, timeout)
        try:
            return json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError):
            raise DeviceError("crash", f"{self.name}: {self.transport.python} {script.name} {args[0]} exited with "
                                       f"{code}: {err.strip()[-300:] or 'no output'}") from None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


T = TypeVar("T")


class DeviceSequence:
    """The run's devices one at a time, for the steps that need just one device (its core count,
    per-layer timing inside the model, verification): the first usable device is opened once and
    serves every step; when it fails, the next device takes over and the failed step is retried
    there. Close it (or use `with`) to release the lease."""

    def __init__(self, sessions: list[Callable[[], DeviceSession]]):
        self._pending = list(sessions)
        self._session: DeviceSession | None = None
        self.errors: list[str] = []

    def run(self, step: Callable[[DeviceSession], T]) -> T | None:
        """step(session)'s result on the first device that completes it; None if none can."""
        while self._session is not None or self._pending:
            if self._session is None:
                session = self._pending.pop(0)()
                try:
                    session.open()
                except DeviceError as exc:
                    self.errors.append(str(exc))
                    session.close()
                    continue
                self._session = session
            try:
                self._session.renew()
                return step(self._session)
            except DeviceError as exc:
                self.errors.append(str(exc))
                log.warning("%s failed (%s); the next device, if any, takes over", self._session.name, exc)
                self.close()
        return None

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> "DeviceSequence":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
