"""Market discovery archived raw: ``<path>/<YYYY-MM-DD>/<feed>.markets.jsonl``.

One line per REST page discovery read, the body spliced in exactly as received (as
the data file does with frames)::

    {"ts":"2026-11-28T20:00:00.000001Z","feed":"kalshi","url":"https://.../markets?
     status=open&limit=1000","data":{"markets":[...],"cursor":"..."}}

so the archive holds the market universe as discovery saw it, page by page. Pages are
rare (a few per discovery run); each is written when read and fsynced at the stop,
like the events file. A storage failure is logged once and stops this log only.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from .framing import Timestamper
from .writer import JsonlWriter, WriteFailed

log = logging.getLogger(__name__)

SUFFIX = ".markets.jsonl"


class MarketsLog:
    def __init__(
        self, root: Path, feed: str, *, clock_ns: Callable[[], int] = time.time_ns
    ) -> None:
        self.writer = JsonlWriter(root, feed, SUFFIX)
        self.clock_ns = clock_ns
        self._stamp = Timestamper()
        self._feed_json = json.dumps(feed)
        self.failed = False

    def page(self, url: str, body: bytes) -> None:
        """Append one page (``body`` must be JSON: the REST client checked it)."""
        if self.failed:
            return
        day, ts = self._stamp(self.clock_ns())
        if 10 in body or 13 in body:  # one page, one line (JSON whitespace only)
            body = body.replace(b"\r", b" ").replace(b"\n", b" ")
        head = f'{{"ts":"{ts.decode()}","feed":{self._feed_json},"url":{json.dumps(url)},"data":'
        try:
            self.writer.write(day, [head.encode() + body + b"}\n"])
        except WriteFailed as exc:
            self.failed = True
            log.error("cannot write the markets file: %s", exc)

    def close(self) -> None:
        self.writer.close()
