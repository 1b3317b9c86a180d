"""The manifest written beside each sealed file: what it holds and how to check it.

``<name>.zst.manifest.json`` says how many lines and bytes the plain file had, its
SHA-256 (so a reader can check a decompressed copy), the ``ts`` of its first and
last line, and the size, SHA-256 and MD5 of the compressed file (so an upload can
be verified against what the object store reports).
"""

from __future__ import annotations

import builtins
import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

MANIFEST_SUFFIX = ".manifest.json"
_TS_PREFIX = b'{"ts":"'
_TS_LEN = len("2025-12-22T10:30:00.123456Z")


class ManifestInvalid(ValueError):
    """A manifest file that cannot be read; the message names the file and field."""


@dataclass(frozen=True)
class Manifest:
    source: str
    """Name of the plain file that was sealed (``kalshi.jsonl``)."""
    sealed: str
    """Name of the sealed file (``kalshi.jsonl.zst``)."""
    day: str
    lines: int
    bytes: int
    sha256: str
    """Hex SHA-256 of the plain (decompressed) bytes."""
    first_ts: str | None
    last_ts: str | None
    sealed_bytes: int
    sealed_sha256: str
    sealed_md5: str
    sealed_at: float
    """Unix time the seal was committed (the upload lag counts from here)."""
    compression: str = "zstd"

    def to_json(self) -> builtins.bytes:
        return (json.dumps(asdict(self), indent=1, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, raw: builtins.bytes, where: str) -> Manifest:
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise ManifestInvalid(f"{where}: expected JSON; found {exc}") from None
        if not isinstance(doc, dict):
            raise ManifestInvalid(f"{where}: expected a JSON object; found {type(doc).__name__}")
        kinds: dict[str, Any] = {
            "source": str,
            "sealed": str,
            "day": str,
            "lines": int,
            "bytes": int,
            "sha256": str,
            "first_ts": (str, type(None)),
            "last_ts": (str, type(None)),
            "sealed_bytes": int,
            "sealed_sha256": str,
            "sealed_md5": str,
            "sealed_at": (int, float),
            "compression": str,
        }
        for name, kind in kinds.items():
            if not isinstance(doc.get(name), kind):
                raise ManifestInvalid(
                    f"{where}: field {name}: expected {kind}; found {doc.get(name)!r}"
                )
        return cls(**{name: doc[name] for name in kinds})


class LineDigest:
    """Counts lines, hashes bytes and keeps the first and last line's ``ts``, chunk by chunk.

    Lines are in arrival order, so the first and last line carry the first and
    last receive time; only those two are parsed, never the lines in between.
    """

    def __init__(self) -> None:
        self.lines = 0
        self.bytes = 0
        self._sha = hashlib.sha256()
        self._first: bytes | None = None
        self._last = b""
        self._partial = b""
        """Bytes after the last newline seen so far (a line still being read)."""

    def update(self, chunk: bytes) -> None:
        self._sha.update(chunk)
        self.bytes += len(chunk)
        cut = chunk.rfind(b"\n")
        if cut < 0:
            self._partial += chunk
            return
        self.lines += chunk.count(b"\n")
        if self._first is None:
            self._first = self._partial + chunk[: chunk.find(b"\n")]
        prev = chunk.rfind(b"\n", 0, cut)
        self._last = self._partial + chunk[:cut] if prev < 0 else chunk[prev + 1 : cut]
        self._partial = chunk[cut + 1 :]

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    @property
    def first_ts(self) -> str | None:
        return line_ts(self._first or b"")

    @property
    def last_ts(self) -> str | None:
        return line_ts(self._last)


def line_ts(line: bytes) -> str | None:
    """The ``ts`` of an archive line; None for lines that have none (``.torn`` headers)."""
    end = len(_TS_PREFIX) + _TS_LEN
    if line.startswith(_TS_PREFIX) and line[end - 1 : end + 1] == b'Z"':
        return line[len(_TS_PREFIX) : end].decode("ascii", "replace")
    if not line.startswith(b"{"):
        return None
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    ts = doc.get("ts") if isinstance(doc, dict) else None
    return ts if isinstance(ts, str) else None
