"""Append-only, date-partitioned JSONL files: ``<root>/<YYYY-MM-DD>/<feed><suffix>``.

Guarantees, and how:
- Whole lines only. Each batch is one buffer of complete lines appended with
  ``O_APPEND``; if a write fails part way (disk full, file-size limit), the file
  is truncated back to where the batch began before the error is raised.
- A crash mid-write (``kill -9``) can still leave a torn last line. When a day
  file is opened, a tail without a final newline is moved to the quarantine
  file ``<feed>.torn`` (so nothing is lost) and cut from the data file, so the
  next line never glues onto it. The first open also checks the feed's other
  day files: a crash just before UTC midnight, restarted after it, leaves its
  torn line in a file nothing would open again.
- Durability: the OS gets every batch at once (page cache); ``fsync`` on
  day rotation and on close, so a clean stop is on disk.
- One writer per file: an exclusive ``flock`` on the day file makes a second
  collector writing the same feed to the same directory fail loudly.

Blocking I/O by design: the runner calls it from a worker thread.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_TAIL_CHUNK = 64 * 1024


def quarantine_torn_tail(fd: int, path: Path, size: int) -> Path | None:
    """Move bytes after the last newline (a line torn by a crash) to ``<stem>.torn``.

    ``fd`` is ``path`` opened for writing, its size ``size``; the caller holds its
    lock. Returns the quarantine file, or None if the file ended in a whole line.
    Shared with the archive, which repairs a completed day before sealing it.
    """
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return None
    end = size
    cut = 0
    while end > 0:
        start = max(0, end - _TAIL_CHUNK)
        chunk = os.pread(fd, end - start, start)
        nl = chunk.rfind(b"\n")
        if nl >= 0:
            cut = start + nl + 1
            break
        end = start
    tail = os.pread(fd, size - cut, cut)
    quarantine = path.with_suffix(".torn")
    qfd = os.open(quarantine, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        # One fragment per line: prefixed by where it came from, raw bytes kept.
        os.write(qfd, f"# {path.name} offset {cut} length {len(tail)}\n".encode())
        os.write(qfd, tail + b"\n")
        os.fsync(qfd)
    finally:
        os.close(qfd)
    os.ftruncate(fd, cut)
    os.fsync(fd)
    log.warning("moved a torn last line (%d bytes) from %s to %s", len(tail), path, quarantine)
    return quarantine


class WriteFailed(Exception):
    """Storage refused a write; the file was left ending in a whole line."""


@dataclass
class _Open:
    day: str
    path: Path
    fd: int
    size: int


class JsonlWriter:
    """Writes whole lines for one feed, one file per UTC day."""

    def __init__(self, root: Path, feed: str, suffix: str = ".jsonl") -> None:
        self.root = root
        self.feed = feed
        self.suffix = suffix
        self._current: _Open | None = None
        self.repaired: list[Path] = []
        """Quarantine files that received a torn tail (for logs and tests)."""
        self._swept = False

    def path_for(self, day: str) -> Path:
        return self.root / day / f"{self.feed}{self.suffix}"

    def write(self, day: str, lines: Sequence[bytes]) -> int:
        data = b"".join(lines)
        f = self._file(day)
        start = f.size
        view = memoryview(data)
        try:
            while view:
                n = os.write(f.fd, view)
                view = view[n:]
                f.size += n
        except OSError as exc:
            self._truncate(f, start)
            raise WriteFailed(
                f"cannot append to {f.path}: {exc.strerror or exc} "
                f"({len(lines)} line(s), {len(data)} bytes not written)"
            ) from exc
        return len(data)

    def close(self) -> None:
        if self._current is not None:
            self._close(self._current)
            self._current = None

    def _file(self, day: str) -> _Open:
        current = self._current
        if current is not None and current.day == day:
            return current
        if current is not None:
            self._close(current)
            self._current = None
        self._current = self._open(day)
        return self._current

    def _open(self, day: str) -> _Open:
        path = self.path_for(day)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise WriteFailed(f"cannot open {path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise WriteFailed(
                    f"{path} is locked by another writer (another collector "
                    "for this feed writes to the same directory)"
                ) from exc
            raise WriteFailed(f"cannot lock {path}: {exc.strerror or exc}") from exc
        f = _Open(day, path, fd, os.fstat(fd).st_size)
        try:
            self._repair_tail(f)
        except OSError as exc:
            os.close(fd)
            raise WriteFailed(f"cannot repair the torn tail of {path}: {exc.strerror}") from exc
        if not self._swept:
            self._swept = True
            self._repair_other_days(day)
        return f

    def _repair_other_days(self, day: str) -> None:
        """Quarantine torn tails in this feed's files of days other than ``day``.

        Best effort, once per writer: a file that cannot be checked or repaired is
        logged and left (nothing appends to it, so nothing can glue onto it), and a
        file another writer holds locked is its business.
        """
        name = f"{self.feed}{self.suffix}"
        try:
            paths = sorted(p for p in self.root.glob(f"*/{name}") if p.parent.name != day)
        except OSError:
            return
        for path in paths:
            try:
                with path.open("rb") as fh:
                    if fh.seek(0, os.SEEK_END) == 0:
                        continue
                    fh.seek(-1, os.SEEK_END)
                    if fh.read(1) == b"\n":
                        continue
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except OSError as exc:
                log.warning("cannot check %s for a torn last line: %s", path, exc.strerror or exc)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._repair_tail(_Open(path.parent.name, path, fd, os.fstat(fd).st_size))
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    log.warning("cannot repair the torn tail of %s: %s", path, exc.strerror or exc)
            finally:
                os.close(fd)

    def _repair_tail(self, f: _Open) -> None:
        quarantine = quarantine_torn_tail(f.fd, f.path, f.size)
        if quarantine is not None:
            f.size = os.fstat(f.fd).st_size
            self.repaired.append(quarantine)

    def _truncate(self, f: _Open, size: int) -> None:
        try:
            os.ftruncate(f.fd, size)
            f.size = size
        except OSError:
            # Cannot happen on local filesystems (truncation frees space); if it does,
            # the next start's tail repair still quarantines the partial line.
            log.exception("could not truncate %s back to %d bytes", f.path, size)

    def _close(self, f: _Open) -> None:
        try:
            os.fsync(f.fd)
            dir_fd = os.open(f.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise WriteFailed(f"cannot fsync {f.path}: {exc.strerror or exc}") from exc
        finally:
            os.close(f.fd)
