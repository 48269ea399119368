"""Which devices a run uses and how to reach each: `--ipaddress` hosts, a `--cluster` file, or
this machine. The password is kept out of repr, logs and files."""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
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
    python: str | None = None  # the device's Python for the helpers (default: python3; here, this one)

    def transport(self, temp_dir: str | None):
        if self.host is None:
            transport = LocalTransport(temp_dir)
        else:
            transport = SSHTransport(self.host, self.user, self.port, self.key_file, self.password, self.known_hosts)
        transport.python = self.python or transport.python
        return transport

    @property
    def name(self) -> str:
        return "local" if self.host is None else f"{self.user + '@' if self.user else ''}{self.host}:{self.port}"

    def to_json(self) -> dict:
        """Everything but the password (which travels in RPI_PASSWORD, never in a file)."""
        return {k: v for k, v in asdict(self).items() if k != "password"}

    @classmethod
    def from_json(cls, data: dict) -> "Device":
        return cls(**data, password=os.environ.get("RPI_PASSWORD"))


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
                              defaults.key_file, defaults.password, defaults.known_hosts, defaults.python))
    if not devices:
        raise ValueError(f"{path}: lists no devices")
    return devices


def devices_from_arguments(ipaddress: list[str] | None, cluster: str | None, user: str | None, port: int,
                           key_file: str | None, password: str | None, known_hosts: str | None,
                           python: str | None = None) -> list[Device]:
    """The devices of the command-line options (shared by every command that reaches devices);
    the password falls back to RPI_PASSWORD."""
    defaults = Device(None, user, port, key_file, password or os.environ.get("RPI_PASSWORD"), known_hosts, python)
    if cluster:
        return load_cluster(cluster, defaults)
    if ipaddress:
        return [Device(h, defaults.user, port, key_file, defaults.password, known_hosts, python) for h in ipaddress]
    return [defaults]  # this machine
