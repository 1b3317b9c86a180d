"""The session log beside each day's data: ``<path>/<YYYY-MM-DD>/<feed>.events.jsonl``.

One line per fact a reader needs to trust the archive, in the order observed::

    {"ts":"2026-11-28T20:00:00.000001Z","feed":"kalshi","event":"gap","channel":"trade",
     "sid":2,"expected":41,"received":44}

``ts`` is the receive time of the frame that revealed the fact (or the time it was
recorded), so events and data lines sort together. Events: ``start``, ``connected``,
``subscribed``, ``gap``, ``duplicate``, ``recovery_requested``, ``recovery_completed``,
``subscription_died``, ``subscription_restored``, ``market_limit``,
``command_throttled``, ``command_rejected``, ``exchange_error``, ``disconnected``,
``stop``; with a ``markets`` selector also ``discovery``, ``discovery_failed``,
``lookup_failed``, ``markets_added``, ``markets_removed`` and ``subscription_idle``.
A reader can tell from them which streams were complete over which periods:
a stream is whole between its ``subscribed`` (or ``subscription_restored``) and the
next ``gap``, ``subscription_died`` or ``disconnected``.

Events are rare, so each is appended at once from the event loop (a small write to
the page cache) and fsynced when the process stops, like the data.
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

SUFFIX = ".events.jsonl"


class EventLog:
    def __init__(
        self, root: Path, feed: str, *, clock_ns: Callable[[], int] = time.time_ns
    ) -> None:
        self.feed = feed
        self.clock_ns = clock_ns
        self.writer = JsonlWriter(root, feed, SUFFIX)
        self._stamp = Timestamper()
        self._feed_json = json.dumps(feed)
        self.failed = False

    def record(self, event: str, ns: int | None = None, /, **fields: object) -> None:
        """Append one event line now; a storage failure is logged, never raised (the data
        path reports storage faults and ends the run)."""
        day, ts = self._stamp(self.clock_ns() if ns is None else ns)
        body = json.dumps({"event": event, **fields}, separators=(",", ":"), default=str)
        line = f'{{"ts":"{ts.decode()}","feed":{self._feed_json},{body[1:]}\n'.encode()
        if self.failed:
            return
        try:
            self.writer.write(day, [line])
        except WriteFailed as exc:
            self.failed = True
            log.error("cannot write the events file: %s", exc)

    def close(self) -> None:
        self.writer.close()
