"""``ssmd archive replay``: serve an archive over Kalshi's WebSocket protocol.

The simulator's protocol server does the talking (signed handshakes, commands and
their answers, ``list_subscriptions``, heartbeat pings); :class:`ArchiveSource` takes
the place of the synthetic market as its source of frames. Any Kalshi client,
ssmd-connector included, can connect and subscribe with channel and market filters.

What is sent, and how subscriptions map to the archive's sids:

- **Frames go out byte for byte as archived**, the recorded exchange's ``sid`` and
  ``seq`` included, so recording a replay gives back the same ``data``. The archived
  answers to the recorder's own commands (``subscribed``, ``ok``, ``unsubscribed``,
  errors with an ``id``) are not replayed: the server answers the client's commands.
- **A subscribe of channel C is answered with the sid C had in the archive** (its
  first ``subscribed`` answer, from the events file or else the data), so a client
  sees the same sid on its answer as on the frames. A channel the archive never had
  gets a sid above every archived one and stays quiet.
- **Which frames a subscription gets:** those of its channel (the archive's own
  ``subscribed`` answers say which sid is which channel; the frame type says it for a
  sid never announced) and, with a market filter, of its markets (frames without a
  ``market_ticker``, such as ``event_lifecycle``, always pass).
- **An archive spanning restarts** holds one sid space per recorded connection: when
  the recorder resubscribed (a restart, a subscription the exchange ended) the
  channel's later frames carry their new sid, exactly as recorded. Replay one
  session (``--session N``, or ``--start``/``--end``) for one sid space: across a
  restart a client sees each sid's ``seq`` start again, which it counts as duplicates.
- **The recorded conversation is kept in step**: when the archive reaches the
  ``subscribed`` answer of a channel the client has not subscribed yet, the replay
  waits for the client's subscribe (at most ``subscribe_wait`` seconds), so a client
  that subscribes channel after channel, as recorders do, misses no frame the
  recorder got. ``ok`` answers carry no ``seq`` (an archive's sequences are fixed), and
  ``get_snapshot`` is refused with error 13 (an archive cannot make a snapshot).

Pacing: frame k is due ``(ts_k - ts_0) / speed`` after the first frame was sent (the
``ts`` is the recorder's receive time), or at once with ``speed=None`` (as fast as
the client reads). The replay restarts its clock after waiting for a subscribe.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import msgspec

from ..sim.market import Stream
from .reader import (
    DATA,
    EVENTS,
    Archive,
    ArchiveError,
    LineError,
    LineReader,
    feed_head,
    read_events,
    split_line,
    ts_ns,
)

log = logging.getLogger(__name__)

_ANSWERS = frozenset({"subscribed", "ok", "unsubscribed"})

CHANNEL_OF_TYPE = {
    "ticker": "ticker",
    "trade": "trade",
    "orderbook_snapshot": "orderbook_delta",
    "orderbook_delta": "orderbook_delta",
    "market_lifecycle_v2": "market_lifecycle_v2",
    "event_lifecycle": "market_lifecycle_v2",
    "event_fee_update": "market_lifecycle_v2",
    "multivariate_market_lifecycle": "multivariate_market_lifecycle",
    "fill": "fill",
    "market_position": "market_positions",
    "user_order": "user_orders",
    "order_group_updates": "order_group_updates",
}
"""A frame's channel when its sid was never announced in the archive (KALSHI.md section 5)."""


class _Frame(msgspec.Struct):
    type: str = ""
    id: int | None = None
    sid: int | None = None
    msg: msgspec.Raw = msgspec.Raw()


class _Market(msgspec.Struct):
    market_ticker: str | None = None


class _Announce(msgspec.Struct):
    channel: str = ""
    sid: int | None = None


_decode_frame = msgspec.json.Decoder(_Frame).decode
_decode_market = msgspec.json.Decoder(_Market).decode
_decode_announce = msgspec.json.Decoder(_Announce).decode


@dataclass(frozen=True)
class Archived:
    """One archived frame on its way out: its time, routing and the bytes to send."""

    ns: int
    ts: str
    channel: str | None
    """None for an answer to the recorder's commands: never sent; ``announce`` says
    which channel a ``subscribed`` answer was for."""
    market: str | None
    text: str
    announces: str | None = None
    announced_sid: int | None = None


def archived_frames(
    archive: Archive, start: str | None = None, end: str | None = None
) -> Iterator[Archived]:
    """The archive's frames in order, routed; unreadable lines are logged and skipped."""
    head = feed_head(archive.feed)
    channel_of: dict[int, str] = {}
    for file in archive.of(DATA):
        for number, line in LineReader(file):
            try:
                ts, data = split_line(line, head, check_data=False)
                frame = _decode_frame(data)  # checks the whole of data is JSON
            except (LineError, msgspec.ValidationError, msgspec.DecodeError) as exc:
                log.warning("replay: skipping %s:%d: %s", file.path, number, exc)
                continue
            if (start is not None and ts < start) or (end is not None and ts >= end):
                continue
            kind = frame.type
            if kind in _ANSWERS or (kind == "error" and frame.id):
                body = _Announce()
                if kind == "subscribed" and frame.msg:
                    with _QUIETLY:
                        body = _decode_announce(frame.msg)
                if body.sid is not None:
                    channel_of[body.sid] = body.channel
                    yield Archived(ts_ns(ts), ts, None, None, "", body.channel, body.sid)
                else:
                    yield Archived(ts_ns(ts), ts, None, None, "")
                continue
            channel = channel_of.get(frame.sid) if frame.sid is not None else None
            channel = channel or CHANNEL_OF_TYPE.get(kind, "")
            market = None
            if frame.msg:
                with _QUIETLY:
                    market = _decode_market(frame.msg).market_ticker
            yield Archived(ts_ns(ts), ts, channel, market, data.decode())


_QUIETLY = contextlib.suppress(msgspec.ValidationError)
"""A ``msg`` of another shape than expected: the frame is routed without it."""


def archived_sids(
    archive: Archive, start: str | None = None, end: str | None = None
) -> dict[str, int]:
    """Each channel's first sid in the archive (or in ``[start, end)``): from the events
    file when there is one (small), else from the ``subscribed`` answers in the data."""
    sids: dict[str, int] = {}
    if archive.of(EVENTS):
        events, _ = read_events(archive)
        for event in events:
            if (start is not None and event.ts < start) or (end is not None and event.ts >= end):
                continue
            channel, sid = event.fields.get("channel"), event.fields.get("sid")
            if event.event in ("subscribed", "subscription_restored") and isinstance(sid, int):
                sids.setdefault(str(channel), sid)
        if sids:
            return sids
    for frame in archived_frames(archive, start, end):
        if frame.announces is not None and frame.announced_sid is not None:
            sids.setdefault(frame.announces, frame.announced_sid)
    return sids


@dataclass
class _Sub:
    stream: Stream
    markets: set[str] | None


class ArchiveSource:
    """A :class:`~ssmd_collector.sim.source.FrameSource` playing an archive to one
    connection (module doc: what is sent, sids, pacing)."""

    numbers_answers = False

    def __init__(
        self,
        frames: Iterator[Archived],
        sids: dict[str, int],
        *,
        speed: float | None = 1.0,
        subscribe_wait: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if speed is not None and speed <= 0:
            raise ValueError(f"speed: expected a multiple above 0 or None; found {speed}")
        self._frames = frames
        self._sids = sids
        self._speed = speed
        self._subscribe_wait = subscribe_wait
        self._clock = clock
        self._subs: dict[int, _Sub] = {}
        self._peeked: Archived | None = None
        self._done = False
        self._anchor: tuple[float, int] | None = None
        """(clock, ns) of the frame the pacing counts from."""
        self._waiting_since: float | None = None
        self.sent = 0

    # -- FrameSource -----------------------------------------------------------

    @property
    def active(self) -> bool:
        return bool(self._subs) and not self._done

    @property
    def exhausted(self) -> bool:
        return self._done

    def streaming_sids(self) -> list[int]:
        return list(self._subs)

    def new_sid(self, channel: str, proposed: int) -> int:
        archived = self._sids.get(channel)
        if archived is not None and archived not in self._subs:
            return archived
        taken = set(self._sids.values()) | set(self._subs)
        return max(proposed, max(taken, default=0) + 1)

    def attach(self, stream: Stream, tickers: Sequence[str] | None) -> None:
        self._subs[stream.sid] = _Sub(stream, None if tickers is None else set(tickers))

    def detach(self, stream: Stream) -> None:
        self._subs.pop(stream.sid, None)

    def add_markets(self, stream: Stream, tickers: Iterable[str]) -> None:
        sub = self._subs[stream.sid]
        if sub.markets is not None:
            sub.markets.update(tickers)

    def remove_markets(self, stream: Stream, tickers: Iterable[str]) -> None:
        sub = self._subs[stream.sid]
        if sub.markets is not None:
            sub.markets.difference_update(tickers)

    def get_snapshot(self, stream: Stream, ticker: str, cmd_id: int | None) -> str | None:
        return None

    def delay(self) -> float:
        frame = self._next()
        if frame is None:
            return 0.0
        if frame.channel is None:  # parked at a subscribe answer the client has not matched
            return 0.05
        return max(0.0, self._due(frame) - self._clock())

    def take(self, n: int) -> list[str]:
        out: list[str] = []
        now = self._clock()
        while len(out) < n:
            frame = self._next()
            if frame is None or frame.channel is None or self._due(frame) > now:
                break
            out.append(frame.text)
            self._peeked = None
        self.sent += len(out)
        return out

    # -- the cursor ------------------------------------------------------------

    def _next(self) -> Archived | None:
        """The next frame to send (or the subscribe answer the replay waits at), skipping
        frames no subscription wants; None at the end."""
        while not self._done:
            if self._peeked is None:
                self._peeked = next(self._frames, None)
                if self._peeked is None:
                    self._done = True
                    return None
            frame = self._peeked
            if frame.channel is None:
                if self._must_wait(frame):
                    return frame
                self._peeked = None
                continue
            if self._wanted(frame):
                if self._anchor is None:
                    self._anchor = (self._clock(), frame.ns)
                return frame
            self._peeked = None
        return None

    def _must_wait(self, answer: Archived) -> bool:
        channel = answer.announces
        if channel is None or any(s.stream.channel == channel for s in self._subs.values()):
            self._waiting_since = None
            return False
        now = self._clock()
        if self._waiting_since is None:
            self._waiting_since = now
        if now - self._waiting_since < self._subscribe_wait:
            return True
        log.info("replay: no subscribe of %s within %gs; going on", channel, self._subscribe_wait)
        self._waiting_since = None
        self._anchor = None  # pacing restarts after the wait
        return False

    def _wanted(self, frame: Archived) -> bool:
        for sub in self._subs.values():
            if sub.stream.channel != frame.channel:
                continue
            if sub.markets is None or frame.market is None or frame.market in sub.markets:
                return True
        return False

    def _due(self, frame: Archived) -> float:
        if self._speed is None or self._anchor is None:
            return float("-inf")  # due already
        start, first_ns = self._anchor
        return start + (frame.ns - first_ns) / 1e9 / self._speed


def session_range(archive: Archive, number: int) -> tuple[str, str | None]:
    """``(start, end)`` of recorded session ``number`` (1-based): from its ``connected``
    event to the next one (None: the archive's end). Raises ``ArchiveError`` naming how
    many sessions the events file has."""
    events, _ = read_events(archive)
    starts = [e.ts for e in events if e.event == "connected"]
    if not 1 <= number <= len(starts):
        raise ArchiveError(
            f"{archive.root}: session {number}: expected 1 to {len(starts)} "
            "(the events file's connected events)"
        )
    return starts[number - 1], starts[number] if number < len(starts) else None


def source_factory(
    archive: Archive,
    *,
    speed: float | None,
    subscribe_wait: float,
    start: str | None = None,
    end: str | None = None,
) -> Callable[[], ArchiveSource]:
    """A maker of one :class:`ArchiveSource` per connection, each from the start."""
    sids = archived_sids(archive, start, end)

    def make() -> ArchiveSource:
        return ArchiveSource(
            archived_frames(archive, start, end), sids, speed=speed, subscribe_wait=subscribe_wait
        )

    return make


__all__ = [
    "ArchiveSource",
    "Archived",
    "archived_frames",
    "archived_sids",
    "session_range",
    "source_factory",
]
