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
    """Turns receive times (ns since the epoch) into ``(day, ts)`` strings in UTC.

    ``day`` is ``YYYY-MM-DD`` (the partition); ``ts`` is
    ``YYYY-MM-DDTHH:MM:SS.ffffffZ``. The date-time prefix is cached per second,
    so the common case costs one integer division and one format.
    """

    __slots__ = ("_day", "_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._day = ""
        self._prefix = ""

    def __call__(self, ns: int) -> tuple[str, str]:
        micros = ns // 1000
        second, frac = divmod(micros, 1_000_000)
        if second != self._second:
            t = time.gmtime(second)
            self._day = f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
            self._prefix = f"{self._day}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}."
            self._second = second
        return self._day, f"{self._prefix}{frac:06d}Z"


class LineFramer:
    """Builds archive lines for one feed; the feed's JSON is encoded once."""

    __slots__ = ("_feed_json", "_head", "_mid")

    def __init__(self, feed: str) -> None:
        self._feed_json = json.dumps(feed)
        self._head = '{"ts":"'
        self._mid = f'","feed":{self._feed_json},"data":'

    def line(self, ts: str, raw: str) -> str:
        """Frame ``raw``, which the caller has already checked is valid JSON."""
        if "\n" in raw or "\r" in raw:
            raw = raw.replace("\r", " ").replace("\n", " ")
        return self._head + ts + self._mid + raw + "}\n"

    def rejected(self, ts: str, reason: str, raw: str | bytes, error: str = "") -> str:
        """A quarantine line keeping a frame that is not JSON, recoverable exactly.

        Text goes in ``raw`` as a JSON string; binary frames in ``raw_base64``.
        """
        record: dict[str, str] = {"ts": ts, "feed": json.loads(self._feed_json), "reason": reason}
        if error:
            record["error"] = error
        if isinstance(raw, str):
            record["raw"] = raw
        else:
            record["raw_base64"] = base64.b64encode(raw).decode("ascii")
        return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
