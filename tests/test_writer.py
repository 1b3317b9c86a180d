"""JSONL writer on real files: partitioning, append after restart, torn tails, failures."""

from __future__ import annotations

import os
import resource
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from ssmd_collector.writer import JsonlWriter, WriteFailed


def lines(*texts: str) -> list[bytes]:
    return [(t + "\n").encode() for t in texts]


def test_writes_day_partitioned_files(tmp_path: Path) -> None:
    w = JsonlWriter(tmp_path, "kalshi")
    assert w.write("2025-12-22", lines('{"a":1}', '{"a":2}')) == 16
    w.write("2025-12-23", lines('{"a":3}'))
    w.close()
    assert (tmp_path / "2025-12-22/kalshi.jsonl").read_text() == '{"a":1}\n{"a":2}\n'
    assert (tmp_path / "2025-12-23/kalshi.jsonl").read_text() == '{"a":3}\n'


def test_restart_appends_to_the_same_day(tmp_path: Path) -> None:
    for i in range(3):
        w = JsonlWriter(tmp_path, "kalshi")
        w.write("2025-12-22", lines(f'{{"run":{i}}}'))
        w.close()
    assert (tmp_path / "2025-12-22/kalshi.jsonl").read_text().splitlines() == [
        '{"run":0}',
        '{"run":1}',
        '{"run":2}',
    ]


def test_torn_tail_is_quarantined_not_glued(tmp_path: Path) -> None:
    day = tmp_path / "2025-12-22"
    day.mkdir()
    (day / "kalshi.jsonl").write_bytes(b'{"whole":1}\n{"whole":2}\n{"torn":')
    w = JsonlWriter(tmp_path, "kalshi")
    w.write("2025-12-22", lines('{"next":3}'))
    w.close()
    assert (day / "kalshi.jsonl").read_text() == '{"whole":1}\n{"whole":2}\n{"next":3}\n'
    quarantine = (day / "kalshi.torn").read_bytes()
    assert quarantine == b'# kalshi.jsonl offset 24 length 8\n{"torn":\n'
    assert w.repaired == [day / "kalshi.torn"]


def test_torn_file_without_any_newline(tmp_path: Path) -> None:
    day = tmp_path / "2025-12-22"
    day.mkdir()
    torn = b'{"x":"' + b"y" * 200_000  # longer than one backwards read chunk
    (day / "kalshi.jsonl").write_bytes(torn)
    w = JsonlWriter(tmp_path, "kalshi")
    w.write("2025-12-22", lines("{}"))
    w.close()
    assert (day / "kalshi.jsonl").read_text() == "{}\n"
    assert (day / "kalshi.torn").read_bytes().endswith(torn + b"\n")


def test_second_writer_for_the_same_file_is_refused(tmp_path: Path) -> None:
    first = JsonlWriter(tmp_path, "kalshi")
    first.write("2025-12-22", lines("{}"))
    with pytest.raises(WriteFailed, match="locked by another writer"):
        JsonlWriter(tmp_path, "kalshi").write("2025-12-22", lines("{}"))
    first.close()


def test_permission_denied_is_a_clear_write_failure(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # root ignores directory permissions; a file in place of the day directory
        # fails the same code path for every user.
        (tmp_path / "2025-12-22").write_text("not a directory")
    else:
        tmp_path.chmod(0o500)
    with pytest.raises(WriteFailed, match="cannot open"):
        JsonlWriter(tmp_path, "kalshi").write("2025-12-22", lines("{}"))


@pytest.fixture
def file_size_limit() -> Iterator[int]:
    """RLIMIT_FSIZE stands in for a full disk: writes past it fail with EFBIG."""
    limit = 4096
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old[1]))
    try:
        yield limit
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, old_handler)


def test_failed_write_leaves_only_whole_lines(tmp_path: Path, file_size_limit: int) -> None:
    w = JsonlWriter(tmp_path, "kalshi")
    line = '{"pad":"' + "x" * 90 + '"}'
    w.write("2025-12-22", lines(*[line] * 30))  # 3000 bytes, under the limit
    with pytest.raises(WriteFailed, match=r"File too large.*30 line\(s\)"):
        w.write("2025-12-22", lines(*[line] * 30))  # would cross it part way
    content = (tmp_path / "2025-12-22/kalshi.jsonl").read_bytes()
    assert content == (line + "\n").encode() * 30
    w.close()
