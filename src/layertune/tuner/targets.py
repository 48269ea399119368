"""Targets are data: how to build the profiler for a kind of device and how to recognise one.

Built in: host, pi3 (ARMv7 hard-float, NEON), pi3_64 and aarch64 (64-bit ARM), pi0 (ARMv6).
Users add or adapt targets in a JSON file (--targets FILE):

    {"pi3_qemu": {"base": "pi3", "run_prefix": ["qemu-arm", "-cpu", "max"], "cpuinfo_regex": ".*"}}

`run_prefix` is put before every command that runs a binary of the target on the device — empty
on a real Pi, `qemu-aarch64` / `qemu-arm -cpu max` / `qemu-arm -cpu arm1176` to exercise ARM
builds on an x86 machine. `cpuinfo_regex` must match what the profiler reports of the device's
/proc/cpuinfo (`layertune-profiler info`), or the device is refused.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from layertune.jsonfile import read_json


@dataclass(frozen=True)
class Target:
    name: str
    toolchain: str | None = None  # a file in csrc/toolchains; None: the host build that ships with layertune
    compiler: str | None = None  # the cross compiler the toolchain file names
    debian_package: str | None = None  # where that compiler comes from
    cpuinfo_regex: str = ".*"
    run_prefix: tuple[str, ...] = field(default_factory=tuple)
    llvm_target: str | None = None  # how LLVM (TVM's llvm target) names the target; None: the host CPU

    @property
    def is_host(self) -> bool:
        return self.toolchain is None

    def check_compiler(self) -> None:
        """A clear error when the cross compiler is missing, naming the package to install."""
        if self.compiler and shutil.which(self.compiler) is None:
            raise ValueError(f"target {self.name}: the cross compiler {self.compiler} is not installed "
                             f"(Debian: apt-get install {self.debian_package})")


_ARM64_REGEX = r"(?i)aarch64|armv8|cortex-a5[37]|cortex-a7[2-6]|BCM2837|BCM2711|CPU architecture:\s*8"
BUILTIN: dict[str, Target] = {
    "host": Target("host"),
    "pi3": Target("pi3", "pi3.cmake", "arm-linux-gnueabihf-g++", "g++-arm-linux-gnueabihf",
                  r"(?i)armv7|armv8|aarch64|cortex-a53|BCM2709|BCM2837|CPU architecture:\s*[78]",
                  llvm_target="llvm -mtriple=armv7a-linux-gnueabihf -mcpu=cortex-a53 -mattr=+neon -mfloat-abi=hard"),
    "pi3_64": Target("pi3_64", "aarch64.cmake", "aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu", _ARM64_REGEX,
                     llvm_target="llvm -mtriple=aarch64-linux-gnu -mcpu=cortex-a53 -mattr=+neon"),
    "aarch64": Target("aarch64", "aarch64.cmake", "aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu", _ARM64_REGEX,
                      llvm_target="llvm -mtriple=aarch64-linux-gnu -mattr=+neon"),
    "pi0": Target("pi0", "pi0.cmake", "arm-linux-gnueabi-g++", "g++-arm-linux-gnueabi",
                  r"(?i)armv6|arm1176|BCM2835|CPU architecture:\s*[67]",
                  llvm_target="llvm -mtriple=armv6-linux-gnueabi -mcpu=arm1176jzf-s"),
}
_FIELDS = {f.name for f in fields(Target)} - {"name"}


def load_targets(path: str | Path) -> dict[str, Target]:
    """User-defined targets from a JSON file (each may name a built-in `base` to start from)."""
    path = Path(path)
    data = read_json(path, "targets file")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object of target name -> definition")
    out = {}
    for name, spec in data.items():
        if not isinstance(spec, dict):
            raise ValueError(f"{path}: target '{name}' must be an object")
        spec = dict(spec)
        base_name = spec.pop("base", None)
        if base_name is not None and base_name not in BUILTIN:
            raise ValueError(f"{path}: target '{name}': unknown base '{base_name}' (built in: {', '.join(BUILTIN)})")
        unknown = set(spec) - _FIELDS
        if unknown:
            raise ValueError(f"{path}: target '{name}': unknown key '{sorted(unknown)[0]}' (known: base, {', '.join(sorted(_FIELDS))})")
        if "run_prefix" in spec:
            prefix = spec["run_prefix"]
            if not isinstance(prefix, list) or not all(isinstance(p, str) for p in prefix):
                raise ValueError(f"{path}: target '{name}': 'run_prefix' must be a list of strings")
            spec["run_prefix"] = tuple(prefix)
        base = BUILTIN[base_name] if base_name else Target(name)
        out[name] = replace(base, name=name, **spec)
    return out


def resolve_target(name: str, targets_file: str | Path | None = None) -> Target:
    known = dict(BUILTIN)
    if targets_file:
        known.update(load_targets(targets_file))
    if name not in known:
        raise ValueError(f"--target: unknown target '{name}' (known: {', '.join(known)})")
    return known[name]
