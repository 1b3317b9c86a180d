"""Sealing: completed day files become zstd + manifest, atomically, and read back exactly.

Real files, real zstd, and real kills of a child process at each step of a seal.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import zstandard
from deadlines import deadline, wait_until

from ssmd_collector.storage.manifest import LineDigest, line_ts
from ssmd_collector.storage.seal import (
    completed_days,
    manifest_path,
    read_lines,
    read_manifest,
    recover,
    seal_day,
    sealed_files,
)
from ssmd_collector.writer import JsonlWriter

FEED = "kalshi"
DAY = "2026-11-27"
NEXT_MIDNIGHT = dt.datetime(2026, 11, 28, tzinfo=dt.UTC).timestamp()


def archive_line(i: int, day: str = DAY) -> bytes:
    ts = f"{day}T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}.{i % 1000000:06d}Z"
    return f'{{"ts":"{ts}","feed":"{FEED}","data":{{"type":"ticker","n":{i}}}}}\n'.encode()


def write_day(root: Path, lines: list[bytes], suffix: str = ".jsonl", day: str = DAY) -> Path:
    """Write through the collector's own writer, as the collector would."""
    writer = JsonlWriter(root, FEED, suffix)
    writer.write(day, lines)
    writer.close()
    return writer.path_for(day)


def test_a_sealed_file_decompresses_to_exactly_the_lines_written(tmp_path: Path) -> None:
    lines = [archive_line(i) for i in range(20_000)]
    rejected = [b'{"ts":"2026-11-27T00:00:01.000000Z","feed":"kalshi","reason":"x","raw":"?"}\n']
    events = [b'{"ts":"2026-11-27T00:00:00.000001Z","event":"subscribed"}\n']
    plain = write_day(tmp_path, lines)
    write_day(tmp_path, rejected, ".rejected.jsonl")
    write_day(tmp_path, events, ".events.jsonl")
    torn = plain.with_suffix(".torn")
    torn.write_bytes(b"# kalshi.jsonl offset 0 length 3\nabc\n")

    made = seal_day(plain.parent, FEED, now=lambda: NEXT_MIDNIGHT + 120)

    assert sorted(m.sealed for m in made) == [
        "kalshi.events.jsonl.zst",
        "kalshi.jsonl.zst",
        "kalshi.rejected.jsonl.zst",
        "kalshi.torn.zst",
    ]
    folder = plain.parent
    assert sorted(p.name for p in folder.iterdir() if not p.name.endswith(".json")) == sorted(
        m.sealed for m in made
    )
    assert list(read_lines(folder / "kalshi.jsonl.zst")) == lines
    assert list(read_lines(folder / "kalshi.rejected.jsonl.zst")) == rejected
    assert list(read_lines(folder / "kalshi.events.jsonl.zst")) == events
    assert list(read_lines(folder / "kalshi.torn.zst")) == [
        b"# kalshi.jsonl offset 0 length 3\n",
        b"abc\n",
    ]
    manifest = read_manifest(folder / "kalshi.jsonl.zst")
    raw = b"".join(lines)
    sealed = (folder / "kalshi.jsonl.zst").read_bytes()
    assert (manifest.lines, manifest.bytes, manifest.sha256) == (
        len(lines),
        len(raw),
        hashlib.sha256(raw).hexdigest(),
    )
    assert (manifest.first_ts, manifest.last_ts) == (
        line_ts(lines[0]),
        line_ts(lines[-1]),
    )
    assert manifest.first_ts == "2026-11-27T00:00:00.000000Z"
    assert (manifest.sealed_bytes, manifest.sealed_sha256, manifest.sealed_md5) == (
        len(sealed),
        hashlib.sha256(sealed).hexdigest(),
        hashlib.md5(sealed).hexdigest(),
    )
    assert manifest.sealed_at == NEXT_MIDNIGHT + 120
    assert manifest.sealed_bytes < manifest.bytes / 5, "zstd should compress JSONL well"
    # Any zstd tool can read it: a plain one-shot decompress gives the same bytes.
    assert zstandard.ZstdDecompressor().decompressobj().decompress(sealed) == raw
    assert read_manifest(folder / "kalshi.torn.zst").first_ts is None


@pytest.mark.parametrize("chunk", [1, 7, 64, 4096, 1 << 20])
def test_line_digest_is_the_same_whatever_the_chunking(chunk: int) -> None:
    lines = [archive_line(i) for i in range(300)] + [b'{"ts":"not a ts"}\n', archive_line(999)]
    raw = b"".join(lines)
    digest = LineDigest()
    for at in range(0, len(raw), chunk):
        digest.update(raw[at : at + chunk])
    assert (digest.lines, digest.bytes, digest.sha256) == (
        len(lines),
        len(raw),
        hashlib.sha256(raw).hexdigest(),
    )
    assert (digest.first_ts, digest.last_ts) == (line_ts(lines[0]), line_ts(lines[-1]))


@pytest.mark.parametrize(
    ("line", "ts"),
    [
        (
            b'{"ts":"2026-11-27T01:02:03.000004Z","feed":"k","data":1}',
            "2026-11-27T01:02:03.000004Z",
        ),
        (b'{"event":"gap","ts":"2026-11-27T01:02:03Z"}', "2026-11-27T01:02:03Z"),
        (b"# kalshi.jsonl offset 10 length 3", None),
        (b'{"ts":5}', None),
        (b"{not json", None),
        (b"", None),
    ],
)
def test_line_ts(line: bytes, ts: str | None) -> None:
    assert line_ts(line) == ts


@pytest.mark.parametrize(
    ("now", "grace", "complete"),
    [
        (NEXT_MIDNIGHT - 1, 0, []),
        (NEXT_MIDNIGHT, 0, [DAY]),
        (NEXT_MIDNIGHT + 59, 60, []),
        (NEXT_MIDNIGHT + 60, 60, [DAY]),
    ],
)
def test_a_day_is_complete_after_midnight_utc_plus_grace(
    tmp_path: Path, now: float, grace: float, complete: list[str]
) -> None:
    for name in (DAY, "2026-11-28", "not-a-day", "2026-13-01", ".archive"):
        (tmp_path / name).mkdir()
    assert [p.name for p in completed_days(tmp_path, now, grace)] == complete


def test_a_file_the_writer_holds_is_not_sealed(tmp_path: Path) -> None:
    writer = JsonlWriter(tmp_path, FEED)
    writer.write(DAY, [archive_line(1)])
    folder = writer.path_for(DAY).parent
    assert seal_day(folder, FEED) == []
    assert [p.name for p in folder.iterdir()] == ["kalshi.jsonl"]
    writer.close()
    assert [m.sealed for m in seal_day(folder, FEED)] == ["kalshi.jsonl.zst"]


def test_a_torn_tail_is_quarantined_as_the_writer_does_then_sealed(tmp_path: Path) -> None:
    plain = write_day(tmp_path, [archive_line(1)])
    with plain.open("ab") as fh:
        fh.write(b'{"ts":"2026-11-27T00:0')
    made = seal_day(plain.parent, FEED)
    assert sorted(m.sealed for m in made) == ["kalshi.jsonl.zst", "kalshi.torn.zst"]
    assert list(read_lines(plain.parent / "kalshi.jsonl.zst")) == [archive_line(1)]
    assert list(read_lines(plain.parent / "kalshi.torn.zst")) == [
        f"# kalshi.jsonl offset {len(archive_line(1))} length 22\n".encode(),
        b'{"ts":"2026-11-27T00:0\n',
    ]


def test_a_quarantine_cut_short_keeps_its_bytes(tmp_path: Path) -> None:
    plain = write_day(tmp_path, [archive_line(1)])
    plain.with_suffix(".torn").write_bytes(b"# kalshi.jsonl offset 0 length 5\nabc")
    seal_day(plain.parent, FEED)
    assert list(read_lines(plain.parent / "kalshi.torn.zst")) == [
        b"# kalshi.jsonl offset 0 length 5\n",
        b"abc\n",
    ]


def test_other_feeds_files_are_left_alone(tmp_path: Path) -> None:
    plain = write_day(tmp_path, [archive_line(1)])
    other = plain.parent / "polymarket.jsonl"
    other.write_bytes(b"{}\n")
    assert [m.sealed for m in seal_day(plain.parent, FEED)] == ["kalshi.jsonl.zst"]
    assert other.read_bytes() == b"{}\n"
    assert [p.name for p in sealed_files(plain.parent, FEED)] == ["kalshi.jsonl.zst"]


def test_lines_written_after_a_seal_become_a_second_part(tmp_path: Path) -> None:
    plain = write_day(tmp_path, [archive_line(1)])
    seal_day(plain.parent, FEED)
    write_day(tmp_path, [archive_line(2)])  # e.g. the clock stepped back over midnight
    assert [m.sealed for m in seal_day(plain.parent, FEED)] == ["kalshi.jsonl.2.zst"]
    assert list(read_lines(plain.parent / "kalshi.jsonl.zst")) == [archive_line(1)]
    assert list(read_lines(plain.parent / "kalshi.jsonl.2.zst")) == [archive_line(2)]


# --- crash safety: real kills of a child process ---------------------------------------

CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from ssmd_collector.storage.seal import seal_day

    folder, kill_at, progress = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])

    def step(name):
        if name == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if name == "compressing" and kill_at == "external":
            progress.write_text("compressing")
            time.sleep(3600)  # mid-compression until the parent kills us

    seal_day(folder, "kalshi", step=step)
    progress.write_text("done")
    """
)


def run_child(folder: Path, kill_at: str, progress: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(folder), kill_at, str(progress)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def big_day(root: Path) -> tuple[Path, list[bytes]]:
    # Random-ish payloads so the file spans several 1 MiB read chunks even compressed.
    lines = [
        archive_line(i)[:-2] + b',"pad":"' + os.urandom(48).hex().encode() + b'"}\n'
        for i in range(40_000)
    ]
    return write_day(root, lines), lines


def assert_plain_or_whole(folder: Path, lines: list[bytes]) -> None:
    """After a crash: the plain file intact, or the whole sealed file with its manifest."""
    plain = folder / "kalshi.jsonl"
    sealed = folder / "kalshi.jsonl.zst"
    if sealed.exists():
        assert manifest_path(sealed).exists()
        assert list(read_lines(sealed)) == lines
    else:
        assert plain.read_bytes() == b"".join(lines)
    if plain.exists():
        assert plain.read_bytes() == b"".join(lines)


@pytest.mark.parametrize("kill_at", ["compressing", "compressed", "manifest", "committed"])
async def test_a_kill_at_any_step_leaves_the_plain_file_or_the_whole_sealed_one(
    tmp_path: Path, kill_at: str
) -> None:
    plain, lines = big_day(tmp_path)
    child = run_child(plain.parent, kill_at, tmp_path / "progress")
    _, err = child.communicate(timeout=deadline(60))
    assert child.returncode == -signal.SIGKILL, err.decode()[-2000:]
    assert_plain_or_whole(plain.parent, lines)

    # The next pass recovers: exactly one sealed copy, nothing left over.
    recover(plain.parent, FEED)
    seal_day(plain.parent, FEED)
    names = sorted(p.name for p in plain.parent.iterdir())
    assert names == ["kalshi.jsonl.zst", "kalshi.jsonl.zst.manifest.json"]
    assert list(read_lines(plain.parent / "kalshi.jsonl.zst")) == lines
    assert json.loads((plain.parent / names[1]).read_text())["lines"] == len(lines)


async def test_a_sigkill_from_outside_mid_compression_leaves_the_plain_file(
    tmp_path: Path,
) -> None:
    plain, lines = big_day(tmp_path)
    progress = tmp_path / "progress"
    child = run_child(plain.parent, "external", progress)
    try:
        await wait_until(
            lambda: progress.exists() and progress.read_text() == "compressing",
            "the child to start compressing",
            seen=lambda: progress.exists() and progress.read_text(),
        )
        temporaries = list(plain.parent.glob(".*.tmp"))
        assert temporaries, "compression writes to a hidden temporary first"
        child.send_signal(signal.SIGKILL)
    finally:
        child.communicate(timeout=deadline(60))
    assert child.returncode == -signal.SIGKILL
    assert not (plain.parent / "kalshi.jsonl.zst").exists()
    assert plain.read_bytes() == b"".join(lines)

    made = seal_day(plain.parent, FEED)
    assert [m.lines for m in made] == [len(lines)]
    assert not list(plain.parent.glob(".*"))
    assert list(read_lines(plain.parent / "kalshi.jsonl.zst")) == lines
