"""The whole market: the collector discovers markets over REST, follows them live and
splits them across shards, against the simulator over real sockets and real HTTP.

Each test checks what went over the wire (the simulator's record of the commands and
frames) and what the collector archived (data, events and markets files).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from collector_harness import KEY_ENV, Run, environ, make_tree, record, scrape, when_live
from collector_harness import signed_sim as harness_signed_sim
from deadlines import wait_until

from ssmd_collector.archive.reader import MARKETS, open_archive
from ssmd_collector.archive.verify import verify
from ssmd_collector.connectors.kalshi.universe import event_of, shard_of
from ssmd_collector.exitcodes import ExitCode
from ssmd_collector.health import HealthServer
from ssmd_collector.sim import Ending, SimServer, SimSession


def signed_sim(public_pem: bytes, **kw: Any) -> SimServer:
    return harness_signed_sim(public_pem, **({"seed": 5} | kw))


def tree(root: Path, url: str, markets: dict[str, Any]) -> Path:
    subscriptions = [
        {"channels": ["trade", "market_lifecycle_v2"]},
        {"channels": ["orderbook_delta"], "markets": markets},
    ]
    return make_tree(root, url, **KEY_ENV, subscriptions=subscriptions)


def snapshots(session: SimSession) -> set[str]:
    """Markets whose order book snapshot the exchange sent."""
    return {
        json.loads(frame)["msg"]["market_ticker"]
        for frame in session.sent
        if frame.startswith('{"type":"orderbook_snapshot"')
    }


def book_commands(session: SimSession) -> list[tuple[str, list[str]]]:
    """(subscribe | add_markets | delete_markets, tickers) of the order book, in order."""
    out = []
    for c in session.commands:
        params = c.get("params", {})
        if c.get("cmd") == "subscribe" and params.get("channels") == ["orderbook_delta"]:
            out.append(("subscribe", params["market_tickers"]))
        elif c.get("cmd") == "update_subscription" and params.get("action") != "get_snapshot":
            out.append((params["action"], params["market_tickers"]))
    return out


def subscribed_books(session: SimSession) -> set[str]:
    books: set[str] = set()
    for action, tickers in book_commands(session):
        if action == "delete_markets":
            books -= set(tickers)
        else:
            books |= set(tickers)
    return books


def open_markets(sim: SimServer, series: tuple[str, ...] = ()) -> set[str]:
    return {
        m.ticker
        for m in sim.listing
        if m.status == "active" and not m.multivariate and (not series or m.series_ticker in series)
    }


async def scenario(
    sim: SimServer,
    path: Path,
    private_pem: bytes,
    play: Callable[[HealthServer, SimSession], Awaitable[None]],
    **overrides: Any,
) -> Run:
    """Record ``path`` while ``play`` acts once every subscription is live; then the
    exchange closes the connection and the run ends."""

    return await record(
        path, environ=environ(private_pem), during=when_live(sim, play), **overrides
    )


async def test_every_discovered_market_gets_its_order_book_recorded(
    tmp_path: Path, ed25519_keys: tuple[bytes, bytes]
) -> None:
    private_pem, public_pem = ed25519_keys
    metrics: dict[str, float] = {}

    async with signed_sim(public_pem, markets=1500) as sim:
        expected = open_markets(sim)

        async def all_books(server: HealthServer, session: SimSession) -> None:
            await wait_until(lambda: snapshots(session) >= expected, "a snapshot of every book")
            metrics.update(await scrape(server.port))

        path = tree(tmp_path, sim.url, {"status": "open"})
        run = await scenario(sim, path, private_pem, all_books)
    session = sim.sessions[0]
    assert len(expected) == 1200
    assert subscribed_books(session) == expected
    assert [a for a, _ in book_commands(session)] == ["subscribe"] + ["add_markets"] * 4
    assert run.connection.markets == {"orderbook_delta": 1200}
    assert run.data() == session.sent
    # Discovery: two pages of 1000 (the status walk), archived raw.
    assert sim.rest_requests[0].startswith("/trade-api/v2/markets?status=open&mve_filter=exclude")
    assert len(sim.rest_requests) == 2
    pages = [json.loads(line) for line in run.lines(".markets.jsonl")]
    origin = sim.rest_url.removesuffix("/trade-api/v2")
    assert [p["url"] for p in pages] == [origin + r for r in sim.rest_requests]
    assert {m["ticker"] for p in pages for m in p["data"]["markets"]} == expected
    # The archive tools see one feed, its discovery pages beside its data.
    archive = open_archive(run.data_dir)
    assert archive.feed == "kalshi-sim"
    assert [f.path.name for f in archive.of(MARKETS)] == ["kalshi-sim.markets.jsonl"]
    report = verify(archive, progress=False)
    assert report.ok, report.corrupt
    assert report.lines == len(session.sent)
    discovery = next(e for e in run.events() if e["event"] == "discovery")
    assert discovery["markets"] == 1200
    assert discovery["requests"] == 2
    assert metrics['ssmd_discovery_runs_total{feed="kalshi-sim",outcome="ok"}'] == 1
    assert metrics['ssmd_subscribed_markets{channel="orderbook_delta",feed="kalshi-sim"}'] == 1200
    assert metrics['ssmd_rest_responses_total{feed="kalshi-sim",status="200"}'] == 2


async def test_a_market_created_mid_run_is_recorded_and_a_settled_one_dropped(
    tmp_path: Path, ed25519_keys: tuple[bytes, bytes]
) -> None:
    private_pem, public_pem = ed25519_keys
    created: list[str] = []
    settled: list[str] = []

    async with signed_sim(public_pem, markets=60) as sim:
        btc = open_markets(sim, ("KXBTCD",))

        async def live(server: HealthServer, session: SimSession) -> None:
            await wait_until(lambda: snapshots(session) >= btc, "the first books")
            created.append(sim.create_market("KXBTCD-26JAN01E0000"))
            created.append(sim.create_market("KXETHD-26JAN01E0000"))  # not selected
            await wait_until(lambda: created[0] in snapshots(session), "the new market's book")
            settled.append(sorted(btc)[0])
            sim.settle_market(settled[0])
            await wait_until(
                lambda: ("delete_markets", settled) in book_commands(session),
                "the settled market removed",
            )
            await wait_until(
                lambda: server.connection.markets["orderbook_delta"] == len(btc),
                "the removal confirmed",
            )

        run = await scenario(
            sim,
            tree(tmp_path, sim.url, {"series": ["KXBTCD"]}),
            private_pem,
            live,
            add_debounce=0.2,
            removal_grace=0.3,
        )
    session = sim.sessions[0]
    assert ("add_markets", [created[0]]) in book_commands(session)
    assert subscribed_books(session) == (btc | {created[0]}) - set(settled)
    assert all(created[1] not in tickers for _, tickers in book_commands(session))
    changes = [
        (e["event"], e["markets"]) for e in run.events() if e["event"].startswith("markets_")
    ]
    assert changes == [("markets_added", [created[0]]), ("markets_removed", settled)]
    # The new market was confirmed by a lookup; the other series was never even asked
    # about (the sim's random lifecycle noise may add lookups of unlisted markets).
    lookups = [r for r in sim.rest_requests if "tickers=" in r]
    assert any(created[0] in r for r in lookups)
    assert not any(created[1] in r for r in lookups)
    assert run.data() == session.sent


async def test_re_discovery_repairs_what_lifecycle_never_said(
    tmp_path: Path, ed25519_keys: tuple[bytes, bytes]
) -> None:
    private_pem, public_pem = ed25519_keys
    quiet: list[str] = []

    async with signed_sim(public_pem, markets=30) as sim:
        initial = open_markets(sim, ("KXHIGHNY",))

        async def drift(server: HealthServer, session: SimSession) -> None:
            ticker, _ = sim.listing.create("KXHIGHNY-26JAN01E0000")  # listed, never announced
            quiet.append(ticker)
            gone = sorted(open_markets(sim, ("KXHIGHNY",)) - {ticker})[0]
            quiet.append(gone)
            sim.listing.determine(gone)  # closed, never announced
            await wait_until(lambda: ticker in snapshots(session), "the quiet market's book")
            await wait_until(
                lambda: ("delete_markets", [gone]) in book_commands(session), "the closed one gone"
            )

        run = await scenario(
            sim,
            tree(tmp_path, sim.url, {"series": ["KXHIGHNY"]}),
            private_pem,
            drift,
            discovery_interval=1,
            removal_grace=0,
        )
    assert ("add_markets", [quiet[0]]) in book_commands(sim.sessions[0])
    runs = [e for e in run.events() if e["event"] == "discovery"]
    assert len(runs) >= 2
    assert runs[0]["added"] == len(initial) == 9  # the start-up: the open KXHIGHNY markets


async def test_a_discovery_refused_ends_the_run_naming_the_url_and_status(
    tmp_path: Path, ed25519_keys: tuple[bytes, bytes]
) -> None:
    private_pem, public_pem = ed25519_keys
    async with signed_sim(public_pem, markets=10) as sim:
        path = tree(tmp_path, sim.url, {"status": "open"})
        feed = path / "feeds/kalshi-sim.yaml"
        wrong = sim.rest_url.replace("/v2", "/v9")
        feed.write_text(feed.read_text() + f"    rest_endpoint: {wrong}\n")
        run = await record(path, environ=environ(private_pem))
    assert run.code == ExitCode.DISCONNECTED
    assert sim.sessions == []  # no WebSocket before the markets are known
    failed = next(e for e in run.events() if e["event"] == "discovery_failed")
    assert failed["error"].startswith(f"GET {wrong}/markets?status=open&mve_filter=exclude")
    assert "HTTP 404" in failed["error"]
    assert len(sim.rejections) == 1  # one request: a 404 is not retried


@pytest.mark.parametrize("shards", [3])
async def test_shards_partition_the_universe_by_event(
    tmp_path: Path, ed25519_keys: tuple[bytes, bytes], shards: int
) -> None:
    private_pem, public_pem = ed25519_keys
    async with signed_sim(public_pem, markets=400, messages=3000, ending=Ending.CLOSE) as sim:
        expected = open_markets(sim)
        runs = await asyncio.gather(
            *(
                record(
                    tree(tmp_path / f"shard{i}", sim.url, {"status": "open"}),
                    environ=environ(private_pem),
                    shard=f"{i}/{shards}",
                )
                for i in range(shards)
            )
        )
    by_shard: dict[int, set[str]] = {}
    channels: dict[int, set[str]] = {}
    for session in sim.sessions:
        books = subscribed_books(session)
        (index,) = {shard_of(event_of(t), shards) for t in books}
        by_shard[index] = books
        channels[index] = {
            name
            for c in session.commands
            if c.get("cmd") == "subscribe"
            for name in c["params"]["channels"]
        }
    assert sorted(by_shard) == list(range(shards))
    assert set().union(*by_shard.values()) == expected
    assert sum(len(b) for b in by_shard.values()) == len(expected)  # no overlap
    events = [{event_of(t) for t in b} for b in by_shard.values()]
    assert sum(len(e) for e in events) == len(set().union(*events))  # events kept whole
    # Shard 0 alone archives the all-market channels; every shard follows lifecycle.
    assert channels[0] == {"trade", "market_lifecycle_v2", "orderbook_delta"}
    assert all(channels[i] == {"market_lifecycle_v2", "orderbook_delta"} for i in (1, 2))
    for i, run in enumerate(runs):
        names = {f.name for f in run.data_dir.glob("*/*")}
        stem = f"kalshi-sim-shard{i}of{shards}"
        assert f"{stem}.jsonl" in names
        assert f"{stem}.events.jsonl" in names
        assert all(n.startswith(f"{stem}.") for n in names)


async def test_markets_beyond_the_exchanges_limit_are_reported_not_dropped_silently(
    tmp_path: Path, ed25519_keys: tuple[bytes, bytes]
) -> None:
    private_pem, public_pem = ed25519_keys
    metrics: dict[str, float] = {}

    async with signed_sim(public_pem, markets=1000, max_markets_per_subscription=500) as sim:

        async def full(server: HealthServer, session: SimSession) -> None:
            metrics.update(await scrape(server.port))

        path = tree(tmp_path, sim.url, {"status": "open"})
        run = await scenario(sim, path, private_pem, full)
    # The second batch of 256 would pass 500 on the sid: it and the rest are refused.
    assert run.connection.markets == {"orderbook_delta": 256}
    assert run.connection.overflow == {"orderbook_delta": 544}
    limit = next(e for e in run.events() if e["event"] == "market_limit")
    assert (limit["markets_subscribed"], limit["markets_refused"]) == (256, 544)
    gauge = 'ssmd_subscription_overflow_markets{channel="orderbook_delta",feed="kalshi-sim"}'
    assert metrics[gauge] == 544
    assert run.connection.gaps == {}  # the error's seq is not lost data
