"""Reading an archive: parts in the order they were written, feeds told apart, progress.

Real files: lines written with the collector's own framer and writer, sealed with the
archive's own ``seal_day``.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest

from ssmd_collector.archive.reader import (
    DATA,
    ArchiveError,
    LineReader,
    Progress,
    feed_head,
    open_archive,
    split_line,
)
from ssmd_collector.framing import LineFramer, Timestamper
from ssmd_collector.storage.seal import seal_day
from ssmd_collector.writer import JsonlWriter

FEED = "kalshi-sim"
START_NS = 1_767_312_000 * 10**9


def write(root: Path, feed: str, first: int, count: int) -> None:
    stamps, framer = Timestamper(), LineFramer(feed)
    writer = JsonlWriter(root, feed)
    for i in range(first, first + count):
        day, ts = stamps(START_NS + i * 1000)
        writer.write(day, [framer.line(ts, f'{{"type":"n","msg":{{"i":{i}}}}}'.encode())])
    writer.close()


def test_sealed_parts_then_the_plain_file_read_in_the_order_written(tmp_path: Path) -> None:
    later = lambda: time.time() + 3 * 86_400  # noqa: E731
    write(tmp_path, FEED, 0, 5)
    seal_day(tmp_path / "2026-01-02", FEED, now=later)
    write(tmp_path, FEED, 5, 5)  # lines that reached the day after it was sealed
    seal_day(tmp_path / "2026-01-02", FEED, now=later)
    write(tmp_path, FEED, 10, 5)
    archive = open_archive(tmp_path)
    files = archive.of(DATA)
    assert [f.path.name for f in files] == [
        f"{FEED}.jsonl.zst",
        f"{FEED}.jsonl.2.zst",
        f"{FEED}.jsonl",
    ]
    assert [f.manifest is not None for f in files] == [True, True, False]
    head = feed_head(FEED)
    numbers = [
        int(split_line(line, head)[1].split(b'"i":')[1].rstrip(b"}"))
        for f in files
        for _, line in LineReader(f)
    ]
    assert numbers == list(range(15))


def test_an_archive_of_several_feeds_needs_one_named(tmp_path: Path) -> None:
    write(tmp_path, FEED, 0, 2)
    write(tmp_path, "kalshi", 0, 3)
    with pytest.raises(ArchiveError, match=r"found feeds kalshi, kalshi-sim: pick one with --feed"):
        open_archive(tmp_path)
    assert open_archive(tmp_path, "kalshi").feed == "kalshi"
    assert open_archive(tmp_path / "2026-01-02", FEED).days == ["2026-01-02"]  # one day folder
    with pytest.raises(ArchiveError, match="not found"):
        open_archive(tmp_path / "nowhere")


def test_progress_says_how_far_every_few_seconds() -> None:
    now = [0.0]
    out = io.StringIO()
    progress = Progress("verify", 400_000_000, every=3.0, out=out, clock=lambda: now[0])
    for _ in range(8):
        now[0] += 1.0
        progress.advance(25_000_000, 50_000_000)
    assert out.getvalue().splitlines() == [
        "verify:  19% of 400.0 MB on disk, 50.0 MB/s",
        "verify:  38% of 400.0 MB on disk, 50.0 MB/s",
    ]
