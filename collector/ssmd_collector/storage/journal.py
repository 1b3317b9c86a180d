"""The local record of verified uploads: what makes "nothing uploaded twice" hold.

``<spool>/.archive/<feed>.uploads.jsonl`` gets one line per object once the store
has been checked to hold it: bucket, key, size, SHA-256 and when. A sealed file
is pending while its object is not in the record. A crash after the upload but
before the line is written costs nothing: the next pass finds the object already
there and whole (a HEAD before every PUT) and records it without sending it again.

The record outlives the local files (retention deletes those), so a sealed file
restored by hand is not shipped a second time either. Lines are appended with
``O_APPEND`` and fsynced; a line torn by a crash is ignored on load.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

JOURNAL_DIR = ".archive"


@dataclass(frozen=True)
class Uploaded:
    bucket: str
    key: str
    bytes: int
    sha256: str
    uploaded_at: float


class UploadJournal:
    def __init__(self, spool: Path, feed: str) -> None:
        self.path = spool / JOURNAL_DIR / f"{feed}.uploads.jsonl"
        self._entries: dict[tuple[str, str], Uploaded] = {}
        self._loaded = False

    def get(self, bucket: str, key: str) -> Uploaded | None:
        self._load()
        return self._entries.get((bucket, key))

    def record(self, entry: Uploaded) -> None:
        self._load()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(asdict(entry), separators=(",", ":")) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self._entries[(entry.bucket, entry.key)] = entry

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        if raw and not raw.endswith(b"\n"):
            # A torn last line: cut it, so the next record starts on a line of its own.
            cut = raw.rfind(b"\n") + 1
            log.warning("ignoring a torn last line in %s (%d bytes)", self.path, len(raw) - cut)
            os.truncate(self.path, cut)
            raw = raw[:cut]
        for n, line in enumerate(raw.splitlines(), 1):
            try:
                entry = Uploaded(**json.loads(line))
            except (ValueError, TypeError):
                log.warning("ignoring line %d of %s: not an upload record", n, self.path)
                continue
            self._entries[(entry.bucket, entry.key)] = entry
