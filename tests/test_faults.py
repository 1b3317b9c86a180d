"""Collector faults, in process: silence bound, oversized frames, back-pressure, write failures.

Issue 6, collector half. Each test runs the real collector (``app.run``) against the
simulator over loopback sockets and real files, and fails if the guarantee breaks.
Tests that need a real process (signals, kill -9, resource limits on a child) are in
``test_faults_process.py``; secrets in ``test_faults_secrets.py``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import inspect
import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from collector_harness import Run, make_tree, record
from deadlines import wait_until
from faults_harness import day_files
from prometheus_client import generate_latest
from websockets.exceptions import ConnectionClosed

from ssmd_collector import app, cli
from ssmd_collector.exitcodes import ExitCode
from ssmd_collector.health import HealthServer
from ssmd_collector.metrics import Stats, registry_for
from ssmd_collector.settings import DEFAULTS
from ssmd_collector.sim import Ending, SimConfig, SimServer
from ssmd_collector.writer import JsonlWriter

README = Path(__file__).resolve().parents[1] / "README.md"
KALSHI_HEARTBEAT_S = 10.0
"""Kalshi sends a WebSocket ping every 10 s (docs.kalshi.com, WebSocket connection)."""


def sim_config(**kw: Any) -> SimConfig:
    defaults: dict[str, Any] = {"port": 0, "rate": 0, "heartbeat": 0, "seed": 11}
    # The collector under test signs only when a key is configured: unsigned otherwise.
    # No skew check: these tests are not about it, and a slow signer must not fail them.
    defaults["allow_unsigned"] = "public_key_pem" not in kw
    defaults["timestamp_window"] = None
    return SimConfig(**(defaults | kw))


# --- silence ----------------------------------------------------------------------


def test_default_silence_timeout_is_three_missed_heartbeats_and_at_most_30s() -> None:
    """The documented default bound (30 s = 3 missed Kalshi heartbeats) is what every
    layer uses: the CLI flag and ``Settings`` (what the operator's env var feeds, and what
    the connector reads). At most 30 s so a stuck exchange is noticed quickly; more than two
    heartbeat periods so one late ping never kills a healthy connection. The measured
    detection bound of a configured timeout is pinned in test_faults_process.py."""
    flag = inspect.signature(cli.connector_command).parameters["silence_timeout"].default
    setting = app.Settings(env="x", config_dir=Path()).silence_timeout
    assert flag == setting == DEFAULTS.silence_timeout == 3 * KALSHI_HEARTBEAT_S
    assert 2 * KALSHI_HEARTBEAT_S < flag <= 30
    row = next(line for line in README.read_text().splitlines() if "`--silence-timeout`" in line)
    assert "| `30` |" in row, row


# --- oversized frames -------------------------------------------------------------


async def test_frame_over_the_size_limit_exits_10_after_archiving_everything_before_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A frame bigger than ``--max-frame-bytes`` is never buffered (that is the point of
    the limit): websockets fails the connection with close code 1009. The collector must
    then flush every frame that arrived before it (including frames still unread in the
    socket when it arrived), log why, count a disconnect, and exit 10 so Kubernetes
    restarts it. The big frame itself cannot be kept: it was never read."""
    limit = 16_384
    big = '{"type":"ticker","msg":{"pad":"' + "x" * (4 * limit) + '"}}'
    before: list[str] = []

    async def inject(server: HealthServer) -> None:
        session = await sim.wait_session()
        # Inject as soon as the simulator has written its last data frame, without
        # waiting for the collector to read them: they are in flight behind it.
        while session.data_sent < 3000:
            await asyncio.sleep(0.001)
        before.extend(session.sent)
        await session.send_raw(big)

    async with SimServer(sim_config(messages=3000, ending=Ending.NONE)) as sim:
        run = await record(
            make_tree(tmp_path, sim.url), during=inject, max_frame_bytes=limit, timeout=20
        )
    assert run.code == ExitCode.DISCONNECTED
    assert len(before) == 3003  # 3000 data frames + 3 subscribe answers
    assert run.data() == before  # all of them, once, in order; the big one is not there
    assert run.stats.messages == len(before)
    assert run.connection.errors["disconnect"] == 1
    assert re.search(r"disconnected: closed by (us|the exchange) with code 1009", caplog.text), (
        caplog.text[-2000:]
    )


# --- back-pressure ----------------------------------------------------------------

PAD = 64_000
"""Payload of the big frames the back-pressure tests inject: bytes, not message count,
are what fills buffers, and big frames move many megabytes for little CPU."""

RECEIVE_BATCH_BOUND = (16 << 20) + (256 << 10) + 2 * PAD
"""Most bytes the receive path may add to the write buffer in one step, past the check
on ``max_buffer_bytes``: the connector hands over batches of what it has read, and it
stops reading from the socket above 16 MiB buffered (``inbox.py``), plus the rest of
the socket read in progress and one frame. (With a message-at-a-time receive loop the
bound is one line.) Update this if the connector's read buffer changes."""


def pad(i: int) -> str:
    return f'{{"type":"pad","n":{i},"msg":"{"x" * PAD}"}}'


class SlowWriter(JsonlWriter):
    """A JsonlWriter with a slow disk: each write takes ``LATENCY`` s plus
    ``bytes / BANDWIDTH`` s more, slept in the runner's worker thread."""

    LATENCY = 0.002
    BANDWIDTH = 100e6
    STALL_ON: int | None = None
    """1-based number of the data write that stalls for ``STALL`` s (a storage hiccup)."""
    STALL = 0.0
    instances: list[SlowWriter] = []

    def __init__(self, root: Path, feed: str, suffix: str = ".jsonl") -> None:
        super().__init__(root, feed, suffix)
        self.batches: list[int] = []
        SlowWriter.instances.append(self)

    def write(self, day: str, lines: Sequence[Any]) -> int:
        size = sum(len(line) for line in lines)
        delay = self.LATENCY + size / self.BANDWIDTH
        if len(self.batches) + 1 == self.STALL_ON:
            delay += self.STALL
        time.sleep(delay)
        n = super().write(day, lines)
        self.batches.append(n)
        return n


async def _record_injected(
    tmp_path: Path, frames: int, *, heartbeat: float = 0, **overrides: Any
) -> tuple[Run, list[str], list[int]]:
    """Record while the simulator sends ``frames`` pad frames as fast as the collector
    takes them (TCP back-pressure is the only brake), then, once the collector has
    written everything, closes the connection. Returns the run, what the simulator
    sent (answers and pads, in order) and every sampled queue size in bytes."""
    stats: list[Stats] = []
    samples: list[int] = []

    async def sample(server: HealthServer) -> None:
        stats.append(server.stats)
        while True:
            samples.append(server.stats.queue()[1])
            await asyncio.sleep(0)

    config = sim_config(messages=0, ending=Ending.NONE, heartbeat=heartbeat)
    async with SimServer(config) as sim:
        task = asyncio.create_task(
            record(make_tree(tmp_path, sim.url), during=sample, timeout=60, **overrides)
        )
        session = await sim.wait_session()
        await wait_until(lambda: len(session.sent) >= 3, "the subscribe answers")
        for i in range(frames):
            try:
                await session.send_raw(pad(i))
            except ConnectionClosed:
                break  # the collector left; the test's assertions say why
        await wait_until(
            lambda: task.done() or stats[0].lines_written >= len(session.sent),
            "the collector to write everything",
            seen=lambda: f"{stats[0].lines_written} of {len(session.sent)} lines written",
        )
    return await task, list(session.sent), samples


async def test_slow_writer_keeps_memory_bounded_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Storage slower than the exchange (100 MB/s against an unthrottled loopback feed
    of 64 MB): the write buffer (received + being written, ``ssmd_queue_bytes``) stays
    under ``max_buffer_bytes`` plus one receive batch, because the collector stops
    reading and TCP pushes back on the exchange instead; and nothing is dropped: the
    archive holds every frame sent, once, in order.

    The queue is sampled on every event-loop iteration; the receive path only grows it
    without yielding until it passes the limit, where it awaits, so the sampler sees
    every peak. The stream is several times the bound, so a buffer that did not push
    back would blow through it."""
    monkeypatch.setattr(SlowWriter, "instances", [])
    monkeypatch.setattr(app, "JsonlWriter", SlowWriter)
    caplog.set_level(logging.WARNING)
    max_buffer = 1 << 20
    frames = 1000
    bound = max_buffer + RECEIVE_BATCH_BOUND
    assert frames * PAD > 3 * bound
    run, sent, samples = await _record_injected(tmp_path, frames, max_buffer_bytes=max_buffer)
    assert run.code == ExitCode.DISCONNECTED
    assert len(sent) == 3 + frames
    assert run.data() == sent
    peak = max(samples)
    assert max_buffer <= peak <= bound, (peak, bound)
    assert caplog.text.count("write buffer full") >= 3  # storage really was the bottleneck
    batches = SlowWriter.instances[0].batches
    assert sum(batches) == sum(f.stat().st_size for f in day_files(run.data_dir))
    assert max(batches) <= bound


async def test_a_storage_stall_longer_than_the_silence_timeout_is_not_exchange_silence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A storage hiccup (one write takes 3 s) while the exchange keeps sending, with a
    1 s silence timeout: the collector stops reading (back-pressure), so no bytes are
    read for a while, but the exchange is not silent: its data is waiting in our socket.
    The collector must ride out the stall and lose nothing, not drop the connection
    reporting "no data or heartbeat from the exchange" (which also discards what the
    kernel had buffered for us)."""
    monkeypatch.setattr(SlowWriter, "instances", [])
    monkeypatch.setattr(SlowWriter, "STALL_ON", 2)
    monkeypatch.setattr(SlowWriter, "STALL", 3.0)
    monkeypatch.setattr(app, "JsonlWriter", SlowWriter)
    run, sent, _ = await _record_injected(
        tmp_path, 600, heartbeat=0.2, silence_timeout=1.0, max_buffer_bytes=1 << 20
    )
    assert "no data or heartbeat" not in caplog.text
    assert run.data() == sent


# --- writer failure: the metric -----------------------------------------------------


async def test_write_failure_is_exported_as_a_metric_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Storage refusing a write shows in ``/metrics`` as
    ``ssmd_errors_total{type="write_failed"}`` (rendered here from the run's own
    registry, exactly what the endpoint serves, since the endpoint goes away with the
    process), is logged with the file and the OS reason, and ends the run with exit 14.
    The day file is a link to /dev/full, so the kernel itself answers ENOSPC (a file-size
    limit here would also hit pytest's own files). The same fault with a real file, whole
    lines and the restart after space returns are in test_faults_process.py."""
    day = tmp_path / "data" / dt.datetime.now(dt.UTC).date().isoformat()
    day.mkdir(parents=True)
    (day / "kalshi-sim.jsonl").symlink_to("/dev/full")
    async with SimServer(sim_config(rate=20_000, ending=Ending.NONE)) as sim:
        run = await record(make_tree(tmp_path, sim.url), timeout=30)
    assert run.code == ExitCode.WRITE_FAILED
    metrics = generate_latest(registry_for(run.stats, run.connection)).decode()
    # The append fails, and with /dev/full so does the fsync on close: counted each time.
    failures = re.search(
        r'ssmd_errors_total\{feed="kalshi-sim",type="write_failed"\} (\d+)\.0', metrics
    )
    assert failures is not None
    assert int(failures.group(1)) >= 1
    assert re.search(
        r"storage failed: cannot append to \S+kalshi-sim\.jsonl: No space left on device",
        caplog.text,
    )


def archive_bytes(data_dir: Path) -> int:
    return sum(f.stat().st_size for f in day_files(data_dir))


# --- torn tails left in an earlier day ------------------------------------------------


async def test_a_torn_tail_in_an_earlier_day_file_is_quarantined_on_the_next_start(
    tmp_path: Path,
) -> None:
    """A crash just before UTC midnight can tear the last line of that day's file while
    the restart happens the next day. The next start must still quarantine that tail
    (to ``<feed>.torn``) so every archive file consists of whole lines."""
    yesterday = tmp_path / "data" / "2020-01-01"
    yesterday.mkdir(parents=True)
    whole = '{"ts":"2020-01-01T23:59:59.000000Z","feed":"kalshi-sim","data":{"seq":1}}\n'
    torn = '{"ts":"2020-01-01T23:59:59.500000Z","feed":"kalshi-sim","da'
    (yesterday / "kalshi-sim.jsonl").write_text(whole + torn)
    async with SimServer(sim_config(messages=20, ending=Ending.CLOSE)) as sim:
        run = await record(make_tree(tmp_path, sim.url))
    assert run.code == ExitCode.DISCONNECTED
    assert (yesterday / "kalshi-sim.jsonl").read_text() == whole
    assert (yesterday / "kalshi-sim.torn").read_text() == (
        f"# kalshi-sim.jsonl offset {len(whole)} length {len(torn)}\n{torn}\n"
    )


# --- a writer that breaks unexpectedly -------------------------------------------------


class BrokenWriter(JsonlWriter):
    """A JsonlWriter whose second data write raises something other than WriteFailed
    (a bug, a MemoryError joining a huge batch): the runner's last line of defence."""

    def __init__(self, root: Path, feed: str, suffix: str = ".jsonl") -> None:
        super().__init__(root, feed, suffix)
        self.writes = 0

    def write(self, day: str, lines: Sequence[Any]) -> int:
        self.writes += 1
        if self.writes == 2:
            raise RuntimeError("injected writer bug")
        return super().write(day, lines)


async def test_an_unexpected_writer_error_ends_the_run_instead_of_hanging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fail fast, never hang: if the writer raises anything unexpected, the collector
    must stop (non-zero exit or a crash, so Kubernetes restarts it), not stay connected
    with /health 200 while it neither writes nor exits. Bounded: a healthy collector
    leaves within a fraction of a second; 3 s is the verdict."""
    monkeypatch.setattr(app, "JsonlWriter", BrokenWriter)
    try:
        async with SimServer(sim_config(ending=Ending.NONE)) as sim:
            # A short silence timeout only speeds up the cleanup after a hang: the
            # stuck receiver stops reading, so the watchdog soon aborts the socket
            # and the simulator can close.
            run = await record(
                make_tree(tmp_path, sim.url),
                max_buffer_bytes=1 << 20,
                silence_timeout=1.0,
                timeout=3,
            )
    except AssertionError:
        raise  # record() says the collector is still running: the hang
    except Exception:  # a crash is an exit too (code 1 in a process)
        return
    finally:
        # record() abandons a hung run's task; collect it here, where its "exception
        # never retrieved" finalizer is harmless. (Run later by the GC in the middle of
        # an ast.parse, it trips CPython 3.11.7's "AST constructor recursion depth
        # mismatch", gh-106905, and pytest's assertion rewriting with it.)
        gc.collect()
    assert run.code != ExitCode.CLEAN_STOP


async def test_a_zero_subscribe_batch_size_is_a_configuration_error(tmp_path: Path) -> None:
    """Bad flags are refused up front with exit 11 and a message, like bad metadata;
    ``--subscribe-batch-size 0`` currently reaches ``range(..., 0)`` after connecting."""
    async with SimServer(sim_config(messages=10, ending=Ending.CLOSE)) as sim:
        try:
            run = await record(make_tree(tmp_path, sim.url), subscribe_batch_size=0, timeout=10)
        except ValueError as exc:
            pytest.fail(f"crashed instead of refusing the flag: {exc!r}", pytrace=False)
    assert run.code == ExitCode.CONFIG_ERROR


def test_the_sweep_of_earlier_days_leaves_whole_files_and_locked_files_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The start-up sweep only touches files that end in a torn line and that no other
    writer holds: a whole, read-only old file (archives are often made read-only) is
    read, not opened for writing, so it raises no warning (as root the mode would not
    stop a write anyway); a torn file locked by a live writer is left as it is."""
    whole = tmp_path / "2020-01-01" / "kalshi.jsonl"
    locked = tmp_path / "2020-01-02" / "kalshi.jsonl"
    for path, text in ((whole, '{"a":1}\n'), (locked, '{"a":1}\n{"torn')):
        path.parent.mkdir()
        path.write_text(text)
    whole.chmod(0o444)
    holder = JsonlWriter(tmp_path, "kalshi")
    holder.write("2020-01-02", [])  # opens (and repairs) 2020-01-02 and holds its lock
    locked.write_text('{"a":1}\n{"torn')  # torn again, under the holder's lock
    caplog.clear()
    writer = JsonlWriter(tmp_path, "kalshi")
    writer.write("2020-01-03", [b"{}\n"])
    writer.close()
    holder.close()
    assert whole.read_text() == '{"a":1}\n'
    assert locked.read_text() == '{"a":1}\n{"torn'
    assert writer.repaired == []
    assert caplog.records == []
