"""``ssmd archive book``: rebuild one market's order book from an archive.

Kalshi's ``orderbook_delta`` channel sends, per market, an ``orderbook_snapshot``
(``yes_dollars_fp`` / ``no_dollars_fp``: lists of ``[price, count]`` strings, both sides
being bids: YES bids and NO bids) and then ``orderbook_delta`` frames (``price_dollars``,
signed ``delta_fp``, ``side``) on the sid's one sequence (KALSHI.md section 5). A YES ask
is 1 minus the best NO bid.

A book is only as good as the frames it was built from, so the rebuild is strict: it
holds a *known* book from a snapshot on, and the book becomes *unknown*, with the
reason kept, when

- the sid carrying the market skips a ``seq`` (checked over every frame on that sid,
  other markets' too, as the collector checks them; a ``subscribed`` answer starts a
  sid's sequence afresh),
- the events file says the connection ended (``disconnected``, ``stop``), the
  subscription died (``subscription_died``), or the collector saw a ``gap`` there,

and stays unknown, deltas ignored, until the next snapshot of that market (a new
subscription's first frame, or a ``get_snapshot`` recovery). Asking for the book at a
time inside such a period is refused with the reason, never answered with a guess.
Prices and counts are :class:`~decimal.Decimal`, exactly as the strings say.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal

import msgspec

from .reader import (
    DATA,
    Archive,
    Event,
    LineError,
    LineReader,
    Progress,
    feed_head,
    read_events,
    split_line,
    total_size,
)

ONE = Decimal(1)


class BookUnknown(Exception):
    """The book cannot be known at the time asked; the message says why and since when."""


class _Snapshot(msgspec.Struct):
    market_ticker: str = ""
    yes_dollars_fp: list[tuple[str, str]] | None = None
    no_dollars_fp: list[tuple[str, str]] | None = None


class _Delta(msgspec.Struct):
    market_ticker: str = ""
    price_dollars: str = ""
    delta_fp: str = ""
    side: str = ""


class _Frame(msgspec.Struct):
    type: str = ""
    id: int | None = None
    sid: int | None = None
    seq: int | None = None
    msg: msgspec.Raw = msgspec.Raw()


class _Announce(msgspec.Struct):
    channel: str = ""
    sid: int | None = None


_decode_frame = msgspec.json.Decoder(_Frame).decode
_decode_snapshot = msgspec.json.Decoder(_Snapshot).decode
_decode_delta = msgspec.json.Decoder(_Delta).decode
_decode_announce = msgspec.json.Decoder(_Announce).decode


@dataclass
class Book:
    """One market's book: price -> resting count, per side (both are bids)."""

    market: str
    yes: dict[Decimal, Decimal] = field(default_factory=dict)
    no: dict[Decimal, Decimal] = field(default_factory=dict)

    def best(self) -> tuple[tuple[Decimal, Decimal] | None, tuple[Decimal, Decimal] | None]:
        """(best YES bid, best YES ask) as (price, count); the ask is 1 - best NO bid."""
        bid = max(self.yes.items(), default=None)
        no = max(self.no.items(), default=None)
        ask = None if no is None else (ONE - no[0], no[1])
        return bid, ask

    def apply(self, side: str, price: Decimal, delta: Decimal) -> None:
        levels = self.yes if side == "yes" else self.no
        count = levels.get(price, Decimal(0)) + delta
        if count > 0:
            levels[price] = count
        else:
            levels.pop(price, None)

    def to_json(self) -> dict[str, object]:
        bid, ask = self.best()
        return {
            "market": self.market,
            "yes_bids": [[str(p), str(q)] for p, q in sorted(self.yes.items(), reverse=True)],
            "no_bids": [[str(p), str(q)] for p, q in sorted(self.no.items(), reverse=True)],
            "best_yes_bid": None if bid is None else [str(bid[0]), str(bid[1])],
            "best_yes_ask": None if ask is None else [str(ask[0]), str(ask[1])],
        }


@dataclass
class State:
    """Where the rebuild stands: the book, whether it is known, and since when."""

    book: Book
    known: bool = False
    why: str = "no snapshot of the market yet"
    since: str = ""
    """``ts`` the book became known or unknown."""
    sid: int | None = None
    """The sid whose frames carry the market (from its last snapshot)."""
    ts: str = ""
    """``ts`` of the last line read."""
    snapshots: int = 0
    deltas: int = 0

    def unknown(self, ts: str, why: str) -> None:
        if self.known:
            self.known, self.why, self.since = False, why, ts


def rebuild(
    archive: Archive,
    market: str,
    *,
    at: str | None = None,
    on_change: Callable[[State], None] | None = None,
    progress: bool = False,
) -> State:
    """The book of ``market`` after every line with ``ts <= at`` (all lines without ``at``).

    ``on_change`` is called after each line that changed the book or whether it is known.
    """
    state = State(Book(market))
    events, _ = read_events(archive)
    pending = iter(events)
    next_event = next(pending, None)
    follow = _Follower(state, market)
    for where, ts, frame, data in _frames(archive, progress):
        if at is not None and ts > at:
            break
        before = (state.known, state.snapshots, state.deltas)
        while next_event is not None and next_event.ts <= ts:
            _event(state, next_event)
            next_event = next(pending, None)
        state.ts = ts
        with contextlib.suppress(msgspec.ValidationError, ArithmeticError):
            follow(where, ts, frame, data)  # else a msg of another shape: not a book frame
        if on_change is not None and (state.known, state.snapshots, state.deltas) != before:
            on_change(state)
    # Events after the last line read, up to ``at``: a stop or disconnect there counts.
    # Without ``at`` the answer is the book as of the archive's last line.
    while next_event is not None and at is not None and next_event.ts <= at:
        _event(state, next_event)
        next_event = next(pending, None)
    if at is not None and not state.known:
        raise BookUnknown(
            f"the book of {market} at {at} is unknown: {state.why}"
            + (f" (since {state.since})" if state.since else "")
            + "; a later snapshot makes it known again"
        )
    return state


class _Follower:
    """Applies one frame to the rebuild: sequences of every sid, the market's book."""

    def __init__(self, state: State, market: str) -> None:
        self.state = state
        self.market = market
        self.needle = json.dumps(market).encode()
        self.last_seq: dict[int, int] = {}

    def __call__(self, where: str, ts: str, frame: _Frame, data: bytes) -> None:
        state, market = self.state, self.market
        sid, seq = frame.sid, frame.seq
        if frame.type == "subscribed" and frame.msg:
            announce = _decode_announce(frame.msg)
            if announce.sid is not None:
                self.last_seq.pop(announce.sid, None)  # a new sid is a new sequence
            return
        if sid is not None and seq is not None and frame.type != "error":
            last = self.last_seq.get(sid)
            if last is not None and seq > last + 1 and sid == state.sid:
                state.unknown(
                    ts, f"gap on sid {sid} at {where}: expected seq {last + 1}, received {seq}"
                )
            if last is None or seq > last:
                self.last_seq[sid] = seq
        if self.needle not in data or not frame.msg:
            return
        if frame.type == "orderbook_snapshot":
            snap = _decode_snapshot(frame.msg)
            if snap.market_ticker == market:
                state.book.yes = {Decimal(p): Decimal(q) for p, q in snap.yes_dollars_fp or ()}
                state.book.no = {Decimal(p): Decimal(q) for p, q in snap.no_dollars_fp or ()}
                state.known, state.why, state.since, state.sid = True, "", ts, sid
                state.snapshots += 1
        elif frame.type == "orderbook_delta":
            delta = _decode_delta(frame.msg)
            if delta.market_ticker == market and state.known:
                if sid != state.sid:
                    state.unknown(ts, f"delta on sid {sid} at {where} before its snapshot")
                else:
                    state.book.apply(
                        delta.side, Decimal(delta.price_dollars), Decimal(delta.delta_fp)
                    )
                    state.deltas += 1


def _event(state: State, event: Event) -> None:
    name = event.event
    if name in ("disconnected", "stop"):
        state.unknown(event.ts, f"the connection ended ({name}, {event.where})")
    elif name in ("subscription_died", "gap") and event.fields.get("sid") == state.sid:
        state.unknown(event.ts, f"{name} on sid {state.sid} ({event.where})")


def _frames(archive: Archive, progress: bool) -> Iterator[tuple[str, str, _Frame, bytes]]:
    head = feed_head(archive.feed)
    files = archive.of(DATA)
    meter = Progress("book", total_size(files), enabled=progress)
    for file in files:
        for number, line in LineReader(file, meter):
            try:
                ts, data = split_line(line, head, check_data=False)
                frame = _decode_frame(data)  # checks the whole of data is JSON
            except (LineError, msgspec.ValidationError, msgspec.DecodeError):
                continue  # verify names these; a book never uses them
            yield f"{file.path}:{number}", ts, frame, data


def render(state: State, depth: int = 10) -> str:
    book = state.book
    bid, ask = book.best()
    out = [
        f"{book.market} at {state.ts or '-'} (known since {state.since}; "
        f"{state.snapshots} snapshot(s), {state.deltas} delta(s) applied)",
        f"best yes bid {_level(bid)}   best yes ask {_level(ask)}",
        f"{'yes bid':>10} {'count':>12}   {'no bid':>10} {'count':>12}",
    ]
    yes = sorted(book.yes.items(), reverse=True)[:depth]
    no = sorted(book.no.items(), reverse=True)[:depth]
    for i in range(max(len(yes), len(no))):
        left = f"{yes[i][0]:>10} {yes[i][1]:>12}" if i < len(yes) else " " * 23
        right = f"{no[i][0]:>10} {no[i][1]:>12}" if i < len(no) else ""
        out.append(f"{left}   {right}".rstrip())
    return "\n".join(out)


def _level(level: tuple[Decimal, Decimal] | None) -> str:
    return "-" if level is None else f"{level[0]} x {level[1]}"


class TopPrinter:
    """Prints a line each time the top of the book changes (or it becomes unknown)."""

    def __init__(self, out: Callable[[str], None]) -> None:
        self.out = out
        self.last: tuple[object, ...] | None = None

    def __call__(self, state: State) -> None:
        if not state.known:
            key: tuple[object, ...] = ("unknown", state.why)
            line = f"{state.ts}  unknown: {state.why}"
        else:
            bid, ask = state.book.best()
            key = (bid, ask)
            line = f"{state.ts}  bid {_level(bid):>20}  ask {_level(ask):>20}"
        if key != self.last:
            self.last = key
            self.out(line)
