"""Per-subscription sequence checking (KALSHI.md section 7).

Every frame with a ``sid`` and a ``seq`` (data and the ``ok``/``unsubscribed``
answers, never an ``error``) is checked against the highest ``seq`` seen on that
sid: ``last + 1`` is in order, ``<= last`` is a duplicate or out of order (kept,
counted, not moved back), ``> last + 1`` is a gap of ``seq - last - 1`` frames.
A new sid is a new sequence: the first ``seq`` seen on it sets the base.

A scoped ``error`` may carry the sid's next ``seq`` (KALSHI.md section 7: whether it
uses the number up is not documented). It is never checked itself; :meth:`Sequences.error`
notes its number, and the next frame is in order whether it reuses that number or
follows it, so a refused ``add_markets`` (error 26) is not mistaken for lost data.
"""

from __future__ import annotations

import enum


class Verdict(enum.Enum):
    IN_ORDER = "in_order"
    GAP = "gap"
    DUPLICATE = "duplicate"


class Sequences:
    __slots__ = ("_errors", "_last")

    def __init__(self) -> None:
        self._last: dict[int, int] = {}
        self._errors: dict[int, int] = {}

    def error(self, sid: int, seq: int) -> None:
        """An error frame on ``sid`` carried ``seq``: that number may be used up."""
        last = self._last.get(sid)
        if last is not None and seq == last + 1:
            self._errors[sid] = seq

    def check(self, sid: int, seq: int) -> tuple[Verdict, int]:
        """The verdict on ``seq`` and the highest seq seen before it (or ``seq - 1``)."""
        last = self._last.get(sid)
        if last is None:
            self._last[sid] = seq
            return Verdict.IN_ORDER, seq - 1
        if self._errors and self._errors.pop(sid, None) == seq - 1 == last + 1:
            last += 1  # the error before this frame used that number
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
        self._errors.pop(sid, None)
