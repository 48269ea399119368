"""How to reach a device: a local subprocess or SSH (fabric). A transport only moves files and
runs commands; everything else (leases, work directories, the profiler protocol) is in
device.py, shared by both. Failures raise DeviceError with a kind (connect, timeout, crash)."""

from __future__ import annotations

import io
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable


class DeviceError(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class LocalTransport:
    """This machine as the device."""

    def __init__(self, temp_dir: str | None = None, name: str = "local"):
        self.name = name  # names the device's lease: two local "devices" need two names
        self.python = sys.executable  # runs the device-side Python helpers (litert_timer.py, inference.py)
        self.temp_dir = temp_dir

    def connect(self) -> None:
        pass

    def close(self) -> None:
        pass

    def make_dir(self, prefix: str) -> str:
        return tempfile.mkdtemp(prefix=prefix, dir=self.temp_dir)

    def remove_dir(self, path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def put(self, local: Path, remote: str, mode: int = 0o644) -> None:
        shutil.copyfile(local, remote)
        os.chmod(remote, mode)

    def get(self, remote: str, local: Path) -> None:
        try:
            shutil.copyfile(remote, local)
        except OSError as exc:
            raise DeviceError("crash", f"cannot fetch {remote}: {exc.strerror or exc}") from None

    def write_text(self, remote: str, text: str) -> None:
        Path(remote).write_text(text)

    def run(self, argv: list[str], on_line: Callable[[str], None] | None = None, timeout: float = 600.0) -> tuple[int, str]:
        """Runs argv, handing each stdout line to on_line as it arrives; (exit code, stderr)."""
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        except OSError as exc:
            raise DeviceError("crash", f"cannot start {argv[0]}: {exc}") from None
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        stderr_chunks: list[str] = []
        reader = threading.Thread(target=lambda: stderr_chunks.append(proc.stderr.read()), daemon=True)
        reader.start()
        started = time.monotonic()
        try:
            for line in proc.stdout:
                if on_line:
                    on_line(line.rstrip("\n"))
            proc.wait()
        finally:
            timer.cancel()
            reader.join(5)
        if time.monotonic() - started >= timeout:
            raise DeviceError("timeout", f"{Path(argv[0]).name} did not finish within {timeout:.0f} s")
        return proc.returncode, "".join(stderr_chunks)


class SSHTransport:
    """A device over SSH (fabric). Key authentication by default, host keys checked against
    known_hosts; a password (--password / RPI_PASSWORD) works but is never logged or stored."""

    def __init__(self, host: str, user: str | None = None, port: int = 22, key_file: str | None = None,
                 password: str | None = None, known_hosts: str | None = None, connect_timeout: float = 10.0):
        self.host, self.user, self.port = host, user, port
        self.name = f"{user + '@' if user else ''}{host}:{port}"
        self.python = "python3"
        self._key_file, self._password, self._known_hosts = key_file, password, known_hosts
        self._connect_timeout = connect_timeout
        self._conn = None

    def __repr__(self) -> str:  # never shows the password
        return f"SSHTransport({self.name})"

    def connect(self) -> None:
        import paramiko
        from fabric import Connection

        kwargs: dict = {"look_for_keys": self._key_file is None and self._password is None, "allow_agent": False,
                        "banner_timeout": self._connect_timeout, "auth_timeout": self._connect_timeout}
        if self._key_file:
            kwargs["key_filename"] = self._key_file
        if self._password:
            kwargs["password"] = self._password
        conn = Connection(self.host, user=self.user, port=self.port, connect_kwargs=kwargs,
                          connect_timeout=self._connect_timeout)
        client = conn.client
        client.load_system_host_keys()
        if self._known_hosts:
            client.load_host_keys(self._known_hosts)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            conn.open()
        except paramiko.BadHostKeyException as exc:
            raise DeviceError("connect", f"{self.name}: the host key changed: {exc.key.get_name()} "
                                         f"{exc.key.get_fingerprint().hex()} is not the key known_hosts holds for it "
                                         "(refused: if the device was reinstalled, remove its old key with "
                                         f"ssh-keygen -R {self.host if self.port == 22 else f'[{self.host}]:{self.port}'})") from None
        except paramiko.AuthenticationException:
            raise DeviceError("connect", f"{self.name}: authentication failed (check --username, --ssh_key or the password)") from None
        except paramiko.SSHException as exc:
            raise DeviceError("connect", f"{self.name}: {exc}") from None
        except OSError as exc:
            raise DeviceError("connect", f"{self.name}: cannot connect ({exc.strerror or exc})") from None
        self._conn = conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _shell(self, command: str, timeout: float = 60.0):
        if self._conn is None:
            raise DeviceError("connect", f"{self.name}: not connected")
        try:
            return self._conn.run(command, hide=True, warn=True, timeout=timeout, in_stream=False)
        except Exception as exc:  # a dropped connection
            raise DeviceError("connect", f"{self.name}: {exc.__class__.__name__}: {exc}") from None

    def make_dir(self, prefix: str) -> str:
        result = self._shell(f"mktemp -d /tmp/{shlex.quote(prefix)}XXXXXX")
        if result.exited != 0:
            raise DeviceError("crash", f"{self.name}: cannot create a work directory: {result.stderr.strip()}")
        return result.stdout.strip()

    def remove_dir(self, path: str) -> None:
        if path.startswith("/tmp/layertune-"):  # only what this run made
            result = self._shell(f"rm -rf {shlex.quote(path)}")
            if result.exited != 0:
                raise DeviceError("crash", f"{self.name}: cannot remove {path}: {result.stderr.strip()}")

    def put(self, local: Path, remote: str, mode: int = 0o644) -> None:
        try:
            self._conn.put(str(local), remote)
            self._conn.sftp().chmod(remote, mode)
        except Exception as exc:
            raise DeviceError("connect", f"{self.name}: upload failed: {exc}") from None

    def get(self, remote: str, local: Path) -> None:
        try:
            self._conn.get(remote, str(local))
        except Exception as exc:
            raise DeviceError("connect", f"{self.name}: download of {remote} failed: {exc}") from None

    def write_text(self, remote: str, text: str) -> None:
        try:
            self._conn.put(io.BytesIO(text.encode()), remote)
        except Exception as exc:
            raise DeviceError("connect", f"{self.name}: upload failed: {exc}") from None

    def run(self, argv: list[str], on_line: Callable[[str], None] | None = None, timeout: float = 600.0) -> tuple[int, str]:
        command = " ".join(shlex.quote(a) for a in argv)
        buffer = _LineSplitter(on_line)
        try:
            result = self._conn.run(command, hide=True, warn=True, timeout=timeout, out_stream=buffer, in_stream=False)
        except Exception as exc:
            if "CommandTimedOut" in type(exc).__name__:
                raise DeviceError("timeout", f"{self.name}: {Path(argv[0]).name} did not finish within {timeout:.0f} s") from None
            raise DeviceError("connect", f"{self.name}: {exc.__class__.__name__}: {exc}") from None
        buffer.flush()
        # Lines fabric had not yet handed to the stream when run() returned (seen: the last line
        # of a job) are in the captured output: deliver the rest from there.
        lines = result.stdout.splitlines()
        for line in lines[buffer.delivered:]:
            if on_line:
                on_line(line)
        return result.exited, result.stderr


class _LineSplitter:
    """A file-like sink for fabric's out_stream that hands over complete lines as they arrive."""

    def __init__(self, on_line: Callable[[str], None] | None):
        self.on_line, self.pending, self.delivered = on_line, "", 0
        self._lock = threading.Lock()

    def write(self, data: str) -> None:
        with self._lock:
            self.pending += data
            *lines, self.pending = self.pending.split("\n")
            for line in lines:
                self.delivered += 1
                if self.on_line:
                    self.on_line(line)

    def flush(self) -> None:
        """Complete lines only: a partial last line comes from the captured output instead."""
