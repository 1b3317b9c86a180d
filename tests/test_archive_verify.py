"""``ssmd archive verify`` on archives the collector really wrote, plain and sealed.

A clean archive passes; a corrupted line is named by file and line number, in a plain
file and inside a sealed part; a damaged sealed file is named; a sequence gap is named
by line, sid, channel and the numbers missing, and said to be in the events file when
the collector saw it, or not when lines were lost afterwards.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from archive_tools_harness import FEED, record_archive, record_twice
from collector_harness import Run
from deadlines import wait_until
from typer.testing import CliRunner

from ssmd_collector.archive.reader import open_archive
from ssmd_collector.archive.verify import verify
from ssmd_collector.cli import app
from ssmd_collector.health import HealthServer
from ssmd_collector.sim import Ending, SimSession
from ssmd_collector.storage.seal import seal_day


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["archive", *args])
    return result.exit_code, result.output


def data_file(run: Run) -> Path:
    (path,) = run.data_dir.glob(f"*/{FEED}.jsonl")
    return path


def seal(run: Run) -> None:
    for folder in run.data_dir.iterdir():
        seal_day(folder, FEED, now=lambda: time.time() + 3 * 86_400)
    assert not list(run.data_dir.glob(f"*/{FEED}.jsonl")), "sealing left the plain file"


@pytest.fixture
async def clean(tmp_path: Path, ed25519_keys: tuple[bytes, bytes]) -> Run:
    run, _ = await record_archive(tmp_path, ed25519_keys, messages=2000, ending=Ending.CLOSE)
    assert len(run.data()) > 2000
    return run


@pytest.mark.parametrize("sealed", [False, True], ids=["plain", "sealed"])
async def test_a_clean_archive_passes(clean: Run, sealed: bool) -> None:
    written = len(clean.data())
    if sealed:
        seal(clean)
    report = verify(open_archive(clean.data_dir), progress=False)
    assert report.ok, report.corrupt
    assert report.lines == written
    assert report.gaps == []
    assert report.duplicates == 0
    assert (report.files, report.sealed_files) == (2, 2 if sealed else 0)  # data and events
    (session,) = report.sessions
    assert session.connected is not None
    assert session.end.startswith("disconnected")
    assert session.lines == report.lines
    code, out = cli("verify", str(clean.data_dir), "--format", "json", "--quiet")
    assert code == 0, out
    doc = json.loads(out)
    assert doc["ok"] is True
    assert doc["lines"] == report.lines
    assert doc["gaps"] == []


@pytest.mark.parametrize("sealed", [False, True], ids=["plain", "sealed"])
async def test_a_corrupted_line_is_named(clean: Run, sealed: bool) -> None:
    path = data_file(clean)
    lines = path.read_bytes().split(b"\n")
    lines[100] = lines[100][:-40]  # cut inside data: no longer JSON, no closing brace
    lines[200] = lines[200].replace(b'"data":', b'"data":{', 1)
    path.write_bytes(b"\n".join(lines))
    if sealed:
        seal(clean)
    report = verify(open_archive(clean.data_dir), progress=False)
    assert not report.ok
    name = f"{FEED}.jsonl{'.zst' if sealed else ''}"
    assert [c.split(": ", 1)[0].rsplit("/", 1)[-1] for c in report.corrupt] == [
        f"{name}:101",
        f"{name}:201",
    ]
    assert report.lines == len(lines) - 1 - 2  # the last split piece is empty
    code, out = cli("verify", str(clean.data_dir), "--quiet")
    assert code == 1
    assert f"{name}:101: " in out
    assert "verdict: CORRUPT" in out


async def test_a_damaged_sealed_file_is_named(clean: Run) -> None:
    seal(clean)
    (sealed,) = clean.data_dir.glob(f"*/{FEED}.jsonl.zst")
    raw = bytearray(sealed.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    sealed.write_bytes(bytes(raw))
    report = verify(open_archive(clean.data_dir), progress=False)
    assert not report.ok
    assert any(c.startswith(str(sealed)) for c in report.corrupt), report.corrupt


async def test_a_gap_is_named_and_matched_with_the_events_file(
    tmp_path: Path, ed25519_keys: tuple[bytes, bytes]
) -> None:
    async def skip(health: HealthServer, session: SimSession) -> None:
        session.skip_seq(session.sid_of("trade"), 3)
        session.skip_seq(session.sid_of("orderbook_delta"), 2)
        await wait_until(
            lambda: health.connection.recoveries.get(("orderbook_delta", "completed")),
            "the collector to repair the books with get_snapshot",
        )

    run, session = await record_archive(tmp_path, ed25519_keys, play=skip)
    report = verify(open_archive(run.data_dir), progress=False)
    assert report.ok
    gaps = {g.channel: g for g in report.gaps}
    assert sorted(gaps) == ["orderbook_delta", "trade"]
    gap = gaps["trade"]
    assert (gap.sid, gap.missing, gap.recorded) == (session.sid_of("trade"), 3, True)
    book = gaps["orderbook_delta"]
    assert (book.sid, book.missing, book.recorded) == (session.sid_of("orderbook_delta"), 2, True)
    assert [(r["event"], r["sid"]) for r in report.recoveries] == [
        ("recovery_requested", book.sid),
        ("recovery_completed", book.sid),
    ]
    number = int(gap.where.rsplit(":", 1)[1])
    line = data_file(run).read_text().splitlines()[number - 1]
    assert f'"sid":{gap.sid},"seq":{gap.received},' in line

    # Lose two lines of an order book sid after the fact: a gap the collector never saw.
    path = data_file(run)
    lines = path.read_text().splitlines(keepends=True)
    book = [i for i, text in enumerate(lines) if '"type":"orderbook_delta"' in text]
    del lines[book[50] : book[50] + 1]
    del lines[book[60] - 1 : book[60]]
    path.write_text("".join(lines))
    report = verify(open_archive(run.data_dir), progress=False)
    lost = [g for g in report.gaps if g.channel == "orderbook_delta" and not g.recorded]
    assert [g.missing for g in lost] == [1, 1]
    code, out = cli("verify", str(run.data_dir), "--quiet", "--fail-on-gaps")
    assert code == 1
    assert "NOT in the events file" in out
    assert "recorded in events" in out


async def test_coverage_has_each_session_and_the_disconnected_period_between(
    tmp_path: Path, ed25519_keys: tuple[bytes, bytes]
) -> None:
    first, second = await record_twice(tmp_path, ed25519_keys)
    events = second.events()  # both runs' events, in one file
    connected = [e["ts"] for e in events if e["event"] == "connected"]
    ended = [e["ts"] for e in events if e["event"] == "disconnected"]
    report = verify(open_archive(first.data_dir), progress=False)
    assert report.ok
    assert report.gaps == []  # each run's sids are checked on their own
    assert [(s.connected, s.ended) for s in report.sessions] == list(
        zip(connected, ended, strict=True)
    )
    assert sum(s.lines for s in report.sessions) == report.lines == len(second.data())
    (period,) = report.disconnected
    assert (period.start, period.end) == (ended[0], connected[1])
    doc = json.loads(cli("verify", str(first.data_dir), "--format", "json", "--quiet")[1])
    assert doc["disconnected"][0]["start"] == ended[0]
    assert doc["recorded_seconds"] > 0
