"""ssmd-connector end to end: its own metadata tree, a real process, measured from outside.

The collector cannot report on itself, so the window is read off its archive: the
driver follows the day file(s) as they grow (counting complete lines incrementally)
and reads the process's CPU from ``/proc/<pid>/stat`` the first time lines appear
(after start-up, connect and subscribe) and again when the archive holds every line
the stream contains (the last batch handed to the OS). Messages in the window are
the lines written between those two reads. Peak RSS comes from ``os.wait4`` at exit.

For the latency run, ``/metrics`` is scraped once, shortly before the simulator ends
the stream (the collector exits right after), for the receipt-to-write histogram.
"""

from __future__ import annotations

import importlib
import os
import socket
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bench.expected import Expected
from bench.processes import VENV_BIN, Child, Exit, pinned
from bench.sender import KeyPair
from bench.workload import API_KEY_ID, FEED, subscription

_TESTS = Path(__file__).resolve().parent.parent / "tests"
_POLL_S = 0.002
KEYS = {
    "kalshi": {
        "type": "api_key",
        "fields": ["api_key", "private_key"],
        "source": "env:KALSHI_API_KEY,KALSHI_PRIVATE_KEY",
    }
}


def metadata_tree(root: Path, endpoint: str, markets: int) -> Path:
    """The example metadata with the simulator at ``endpoint``, environment ``test``.

    Built by the collector tests' own helper, so the benchmark runs the collector on
    exactly the configuration its tests use (signed, one subscription).
    """
    if str(_TESTS) not in sys.path:
        sys.path.insert(0, str(_TESTS))
    make_tree = importlib.import_module("collector_harness").make_tree
    tree: Path = make_tree(root, endpoint, keys=KEYS, subscriptions=[subscription(markets)])
    return tree


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ArchiveFollower:
    """Counts complete lines of ``<data_dir>/*/<feed>.jsonl`` as they are appended."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._offsets: dict[Path, int] = {}
        self.lines = 0

    def paths(self) -> list[Path]:
        return sorted(self.data_dir.glob(f"*/{FEED}.jsonl"))

    def poll(self) -> int:
        for path in self.paths():
            offset = self._offsets.get(path, 0)
            with path.open("rb") as f:
                f.seek(offset)
                chunk = f.read()
            end = chunk.rfind(b"\n") + 1  # a partial last line waits for the next poll
            self.lines += chunk.count(b"\n", 0, end)
            self._offsets[path] = offset + end
        return self.lines


def scrape(port: int) -> dict[str, float]:
    """``/metrics`` as ``{'name{labels}': value}``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values


@dataclass
class CollectorRun:
    exit: Exit
    lines: int
    window_frames: int = 0
    window_s: float = 0.0
    cpu_s: float = 0.0
    wait_s: float = 0.0
    thread_cpu_s: dict[str, float] = field(default_factory=dict)
    """CPU over the window of the main thread (the event loop) and of the other threads
    (the writer); Python 3.11 does not name threads for the OS, so tids tell them apart."""
    metrics: dict[str, float] = field(default_factory=dict)
    archive: list[Path] = field(default_factory=list)
    log: Path | None = None
    error: str = ""


def run_collector(
    sim_url: str,
    keys: KeyPair,
    markets: int,
    expected: Expected,
    workdir: Path,
    *,
    core: int | None,
    scrape_at_line: int | None = None,
    timeout: float = 120.0,
) -> CollectorRun:
    """Run ssmd-connector until the simulator ends the stream (it then exits 10)."""
    workdir.mkdir(parents=True, exist_ok=True)
    tree = metadata_tree(workdir, sim_url, markets)
    data_dir = workdir / "archive"
    port = free_port()
    log = workdir / "ssmd-connector.log"
    env = {**os.environ, "KALSHI_API_KEY": API_KEY_ID, "KALSHI_PRIVATE_KEY": str(keys.private)}
    argv = [
        str(VENV_BIN / "ssmd-connector"),
        "--env=test",
        f"--config-dir={tree}",
        f"--data-dir={data_dir}",
        f"--port={port}",
        "--http-host=127.0.0.1",
        "--log-format=json",
    ]
    follower = ArchiveFollower(data_dir)
    with log.open("wb") as log_file:
        child = Child(pinned(core, argv), stderr=log_file, env=env)
    t0 = cpu0 = wait0 = 0.0
    cpus: list[int] = []
    threads0: dict[int, float] = {}
    threads1: dict[int, float] = {}
    lines0 = 0
    end: tuple[float, float, float, int] | None = None
    metrics: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while True:
        lines = follower.poll()
        now = time.perf_counter()
        if not t0 and lines:
            cpu0, wait0, t0, lines0 = child.cpu_seconds(), child.run_delay_s(), now, lines
            threads0 = child.thread_cpu_seconds()
            cpus = sorted(os.sched_getaffinity(child.pid))
        if scrape_at_line is not None and not metrics and lines >= scrape_at_line:
            metrics = scrape(port)
        if end is None and lines >= expected.frames:
            end = (now, child.cpu_seconds(), child.run_delay_s(), lines)
            threads1 = child.thread_cpu_seconds()
        exited = child.poll()
        if exited is not None:
            break
        if time.monotonic() > deadline:
            exited = child.stop()
            break
        time.sleep(_POLL_S)
    lines = follower.poll()
    if end is None and lines >= expected.frames:
        # The last lines landed as it exited: close the window with its final rusage.
        end = (time.perf_counter(), exited.cpu_s, wait0, lines)
    run = CollectorRun(exited, lines, archive=follower.paths(), log=log, metrics=metrics)
    if core is not None and t0 and cpus != [core]:
        run.error = f"ran on CPUs {cpus}, not pinned to {core}"
    if end is None:
        run.error = f"archive holds {lines} of {expected.frames} lines at exit {exited.code}"
    elif t0:
        t1, cpu1, wait1, lines1 = end
        run.window_frames = lines1 - lines0
        run.window_s = t1 - t0
        run.cpu_s = cpu1 - cpu0
        run.wait_s = wait1 - wait0
        delta = {tid: v - threads0.get(tid, 0.0) for tid, v in threads1.items()}
        main = delta.pop(child.pid, 0.0)
        run.thread_cpu_s = {"event loop": main, "other threads": sum(delta.values())}
    return run
