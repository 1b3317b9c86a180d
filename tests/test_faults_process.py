"""Collector faults in a real ``ssmd-connector`` process: signals, kill -9, resource limits.

Issue 6, collector half. The simulator runs in the test's event loop; the collector is
a child process started the way a pod starts it, hurt the way production hurts it,
and judged by its exit code, its JSON logs and the files it leaves behind.

Root and permissions: the tests run as root, which ignores file modes. For "permission
denied" the child keeps uid 0 but loses CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (from
its bounding set, before exec; see ``faults_harness``), so a 0o555 directory refuses it
with a genuine EACCES, as it would refuse the collector's non-root uid in a pod. Dropping
to ``nobody`` instead is not possible here: the interpreter lives under a 0o700 /root.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest
from collector_harness import make_tree, record
from deadlines import deadline, wait_until
from faults_harness import (
    FEED,
    archive_size,
    archived,
    day_files,
    json_logs,
    retarget,
    spawn,
    split_into_prefixes,
)

from ssmd_collector.exitcodes import ExitCode
from ssmd_collector.sim import Ending, SimConfig, SimServer

START_TIMEOUT = 30.0
"""Bound on a child reaching the simulator (interpreter start on a busy machine)."""


def sim_config(**kw: Any) -> SimConfig:
    defaults: dict[str, Any] = {"port": 0, "rate": 0, "heartbeat": 0, "seed": 21}
    # The collector under test signs only when a key is configured: unsigned otherwise.
    # No skew check: these tests are not about it, and a slow signer must not fail them.
    defaults["allow_unsigned"] = "public_key_pem" not in kw
    defaults["timestamp_window"] = None
    return SimConfig(**(defaults | kw))


def exit_summary(stderr: str) -> tuple[int, int, int]:
    """(code, messages, lines written) from the collector's last log line."""
    for entry in reversed(json_logs(stderr)):
        m = re.fullmatch(
            r"exiting with (\d+) \(\w+\) after (\d+) messages, (\d+) lines written",
            str(entry["msg"]),
        )
        if m:
            return int(m[1]), int(m[2]), int(m[3])
    raise AssertionError(f"no exit summary in the logs:\n{stderr[-2000:]}")


# --- silence ----------------------------------------------------------------------


async def test_silence_timeout_flag_bounds_detection(tmp_path: Path) -> None:
    """``--silence-timeout 1``: once the exchange goes silent (no data, no pings, TCP
    open), the process flushes and exits 10: never before the configured bound (its own
    measure of the silence, in its log, is past 1 s; pings every 0.2 s kept it alive
    until then), and soon after it (within the wait's deadline). One connection
    only: it leaves the restarting to Kubernetes. The default bound (30 s) is pinned in
    test_faults.py; the in-process version of all three endings in test_collector.py."""
    config = sim_config(messages=200, ending=Ending.SILENT, heartbeat=0.2)
    async with SimServer(config) as sim:
        child = await spawn(
            make_tree(tmp_path, sim.url), tmp_path / "logs/run", "--silence-timeout", "1"
        )
        session = await sim.wait_session(timeout=deadline(START_TIMEOUT))
        await asyncio.wait_for(session.done.wait(), deadline(START_TIMEOUT))
        code = await child.wait(10)
    assert code == ExitCode.DISCONNECTED, child.stderr[-2000:]
    measured = re.search(r"disconnected: no data or heartbeat from the exchange for ([0-9.]+)s",
                         child.stderr)  # fmt: skip
    assert measured is not None, child.stderr[-2000:]
    assert float(measured[1]) >= 1.0  # logged to 0.01 s
    assert "(limit 1s)" in child.stderr
    assert archived(tmp_path / "data") == session.sent
    assert len(sim.sessions) == 1


# --- writer cannot write ------------------------------------------------------------


async def test_file_size_limit_mid_stream_exits_14_whole_lines_then_restart_appends(
    tmp_path: Path,
) -> None:
    """RLIMIT_FSIZE on the child (a full disk, as the process sees it: EFBIG; Python
    ignores SIGXFSZ) while it records a fast stream: it logs which file failed and
    why, exits 14, and the day file ends in a whole line (the failed batch is cut back).
    When space returns, the next start appends to the same day file cleanly: no torn
    tail to quarantine, every line whole, the first run's lines a prefix of what it
    was sent and then everything the second run was sent. The metric for the same
    fault is pinned in test_faults.py; the writer's truncation in test_writer.py."""
    limit = 1_000_000
    data_dir = tmp_path / "data"
    # A finite rate keeps batches small, so several fit before the limit.
    async with SimServer(sim_config(rate=20_000, ending=Ending.NONE)) as sim:
        tree = make_tree(tmp_path, sim.url)
        child = await spawn(tree, tmp_path / "logs/full", fsize=limit)
        code = await child.wait(30)
        first_sent = list(sim.sessions[0].sent)
        first_url = sim.url
    assert code == ExitCode.WRITE_FAILED, child.stderr[-2000:]
    errors = [e["msg"] for e in json_logs(child.stderr) if e["level"] == "error"]
    assert any(
        re.match(rf"storage failed: cannot append to \S+/{FEED}\.jsonl: File too large", str(m))
        for m in errors
    ), errors
    assert exit_summary(child.stderr)[0] == ExitCode.WRITE_FAILED
    first = archived(data_dir)  # whole lines only
    assert 0 < archive_size(data_dir) <= limit
    assert first == first_sent[: len(first)]

    async with SimServer(sim_config(seed=22, messages=500, ending=Ending.CLOSE)) as sim:
        retarget(tree, first_url, sim.url)
        child = await spawn(tree, tmp_path / "logs/after")
        code = await child.wait(30)
        second_sent = list(sim.sessions[0].sent)
    assert code == ExitCode.DISCONNECTED, child.stderr[-2000:]
    assert "torn" not in child.stderr
    assert list(data_dir.glob("*/*.torn")) == []
    assert archived(data_dir) == first + second_sent


@pytest.mark.parametrize("how", ["permission_denied", "not_a_directory"])
async def test_unwritable_data_dir_exits_14_with_a_clear_message(tmp_path: Path, how: str) -> None:
    """A data directory the collector cannot write (mode 0o555 without root's override
    capability: EACCES; or a regular file where the directory should be: ENOTDIR)
    stops it with exit 14 and an error naming the file and the OS reason, after
    exactly one connection, leaving no partial archive behind."""
    data_dir = tmp_path / "data"
    if how == "permission_denied":
        data_dir.mkdir(mode=0o555)
        data_dir.chmod(0o555)  # whatever the umask
        reason = "Permission denied"
    else:
        data_dir.write_text("a file, not a directory\n")
        reason = "Not a directory"
    async with SimServer(sim_config(messages=100, ending=Ending.NONE)) as sim:
        child = await spawn(
            make_tree(tmp_path, sim.url),
            tmp_path / "logs/run",
            drop_dac=how == "permission_denied",
        )
        code = await child.wait(30)
    assert code == ExitCode.WRITE_FAILED, child.stderr[-2000:]
    errors = [str(e["msg"]) for e in json_logs(child.stderr) if e["level"] == "error"]
    assert any(
        m.startswith("storage failed: cannot open ") and f"{FEED}.jsonl: {reason}" in m
        for m in errors
    ), errors
    assert len(sim.sessions) == 1
    if how == "permission_denied":
        assert list(data_dir.iterdir()) == []


# --- crash mid-line -----------------------------------------------------------------


async def test_kill_9_during_heavy_writes_loses_nothing_before_the_tail(tmp_path: Path) -> None:
    """kill -9 three times while the collector writes as fast as it can (unthrottled
    feed, multi-megabyte batches that a SIGKILL can cut short), restarting each time;
    a fourth run ends cleanly. Then every day file consists of whole lines only, and
    the archive is exactly a prefix of each run's stream, in run order: nothing before
    a crash point lost, duplicated or reordered. A torn tail, if a kill left one, is in
    ``<feed>.torn`` with its offset and length, not glued to the next run's first line.
    (A kill may or may not tear a line; the crafted-tail test below always does.)"""
    data_dir = tmp_path / "data"
    tree: Path | None = None
    url = ""
    runs: list[list[str]] = []
    torn_kills = 0
    for cycle in range(3):
        async with SimServer(sim_config(seed=30 + cycle, ending=Ending.NONE)) as sim:
            if tree is None:
                tree = make_tree(tmp_path, sim.url)
            else:
                retarget(tree, url, sim.url)
            url = sim.url
            target = archive_size(data_dir) + 2_000_000
            child = await spawn(tree, tmp_path / f"logs/kill{cycle}")

            def busy(target: int = target) -> bool:
                return archive_size(data_dir) > target

            await wait_until(busy, f"run {cycle} to write 2 MB", interval=0.005)
            child.proc.kill()
            assert await child.wait(10) == -signal.SIGKILL
            runs.append(list(sim.sessions[0].sent))
        torn_kills += any(not f.read_bytes().endswith(b"\n") for f in day_files(data_dir))

    assert tree is not None
    async with SimServer(sim_config(seed=39, messages=300, ending=Ending.CLOSE)) as sim:
        retarget(tree, url, sim.url)
        child = await spawn(tree, tmp_path / "logs/final")
        assert await child.wait(30) == ExitCode.DISCONNECTED, child.stderr[-2000:]
        runs.append(list(sim.sessions[0].sent))

    counts = split_into_prefixes(archived(data_dir), runs)
    assert counts[-1] == len(runs[-1])
    assert all(k > 1000 for k in counts[:-1]), counts
    quarantined = [f.read_bytes() for f in data_dir.glob(f"*/{FEED}.torn")]
    headers = re.findall(
        rb"^# kalshi-sim\.jsonl offset \d+ length \d+$", b"".join(quarantined), re.M
    )
    assert len(headers) == torn_kills, (torn_kills, quarantined)


async def test_a_torn_tail_is_quarantined_by_the_next_start(tmp_path: Path) -> None:
    """A deterministic torn tail: a real archive cut in the middle of a line, as a
    crash mid-write leaves it. The next ``ssmd-connector`` start moves the partial line
    to ``<feed>.torn`` (a header with offset and length, then the bytes as they were),
    cuts it from the day file, logs that it did, and appends after the last whole line:
    every earlier line kept, none glued to the partial one."""
    data_dir = tmp_path / "data"
    async with SimServer(sim_config(messages=300, ending=Ending.CLOSE)) as sim:
        tree = make_tree(tmp_path, sim.url)
        run = await record(tree)
        url = sim.url
    assert run.code == ExitCode.DISCONNECTED
    [day_file] = day_files(data_dir)
    content = day_file.read_bytes()
    lines = content.splitlines(keepends=True)
    cut = sum(len(line) for line in lines[:200]) + len(lines[200]) // 2
    day_file.write_bytes(content[:cut])
    kept = [line.decode().rstrip("\n") for line in lines[:200]]

    async with SimServer(sim_config(seed=22, messages=100, ending=Ending.CLOSE)) as sim:
        retarget(tree, url, sim.url)
        child = await spawn(tree, tmp_path / "logs/restart")
        code = await child.wait(30)
        second_sent = list(sim.sessions[0].sent)
    assert code == ExitCode.DISCONNECTED, child.stderr[-2000:]
    tail = content[sum(len(line) for line in lines[:200]) : cut]
    offset = cut - len(tail)
    assert (day_file.parent / f"{FEED}.torn").read_bytes() == (
        f"# {FEED}.jsonl offset {offset} length {len(tail)}\n".encode() + tail + b"\n"
    )
    warnings = [str(e["msg"]) for e in json_logs(child.stderr) if e["level"] == "warning"]
    assert any(m.startswith(f"moved a torn last line ({len(tail)} bytes)") for m in warnings)
    assert day_file.read_text().splitlines()[:200] == kept
    assert archived(data_dir) == run.data()[:200] + second_sent


# --- stop signals -------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_stop_signal_during_a_burst_exits_0_quickly_with_everything_flushed(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """A stop signal while the collector is busiest (unthrottled feed, several MB/s of
    writes): exit 0 within 5 s of the signal, every message it counted as received
    written (the exit summary's messages == lines written == lines in the archive),
    only whole lines, and those a prefix of what the exchange sent. Complements
    test_cli.py's SIGTERM test with the time bound, the flush accounting and SIGINT."""
    data_dir = tmp_path / "data"
    async with SimServer(sim_config(ending=Ending.NONE)) as sim:
        child = await spawn(make_tree(tmp_path, sim.url), tmp_path / "logs/run")
        await wait_until(lambda: archive_size(data_dir) > 3_000_000, "3 MB written", interval=0.005)
        child.proc.send_signal(signum)
        # "Within seconds" is the wait's deadline: past it, the wait fails.
        code = await child.wait(15)
        sent = list(sim.sessions[0].sent)
    assert code == ExitCode.CLEAN_STOP, child.stderr[-2000:]
    data = archived(data_dir)
    assert data == sent[: len(data)]
    summary = exit_summary(child.stderr)
    assert summary == (ExitCode.CLEAN_STOP, len(data), len(data)), summary
    assert any(f"{signum.name} received" in str(e["msg"]) for e in json_logs(child.stderr))
    assert os.path.getsize(day_files(data_dir)[-1]) > 3_000_000
