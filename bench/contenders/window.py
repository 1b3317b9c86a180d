"""The receive window a contender measures itself over, and the line it reports.

CPU comes from ``getrusage(RUSAGE_SELF)`` (user + system, every thread, microsecond
resolution) read when the first frame arrives and when the stream is over, so the
interpreter's start-up, imports, key loading and the handshake are excluded. The
frame that opens the window is not counted in it: the window covers
``frames - 1`` frames.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from dataclasses import asdict, dataclass


def _peak_rss_mb() -> float:
    """VmHWM of this process (ru_maxrss would include the parent's size at fork)."""
    with open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _run_delay() -> float:
    """Seconds this process's threads waited for a CPU while runnable (schedstat)."""
    total = 0
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/schedstat", "rb") as f:
            total += int(f.read().split()[1])
    return total / 1e9


def _cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


@dataclass
class Report:
    """What a contender prints on stdout (one JSON line)."""

    frames: int
    """Every frame received, the first included."""
    window_frames: int
    window_s: float
    cpu_s: float
    peak_rss_mb: float = 0.0
    wait_s: float = 0.0
    """Time runnable but not running during the window (other work on the core)."""
    cpus: list[int] | None = None
    """The CPUs this process was allowed on (proves the pinning took)."""
    error: str = ""


class ReceiveWindow:
    """Call :meth:`first` on the first frame and :meth:`close` once the stream is over."""

    def __init__(self) -> None:
        self._t0 = 0.0
        self._cpu0 = 0.0
        self._t1 = 0.0
        self._cpu1 = 0.0
        self._rss = 0.0
        self._wait0 = 0.0
        self._wait1 = 0.0

    def first(self) -> None:
        self._wait0 = _run_delay()
        self._cpu0 = _cpu()
        self._t0 = time.perf_counter()

    def close(self) -> None:
        self._t1 = time.perf_counter()
        self._cpu1 = _cpu()
        self._rss = _peak_rss_mb()
        self._wait1 = _run_delay()

    @property
    def opened(self) -> bool:
        return self._t0 > 0

    def report(self, frames: int, error: str = "") -> Report:
        if not self.opened:
            return Report(
                frames, 0, 0.0, 0.0, _peak_rss_mb(), 0.0, _cpus(), error or "no frame received"
            )
        return Report(
            frames,
            frames - 1,
            self._t1 - self._t0,
            self._cpu1 - self._cpu0,
            self._rss,
            self._wait1 - self._wait0,
            _cpus(),
            error,
        )


def emit(report: Report) -> None:
    sys.stdout.write(json.dumps(asdict(report)) + "\n")
    sys.stdout.flush()
