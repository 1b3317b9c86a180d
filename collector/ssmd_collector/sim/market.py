"""Deterministic market model of the simulated exchange, and the data frames it emits.

A :class:`Feed` belongs to one connection. It owns a simulated clock, a price random
walk and an order book per market, and turns them into Kalshi-shaped data frames
(``ticker``, ``trade``, ``orderbook_snapshot``/``orderbook_delta``, and on the lifecycle
channels ``market_lifecycle_v2``, ``event_lifecycle``, ``event_fee_update`` and
``multivariate_market_lifecycle``) for the streams the connection subscribed to.

Field sets are today's (KALSHI.md section 5): prices are dollar strings with 4 decimals,
counts are ``*_fp`` strings with 2 decimals, times are ``ts`` (s) plus ``ts_ms`` (ms),
and no integer-cent or integer-count field is left. Prices are kept as ints in units of
1/10000 dollar (:data:`UNIT`), so the sub-cent markets (``deci_cent``, 0.001 ticks) stay
exact.

Everything is derived from the seed: the per-market starting state from
``random.Random(f"{seed}/{ticker}")`` and the event sequence from ``random.Random(seed)``;
timestamps come from a simulated clock, never from the wall clock. The same seed and
the same commands at the same points of the stream give byte-identical frames.

The frequent frames are built with f-strings rather than ``json.dumps``: the benchmark
needs the sim to offer far more messages per second than the collector consumes, and
every value interpolated is an int or a string that needs no JSON escaping (tickers are
validated by the protocol layer, ids are hex). Rare frames (snapshots, lifecycle) use
``json.dumps``.
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
MVE_LIFECYCLE = "multivariate_market_lifecycle"

# Relative frequency of each data channel, per market. Order books change far more
# often than trades happen, and lifecycle events are rare, as on the real feed.
CHANNEL_WEIGHTS: dict[str, int] = {
    ORDERBOOK: 30,
    TICKER: 15,
    TRADE: 10,
    LIFECYCLE: 1,
    MVE_LIFECYCLE: 1,
}

# Channels whose frames carry a per-sid ``seq`` (KALSHI.md section 7).
SEQUENCED_CHANNELS = frozenset({ORDERBOOK, TRADE, LIFECYCLE, MVE_LIFECYCLE})

UNIT = 10_000
"""Price units per dollar: ints of 1/10000 dollar, the 4 decimals of the WS feed."""
CENT = UNIT // 100
DECI_CENT = UNIT // 1000

EPOCH_S = 1_767_225_600
"""2026-01-01T00:00:00Z: the simulated clock starts here, offset by the seed."""

_SEED_OFFSET_SPAN_S = 365 * 86_400
"""The seed shifts the start by at most a year, so huge seeds still format as dates."""

# Kalshi market tickers: upper-case letters, digits, '-', and '.' in strike values
# (``FED-23DEC-T3.00``). Anything else cannot be a market of this exchange.
TICKER_PATTERN = re.compile(r"^[A-Z0-9][A-Z0-9._-]{0,99}$")

_DOLLARS = tuple(f"{u // UNIT}.{u % UNIT:04d}" for u in range(UNIT + 1))
"""Dollar strings by price unit: ``_DOLLARS[4800] == "0.4800"``, ``_DOLLARS[9990] == "0.9990"``."""


def dollars(units: int) -> str:
    """A price in units as Kalshi's 4-decimal dollar string."""
    return _DOLLARS[units]


# (series, date code, strike format, first strike, strike step): realistic-looking
# tickers. The universe is the same for every seed so configs can name markets.
_SERIES: tuple[tuple[str, str, str, int, int], ...] = (
    ("KXBTCD", "26JAN0117", "T{}.99", 94_999, 250),
    ("KXETHD", "26JAN0117", "T{}.99", 3_299, 25),
    ("KXHIGHNY", "26JAN01", "B{}.5", 30, 2),
    ("KXINXD", "26JAN02", "B{}", 6_000, 25),
    ("KXFEDDECISION", "26JAN", "H{}", 0, 25),
)

_DECI_CENT_EVERY = 4
"""Every 4th market of the universe trades in 0.001 ticks (``deci_cent``)."""

_STRUCTURES = {CENT: "linear_cent", DECI_CENT: "deci_cent"}


def universe(markets: int) -> list[str]:
    """The tickers of a simulated universe of ``markets`` markets (seed-independent)."""
    tickers: list[str] = []
    for i in range(markets):
        series, date, strike, first, step = _SERIES[i % len(_SERIES)]
        tickers.append(f"{series}-{date}-{strike.format(first + step * (i // len(_SERIES)))}")
    return tickers


def mve_universe(markets: int) -> list[str]:
    """The multivariate (``KXMVE*``) markets: on ``multivariate_market_lifecycle`` only."""
    return [f"KXMVECROSSCATEGORY-26JAN01-M{i + 1}" for i in range(max(2, markets // 4))]


def is_market_ticker(value: object) -> bool:
    """Whether ``value`` is shaped like a Kalshi market ticker."""
    return isinstance(value, str) and TICKER_PATTERN.match(value) is not None


def price_ranges(tick: int) -> list[dict[str, str]]:
    """The ``price_ranges`` of a market with one tick size over the whole range."""
    return [{"start": _DOLLARS[0], "end": _DOLLARS[UNIT], "step": _DOLLARS[tick]}]


def _start_s(seed: int) -> int:
    return EPOCH_S + seed % _SEED_OFFSET_SPAN_S


def _uuid(rng: random.Random) -> str:
    # A version-4 layout (version and variant nibbles set), like Kalshi's ids.
    h = f"{rng.getrandbits(128):032x}"
    variant = "89ab"[int(h[16], 16) & 3]
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}"


def _strike(ticker: str) -> dict[str, object]:
    """``strike_type`` and strikes as the ticker's last part spells them (T, B), or none."""
    last = ticker.rsplit("-", 1)[-1]
    kind, number = last[:1], last[1:]
    try:
        value = float(number)
    except ValueError:
        return {}
    floor: float | int = int(value) if value.is_integer() else value
    if kind == "T":
        return {"strike_type": "greater", "floor_strike": floor}
    if kind == "B":
        return {"strike_type": "between", "floor_strike": floor, "cap_strike": floor + 1}
    return {}


@dataclass(slots=True)
class Stream:
    """The data side of one subscription: what the feed needs to address and sequence it."""

    sid: int
    channel: str
    seq: int = 0
    """Last ``seq`` sent on this sid; the next frame carrying a seq gets ``seq + 1``."""
    last: str = ""
    """The last data frame sent on this sid that carried a ``seq`` (for duplicates)."""

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


@dataclass(slots=True)
class Market:
    """One market's evolving state: quotes, counters and a two-sided book (price units)."""

    ticker: str
    market_id: str
    tick: int
    price: int
    yes_bid: int
    yes_ask: int
    yes_bid_size: int
    yes_ask_size: int
    last_trade_size: int
    volume: int
    open_interest: int
    dollar_volume: int
    yes_book: dict[int, int]
    no_book: dict[int, int]
    close_ts: int
    active: bool = True
    head: str = ""
    """Pre-rendered ``"market_ticker":..,"market_id":..`` of the order book frames."""
    ticker_body: str = ""
    """Pre-rendered ticker fields from ``market_id`` to ``dollar_open_interest``; they
    change only with the quote or a trade, so most ticker frames reuse the text (the
    sizes, which change with nearly every frame, are rendered per frame)."""
    stale: bool = True
    """``ticker_body`` no longer matches the fields."""

    @property
    def event_ticker(self) -> str:
        return self.ticker.rsplit("-", 1)[0]

    @property
    def structure(self) -> str:
        return _STRUCTURES[self.tick]

    def render_ticker_body(self) -> str:
        p, oi = self.price, self.open_interest
        self.ticker_body = (
            f'"market_id":"{self.market_id}","market_ticker":"{self.ticker}",'
            f'"price_dollars":"{_DOLLARS[p]}","yes_bid_dollars":"{_DOLLARS[self.yes_bid]}",'
            f'"yes_ask_dollars":"{_DOLLARS[self.yes_ask]}","volume_fp":"{self.volume}.00",'
            f'"open_interest_fp":"{oi}.00","dollar_volume":{self.dollar_volume},'
            f'"dollar_open_interest":{oi * p // UNIT}'
        )
        self.stale = False
        return self.ticker_body

    @classmethod
    def create(cls, seed: int, ticker: str, tick: int) -> Market:
        # A market's starting state depends only on (seed, ticker), so a market added
        # later by update_subscription looks the same whatever happened before.
        rng = random.Random(f"{seed}/{ticker}")  # noqa: S311 - a simulation, not crypto
        top = UNIT // tick  # ticks in a dollar
        mid = rng.randint(top * 8 // 100, top * 92 // 100)
        spread = rng.randint(1, 4)
        bid, ask = max(1, mid - spread // 2), min(top - 1, mid - spread // 2 + spread)
        volume = rng.randint(100, 200_000)
        no_best = top - ask
        market = cls(
            ticker=ticker,
            market_id=_uuid(rng),
            tick=tick,
            price=rng.randint(bid, ask) * tick,
            yes_bid=bid * tick,
            yes_ask=ask * tick,
            yes_bid_size=rng.randint(1, 2_000),
            yes_ask_size=rng.randint(1, 2_000),
            last_trade_size=rng.randint(1, 200),
            volume=volume,
            open_interest=rng.randint(volume // 4, volume),
            dollar_volume=volume * mid * tick // UNIT,
            yes_book={p * tick: rng.randint(1, 2_000) for p in range(max(1, bid - 6), bid + 1)},
            no_book={
                p * tick: rng.randint(1, 2_000) for p in range(max(1, no_best - 6), no_best + 1)
            },
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


# Lifecycle events by weight. market_lifecycle_v2 also carries the event-level frames
# (event_lifecycle, event_fee_update); the multivariate channel has no price-structure,
# metadata or fee events (KALSHI.md section 5).
_LIFECYCLE_EVENTS: tuple[tuple[str, int], ...] = (
    ("created", 12),
    ("activated", 8),
    ("close_date_updated", 20),
    ("determined", 10),
    ("settled", 10),
    ("price_level_structure_updated", 6),
    ("metadata_updated", 10),
    ("event_lifecycle", 12),
    ("event_fee_update", 12),
)
_MVE_EVENTS: tuple[tuple[str, int], ...] = (
    ("created", 20),
    ("activated", 10),
    ("close_date_updated", 20),
    ("determined", 15),
    ("settled", 15),
    ("event_lifecycle", 20),
)


def _dump(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


class Feed:
    """Per-connection generator of data frames for the attached streams.

    ``take(n)`` returns up to ``n`` frames: pending order book snapshots first (so a
    market's snapshot always precedes its deltas), then random events drawn across all
    attached (stream, market) pairs, weighted by :data:`CHANNEL_WEIGHTS`.
    """

    def __init__(self, seed: int, markets: int = 20) -> None:
        self.seed = seed
        self.universe = universe(markets)
        self.mve_universe = mve_universe(markets)
        self._deci_cent = set(self.universe[_DECI_CENT_EVERY - 1 :: _DECI_CENT_EVERY])
        self._rng = random.Random(seed)  # noqa: S311 - a simulation, not crypto
        self._now_ms = _start_s(seed) * 1000
        self._market_by_ticker: dict[str, Market] = {}
        self._slots: dict[int, _Slot] = {}
        # (builder, stream, markets) of the streams that produce data, with cumulative
        # weights for a bisect draw.
        self._table: list[tuple[Callable[[Stream, Market], str], Stream, list[Market]]] = []
        self._cumulative: list[int] = []
        self._pending: deque[tuple[Stream, Market]] = deque()
        self._announcements: deque[tuple[Stream, str, dict[str, object]]] = deque()
        self._time_s = -1
        self._time_text = ""
        # Trade ids: a random UUID-shaped prefix per feed plus a counter. Unique like
        # Kalshi's v4 UUIDs at a fraction of the cost of drawing 128 random bits.
        self._trade_prefix = _uuid(self._rng)[:24]
        self._trades = self._rng.randrange(16**11)
        self._created = 0
        self._builders: dict[str, Callable[[Stream, Market], str]] = {
            ORDERBOOK: self.delta,
            TICKER: self.ticker,
            TRADE: self.trade,
            LIFECYCLE: self.lifecycle,
            MVE_LIFECYCLE: self.mve_lifecycle,
        }

    # -- streams (the FrameSource side, see .source) ----------------------------

    numbers_answers = True
    """The feed owns its sequences: answers on a sid take its next ``seq``."""
    exhausted = False
    """A synthetic market never runs dry."""

    @property
    def active(self) -> bool:
        """Whether :meth:`take` would return anything."""
        return bool(self._pending or self._table or self._announcements)

    def delay(self) -> float:
        """Always due: the server paces the feed by ``SimConfig.rate``."""
        return 0.0

    def new_sid(self, channel: str, proposed: int) -> int:
        return proposed

    def get_snapshot(self, stream: Stream, ticker: str, cmd_id: int | None) -> str:
        return self.snapshot(stream, self.market(ticker), cmd_id)

    def streaming_sids(self) -> list[int]:
        """The sids that produce data frames (channels the sim keeps quiet do not)."""
        return [stream.sid for _, stream, _ in self._table]

    def market(self, ticker: str) -> Market:
        """The market named ``ticker``, created on first use (any well-formed ticker)."""
        found = self._market_by_ticker.get(ticker)
        if found is None:
            tick = DECI_CENT if ticker in self._deci_cent else CENT
            found = Market.create(self.seed, ticker, tick)
            self._market_by_ticker[ticker] = found
        return found

    def attach(self, stream: Stream, tickers: Sequence[str] | None) -> None:
        """Start producing frames for ``stream``; ``None`` tickers means every market.

        Lifecycle streams always cover the whole universe: Kalshi does not filter those
        channels by market. ``market_lifecycle_v2`` never carries ``KXMVE*`` markets;
        ``multivariate_market_lifecycle`` carries only those.
        """
        if stream.channel == LIFECYCLE:
            names: Sequence[str] = self.universe
        elif stream.channel == MVE_LIFECYCLE:
            names = self.mve_universe
        else:
            names = self.universe if tickers is None else tickers
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

    def announce(self, channel: str, msg: dict[str, object]) -> None:
        """Send ``msg`` (a listing change) on every stream of lifecycle ``channel``,
        ahead of the random frames."""
        for slot in self._slots.values():
            if slot.stream.channel == channel:
                self._announcements.append((slot.stream, channel, msg))

    def take(self, n: int) -> list[str]:
        """Up to ``n`` next data frames (fewer only when nothing is attached)."""
        frames: list[str] = []
        append = frames.append
        while self._announcements and len(frames) < n:
            stream, channel, msg = self._announcements.popleft()
            if stream.sid in self._slots:
                head = {"type": channel, "sid": stream.sid, "seq": stream.next_seq()}
                stream.last = _dump({**head, "msg": msg})
                append(stream.last)
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
            self._time_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now_s))
        return self._time_text

    def ticker(self, stream: Stream, m: Market) -> str:
        rng = self._rng
        r = rng.random()
        if r < 0.5:  # the quote moves: a small random walk that keeps tick <= bid < ask < $1
            tick = m.tick
            step = -tick if r < 0.25 else tick
            bid, ask = m.yes_bid + step, m.yes_ask + step
            if rng.random() < 0.3:
                ask += tick if ask - bid < 3 * tick else -tick
            if tick <= bid < ask <= UNIT - tick:
                m.yes_bid, m.yes_ask = bid, ask
                m.stale = True
        # Kalshi sends a ticker on size-only changes too.
        if r < 0.75:
            m.yes_bid_size = 1 + int(rng.random() * 2_000)
        else:
            m.yes_ask_size = 1 + int(rng.random() * 2_000)
        body = m.render_ticker_body() if m.stale else m.ticker_body
        now_ms = self._now_ms
        return (
            f'{{"type":"ticker","sid":{stream.sid},"msg":{{{body},'
            f'"yes_bid_size_fp":"{m.yes_bid_size}.00","yes_ask_size_fp":"{m.yes_ask_size}.00",'
            f'"last_trade_size_fp":"{m.last_trade_size}.00",'
            f'"ts":{now_ms // 1000},"ts_ms":{now_ms},'
            f'"time":"{self._rfc3339()}.{now_ms % 1000:03d}000Z"}}}}'
        )

    def trade(self, stream: Stream, m: Market) -> str:
        rng = self._rng
        r = rng.random()
        taker_yes = r < 0.5
        yes_price = m.yes_ask if taker_yes else m.yes_bid
        count = 1 + int(rng.expovariate(0.025))
        m.price = yes_price
        m.stale = True
        m.volume += count
        m.last_trade_size = count
        m.dollar_volume += count * yes_price // UNIT
        if r < 0.25 or r >= 0.75:  # opening or closing positions, independent of the side
            m.open_interest += count
        else:
            m.open_interest = max(0, m.open_interest - count)
        self._trades += 1
        side = "yes" if taker_yes else "no"
        block = "true" if rng.random() < 0.005 else "false"
        now_ms = self._now_ms
        frame = (
            f'{{"type":"trade","sid":{stream.sid},"seq":{stream.next_seq()},"msg":{{'
            f'"trade_id":"{self._trade_prefix}{self._trades:012x}","market_ticker":"{m.ticker}",'
            f'"yes_price_dollars":"{_DOLLARS[yes_price]}",'
            f'"no_price_dollars":"{_DOLLARS[UNIT - yes_price]}","count_fp":"{count}.00",'
            f'"taker_side":"{side}","taker_outcome_side":"{side}",'
            f'"taker_book_side":"{"bid" if taker_yes else "ask"}","is_block_trade":{block},'
            f'"ts":{now_ms // 1000},"ts_ms":{now_ms}}}}}'
        )
        stream.last = frame
        return frame

    def delta(self, stream: Stream, m: Market) -> str:
        rng = self._rng
        tick = m.tick
        if rng.random() < 0.5:
            side, book, best = "yes", m.yes_book, m.yes_bid
        else:
            side, book, best = "no", m.no_book, UNIT - m.yes_ask
        # Most activity sits at or near the top of the book.
        price = max(tick, best - tick * int(rng.expovariate(0.5)))
        resting = book.get(price, 0)
        if resting == 0 or rng.random() < 0.55:
            change = 1 + int(rng.random() * 300)
        else:
            change = -(1 + int(rng.random() * resting))
        if resting + change:
            book[price] = resting + change
        else:
            del book[price]
        now_ms = self._now_ms
        frame = (
            f'{{"type":"orderbook_delta","sid":{stream.sid},"seq":{stream.next_seq()},'
            f'"msg":{{{m.head},"price_dollars":"{_DOLLARS[price]}",'
            f'"delta_fp":"{change}.00","side":"{side}",'
            f'"ts":"{self._rfc3339()}Z","ts_ms":{now_ms}}}}}'
        )
        stream.last = frame
        return frame

    def snapshot(self, stream: Stream, m: Market, cmd_id: int | None = None) -> str:
        """An ``orderbook_snapshot``; with ``cmd_id`` it answers a ``get_snapshot``."""
        msg: dict[str, object] = {"market_ticker": m.ticker, "market_id": m.market_id}
        # Kalshi omits a side's key entirely when that side has no resting orders.
        for side, book in (("yes", m.yes_book), ("no", m.no_book)):
            levels = sorted(book.items())
            if levels:
                msg[f"{side}_dollars_fp"] = [[_DOLLARS[p], f"{q}.00"] for p, q in levels]
        frame: dict[str, object] = {
            "type": "orderbook_snapshot",
            "sid": stream.sid,
            "seq": stream.next_seq(),
        }
        if cmd_id:
            frame["id"] = cmd_id
        text = _dump({**frame, "msg": msg})
        stream.last = text
        return text

    # -- lifecycle ---------------------------------------------------------------

    def _pick(self, events: tuple[tuple[str, int], ...]) -> str:
        draw = self._rng.random() * sum(w for _, w in events)
        for name, weight in events:
            draw -= weight
            if draw < 0:
                return name
        return events[-1][0]

    def lifecycle(self, stream: Stream, m: Market) -> str:
        return self._lifecycle_frame(stream, m, LIFECYCLE, self._pick(_LIFECYCLE_EVENTS))

    def mve_lifecycle(self, stream: Stream, m: Market) -> str:
        return self._lifecycle_frame(stream, m, MVE_LIFECYCLE, self._pick(_MVE_EVENTS))

    def _lifecycle_frame(self, stream: Stream, m: Market, frame_type: str, event: str) -> str:
        rng = self._rng
        now_s = self._now_ms // 1000
        if event == "event_lifecycle":
            series = m.event_ticker.split("-", 1)[0]
            frame_type, msg = event, self._event_msg(m.event_ticker, series)
        elif event == "event_fee_update":
            cleared = rng.random() < 0.3
            frame_type, msg = (
                event,
                {
                    "event_ticker": m.event_ticker,
                    "fee_type_override": None if cleared else "quadratic",
                    "fee_multiplier_override": None if cleared else rng.choice((0.5, 1, 2)),
                },
            )
        else:
            msg = {"market_ticker": m.ticker, **self._market_event(m, event, now_s)}
        text = _dump({"type": frame_type, "sid": stream.sid, "seq": stream.next_seq(), "msg": msg})
        stream.last = text
        return text

    def _event_msg(self, event_ticker: str, series: str) -> dict[str, object]:
        msg: dict[str, object] = {
            "event_ticker": event_ticker,
            "exchange_index": 0,
            "title": f"Simulated event {event_ticker}",
            "subtitle": f"{series} outcome",
            "collateral_return_type": self._rng.choice(("MECNET", "DIRECNET", "")),
            "series_ticker": series,
        }
        if self._rng.random() < 0.5:
            msg["strike_date"] = self._now_ms // 1000 + 86_400
            msg["strike_period"] = ""
        return msg

    def _market_event(self, m: Market, event: str, now_s: int) -> dict[str, object]:
        rng = self._rng
        if event == "created":
            # A new market listed in the same event (it does not join the stream).
            self._created += 1
            ticker = f"{m.event_ticker}-T{100_000 + self._created}"
            tick = DECI_CENT if rng.random() < 0.25 else CENT
            return {
                "market_ticker": ticker,
                "exchange_index": 0,
                "open_ts": now_s,
                "close_ts": now_s + 86_400,
                "additional_metadata": {
                    "name": f"Simulated market {ticker}",
                    "title": f"Will {m.event_ticker} settle above {100_000 + self._created}?",
                    "yes_sub_title": f"Above {100_000 + self._created}",
                    "no_sub_title": f"{100_000 + self._created} or below",
                    "rules_primary": "Resolves Yes if the simulated value is above the strike.",
                    "rules_secondary": "",
                    "can_close_early": True,
                    "event_ticker": m.event_ticker,
                    "expected_expiration_ts": now_s + 86_400,
                    **_strike(ticker),
                },
                "event_type": "created",
                "price_level_structure": _STRUCTURES[tick],
                "price_ranges": price_ranges(tick),
            }
        if event == "activated":
            m.active = not m.active
            kind = "activated" if m.active else "deactivated"
            return {"event_type": kind, "is_deactivated": not m.active}
        if event == "close_date_updated":
            m.close_ts += 60 * (1 + int(rng.random() * 120))
            return {"event_type": event, "close_ts": m.close_ts}
        if event == "determined":
            result = "yes" if rng.random() < 0.5 else "no"
            value = _DOLLARS[UNIT if result == "yes" else 0]
            return {
                "determination_ts": now_s,
                "result": result,
                "settlement_value": value,
                "event_type": event,
            }
        if event == "settled":
            return {"settled_ts": now_s, "event_type": event}
        if event == "price_level_structure_updated":
            # Sub-cent pricing rolled out market by market: cent markets move to 0.001.
            m.tick = DECI_CENT
            return {
                "event_type": event,
                "price_level_structure": m.structure,
                "price_ranges": price_ranges(m.tick),
            }
        # metadata_updated
        return {
            "event_type": "metadata_updated",
            **(_strike(m.ticker) or {"strike_type": "custom", "custom_strike": {"id": "sim"}}),
            "yes_sub_title": f"{m.ticker} (updated)",
        }
