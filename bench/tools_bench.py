"""Throughput of the archive tools (issue 13): ``verify`` and ``export`` in MB/s.

A day file of the benchmark's own stream (the simulator's frames, framed exactly as
the collector frames them; ``archive_bench.write_day``) is verified plain, then sealed
and verified again (decompression, the manifest's SHA-256), and exported to Parquet.
Each runs in this process's main thread pinned to the receiver core, with progress
lines off. MB/s is plain (decompressed) MB per second of wall time; CPU per line is
the thread's own (``time.thread_time``), and MB per CPU second is the same bytes over
that CPU time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.archive_bench import write_day
from bench.workload import FEED, Workload
from ssmd_collector.archive.export import export
from ssmd_collector.archive.reader import open_archive
from ssmd_collector.archive.verify import verify
from ssmd_collector.storage.seal import seal_day


@dataclass
class ToolRun:
    name: str
    plain_bytes: int
    lines: int
    wall_s: float
    cpu_s: float
    ok: bool
    note: str = ""

    @property
    def mb_per_s(self) -> float:
        return self.plain_bytes / 1e6 / max(self.wall_s, 1e-9)

    @property
    def mb_per_cpu_s(self) -> float:
        """Plain MB per second of the thread's own CPU: steadier than wall time on a
        shared machine (it leaves out time spent waiting for the core)."""
        return self.plain_bytes / 1e6 / max(self.cpu_s, 1e-9)

    @property
    def us_per_line(self) -> float:
        return self.cpu_s / max(self.lines, 1) * 1e6


def _timed(core: int | None, work: Callable[[], tuple[int, int, bool, str]], name: str) -> ToolRun:
    before = os.sched_getaffinity(0)
    if core is not None:
        os.sched_setaffinity(0, {core})
    try:
        wall, cpu = time.perf_counter(), time.thread_time()
        plain, lines, ok, note = work()
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    finally:
        os.sched_setaffinity(0, before)
    return ToolRun(name, plain, lines, wall, cpu, ok, note)


def measure_tools(workload: Workload, work: Path, receiver: int | None) -> list[ToolRun]:
    root = work / "archive"
    expected = write_day(root, workload)
    day = root / "2025-01-01"

    def run_verify() -> tuple[int, int, bool, str]:
        report = verify(open_archive(root), progress=False)
        ok = report.ok and report.lines == expected and not report.gaps
        return report.bytes, report.lines, ok, "; ".join(report.corrupt[:3])

    def run_export() -> tuple[int, int, bool, str]:
        result = export(open_archive(root), work / "parquet", progress=False)
        ok = result.lines == expected and sum(result.rows.values()) > 0
        return result.plain_bytes, result.lines, ok, ""

    runs = [_timed(receiver, run_verify, "verify (plain)")]
    seal_day(day, FEED, now=lambda: time.time() + 3 * 86_400)
    runs.append(_timed(receiver, run_verify, "verify (sealed)"))
    runs.append(_timed(receiver, run_export, "export parquet (sealed)"))
    return runs


def render(runs: list[ToolRun]) -> str:
    out = ["archive tools:"]
    for r in runs:
        status = "" if r.ok else f"  FAILED: {r.note or 'wrong counts'}"
        out.append(
            f"  {r.name:<24} {r.mb_per_s:6.1f} MB/s plain ({r.mb_per_cpu_s:6.1f} per CPU s), "
            f"{r.us_per_line:5.2f} CPU us/line ({r.lines:,} lines, {r.plain_bytes / 1e6:.1f} MB)"
            f"{status}"
        )
    return "\n".join(out)
