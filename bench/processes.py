"""Pinned child processes: their CPU time while they run, their peak RSS, their exit.

Peak RSS is ``VmHWM`` from ``/proc/<pid>/status``, followed while the child runs, not
``ru_maxrss`` from ``os.wait4``: a forked child's high-water mark starts at the
parent's resident size (its copy-on-write pages count), and exec keeps that maximum,
so ``ru_maxrss`` of a child of this driver reports at least the driver's own RSS
(measured here: 311 MB for ``python -c pass`` forked from a 300 MB parent, whose
VmHWM was 11 MB). VmHWM belongs to the exec'd image only.

CPU of a running child comes from ``/proc/<pid>/stat`` (utime + stime of every thread,
dead threads included, in clock ticks); at exit, from ``os.wait4``'s rusage.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

VENV_BIN = Path(sys.executable).parent
_TICK = os.sysconf("SC_CLK_TCK")


def cores() -> tuple[int | None, int | None]:
    """(receiver core, sender core): the first two CPUs this process may use.

    With fewer than two, nothing is pinned (the report then says the figures are
    indicative only).
    """
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None, None
    return allowed[0], allowed[1]


def pinned(core: int | None, argv: Sequence[str]) -> list[str]:
    return (["taskset", "-c", str(core)] if core is not None else []) + list(argv)


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set of the current image so far) in MiB; 0 once gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a running process (all threads, clock-tick resolution)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """utime + stime per live thread, by thread id (the main thread's id is ``pid``)."""
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / _TICK
    return out


def run_delay_s(pid: int | str) -> float:
    """Seconds the threads of ``pid`` spent runnable but waiting for a CPU (schedstat).

    On a machine shared with other work this is the noise made visible: time a pinned
    contender lost to whatever else ran on its core.
    """
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_bytes().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


@dataclass(frozen=True)
class Exit:
    code: int
    cpu_s: float
    """User + system CPU of the whole life of the process."""
    peak_rss_mb: float
    """The last VmHWM read before it exited (polled every few milliseconds)."""


class Child:
    """A spawned process, reaped with ``os.wait4``; its VmHWM followed while it runs."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        stdout: IO[Any] | int | None = subprocess.DEVNULL,
        stderr: IO[Any] | int | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.proc = subprocess.Popen(list(argv), stdout=stdout, stderr=stderr, env=env, cwd=cwd)
        self.pid = self.proc.pid
        self.peak_rss_mb = 0.0
        self.exit: Exit | None = None

    def poll(self) -> Exit | None:
        """The exit if the child has exited (reaping it), else None."""
        if self.exit is not None:
            return self.exit
        self.peak_rss_mb = max(self.peak_rss_mb, peak_rss_mb(self.pid))
        pid, status, ru = os.wait4(self.pid, os.WNOHANG)
        if pid == 0:
            return None
        code = os.waitstatus_to_exitcode(status)
        self.proc.returncode = code  # reaped here: Popen must not wait again
        self.exit = Exit(code, ru.ru_utime + ru.ru_stime, self.peak_rss_mb)
        return self.exit

    def wait(self, timeout: float) -> Exit:
        """Wait for the exit; SIGKILL the child after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            done = self.poll()
            if done is not None:
                return done
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                deadline = float("inf")
            time.sleep(0.005)

    def stop(self, timeout: float = 10.0) -> Exit:
        """SIGTERM (the collector and the operator flush and exit), then wait."""
        if self.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
        return self.wait(timeout)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def run_delay_s(self) -> float:
        return run_delay_s(self.pid)

    def thread_cpu_seconds(self) -> dict[int, float]:
        return thread_cpu_seconds(self.pid)
