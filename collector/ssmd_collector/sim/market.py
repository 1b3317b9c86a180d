"""Deterministic market model of the simulated exchange, and the data frames it emits.

A :class:`Feed` belongs to one connection. It owns a simulated clock, a price random
walk and an order book per market, and turns them into Kalshi-shaped data frames
(``ticker``, ``trade``, ``orderbook_snapshot``/``orderbook_delta``,
``market_lifecycle_v2``) for the streams the connection subscribed to.

Everything is derived from the seed: the per-market starting state from
``random.Random(f"{seed}/{ticker}")`` and the event sequence from ``random.Random(seed)``;
timestamps come from a simulated clock, never from the wall clock. The same seed and
the same commands at the same points of the stream give byte-identical frames.

Frames are built with f-strings rather than ``json.dumps``: the benchmark needs the sim
to offer far more messages per second than the collector consumes, and every value
interpolated is an int or a string that needs no JSON escaping (tickers are validated
by the protocol layer, ids are hex).
"""

from __future__ import annotations

import bisect
import json
import random
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

# Channels that produce data in the simulator. Other known channels (fill,
# market_positions, ...) are accepted by the protocol layer but stay quiet: the
# simulated exchange has no orders, so it has nothing private to report.
TICKER = "ticker"
TRADE = "trade"
ORDERBOOK = "orderbook_delta"
LIFECYCLE = "market_lifecycle_v2"

# Relative frequency of each data channel, per market. Order books change far more
# often than trades happen, and lifecycle events are rare, as on the real feed.
CHANNEL_WEIGHTS: dict[str, int] = {ORDERBOOK: 30, TICKER: 15, TRADE: 10, LIFECYCLE: 1}

# Channels whose frames carry a per-sid ``seq`` (contiguous from 1).
SEQUENCED_CHANNELS = frozenset({ORDERBOOK, TRADE})

EPOCH_S = 1_767_225_600
"""2026-01-01T00:00:00Z: the simulated clock starts here, offset by the seed."""

_SEED_OFFSET_SPAN_S = 365 * 86_400
"""The seed shifts the start by at most a year, so huge seeds still format as dates."""

# Kalshi market tickers: upper-case letters, digits, '-', and '.' in strike values
# (``FED-23DEC-T3.00``). Anything else cannot be a market of this exchange.
TICKER_PATTERN = re.compile(r"^[A-Z0-9][A-Z0-9._-]{0,99}$")

# Price formatting tables, indexed by cents: "0.480" (the *_dollars fields) and
# "0.4800" (the *_dollars_fp fields), as in Kalshi's published examples.
_DOLLARS = tuple(f"{c // 100}.{c % 100:02d}0" for c in range(101))
_DOLLARS_FP = tuple(f"{c // 100}.{c % 100:02d}00" for c in range(101))

# (series, date code, strike format, first strike, strike step): realistic-looking
# tickers. The universe is the same for every seed so configs can name markets.
_SERIES: tuple[tuple[str, str, str, int, int], ...] = (
    ("KXBTCD", "26JAN0117", "T{}.99", 94_999, 250),
    ("KXETHD", "26JAN0117", "T{}.99", 3_299, 25),
    ("KXHIGHNY", "26JAN01", "B{}.5", 30, 2),
    ("KXINXD", "26JAN02", "B{}", 6_000, 25),
    ("KXFEDDECISION", "26JAN", "H{}", 0, 25),
)


def universe(markets: int) -> list[str]:
    """The tickers of a simulated universe of ``markets`` markets (seed-independent)."""
    tickers: list[str] = []
    for i in range(markets):
        series, date, strike, first, step = _SERIES[i % len(_SERIES)]
        tickers.append(f"{series}-{date}-{strike.format(first + step * (i // len(_SERIES)))}")
    return tickers


def is_market_ticker(value: object) -> bool:
    """Whether ``value`` is shaped like a Kalshi market ticker."""
    return isinstance(value, str) and TICKER_PATTERN.match(value) is not None


def _start_s(seed: int) -> int:
    return EPOCH_S + seed % _SEED_OFFSET_SPAN_S


def _uuid(rng: random.Random) -> str:
    # A version-4 layout (version and variant nibbles set), like Kalshi's ids.
    h = f"{rng.getrandbits(128):032x}"
    variant = "89ab"[int(h[16], 16) & 3]
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}"


@dataclass(slots=True)
class Stream:
    """The data side of one subscription: what the feed needs to address and sequence it."""

    sid: int
    channel: str
    seq: int = 0
    """Last ``seq`` sent on this sid; the next frame carrying a seq gets ``seq + 1``."""

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


@dataclass(slots=True)
class Market:
    """One market's evolving state: quotes, counters and a two-sided book (cents)."""

    ticker: str
    market_id: str
    price: int
    yes_bid: int
    yes_ask: int
    volume: int
    open_interest: int
    dollar_volume: int
    yes_book: dict[int, int]
    no_book: dict[int, int]
    close_ts: int
    active: bool = True
    head: str = ""
    """Pre-rendered ``"market_ticker":..,"market_id":..`` shared by several frame kinds."""
    ticker_body: str = ""
    """Pre-rendered ticker fields from ``market_ticker`` to ``dollar_open_interest``; they
    change only with the quote or a trade, so most ticker frames reuse the text."""
    stale: bool = True
    """``ticker_body`` no longer matches the fields."""

    def render_ticker_body(self) -> str:
        p, b, a, v, oi = self.price, self.yes_bid, self.yes_ask, self.volume, self.open_interest
        self.ticker_body = (
            f'{self.head},"price":{p},"yes_bid":{b},"yes_ask":{a},'
            f'"price_dollars":"{_DOLLARS[p]}","yes_bid_dollars":"{_DOLLARS[b]}",'
            f'"yes_ask_dollars":"{_DOLLARS[a]}","volume":{v},"volume_fp":"{v}.00",'
            f'"open_interest":{oi},"open_interest_fp":"{oi}.00",'
            f'"dollar_volume":{self.dollar_volume},"dollar_open_interest":{oi * p // 100}'
        )
        self.stale = False
        return self.ticker_body

    @classmethod
    def create(cls, seed: int, ticker: str) -> Market:
        # A market's starting state depends only on (seed, ticker), so a market added
        # later by update_subscription looks the same whatever happened before.
        rng = random.Random(f"{seed}/{ticker}")  # noqa: S311 - a simulation, not crypto
        mid = rng.randint(8, 92)
        spread = rng.randint(1, 4)
        bid, ask = max(1, mid - spread // 2), min(99, mid - spread // 2 + spread)
        volume = rng.randint(100, 200_000)
        market = cls(
            ticker=ticker,
            market_id=_uuid(rng),
            price=rng.randint(bid, ask),
            yes_bid=bid,
            yes_ask=ask,
            volume=volume,
            open_interest=rng.randint(volume // 4, volume),
            dollar_volume=volume * mid // 100,
            yes_book={p: rng.randint(1, 2_000) for p in range(max(1, bid - 6), bid + 1)},
            no_book={p: rng.randint(1, 2_000) for p in range(max(1, 94 - ask), 101 - ask)},
            close_ts=_start_s(seed) + rng.randint(3_600, 30 * 86_400),
        )
        market.head = f'"market_ticker":"{ticker}","market_id":"{market.market_id}"'
        return market


@dataclass(slots=True)
class _Slot:
    stream: Stream
    markets: list[Market]
    build: Callable[[Stream, Market], str] | None
    """The frame builder of the stream's channel; None for channels the sim keeps quiet."""


class Feed:
    """Per-connection generator of data frames for the attached streams.

    ``take(n)`` returns up to ``n`` frames: pending order book snapshots first (so a
    market's snapshot always precedes its deltas), then random events drawn across all
    attached (stream, market) pairs, weighted by :data:`CHANNEL_WEIGHTS`.
    """

    def __init__(self, seed: int, markets: int = 20) -> None:
        self.seed = seed
        self.universe = universe(markets)
        self._rng = random.Random(seed)  # noqa: S311 - a simulation, not crypto
        self._now_ms = _start_s(seed) * 1000
        self._clock = self._rng.randint(10**9, 2 * 10**9)  # the ticker's opaque "Clock"
        self._market_by_ticker: dict[str, Market] = {}
        self._slots: dict[int, _Slot] = {}
        # (builder, stream, markets) of the streams that produce data, with cumulative
        # weights for a bisect draw.
        self._table: list[tuple[Callable[[Stream, Market], str], Stream, list[Market]]] = []
        self._cumulative: list[int] = []
        self._pending: deque[tuple[Stream, Market]] = deque()
        self._time_s = -1
        self._time_text = ""
        # Trade ids: a random UUID-shaped prefix per feed plus a counter. Unique like
        # Kalshi's v4 UUIDs at a fraction of the cost of drawing 128 random bits.
        self._trade_prefix = _uuid(self._rng)[:24]
        self._trades = self._rng.randrange(16**11)
        self._builders: dict[str, Callable[[Stream, Market], str]] = {
            ORDERBOOK: self.delta,
            TICKER: self.ticker,
            TRADE: self.trade,
            LIFECYCLE: self.lifecycle,
        }

    # -- streams ---------------------------------------------------------------

    @property
    def active(self) -> bool:
        """Whether :meth:`take` would return anything."""
        return bool(self._pending or self._table)

    def market(self, ticker: str) -> Market:
        """The market named ``ticker``, created on first use (any well-formed ticker)."""
        found = self._market_by_ticker.get(ticker)
        if found is None:
            found = Market.create(self.seed, ticker)
            self._market_by_ticker[ticker] = found
        return found

    def attach(self, stream: Stream, tickers: Sequence[str] | None) -> None:
        """Start producing frames for ``stream``; ``None`` tickers means every market.

        Lifecycle streams always cover the whole universe: Kalshi does not filter that
        channel by market.
        """
        names = self.universe if tickers is None or stream.channel == LIFECYCLE else tickers
        slot = _Slot(stream, [self.market(t) for t in names], self._builders.get(stream.channel))
        self._slots[stream.sid] = slot
        if stream.channel == ORDERBOOK:
            self._pending.extend((stream, m) for m in slot.markets)
        self._rebuild()

    def detach(self, stream: Stream) -> None:
        self._slots.pop(stream.sid, None)
        self._drop_pending(stream, None)
        self._rebuild()

    def add_markets(self, stream: Stream, tickers: Iterable[str]) -> None:
        slot = self._slots[stream.sid]
        added = [self.market(t) for t in tickers]
        slot.markets.extend(added)
        if stream.channel == ORDERBOOK:
            self._pending.extend((stream, m) for m in added)
        self._rebuild()

    def remove_markets(self, stream: Stream, tickers: Iterable[str]) -> None:
        slot = self._slots[stream.sid]
        gone = set(tickers)
        slot.markets = [m for m in slot.markets if m.ticker not in gone]
        self._drop_pending(stream, gone)
        self._rebuild()

    def _drop_pending(self, stream: Stream, tickers: set[str] | None) -> None:
        self._pending = deque(
            (s, m)
            for s, m in self._pending
            if s is not stream or (tickers is not None and m.ticker not in tickers)
        )

    def _rebuild(self) -> None:
        table: list[tuple[Callable[[Stream, Market], str], Stream, list[Market]]] = []
        cumulative: list[int] = []
        total = 0
        for slot in self._slots.values():
            if slot.build is None or not slot.markets:
                continue
            total += CHANNEL_WEIGHTS[slot.stream.channel] * len(slot.markets)
            table.append((slot.build, slot.stream, slot.markets))
            cumulative.append(total)
        self._table, self._cumulative = table, cumulative

    # -- frames ----------------------------------------------------------------

    def take(self, n: int) -> list[str]:
        """Up to ``n`` next data frames (fewer only when nothing is attached)."""
        frames: list[str] = []
        append = frames.append
        pending = self._pending
        random = self._rng.random
        while pending and len(frames) < n:
            stream, market = pending.popleft()
            self._now_ms += 1 + int(random() * 39)
            append(self.snapshot(stream, market))
        table, cumulative = self._table, self._cumulative
        if not table:
            return frames
        total = cumulative[-1]
        choose = bisect.bisect_right
        # The hot loop of the whole simulator: keep it to a few lookups per frame.
        for _ in range(n - len(frames)):
            build, stream, markets = table[choose(cumulative, random() * total)]
            # Simulated inter-arrival time: 1-39 ms, about 50 msg/s of simulated time.
            self._now_ms += 1 + int(random() * 39)
            append(build(stream, markets[int(random() * len(markets))]))
        return frames

    def _rfc3339(self) -> str:
        now_s = self._now_ms // 1000
        if now_s != self._time_s:  # formatting is costly: once per simulated second
            self._time_s = now_s
            self._time_text = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now_s))
        return self._time_text

    def ticker(self, stream: Stream, m: Market) -> str:
        rng = self._rng
        r = rng.random()
        if r < 0.5:  # the quote moves: a small random walk that keeps 1 <= bid < ask <= 99
            step = -1 if r < 0.25 else 1
            bid, ask = m.yes_bid + step, m.yes_ask + step
            if rng.random() < 0.3:
                ask += 1 if ask - bid < 3 else -1
            if 1 <= bid < ask <= 99:
                m.yes_bid, m.yes_ask = bid, ask
                m.stale = True
        self._clock += 1 + int(r * 100)
        body = m.render_ticker_body() if m.stale else m.ticker_body
        return (
            f'{{"type":"ticker","sid":{stream.sid},"msg":{{{body},'
            f'"ts":{self._now_ms // 1000},"time":"{self._rfc3339()}","Clock":{self._clock}}}}}'
        )

    def trade(self, stream: Stream, m: Market) -> str:
        rng = self._rng
        r = rng.random()
        taker_yes = r < 0.5
        yes_price = m.yes_ask if taker_yes else m.yes_bid
        no_price = 100 - yes_price
        count = 1 + int(rng.expovariate(0.025))
        m.price = yes_price
        m.stale = True
        m.volume += count
        m.dollar_volume += count * yes_price // 100
        if r < 0.25 or r >= 0.75:  # opening or closing positions, independent of the side
            m.open_interest += count
        else:
            m.open_interest = max(0, m.open_interest - count)
        self._trades += 1
        return (
            f'{{"type":"trade","sid":{stream.sid},"seq":{stream.next_seq()},"msg":{{'
            f'"trade_id":"{self._trade_prefix}{self._trades:012x}","market_ticker":"{m.ticker}",'
            f'"yes_price":{yes_price},"yes_price_dollars":"{_DOLLARS[yes_price]}",'
            f'"no_price":{no_price},"no_price_dollars":"{_DOLLARS[no_price]}",'
            f'"count":{count},"count_fp":"{count}.00",'
            f'"taker_side":"{"yes" if taker_yes else "no"}","ts":{self._now_ms // 1000}}}}}'
        )

    def delta(self, stream: Stream, m: Market) -> str:
        rng = self._rng
        if rng.random() < 0.5:
            side, book, best = "yes", m.yes_book, m.yes_bid
        else:
            side, book, best = "no", m.no_book, 100 - m.yes_ask
        # Most activity sits at or near the top of the book.
        price = max(1, best - int(rng.expovariate(0.5)))
        resting = book.get(price, 0)
        if resting == 0 or rng.random() < 0.55:
            change = 1 + int(rng.random() * 300)
        else:
            change = -(1 + int(rng.random() * resting))
        if resting + change:
            book[price] = resting + change
        else:
            del book[price]
        return (
            f'{{"type":"orderbook_delta","sid":{stream.sid},"seq":{stream.next_seq()},'
            f'"msg":{{{m.head},"price":{price},"price_dollars":"{_DOLLARS[price]}",'
            f'"delta":{change},"delta_fp":"{change}.00","side":"{side}",'
            f'"ts":"{self._rfc3339()}"}}}}'
        )

    def snapshot(self, stream: Stream, m: Market) -> str:
        msg: dict[str, object] = {"market_ticker": m.ticker, "market_id": m.market_id}
        # Kalshi omits a side's keys entirely when that side has no resting orders.
        for side, book in (("yes", m.yes_book), ("no", m.no_book)):
            levels = sorted(book.items())
            if levels:
                msg[side] = [[p, q] for p, q in levels]
                msg[f"{side}_dollars"] = [[_DOLLARS[p], q] for p, q in levels]
                msg[f"{side}_dollars_fp"] = [[_DOLLARS_FP[p], f"{q}.00"] for p, q in levels]
        frame = {"type": "orderbook_snapshot", "sid": stream.sid, "seq": stream.next_seq()}
        return json.dumps({**frame, "msg": msg}, separators=(",", ":"))

    def lifecycle(self, stream: Stream, m: Market) -> str:
        rng = self._rng
        if rng.random() < 0.5:
            m.close_ts += 60 * (1 + int(rng.random() * 120))
            detail = f'"event_type":"close_date_updated","close_ts":{m.close_ts}'
        else:
            m.active = not m.active
            event = "activated" if m.active else "deactivated"
            flag = "false" if m.active else "true"
            detail = f'"event_type":"{event}","is_deactivated":{flag}'
        return (
            f'{{"type":"market_lifecycle_v2","sid":{stream.sid},'
            f'"msg":{{"market_ticker":"{m.ticker}",{detail}}}}}'
        )
