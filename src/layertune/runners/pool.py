"""Spreading profiling jobs over a pool of devices. Each device is leased for the run by its own
DeviceSession; jobs (one layer's missing variants, in small chunks) go to whichever device is
free; a device that fails or times out has its job re-queued on another device and is dropped;
a job that keeps failing is recorded as failed with the reason; every lease is released in
every outcome."""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from layertune.runners.device import DeviceSession
from layertune.runners.transport import DeviceError

log = logging.getLogger("layertune.pool")


@dataclass
class Job:
    layer: str  # layer signature
    layer_line: str  # the job file's "L" line
    variants: list[tuple[str, dict]]  # (variant key, {"method": ..., params})
    attempts: int = 0


@dataclass
class PoolStats:
    """Profiling-phase figures. The phase runs from the first device being ready to the last
    measurement; connecting, leasing and uploading (setup_seconds, per device) come before, and
    removing the work directory and releasing the lease (cleanup_seconds) after."""
    busy_seconds: dict[str, float] = field(default_factory=dict)
    setup_seconds: dict[str, float] = field(default_factory=dict)
    cleanup_seconds: dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0
    failed_devices: dict[str, str] = field(default_factory=dict)
    jobs_failed: int = 0
    job_intervals: list[tuple[str, float, float]] = field(default_factory=list)  # (device, start, end), wall clock

    @property
    def utilization(self) -> float:
        """(sum of device-busy time) / (devices used x wall time of the profiling phase)."""
        used = [s for s in self.busy_seconds.values() if s > 0] or [0.0]
        return sum(used) / (len(used) * self.wall_seconds) if self.wall_seconds else 0.0


def job_text(job: Job, variants: list[tuple[str, dict]]) -> str:
    lines = [job.layer_line]
    for key, params in variants:
        words = [params["method"]] + [f"{k}={v}" for k, v in params.items() if k != "method"]
        lines.append(f"V {job.layer} {key} {' '.join(words)}")
    return "\n".join(lines) + "\n"


def run_pool(sessions: list[Callable[[], DeviceSession]], jobs: list[Job],
             missing: Callable[[Job], list[tuple[str, dict]]],
             on_record: Callable[[Job, dict, str], None],
             on_failure: Callable[[Job, list[tuple[str, dict]], str, str], None],
             profiler_options: list[str], parallel_run: int, timeout: float, max_attempts: int = 3,
             progress: Callable[[], None] | None = None) -> PoolStats:
    """Runs every job on the devices; returns busy / wall statistics.

    missing(job): the job's variants not measured yet (a re-queued job only redoes those).
    on_record(job, profiler record, device): a measurement as it arrives.
    on_failure(job, variants, error kind, message): variants given up on.
    """
    stats = PoolStats()
    pending: queue.Queue[Job] = queue.Queue()
    for job in jobs:
        pending.put(job)
    outstanding = [len(jobs)]
    lock = threading.Lock()
    start = time.monotonic()
    first_ready: list[float] = []
    last_done = [start]

    def finish_job() -> None:
        with lock:
            outstanding[0] -= 1
            last_done[0] = time.monotonic()
        if progress:
            progress()

    def device_worker(make_session: Callable[[], DeviceSession]) -> None:
        session = make_session()
        stats.busy_seconds.setdefault(session.name, 0.0)
        t_open = time.monotonic()
        try:
            session.open()
            stats.setup_seconds[session.name] = time.monotonic() - t_open
            with lock:
                first_ready.append(time.monotonic())
        except DeviceError as exc:
            stats.failed_devices[session.name] = f"{exc.kind}: {exc}"
            log.warning("device %s unusable: %s", session.name, exc)
            session.close()
            return
        try:
            while True:
                try:
                    job = pending.get(timeout=0.2)
                except queue.Empty:
                    with lock:
                        if outstanding[0] <= 0:
                            return
                    continue
                todo = missing(job)
                if not todo:
                    finish_job()
                    continue
                t0, wall0 = time.monotonic(), time.time()
                try:
                    session.run_job(job_text(job, todo), lambda r, j=job: on_record(j, r, session.name),
                                    profiler_options, timeout)
                except DeviceError as exc:
                    stats.busy_seconds[session.name] += time.monotonic() - t0
                    job.attempts += 1
                    left = missing(job)
                    if job.attempts >= max_attempts and left:
                        on_failure(job, left, exc.kind, str(exc))
                        stats.jobs_failed += 1
                        finish_job()
                    else:
                        pending.put(job)  # another device takes it (only what is still missing)
                    stats.failed_devices[session.name] = f"{exc.kind}: {exc}"
                    log.warning("device %s failed (%s); its job is re-queued", session.name, exc)
                    return
                stats.busy_seconds[session.name] += time.monotonic() - t0
                stats.job_intervals.append((session.name, wall0, time.time()))
                finish_job()
                session.renew()
        finally:
            t_close = time.monotonic()
            session.close()
            stats.cleanup_seconds[session.name] = time.monotonic() - t_close

    active = max(1, min(parallel_run, len(sessions)))
    remaining_devices = list(sessions)
    threads: list[threading.Thread] = []
    while True:
        threads = [t for t in threads if t.is_alive()]
        with lock:
            done = outstanding[0] <= 0
        if done:
            break
        while remaining_devices and len(threads) < active:
            t = threading.Thread(target=device_worker, args=(remaining_devices.pop(0),), daemon=True)
            t.start()
            threads.append(t)
        if not threads:  # every device failed: what is left cannot be measured
            while not pending.empty():
                job = pending.get()
                left = missing(job)
                if left:
                    on_failure(job, left, "connect", "no usable device left")
                    stats.jobs_failed += 1
                finish_job()
            break
        time.sleep(0.05)
    for t in threads:
        t.join()
    stats.wall_seconds = max(0.0, last_done[0] - (min(first_ready) if first_ready else start))
    return stats
