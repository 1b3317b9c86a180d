"""Reading an ssmd archive: which files make it up, and their lines, plain or sealed alike.

An archive is ``<root>/<YYYY-MM-DD>/<file>`` (``<root>`` may also be one day folder).
Per feed and day: the data ``<feed>.jsonl``, the session log ``<feed>.events.jsonl``,
the market discovery pages ``<feed>.markets.jsonl``,
quarantines ``<feed>.rejected.jsonl`` and ``<feed>.torn``. A completed day's files are
sealed (``storage/seal.py``): ``<file>.zst`` with a manifest beside it, and
``<file>.<n>.zst`` when lines reached a day after it was sealed. Read in order, the
parts of a file are ``<file>.zst``, ``<file>.2.zst``, ... then the plain ``<file>``
(anything written after the last seal), so every reader here sees lines in the order
they were received whatever was sealed.

A data line is ``{"ts":"<27 chars>","feed":<feed>,"data":<raw JSON>}``: :func:`split_line`
takes ``data`` out as the bytes the exchange sent (the replay needs them unchanged) and
checks the whole line is one well-formed JSON object.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import msgspec
import zstandard

from ..storage.manifest import MANIFEST_SUFFIX, Manifest, ManifestInvalid

DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}\Z")
_NAME_RE = re.compile(r"^(?P<stem>.+?)\.(?P<ext>jsonl|torn)(?:\.(?:(?P<part>\d+)\.)?zst)?\Z")
_CHUNK = 1 << 20
_TS_RE = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z\Z")

DATA, EVENTS, REJECTED, TORN = "data", "events", "rejected", "torn"
MARKETS = "markets"
"""``<feed>.markets.jsonl``: the REST pages market discovery read (not frames)."""


class ArchiveError(Exception):
    """The archive cannot be read as asked (no such folder, no feed, several feeds)."""


class LineError(ValueError):
    """A line that is not a whole, well-formed archive line; the message says what is wrong."""


@dataclass(frozen=True)
class ArchiveFile:
    """One file of the archive: a plain file or one sealed part of it."""

    path: Path
    day: str
    feed: str
    kind: str
    """``data``, ``events``, ``rejected`` or ``torn``."""
    part: int
    """Order among the parts of one file on one day: sealed parts 1, 2, ..., plain last."""
    manifest: Manifest | None = None
    """The manifest of a sealed part (None for plain files, or when it is missing)."""

    @property
    def sealed(self) -> bool:
        return self.path.suffix == ".zst"

    @property
    def size(self) -> int:
        return self.path.stat().st_size


@dataclass
class Archive:
    """The files of one feed in an archive, in reading order."""

    root: Path
    feed: str
    files: list[ArchiveFile] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """Files that could not be taken in (an unreadable manifest), named with the reason."""

    def of(self, kind: str) -> list[ArchiveFile]:
        return [f for f in self.files if f.kind == kind]

    @property
    def days(self) -> list[str]:
        return sorted({f.day for f in self.files})


def open_archive(root: Path, feed: str | None = None) -> Archive:
    """The files of ``feed`` under ``root`` (an archive root or one day folder).

    Without ``feed``, the archive must hold exactly one feed's data (else the error
    lists the feeds found, so the user can pick one with ``--feed``).
    """
    if not root.is_dir():
        raise ArchiveError(f"{root}: expected an archive folder (<root>/<YYYY-MM-DD>/); not found")
    if DAY_RE.match(root.name):
        folders = [root]
    else:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and DAY_RE.match(p.name))
    found: list[tuple[Path, str, str, int]] = []
    for folder in folders:
        for path in sorted(folder.iterdir()):
            m = _NAME_RE.match(path.name)
            if m is None or not path.is_file():
                continue
            stem, part = m["stem"], m["part"]
            index = (int(part) if part else 1) if path.suffix == ".zst" else 1_000_000
            kind = TORN if m["ext"] == "torn" else DATA
            for suffix, name in (
                (".events", EVENTS),
                (".rejected", REJECTED),
                (".markets", MARKETS),
            ):
                if kind == DATA and stem.endswith(suffix):
                    stem, kind = stem[: -len(suffix)], name
            if kind == TORN and "." in stem:
                stem = stem.split(".", 1)[0]  # <feed>.events.torn is the events file's
            found.append((path, stem, kind, index))
    feeds = sorted({stem for _, stem, kind, _ in found if kind == DATA})
    if feed is None:
        if len(feeds) != 1:
            what = f"feeds {', '.join(feeds)}: pick one with --feed" if feeds else "no data files"
            raise ArchiveError(
                f"{root}: expected the data of one feed (<feed>.jsonl); found {what}"
            )
        feed = feeds[0]
    archive = Archive(root, feed)
    for path, stem, kind, index in found:
        if stem != feed:
            continue
        manifest = None
        if path.suffix == ".zst":
            mpath = path.with_name(path.name + MANIFEST_SUFFIX)
            try:
                manifest = Manifest.from_json(mpath.read_bytes(), str(mpath))
            except FileNotFoundError:
                archive.problems.append(f"{path}: sealed file without its manifest {mpath.name}")
            except ManifestInvalid as exc:
                archive.problems.append(str(exc))
        archive.files.append(ArchiveFile(path, path.parent.name, feed, kind, index, manifest))
    archive.files.sort(key=lambda f: (f.day, f.kind, f.part))
    if not archive.of(DATA):
        raise ArchiveError(f"{root}: expected data files of feed {feed!r}; found none")
    return archive


class Progress:
    """A line on stderr every few seconds while a long pass reads the archive.

    ``advance`` is given bytes of the files on disk (compressed bytes for sealed
    parts), so the percentage is of the work left; the rate is of plain bytes.
    """

    def __init__(
        self,
        label: str,
        total: int,
        *,
        every: float = 3.0,
        out: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        enabled: bool = True,
    ) -> None:
        self.label, self.total, self.every = label, max(total, 1), every
        self.out = out or sys.stderr
        self.clock = clock
        self.enabled = enabled
        self.done = 0
        self.plain = 0
        self.started = clock()
        self._next = self.started + every

    def advance(self, disk_bytes: int, plain_bytes: int) -> None:
        self.done += disk_bytes
        self.plain += plain_bytes
        if self.enabled and self.clock() >= self._next:
            self._next = self.clock() + self.every
            self._say()

    def _say(self) -> None:
        elapsed = max(self.clock() - self.started, 1e-9)
        print(
            f"{self.label}: {100 * self.done / self.total:3.0f}% of {self.total / 1e6:,.1f} MB "
            f"on disk, {self.plain / 1e6 / elapsed:,.1f} MB/s",
            file=self.out,
            flush=True,
        )


def total_size(files: list[ArchiveFile]) -> int:
    return sum(f.size for f in files)


class LineReader:
    """The lines of one archive file (newline stripped), with 1-based numbers.

    ``unterminated`` is set when the last bytes had no newline (a line still being
    written, or torn); that piece is yielded too, so a checker can name it.
    ``plain_bytes`` counts decompressed bytes; ``hasher`` (e.g. ``hashlib.sha256()``)
    sees every plain byte when given.
    """

    def __init__(
        self, file: ArchiveFile, progress: Progress | None = None, hasher: Any = None
    ) -> None:
        self.file = file
        self.progress = progress
        self.hasher = hasher
        self.unterminated = False
        self.plain_bytes = 0

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        with self.file.path.open("rb") as fh:
            if self.file.sealed:
                with zstandard.ZstdDecompressor().stream_reader(fh) as reader:
                    yield from self._lines(reader.read, fh.tell)
            else:
                yield from self._lines(fh.read, fh.tell)

    def _lines(
        self, read: Callable[[int], bytes], disk: Callable[[], int]
    ) -> Iterator[tuple[int, bytes]]:
        number = 0
        pending = b""
        consumed = 0
        while chunk := read(_CHUNK):
            self.plain_bytes += len(chunk)
            if self.hasher is not None:
                self.hasher.update(chunk)
            if self.progress is not None:
                now = disk()
                self.progress.advance(now - consumed, len(chunk))
                consumed = now
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            for line in lines:
                number += 1
                yield number, line
        if pending:
            self.unterminated = True
            yield number + 1, pending


class Envelope(msgspec.Struct):
    """The fields of a Kalshi frame the tools route on; others are syntax-checked only."""

    type: str = ""
    id: int | None = None
    sid: int | None = None
    seq: int | None = None


decode_envelope = msgspec.json.Decoder(Envelope).decode
decode_any = msgspec.json.Decoder().decode


def split_line(line: bytes, head: bytes, *, check_data: bool = True) -> tuple[str, bytes]:
    """``(ts, data)`` of an archive line; ``data`` is the raw bytes as received.

    ``head`` is ``b',"feed":"<feed>","data":'``. Raises :class:`LineError` saying what
    is wrong when the line is not a whole, well-formed ``{"ts","feed","data"}`` object.
    ``check_data=False`` leaves checking that ``data`` is JSON to the caller, which
    decodes it anyway (a msgspec decode checks the syntax of every byte, skipped
    fields included).
    """
    if line.startswith(b'{"ts":"') and line[34:35] == b'"' and line[35:].startswith(head):
        ts = line[7:34]
        if not _TS_RE.match(ts):
            raise LineError(f"field ts: expected YYYY-MM-DDTHH:MM:SS.ffffffZ; found {ts!r}")
        if not line.endswith(b"}"):
            raise LineError("expected the line to end with '}' (a whole line); it is cut short")
        data = line[35 + len(head) : -1]
        if not check_data:
            return ts.decode(), data
        try:
            decode_any(data)
        except msgspec.DecodeError as exc:
            raise LineError(f"field data: expected JSON; found {exc}") from None
        return ts.decode(), data
    return _split_slowly(line, head)


def _split_slowly(line: bytes, head: bytes) -> tuple[str, bytes]:
    """A line not framed exactly as the collector frames it: parse it whole."""
    try:
        doc = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise LineError(f"expected a JSON object; found {exc}") from None
    if not isinstance(doc, dict):
        raise LineError(f"expected a JSON object; found {type(doc).__name__}")
    ts, feed = doc.get("ts"), doc.get("feed")
    if not isinstance(ts, str) or not _TS_RE.match(ts.encode()):
        raise LineError(f"field ts: expected YYYY-MM-DDTHH:MM:SS.ffffffZ; found {ts!r}")
    expected_feed = json.loads(head[len(b',"feed":') : -len(b',"data":')])
    if feed != expected_feed:
        raise LineError(f"field feed: expected {expected_feed!r}; found {feed!r}")
    if "data" not in doc:
        raise LineError("field data: expected the exchange's message; found no data")
    return ts, msgspec.json.encode(doc["data"])


def feed_head(feed: str) -> bytes:
    return f',"feed":{json.dumps(feed)},"data":'.encode()


def ts_ns(ts: str) -> int:
    """Nanoseconds since the epoch of an archive ``ts`` (``...Z``, microseconds)."""
    moment = dt.datetime.fromisoformat(ts)
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def parse_time(text: str) -> str:
    """A user's time (ISO 8601, ``Z`` or an offset; naive means UTC) as an archive ``ts``,
    so it compares with ``ts`` strings directly."""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ArchiveError(
            f"time {text!r}: expected ISO 8601 such as 2026-01-01T12:00:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Event:
    """One line of an events file."""

    ts: str
    event: str
    fields: dict[str, Any]
    where: str
    """``<file>:<line>``."""


def read_events(archive: Archive) -> tuple[list[Event], list[str]]:
    """Every event of the archive in order, and the lines that could not be read."""
    events: list[Event] = []
    problems: list[str] = []
    for file in archive.of(EVENTS):
        reader = LineReader(file)
        for number, line in reader:
            where = f"{file.path}:{number}"
            try:
                doc = json.loads(line)
                if not isinstance(doc, dict):
                    raise ValueError("not an object")
                ts, name = doc.pop("ts"), doc.pop("event")
            except (ValueError, KeyError) as exc:
                problems.append(f"{where}: expected an event line; found {exc}")
                continue
            doc.pop("feed", None)
            events.append(Event(str(ts), str(name), doc, where))
    events.sort(key=lambda e: e.ts)
    return events, problems
