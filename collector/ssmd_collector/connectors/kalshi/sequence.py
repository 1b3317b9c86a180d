"""Per-subscription sequence checking (KALSHI.md section 7).

Every frame with a ``sid`` and a ``seq`` (data and the ``ok``/``unsubscribed``
answers, never an ``error``) is checked against the highest ``seq`` seen on that
sid: ``last + 1`` is in order, ``<= last`` is a duplicate or out of order (kept,
counted, not moved back), ``> last + 1`` is a gap of ``seq - last - 1`` frames.
A new sid is a new sequence: the first ``seq`` seen on it sets the base.
"""

from __future__ import annotations

import enum


class Verdict(enum.Enum):
    IN_ORDER = "in_order"
    GAP = "gap"
    DUPLICATE = "duplicate"


class Sequences:
    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: dict[int, int] = {}

    def check(self, sid: int, seq: int) -> tuple[Verdict, int]:
        """The verdict on ``seq`` and the highest seq seen before it (or ``seq - 1``)."""
        last = self._last.get(sid)
        if last is None:
            self._last[sid] = seq
            return Verdict.IN_ORDER, seq - 1
        if seq == last + 1:
            self._last[sid] = seq
            return Verdict.IN_ORDER, last
        if seq > last:
            self._last[sid] = seq
            return Verdict.GAP, last
        return Verdict.DUPLICATE, last

    def forget(self, sid: int) -> None:
        """The sid is gone (unsubscribed or ended by the exchange)."""
        self._last.pop(sid, None)
