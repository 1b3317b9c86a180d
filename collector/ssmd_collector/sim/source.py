"""Where the protocol server's data frames come from: the seam between protocol and market.

The simulator's protocol server (:mod:`.server` and :mod:`.protocol`) speaks Kalshi's
WebSocket protocol; what it streams comes from a :class:`FrameSource`, one per
connection. Two exist:

- :class:`~.market.Feed`, the synthetic market (``ssmd sim``): it makes frames up from
  a seed, numbers their sequences itself, and is paced by ``SimConfig.rate``;
- ``ssmd_collector.archive.replay.ArchiveSource`` (``ssmd archive replay``): it sends
  an archive's frames as they were received, byte for byte, paced by their recorded
  times; their sids and seqs are the archive's.

The protocol layer tells a source which subscriptions exist (``attach``, ``detach``,
``add_markets``, ``remove_markets``) and asks it for sids and snapshots; the server's
streamer takes frames from it (``take``) when it says they are due.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from .market import Stream


class FrameSource(Protocol):
    numbers_answers: bool
    """Whether ``ok``, ``unsubscribed`` and scoped ``error`` answers take the next ``seq``
    of their sid. True for the synthetic market, which owns its sequences; False for an
    archive, whose sequences are fixed (an answer there carries no ``seq``)."""

    @property
    def active(self) -> bool:
        """Whether :meth:`take` would return anything now or later."""

    @property
    def exhausted(self) -> bool:
        """No frame will ever come again (an archive played to its end)."""

    def take(self, n: int) -> list[str]:
        """Up to ``n`` frames that are due now."""

    def delay(self) -> float:
        """Seconds until the next frame is due (0: now). A source that the server paces
        by ``SimConfig.rate`` always says 0."""

    def streaming_sids(self) -> list[int]:
        """The sids that produce data frames."""

    def new_sid(self, channel: str, proposed: int) -> int:
        """The sid of a new subscription to ``channel``; ``proposed`` is the next free one."""

    def attach(self, stream: Stream, tickers: Sequence[str] | None) -> None: ...

    def detach(self, stream: Stream) -> None: ...

    def add_markets(self, stream: Stream, tickers: Iterable[str]) -> None: ...

    def remove_markets(self, stream: Stream, tickers: Iterable[str]) -> None: ...

    def get_snapshot(self, stream: Stream, ticker: str, cmd_id: int | None) -> str | None:
        """An ``orderbook_snapshot`` answering ``get_snapshot``, or None when the source
        cannot make one (the command is then refused with error 13)."""
