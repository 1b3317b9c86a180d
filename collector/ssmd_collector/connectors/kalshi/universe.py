"""The markets each market-filtered channel follows while running, and this shard's share.

Pure bookkeeping on an injected clock; the connector does the I/O (REST, commands).

- Start-up: discovery's markets (:meth:`Universe.discovered`) plus the fixed
  ``market_tickers`` become each channel's markets.
- Lifecycle hints (:meth:`Universe.hint`): ``created`` and ``activated`` of a market a
  selector may name (all but its status, which only REST knows) make it a candidate.
  Candidates are gathered for ``debounce`` seconds from the first, then looked up in
  one REST call (:meth:`Universe.due_lookups`); those whose listing matches a selector
  are added (:meth:`Universe.confirmed`), in batches. A market not listed yet, or not
  matching yet, is left to the next re-discovery.
- ``determined`` and ``settled`` schedule a market's removal ``grace`` seconds later
  (its last frames still arrive meanwhile); :meth:`Universe.due_removals` hands them
  over. Fixed ``market_tickers`` are never removed.
- Re-discovery (:meth:`Universe.discovered` again, every few minutes) repairs drift:
  selected markets missing are added at once, markets no longer selected leave after
  the same grace.

Shards: a market belongs to shard ``blake2b(event_ticker) mod N`` (:func:`shard_of`),
so an event's markets stay together and every process computes the same split. A
fixed ticker's event is its ticker without the last ``-`` part (Kalshi's naming).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from ...metadata import MarketSelector, Subscription
from .discovery import Listed, matches, may_match

LIFECYCLE_ADDS = frozenset({"created", "activated"})
LIFECYCLE_REMOVES = frozenset({"determined", "settled"})


def shard_of(event_ticker: str, count: int) -> int:
    """The shard (0-based) of an event: a hash stable across processes and versions."""
    digest = hashlib.blake2b(event_ticker.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def event_of(ticker: str) -> str:
    return ticker.rsplit("-", 1)[0]


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    def owns(self, event_ticker: str) -> bool:
        return self.count == 1 or shard_of(event_ticker, self.count) == self.index

    @property
    def archives_all_markets(self) -> bool:
        """Whether this shard subscribes the unfiltered channels (ticker, trade...):
        shard 0 only, so each of their frames is archived once."""
        return self.index == 0


@dataclass(frozen=True)
class ChannelMarkets:
    """What one market-filtered channel asks for: fixed tickers and selectors."""

    fixed: tuple[str, ...] = ()
    selectors: tuple[MarketSelector, ...] = ()


LIFECYCLE = "market_lifecycle_v2"
MVE_LIFECYCLE = "multivariate_market_lifecycle"


def plan_channels(
    subscriptions: Iterable[Subscription], shard: Shard
) -> tuple[dict[str, ChannelMarkets], list[str]]:
    """The environment's entries merged per channel: the market-filtered channels with
    their fixed tickers and selectors, and the unfiltered channels this shard takes.

    Unfiltered channels go to shard 0 (:attr:`Shard.archives_all_markets`). Selectors
    need lifecycle hints, so every shard with one subscribes ``market_lifecycle_v2``
    (and ``multivariate_market_lifecycle`` when a selector may take multivariate
    markets) even if the environment does not list it; the frames it receives are
    archived like any others.
    """
    filtered: dict[str, ChannelMarkets] = {}
    unfiltered: list[str] = []
    for sub in subscriptions:
        for name in sub.channels:
            if not sub.filtered:
                unfiltered.append(name)
                continue
            prev = filtered.get(name, ChannelMarkets())
            selectors = prev.selectors + ((sub.markets,) if sub.markets is not None else ())
            fixed = tuple(dict.fromkeys(prev.fixed + sub.market_tickers))
            filtered[name] = ChannelMarkets(fixed, tuple(dict.fromkeys(selectors)))
    taken = [n for n in dict.fromkeys(unfiltered) if shard.archives_all_markets]
    every = [s for w in filtered.values() for s in w.selectors]
    hints = [LIFECYCLE] if every else []
    if any(s.multivariate != "exclude" for s in every):
        hints.append(MVE_LIFECYCLE)
    return filtered, list(dict.fromkeys(taken + hints))


class Universe:
    def __init__(
        self,
        channels: Mapping[str, ChannelMarkets],
        shard: Shard,
        *,
        debounce: float,
        grace: float,
        monotonic: Callable[[], float],
    ) -> None:
        self.channels = dict(channels)
        self.shard = shard
        self.debounce = debounce
        self.grace = grace
        self._now = monotonic
        self.members: dict[str, dict[str, None]] = {
            name: dict.fromkeys(t for t in want.fixed if shard.owns(event_of(t)))
            for name, want in self.channels.items()
        }
        self._fixed = {t for want in self.channels.values() for t in want.fixed}
        self._candidates: dict[str, float] = {}
        self._leaving: dict[str, float] = {}

    @property
    def selectors(self) -> list[MarketSelector]:
        return list(dict.fromkeys(s for w in self.channels.values() for s in w.selectors))

    @property
    def dynamic(self) -> bool:
        """Whether any channel follows a selector (discovery and lifecycle hints)."""
        return bool(self.selectors)

    def fixed(self) -> dict[str, list[str]]:
        """Each channel's fixed tickers of this shard."""
        return {name: list(members) for name, members in self.members.items()}

    # -- discovery -------------------------------------------------------------------

    def discovered(self, found: Mapping[MarketSelector, Iterable[Listed]]) -> dict[str, list[str]]:
        """A discovery's result: the markets to add per channel now. Markets no longer
        selected are scheduled to leave after the grace period."""
        now = self._now()
        adds: dict[str, list[str]] = {}
        for name, want in self.channels.items():
            if not want.selectors:
                continue
            desired = {
                m.ticker
                for s in want.selectors
                for m in found.get(s, ())
                if self.shard.owns(m.event_ticker)
            }
            members = self.members[name]
            new = [t for t in sorted(desired) if t not in members]
            if new:
                members.update(dict.fromkeys(new))
                adds[name] = new
            for ticker in desired:
                self._leaving.pop(ticker, None)  # selected again (reopened)
            for ticker in members:
                if ticker not in desired and ticker not in self._fixed:
                    self._leaving.setdefault(ticker, now + self.grace)
        return adds

    # -- lifecycle hints ---------------------------------------------------------------

    def hint(self, event_type: str, ticker: str, event_ticker: str | None = None) -> None:
        """A lifecycle frame about ``ticker`` (``event_type`` as Kalshi names it)."""
        if event_type in LIFECYCLE_ADDS:
            event = event_ticker or event_of(ticker)
            if not self.shard.owns(event):
                return
            if any(ticker in members for members in self.members.values()):
                self._leaving.pop(ticker, None)  # reopened while leaving: it stays
                return
            if any(
                may_match(s, ticker, event) for w in self.channels.values() for s in w.selectors
            ):
                self._candidates.setdefault(ticker, self._now())
        elif (
            event_type in LIFECYCLE_REMOVES
            and ticker not in self._fixed
            and any(ticker in members for members in self.members.values())
        ):
            self._leaving.setdefault(ticker, self._now() + self.grace)

    def due_lookups(self) -> list[str]:
        """Candidates to look up now: all of them, once the first waited ``debounce``."""
        if not self._candidates or self._now() - min(self._candidates.values()) < self.debounce:
            return []
        out, self._candidates = list(self._candidates), {}
        return out

    def confirmed(self, listed: Iterable[Listed]) -> dict[str, list[str]]:
        """The looked-up candidates: those a selector matches, to add per channel."""
        adds: dict[str, list[str]] = {}
        for market in listed:
            if not self.shard.owns(market.event_ticker):
                continue
            for name, want in self.channels.items():
                members = self.members[name]
                if market.ticker not in members and any(matches(s, market) for s in want.selectors):
                    members[market.ticker] = None
                    adds.setdefault(name, []).append(market.ticker)
        return adds

    def due_removals(self) -> dict[str, list[str]]:
        """Markets whose grace has passed, to remove per channel."""
        now = self._now()
        gone = [t for t, due in self._leaving.items() if due <= now]
        removes: dict[str, list[str]] = {}
        for ticker in gone:
            del self._leaving[ticker]
            for name, members in self.members.items():
                if ticker in members:
                    del members[ticker]
                    removes.setdefault(name, []).append(ticker)
        return removes

    @property
    def pending(self) -> int:
        """Candidates waiting for a lookup plus markets waiting to leave."""
        return len(self._candidates) + len(self._leaving)
