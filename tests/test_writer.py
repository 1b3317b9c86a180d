"""JSONL writer on real files: partitioning, append after restart, torn tails, failures."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from deadlines import deadline

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


# The file-size limit runs in a child process: RLIMIT_FSIZE on the pytest process
# would also fail pytest's own capture and report files once they pass the limit.
_LIMITED_WRITER = """
import resource, sys
from pathlib import Path
from ssmd_collector.writer import JsonlWriter, WriteFailed
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
line = ('{"pad":"' + "x" * 90 + '"}\\n').encode()
w = JsonlWriter(Path(sys.argv[1]), "kalshi")
w.write("2025-12-22", [line] * 30)  # 3000 bytes, under the limit
try:
    w.write("2025-12-22", [line] * 30)  # would cross it part way
except WriteFailed as exc:
    print(exc)
w.close()
"""


def test_failed_write_leaves_only_whole_lines(tmp_path: Path) -> None:
    """RLIMIT_FSIZE stands in for a full disk: a write crossing it fails with EFBIG
    part way, and the writer cuts the file back to the last whole batch."""
    result = subprocess.run(
        [sys.executable, "-c", _LIMITED_WRITER, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=deadline(60),
        check=True,
    )
    assert re.search(r"File too large.*30 line\(s\)", result.stdout), result.stdout
    line = '{"pad":"' + "x" * 90 + '"}'
    content = (tmp_path / "2025-12-22/kalshi.jsonl").read_bytes()
    assert content == (line + "\n").encode() * 30
