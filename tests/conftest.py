"""Shared test helpers."""

from __future__ import annotations

import importlib
import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Tests never read or write the user's cache (~/.cache/layertune): the whole session, and
    every process it starts, uses a cache of its own."""
    os.environ["LAYERTUNE_CACHE"] = str(tmp_path_factory.mktemp("layertune-cache"))


def require(module: str):
    """Import `module`, or skip the test when it is absent — except in CI, where it must be there."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if IN_CI:
            pytest.fail(f"{module} is required in CI (CI=true) but cannot be imported: {exc}")
        pytest.skip(f"{module} is not installed")


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sshd:
    """An sshd on 127.0.0.1 started by tools/sshd_for_tests.sh (its own keys and config)."""

    def __init__(self, directory, port: int):
        self.dir, self.port = directory, port
        self.key = str(directory / "id_ed25519")
        self.known_hosts = str(directory / "known_hosts")

    @property
    def pid(self) -> int:
        return int((self.dir / "sshd.pid").read_text())


def start_sshd(directory) -> Sshd:
    import shutil
    import subprocess
    from pathlib import Path
    if not Path("/usr/sbin/sshd").exists() or shutil.which("ssh-keygen") is None:
        if IN_CI:
            pytest.fail("openssh-server is required in CI (CI=true) but /usr/sbin/sshd is missing")
        pytest.skip("openssh-server is not installed")
    script = Path(__file__).resolve().parent.parent / "tools" / "sshd_for_tests.sh"
    port = free_port()
    subprocess.run(["bash", str(script), "start", str(directory), str(port)], check=True, timeout=60)
    return Sshd(directory, port)


def stop_sshd(sshd: Sshd) -> None:
    import subprocess
    from pathlib import Path
    script = Path(__file__).resolve().parent.parent / "tools" / "sshd_for_tests.sh"
    subprocess.run(["bash", str(script), "stop", str(sshd.dir)], timeout=60)


def ssh_args(sshd: Sshd, hosts=("127.0.0.1",)) -> list[str]:
    """The command-line options that reach the test sshd's devices."""
    return ["--ipaddress", *hosts, "--port", str(sshd.port), "--username", "root", "--ssh_key", sshd.key,
            "--known_hosts", sshd.known_hosts]


def leftovers() -> list[str]:
    """The leases and work directories runs leave on a device (this machine): none, after a run."""
    from pathlib import Path
    return sorted(p.name for p in Path("/tmp").glob("layertune-lease-*")) + \
        sorted(p.name for p in Path("/tmp").glob("layertune-run-*"))


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    stop_sshd(server)


def served_by(root: int) -> dict[int, str]:
    """Every live process descended from `root` (an sshd: what a device is running), pid -> command
    line, read straight from /proc (fast enough to catch the short commands a run sends)."""
    from pathlib import Path
    children: dict[int, list[int]] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            commands[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # gone meanwhile
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = {}, [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            out[pid] = commands.get(pid, "")
            todo.append(pid)
    return out
