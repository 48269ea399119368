"""Which devices a run uses and how to reach each: `--ipaddress` hosts, a `--cluster` file, or
this machine. The password is kept out of repr, logs and files."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from layertune.runners.transport import LocalTransport, SSHTransport


@dataclass
class Device:
    """How to reach one device."""
    host: str | None  # None: this machine
    user: str | None = None
    port: int = 22
    key_file: str | None = None
    password: str | None = field(default=None, repr=False)
    known_hosts: str | None = None

    def transport(self, temp_dir: str | None):
        if self.host is None:
            return LocalTransport(temp_dir)
        return SSHTransport(self.host, self.user, self.port, self.key_file, self.password, self.known_hosts)


def load_cluster(path: str | Path, defaults: Device) -> list[Device]:
    """A device list: one device per line, `[user@]host[:port]`; `#` starts a comment."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such cluster file")
    devices = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"(?:([^@\s]+)@)?([^:\s]+)(?::(\d+))?", line)
        if not m:
            raise ValueError(f"{path}:{number}: expected [user@]host[:port], got '{line}'")
        devices.append(Device(m.group(2), m.group(1) or defaults.user, int(m.group(3) or defaults.port),
                              defaults.key_file, defaults.password, defaults.known_hosts))
    if not devices:
        raise ValueError(f"{path}: lists no devices")
    return devices


def devices_from_arguments(ipaddress: list[str] | None, cluster: str | None, user: str | None, port: int,
                           key_file: str | None, password: str | None, known_hosts: str | None) -> list[Device]:
    """The devices of the command-line options (shared by every command that reaches devices);
    the password falls back to RPI_PASSWORD."""
    defaults = Device(None, user, port, key_file, password or os.environ.get("RPI_PASSWORD"), known_hosts)
    if cluster:
        return load_cluster(cluster, defaults)
    if ipaddress:
        return [Device(h, defaults.user, port, key_file, defaults.password, known_hosts) for h in ipaddress]
    return [defaults]  # this machine
