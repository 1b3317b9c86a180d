"""Framing of archive lines: ``{"ts":...,"feed":...,"data":<raw JSON as received>}``.

Pure string work on the hot path. ``data`` is the exchange's text spliced in
verbatim rather than re-encoded: it is byte-faithful and skips a ``json.dumps``
per message. The one change ever made to it: a raw CR or LF (which valid JSON
only allows as whitespace between tokens) becomes a space, so that one message
is always exactly one line.
"""

from __future__ import annotations

import base64
import json
import time


class Timestamper:
    """Turns receive times (ns since the epoch) into ``(day, ts)`` in UTC.

    ``day`` is ``YYYY-MM-DD`` (the partition); ``ts`` is the bytes
    ``YYYY-MM-DDTHH:MM:SS.ffffffZ``. The date-time prefix is cached per second,
    so the common case costs one division and one format.
    """

    __slots__ = ("_day", "_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._day = ""
        self._prefix = b""

    def __call__(self, ns: int) -> tuple[str, bytes]:
        micros = ns // 1000
        second, frac = divmod(micros, 1_000_000)
        if second != self._second:
            t = time.gmtime(second)
            self._day = f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
            self._prefix = f"{self._day}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.".encode()
            self._second = second
        return self._day, self._prefix + b"%06dZ" % frac


class LineFramer:
    """Builds archive lines for one feed; the constant parts are encoded once."""

    __slots__ = ("_feed", "_head", "_mid")

    def __init__(self, feed: str) -> None:
        self._feed = feed
        self._head = b'{"ts":"'
        self._mid = f'","feed":{json.dumps(feed)},"data":'.encode()

    def line(self, ts: bytes, raw: bytes) -> bytes:
        """Frame ``raw``, which the caller has already checked is valid JSON."""
        # Membership of an int is a memchr; `b"\n" in raw` costs ~8x more per message.
        if 10 in raw or 13 in raw:
            raw = raw.replace(b"\r", b" ").replace(b"\n", b" ")
        return self._head + ts + self._mid + raw + b"}\n"

    def rejected(self, ts: bytes, reason: str, raw: bytes, text: bool, error: str = "") -> bytes:
        """A quarantine line keeping a message that is not JSON, recoverable exactly.

        A text message that is valid UTF-8 goes in ``raw`` as a JSON string;
        anything else (binary messages, broken UTF-8) in ``raw_base64``.
        """
        record: dict[str, str] = {"ts": ts.decode(), "feed": self._feed, "reason": reason}
        if error:
            record["error"] = error
        try:
            if not text:
                raise UnicodeDecodeError("utf-8", raw, 0, 0, "binary message")
            record["raw"] = raw.decode()
        except UnicodeDecodeError:
            record["raw_base64"] = base64.b64encode(raw).decode("ascii")
        return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
