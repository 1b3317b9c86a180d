"""The simulated exchange's market listing: what its REST API reports, and how it lives.

:class:`Listing` holds every market the simulated exchange has listed, with its event,
series and status, and answers ``GET /markets`` and ``GET /events`` the way Kalshi does
(KALSHI.md section 8): paging with ``limit`` and ``cursor`` (an empty cursor ends the
walk), one ``status`` filter word per call (``open`` lists ``active`` markets and so
on), ``event_ticker``, ``series_ticker``, ``tickers`` and ``mve_filter``. Bad
parameters answer 400 with a message naming the parameter.

It lives: :meth:`Listing.create` lists a new market (REST status ``active`` at once)
and :meth:`Listing.determine` / :meth:`Listing.settle` move one toward ``finalized``.
Each returns the ``market_lifecycle_v2`` message body that announces it (``created``,
``determined``, ``settled``); the server sends it on every lifecycle subscription.

Names: ten markets per event, events spread over five series
(``KXBTCD-26JAN01E0007-T95249.99``), so that anything keyed by event (collector shards)
sees many events; multivariate markets are ``KXMVE*`` as in :func:`.market.mve_universe`.
The listing is independent of the seed, like :func:`.market.universe`. Its tickers
never collide with :func:`.market.universe`'s, whose markets (the all-market streams'
random lifecycle noise) are not listed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ssmd_collector.sim.market import EPOCH_S, mve_universe

MARKETS_PER_EVENT = 10
MAX_MARKETS_LIMIT = 1000
MAX_EVENTS_LIMIT = 200
DEFAULT_MARKETS_LIMIT = 100

_SERIES: tuple[tuple[str, str, int, int], ...] = (
    ("KXBTCD", "T{}.99", 94_999, 250),
    ("KXETHD", "T{}.99", 3_299, 25),
    ("KXHIGHNY", "B{}.5", 30, 2),
    ("KXINXD", "B{}", 6_000, 25),
    ("KXFEDDECISION", "H{}", 0, 25),
)

STATUS_FILTERS: dict[str, frozenset[str]] = {
    "unopened": frozenset({"initialized"}),
    "open": frozenset({"active"}),
    "paused": frozenset({"inactive"}),
    "closed": frozenset({"closed", "determined", "disputed", "amended"}),
    "settled": frozenset({"finalized"}),
}
"""REST filter word -> the Market.status values it lists (KALSHI.md section 8, ML)."""


class BadRequest(Exception):
    """A REST call the exchange refuses with 400; the message names the parameter."""


@dataclass
class ListedMarket:
    ticker: str
    event_ticker: str
    series_ticker: str
    status: str
    """Kalshi's Market.status word: initialized, active, inactive, closed, determined,
    finalized."""
    created_s: int
    open_s: int
    close_s: int
    result: str = ""

    @property
    def multivariate(self) -> bool:
        return self.ticker.startswith("KXMVE")

    def rest(self) -> dict[str, Any]:
        """The market as ``GET /markets`` lists it (the fields a recorder keeps)."""
        return {
            "ticker": self.ticker,
            "event_ticker": self.event_ticker,
            "market_type": "binary",
            "title": f"Simulated market {self.ticker}",
            "status": self.status,
            "created_time": _rfc3339(self.created_s),
            "open_time": _rfc3339(self.open_s),
            "close_time": _rfc3339(self.close_s),
            "updated_time": _rfc3339(self.created_s),
            "expected_expiration_time": _rfc3339(self.close_s),
            "latest_expiration_time": _rfc3339(self.close_s + 7 * 86_400),
            "result": self.result,
            "price_level_structure": "linear_cent",
            "price_ranges": [{"start": "0.0000", "end": "1.0000", "step": "0.0100"}],
        }


def _rfc3339(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def listed_ticker(i: int) -> tuple[str, str, str]:
    """(ticker, event ticker, series ticker) of the ``i``-th listed market."""
    event = i // MARKETS_PER_EVENT
    series, strike, first, step = _SERIES[event % len(_SERIES)]
    event_ticker = f"{series}-26JAN01E{event // len(_SERIES):04d}"
    value = first + step * (i % MARKETS_PER_EVENT)
    return f"{event_ticker}-{strike.format(value)}", event_ticker, series


def _initial_status(i: int) -> str:
    """Most listed markets are open; a few of every other status, so filters matter."""
    return {7: "initialized", 13: "finalized", 17: "closed", 19: "inactive"}.get(i % 20, "active")


class Listing:
    """Every market the simulated exchange lists, and the REST answers about them."""

    def __init__(self, markets: int) -> None:
        self.markets: dict[str, ListedMarket] = {}
        self._order: list[str] = []
        for i in range(markets):
            ticker, event, series = listed_ticker(i)
            self._add(ListedMarket(ticker, event, series, _initial_status(i), *self._times(i)))
        for ticker in mve_universe(markets):
            event = ticker.rsplit("-", 1)[0]
            self._add(ListedMarket(ticker, event, "KXMVECROSSCATEGORY", "active",
                                   *self._times(0)))  # fmt: skip
        self._created = markets

    def _times(self, i: int) -> tuple[int, int, int]:
        created = EPOCH_S - 86_400 + i
        return created, created + 3_600, created + 30 * 86_400

    def _add(self, market: ListedMarket) -> None:
        self.markets[market.ticker] = market
        self._order.append(market.ticker)

    def __iter__(self) -> Iterator[ListedMarket]:
        return (self.markets[t] for t in self._order)

    def select(self, status: str | None = None) -> list[str]:
        """Tickers listed with ``status`` (a filter word), in listing order."""
        allowed = STATUS_FILTERS[status] if status else None
        return [m.ticker for m in self if allowed is None or m.status in allowed]

    # -- a living universe -------------------------------------------------------

    def create(self, event_ticker: str | None = None) -> tuple[str, dict[str, Any]]:
        """List a new, open market (in ``event_ticker``, or a new event of its own):
        its ticker and the ``created`` lifecycle message announcing it."""
        i = self._created
        self._created += 1
        ticker, event, series = listed_ticker(i)
        if event_ticker is not None:
            event, series = event_ticker, event_ticker.split("-", 1)[0]
            ticker = f"{event}-N{i}"
        created, _, close = self._times(i)
        market = ListedMarket(ticker, event, series, "active", created, created, close)
        self._add(market)
        return ticker, {
            "market_ticker": ticker,
            "exchange_index": 0,
            "open_ts": market.open_s,
            "close_ts": market.close_s,
            "additional_metadata": {
                "name": f"Simulated market {ticker}",
                "title": f"Simulated market {ticker}",
                "yes_sub_title": "Yes",
                "no_sub_title": "No",
                "rules_primary": "Resolves Yes if the simulated value is above the strike.",
                "rules_secondary": "",
                "can_close_early": True,
                "event_ticker": event,
                "expected_expiration_ts": market.close_s,
            },
            "event_type": "created",
            "price_level_structure": "linear_cent",
            "price_ranges": [{"start": "0.0000", "end": "1.0000", "step": "0.0100"}],
        }

    def determine(self, ticker: str, result: str = "yes") -> dict[str, Any]:
        market = self.markets[ticker]
        market.status, market.result = "determined", result
        return {
            "market_ticker": ticker,
            "determination_ts": market.close_s,
            "result": result,
            "settlement_value": "1.0000" if result == "yes" else "0.0000",
            "event_type": "determined",
        }

    def settle(self, ticker: str) -> dict[str, Any]:
        market = self.markets[ticker]
        if market.status != "determined":
            self.determine(ticker)
        market.status = "finalized"
        return {"market_ticker": ticker, "settled_ts": market.close_s, "event_type": "settled"}

    # -- REST ----------------------------------------------------------------------

    def get_markets(self, params: Mapping[str, str]) -> dict[str, Any]:
        """The body of ``GET /markets`` for query ``params``; raises ``BadRequest``."""
        limit = _limit(params, DEFAULT_MARKETS_LIMIT, MAX_MARKETS_LIMIT)
        status = params.get("status")
        if status is not None and status not in STATUS_FILTERS:
            raise BadRequest(
                f"status: expected one of {', '.join(STATUS_FILTERS)}; found {status!r}"
            )
        allowed = STATUS_FILTERS[status] if status else None
        event = params.get("event_ticker")
        series = params.get("series_ticker")
        tickers = set(params["tickers"].split(",")) if params.get("tickers") else None
        mve = params.get("mve_filter")
        if mve is not None and mve not in ("only", "exclude"):
            raise BadRequest(f"mve_filter: expected only or exclude; found {mve!r}")

        def wanted(m: ListedMarket) -> bool:
            return (
                (allowed is None or m.status in allowed)
                and (event is None or m.event_ticker == event)
                and (series is None or m.series_ticker == series)
                and (tickers is None or m.ticker in tickers)
                and (mve is None or m.multivariate == (mve == "only"))
            )

        page, cursor = self._page(params.get("cursor"), limit, wanted)
        return {"markets": [m.rest() for m in page], "cursor": cursor}

    def get_events(self, params: Mapping[str, str]) -> dict[str, Any]:
        """The body of ``GET /events``: events (not multivariate) with a market matching."""
        limit = _limit(params, MAX_EVENTS_LIMIT, MAX_EVENTS_LIMIT)
        status = params.get("status")
        if status is not None and status not in STATUS_FILTERS:
            raise BadRequest(
                f"status: expected one of {', '.join(STATUS_FILTERS)}; found {status!r}"
            )
        allowed = STATUS_FILTERS[status] if status else None
        series = params.get("series_ticker")
        nested = params.get("with_nested_markets") == "true"
        events: dict[str, list[ListedMarket]] = {}
        for m in self:
            if m.multivariate or (series is not None and m.series_ticker != series):
                continue
            events.setdefault(m.event_ticker, []).append(m)
        names = [
            e for e, ms in events.items() if allowed is None or any(m.status in allowed for m in ms)
        ]
        start = _cursor(params.get("cursor"))
        page = names[start : start + limit]
        cursor = str(start + limit) if start + limit < len(names) else ""
        out = []
        for name in page:
            event: dict[str, Any] = {
                "event_ticker": name,
                "series_ticker": events[name][0].series_ticker,
                "title": f"Simulated event {name}",
                "sub_title": f"{events[name][0].series_ticker} outcome",
            }
            if nested:
                event["markets"] = [m.rest() for m in events[name]]
            out.append(event)
        return {"events": out, "cursor": cursor}

    def _page(
        self, cursor: str | None, limit: int, wanted: Callable[[ListedMarket], bool]
    ) -> tuple[list[ListedMarket], str]:
        """Up to ``limit`` wanted markets from position ``cursor`` of the listing order.

        The cursor is a position in the listing, which only grows at the end, so a walk
        sees every market listed before it started exactly once even while it lives.
        """
        position = _cursor(cursor)
        page: list[ListedMarket] = []
        order = self._order
        while position < len(order) and len(page) < limit:
            market = self.markets[order[position]]
            position += 1
            if wanted(market):
                page.append(market)
        more = any(wanted(self.markets[t]) for t in order[position:])
        return page, str(position) if more else ""


def _limit(params: Mapping[str, str], default: int, most: int) -> int:
    raw = params.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise BadRequest(f"limit: expected an integer from 1 to {most}; found {raw!r}")
    return int(raw)


def _cursor(raw: str | None) -> int:
    if not raw:
        return 0
    if not raw.isdigit():
        raise BadRequest(f"cursor: expected a cursor from a previous page; found {raw!r}")
    return int(raw)
