"""The profiler for a target: the host build that ships with the package, or a static cross
build with CMake and the target's toolchain file, cached by (source hash, target flags)."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from layertune.kernels import profiler_path
from layertune.paths import shipped
from layertune.tuner.targets import Target

log = logging.getLogger("layertune.build")


def source_dir() -> Path:
    """The C++ sources: installed with the package, or this checkout's."""
    src = shipped("_source", ".", "the layertune C++ sources")
    if not (src / "CMakeLists.txt").exists() or not (src / "csrc").is_dir():
        raise FileNotFoundError("the layertune C++ sources are missing; reinstall layertune with `pip install .`")
    return src


def source_hash(src: Path | None = None) -> str:
    """A hash of every source file and the build description: a profiler build's identity."""
    src = src or source_dir()
    h = hashlib.sha256()
    files = sorted([src / "CMakeLists.txt", *[p for p in (src / "csrc").rglob("*") if p.is_file()]])
    for path in files:
        h.update(str(path.relative_to(src)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def cache_root() -> Path:
    return Path(os.environ.get("LAYERTUNE_CACHE", Path.home() / ".cache" / "layertune"))


def build_profiler(target: Target, jobs: int = 2, cache: Path | None = None) -> tuple[Path, str]:
    """(profiler binary, build hash) for the target; builds it if the cache lacks it."""
    if target.is_host:
        binary = profiler_path()
        return binary, "host-" + hashlib.sha256(binary.read_bytes()).hexdigest()[:16]
    target.check_compiler()
    src = source_dir()
    key = hashlib.sha256(f"{source_hash(src)}|{target.toolchain}|{target.compiler}".encode()).hexdigest()[:16]
    out_dir = (cache or cache_root()) / "profilers" / f"{target.name}-{key}"
    binary = out_dir / "layertune-profiler"
    if binary.exists():
        log.info("profiler for %s: cached (%s)", target.name, key)
        return binary, key
    out_dir.mkdir(parents=True, exist_ok=True)
    log.info("building the profiler for %s (%s) ...", target.name, target.toolchain)
    with tempfile.TemporaryDirectory(prefix=f"layertune-build-{target.name}-") as build:
        configure = ["cmake", "-S", str(src), "-B", build, "-DCMAKE_BUILD_TYPE=Release", "-DLAYERTUNE_STATIC=ON",
                     f"-DCMAKE_TOOLCHAIN_FILE={src / 'csrc' / 'toolchains' / target.toolchain}"]
        if shutil.which("ninja"):
            configure += ["-G", "Ninja"]
        for cmd in (configure, ["cmake", "--build", build, "--target", "layertune-profiler", "-j", str(jobs)]):
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "error" in line.lower()]
                raise RuntimeError(f"building the profiler for {target.name} failed: "
                                   f"{(lines or (proc.stderr or proc.stdout).splitlines() or ['?'])[0][:300]}")
        tmp = binary.with_suffix(".tmp")
        shutil.copy2(Path(build) / "layertune-profiler", tmp)
        os.replace(tmp, binary)  # never a half-written binary in the cache
    return binary, key


def build_all(targets: list[Target], parallel: int = 1, jobs: int = 2) -> dict[str, tuple[Path, str]]:
    """Builds several targets' profilers, `parallel` at a time."""
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        futures = {t.name: pool.submit(build_profiler, t, jobs) for t in targets}
        return {name: f.result() for name, f in futures.items()}
