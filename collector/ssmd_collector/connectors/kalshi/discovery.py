"""Market discovery: which markets a ``markets`` selector names, asked of ``GET /markets``.

A selector becomes as few walks as its narrowest key allows (KALSHI.md section 8:
``status`` takes one word per call, ``event_ticker`` one event, ``tickers`` a comma
list): one walk per listed ticker chunk, else per event, else per series, else one
walk of the whole status. Each walk pages with ``limit`` (1000, Kalshi's most) and
``cursor`` until the cursor comes back empty. The result is then checked against the
whole selector (:func:`matches`), so every key means exactly what it says whichever
key drove the walk.

A market's series is the series the walk asked for, or else the part of its event
ticker before the first ``-`` (Kalshi's naming: a Market carries no series ticker).
Multivariate markets are those whose ticker starts ``KXMVE`` (KALSHI.md section 5).

Every page is handed, exactly as received, to the ``archive`` callback (the
``<feed>.markets.jsonl`` file), so the archive keeps the universe as discovery saw it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from ...metadata import MarketSelector
from .rest import KalshiRest

PAGE_LIMIT = 1000
TICKERS_PER_CALL = 100
"""Tickers per ``tickers=`` call: keeps the URL well under common 8 KiB limits."""

FILTER_OF_STATUS = {
    "initialized": "unopened",
    "active": "open",
    "inactive": "paused",
    "closed": "closed",
    "determined": "closed",
    "disputed": "closed",
    "amended": "closed",
    "finalized": "settled",
}
"""Kalshi's Market.status words -> the ``status`` filter word that lists them."""

Archive = Callable[[str, bytes], None]
"""Receives (URL, page body as received) for every page read."""


@dataclass(frozen=True)
class Listed:
    """One market as discovery saw it."""

    ticker: str
    event_ticker: str
    status: str
    """Kalshi's Market.status word (``active``, ``finalized``, ...)."""
    series: str

    @property
    def multivariate(self) -> bool:
        return is_multivariate(self.ticker)


def is_multivariate(ticker: str) -> bool:
    return ticker.startswith("KXMVE")


def series_of(event_ticker: str) -> str:
    return event_ticker.split("-", 1)[0]


def matches(selector: MarketSelector, market: Listed) -> bool:
    """Whether ``market`` is one ``selector`` names (every key it gives)."""
    mve = selector.multivariate
    return (
        FILTER_OF_STATUS.get(market.status) == selector.status
        and (mve == "include" or market.multivariate == (mve == "only"))
        and (not selector.series or market.series in selector.series)
        and (not selector.events or market.event_ticker in selector.events)
        and (not selector.tickers or market.ticker in selector.tickers)
    )


def may_match(selector: MarketSelector, ticker: str, event_ticker: str | None) -> bool:
    """Whether a market known only by name (a lifecycle hint) could be selected: all but
    its status, which only REST can tell."""
    event = event_ticker or ticker.rsplit("-", 1)[0]
    mve = selector.multivariate
    return (
        (mve == "include" or is_multivariate(ticker) == (mve == "only"))
        and (not selector.series or series_of(event) in selector.series)
        and (not selector.events or event in selector.events)
        and (not selector.tickers or ticker in selector.tickers)
    )


def walks(selector: MarketSelector) -> list[dict[str, str]]:
    """The query parameters of each walk (without ``limit``/``cursor``) for ``selector``."""
    base = {"status": selector.status}
    if selector.multivariate != "include":
        base["mve_filter"] = selector.multivariate
    if selector.tickers:
        chunks = _chunks(selector.tickers, TICKERS_PER_CALL)
        return [base | {"tickers": ",".join(chunk)} for chunk in chunks]
    if selector.events:
        return [base | {"event_ticker": event} for event in selector.events]
    if selector.series:
        return [base | {"series_ticker": series} for series in selector.series]
    return [base]


def _chunks(items: tuple[str, ...], size: int) -> list[tuple[str, ...]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


@dataclass
class DiscoveryMetrics:
    runs: int = 0
    failures: int = 0
    last_seconds: float = 0.0
    """Duration of the last completed discovery."""
    markets: int = 0
    """Markets the last discovery selected (all selectors, this shard)."""


class Discovery:
    """Walks ``GET /markets`` for selectors and looks markets up by ticker."""

    def __init__(
        self,
        rest: KalshiRest,
        archive: Archive | None = None,
        *,
        page_limit: int = PAGE_LIMIT,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rest = rest
        self.archive = archive
        self.page_limit = page_limit
        self.metrics = DiscoveryMetrics()
        self._now = monotonic

    async def select(
        self, selectors: Iterable[MarketSelector]
    ) -> dict[MarketSelector, list[Listed]]:
        """Every market each selector names; one run (counted in the metrics)."""
        started = self._now()
        self.metrics.runs += 1
        out: dict[MarketSelector, list[Listed]] = {}
        try:
            for selector in dict.fromkeys(selectors):
                found: dict[str, Listed] = {}
                for params in walks(selector):
                    async for market in self._walk(params):
                        if matches(selector, market):
                            found.setdefault(market.ticker, market)
                out[selector] = list(found.values())
        except BaseException:
            self.metrics.failures += 1
            raise
        self.metrics.last_seconds = self._now() - started
        self.metrics.markets = len({m.ticker for ms in out.values() for m in ms})
        return out

    async def lookup(self, tickers: Iterable[str]) -> list[Listed]:
        """The markets named, as listed now (any status); unknown tickers are left out."""
        found: list[Listed] = []
        for chunk in _chunks(tuple(dict.fromkeys(tickers)), TICKERS_PER_CALL):
            async for market in self._walk({"tickers": ",".join(chunk)}):
                found.append(market)
        return found

    async def _walk(self, params: dict[str, str]) -> AsyncIterator[Listed]:
        series = params.get("series_ticker")
        cursor = ""
        while True:
            query = params | {"limit": str(self.page_limit)}
            if cursor:
                query["cursor"] = cursor
            body, page = await self.rest.get("/markets", query)
            if self.archive is not None:
                self.archive(_url(self.rest.base_url, query), body)
            for raw in _markets(page):
                yield Listed(
                    raw["ticker"],
                    raw.get("event_ticker", ""),
                    raw.get("status", ""),
                    series or series_of(raw.get("event_ticker", "")),
                )
            cursor = (page.get("cursor") or "") if isinstance(page, dict) else ""
            if not cursor:
                return


def _markets(page: Any) -> list[dict[str, Any]]:
    markets = page.get("markets") if isinstance(page, dict) else None
    if not isinstance(markets, list):
        return []
    return [m for m in markets if isinstance(m, dict) and isinstance(m.get("ticker"), str)]


def _url(base: str, query: dict[str, str]) -> str:
    return f"{base}/markets?{urlencode(query)}"
