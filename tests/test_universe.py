"""The live universe as pure bookkeeping on an injected clock: which markets each channel
follows, when lifecycle hints are looked up, when settled markets leave, and the shards."""

from __future__ import annotations

import pytest

from ssmd_collector.connectors.kalshi.discovery import Listed
from ssmd_collector.connectors.kalshi.universe import (
    ChannelMarkets,
    Shard,
    Universe,
    event_of,
    plan_channels,
    shard_of,
)
from ssmd_collector.metadata import MarketSelector, Subscription

BTC = MarketSelector(series=("KXBTCD",))
BOOKS = "orderbook_delta"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def listed(ticker: str, status: str = "active") -> Listed:
    event = event_of(ticker)
    return Listed(ticker, event, status, event.split("-")[0])


def universe(fixed: tuple[str, ...] = (), shard: Shard | None = None) -> tuple[Universe, Clock]:
    clock = Clock()
    channels = {BOOKS: ChannelMarkets(fixed, (BTC,))}
    return Universe(channels, shard or Shard(), debounce=1.0, grace=30.0, monotonic=clock), clock


def test_hints_are_gathered_for_the_debounce_then_looked_up_together() -> None:
    u, clock = universe()
    u.hint("created", "KXBTCD-E1-T1", "KXBTCD-E1")
    u.hint("created", "KXETHD-E1-T1", "KXETHD-E1")  # no selector may take it
    clock.now += 0.5
    u.hint("activated", "KXBTCD-E1-T2")
    assert u.due_lookups() == []
    clock.now += 0.5
    assert u.due_lookups() == ["KXBTCD-E1-T1", "KXBTCD-E1-T2"]
    assert u.due_lookups() == []
    adds = u.confirmed([listed("KXBTCD-E1-T1"), listed("KXBTCD-E1-T2", "initialized")])
    assert adds == {BOOKS: ["KXBTCD-E1-T1"]}  # not open yet: left to re-discovery


def test_settled_markets_leave_after_the_grace_and_fixed_ones_never() -> None:
    u, clock = universe(fixed=("KXFIXED-E-T1",))
    assert u.discovered({BTC: [listed("KXBTCD-E1-T1"), listed("KXBTCD-E1-T2")]}) == {
        BOOKS: ["KXBTCD-E1-T1", "KXBTCD-E1-T2"]
    }
    u.hint("determined", "KXBTCD-E1-T1")
    u.hint("settled", "KXFIXED-E-T1")
    u.hint("settled", "KXNOTOURS-E-T1")
    clock.now += 29.9
    assert u.due_removals() == {}
    clock.now += 0.1
    assert u.due_removals() == {BOOKS: ["KXBTCD-E1-T1"]}
    assert list(u.members[BOOKS]) == ["KXFIXED-E-T1", "KXBTCD-E1-T2"]


def test_re_discovery_adds_what_is_missing_and_retires_what_left() -> None:
    u, clock = universe()
    u.discovered({BTC: [listed("KXBTCD-E1-T1"), listed("KXBTCD-E1-T2")]})
    assert u.discovered({BTC: [listed("KXBTCD-E1-T2"), listed("KXBTCD-E1-T3")]}) == {
        BOOKS: ["KXBTCD-E1-T3"]
    }
    clock.now += 30
    assert u.due_removals() == {BOOKS: ["KXBTCD-E1-T1"]}


def test_a_market_reopened_during_its_grace_stays() -> None:
    u, clock = universe()
    u.discovered({BTC: [listed("KXBTCD-E1-T1")]})
    u.hint("determined", "KXBTCD-E1-T1")
    u.hint("activated", "KXBTCD-E1-T1")
    clock.now += 60
    assert u.due_removals() == {}
    assert u.due_lookups() == []  # already followed: nothing to look up


def test_a_shard_keeps_only_its_events() -> None:
    shard = Shard(1, 4)
    u, clock = universe(shard=shard)
    markets = [listed(f"KXBTCD-E{e}-T{m}") for e in range(40) for m in range(3)]
    adds = u.discovered({BTC: markets})[BOOKS]
    assert adds == sorted(m.ticker for m in markets if shard_of(m.event_ticker, 4) == 1)
    assert 0 < len(adds) < len(markets)
    for m in markets:
        u.hint("created", m.ticker + "X", m.event_ticker)
    clock.now += 1
    assert all(shard_of(event_of(t), 4) == 1 for t in u.due_lookups())


def test_the_shard_hash_is_stable_and_spreads_events() -> None:
    # Pinned: a changed hash would move markets to other shards on an upgrade.
    assert [shard_of(f"KXBTCD-26JAN01E{i:04d}", 4) for i in range(8)] == [3, 3, 0, 0, 3, 1, 2, 0]
    counts = [0] * 4
    for i in range(4000):
        counts[shard_of(f"KXEVENT-{i}", 4)] += 1
    assert min(counts) > 900


@pytest.mark.parametrize(
    ("shard", "unfiltered"),
    [
        (Shard(0, 2), ["ticker", "trade", "market_lifecycle_v2"]),
        (Shard(1, 2), ["market_lifecycle_v2"]),
    ],
    ids=["shard-0-all-market", "shard-1-lifecycle-only"],
)
def test_plan_channels(shard: Shard, unfiltered: list[str]) -> None:
    filtered, taken = plan_channels(
        [
            Subscription(("ticker", "trade")),
            Subscription((BOOKS,), ("A-1",), BTC),
            Subscription((BOOKS,), ("A-1", "B-1")),
        ],
        shard,
    )
    assert filtered == {BOOKS: ChannelMarkets(("A-1", "B-1"), (BTC,))}
    assert taken == unfiltered


def test_a_multivariate_selector_follows_the_multivariate_lifecycle_too() -> None:
    mve = Subscription((BOOKS,), (), MarketSelector(multivariate="only"))
    _, taken = plan_channels([mve], Shard())
    assert taken == ["market_lifecycle_v2", "multivariate_market_lifecycle"]
