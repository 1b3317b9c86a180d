"""The Kalshi connector against the simulator at today's protocol, over real sockets.

Each test pins one rule of KALSHI.md the connector must follow: signed handshakes with
both key kinds, one subscribe per channel grown with add_markets, error frames kept out
of sequence tracking, gaps and duplicates told apart, order books repaired with
get_snapshot, dead subscriptions restored (not ready meanwhile), too many deaths ending
the run, unknown frame types archived; and the events file saying all of it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from collector_harness import KEY_ENV, Run, environ, make_tree, record, when_live
from collector_harness import signed_sim as harness_signed_sim
from deadlines import wait_until

from ssmd_collector.exitcodes import ExitCode
from ssmd_collector.health import HealthServer
from ssmd_collector.metadata import read_directory, validate_tree
from ssmd_collector.sim import Ending, SimServer, SimSession
from ssmd_collector.sim.market import universe

BOOKS = universe(600)


def signed_sim(public_pem: bytes, **kw: Any) -> SimServer:
    return harness_signed_sim(public_pem, **({"seed": 3} | kw))


def books_tree(tmp_path: Path, url: str, markets: list[str]) -> Path:
    subscriptions = [
        {"channels": ["trade", "market_lifecycle_v2"]},
        {"channels": ["orderbook_delta"], "market_tickers": markets},
    ]
    return make_tree(tmp_path, url, **KEY_ENV, subscriptions=subscriptions)


def commands(session: SimSession, name: str) -> list[dict[str, Any]]:
    return [c for c in session.commands if c.get("cmd") == name]


async def scenario(
    sim: SimServer,
    tree: Path,
    private_pem: bytes,
    play: Callable[[HealthServer, SimSession], Awaitable[None]],
    **overrides: Any,
) -> Run:
    """Record ``tree`` while ``play`` acts on the exchange side once every subscription
    is live; then the exchange closes the connection, so the run ends (exit 10) unless
    it ended by itself before."""

    return await record(
        tree, environ=environ(private_pem), during=when_live(sim, play), **overrides
    )


@pytest.mark.parametrize("kind", ["ed25519", "rsa"])
async def test_both_key_kinds_sign_a_handshake_the_exchange_verifies(
    tmp_path: Path,
    kind: str,
    ed25519_keys: tuple[bytes, bytes],
    rsa_keys: tuple[bytes, bytes],
) -> None:
    private_pem, public_pem = ed25519_keys if kind == "ed25519" else rsa_keys
    async with signed_sim(public_pem, messages=300, ending=Ending.CLOSE) as sim:
        run = await record(make_tree(tmp_path, sim.url, **KEY_ENV), environ=environ(private_pem))
    assert run.code == ExitCode.DISCONNECTED
    assert sim.sessions[0].authenticated
    assert sim.rejected_handshakes == 0
    assert run.data() == sim.sessions[0].sent
    assert [e["event"] for e in run.events()][:2] == ["start", "connected"]
    assert run.events()[1]["signed"] is True


async def test_600_order_books_take_one_subscribe_and_add_markets_batches(
    tmp_path: Path, ed25519_keys: tuple[bytes, bytes]
) -> None:
    private_pem, public_pem = ed25519_keys

    async def nothing(server: HealthServer, session: SimSession) -> None:
        return None

    async with signed_sim(public_pem) as sim:
        run = await scenario(sim, books_tree(tmp_path, sim.url, BOOKS), private_pem, nothing)
    session = sim.sessions[0]
    subscribes = commands(session, "subscribe")
    # Each channel in exactly one subscribe (Kalshi no longer answers a second one);
    # channels sharing a market list share the command, as the environment groups them.
    assert [c["params"]["channels"] for c in subscribes] == [
        ["trade", "market_lifecycle_v2"],
        ["orderbook_delta"],
    ]
    book = subscribes[1]
    adds = commands(session, "update_subscription")
    assert [c["params"]["action"] for c in adds] == ["add_markets", "add_markets"]
    sent = book["params"]["market_tickers"] + [
        t for c in adds for t in c["params"]["market_tickers"]
    ]
    assert sent == BOOKS
    assert [len(c["params"]["market_tickers"]) for c in adds] == [256, 88]
    subscribed = [e for e in run.events() if e["event"] == "subscribed"]
    assert {e["channel"]: e.get("markets") for e in subscribed} == {
        "trade": None,
        "market_lifecycle_v2": None,
        "orderbook_delta": 600,
    }
    assert run.connection.markets == {"orderbook_delta": 600}
    assert run.data() == session.sent


async def test_a_killed_subscription_is_restored_and_not_ready_meanwhile(
    tmp_path: Path, ed25519_keys: tuple[bytes, bytes]
) -> None:
    private_pem, public_pem = ed25519_keys
    readiness: list[bool] = []

    async def kill(server: HealthServer, session: SimSession) -> None:
        old_sid = session.sid_of("orderbook_delta")

        async def watch() -> None:
            while True:  # every loop turn: the restore takes one round trip
                if not readiness or readiness[-1] != server.connection.ready:
                    readiness.append(server.connection.ready)
                await asyncio.sleep(0)

        watcher = asyncio.create_task(watch())
        await session.end_subscription(old_sid, code=25)
        await wait_until(
            lambda: (
                session.subscriptions().get(old_sid) is None
                and "orderbook_delta" in session.subscriptions().values()
                and server.connection.ready
            ),
            "the order book subscription restored",
            seen=lambda: (session.subscriptions(), server.connection.ready),
        )
        watcher.cancel()

    async with signed_sim(public_pem) as sim:
        run = await scenario(sim, books_tree(tmp_path, sim.url, BOOKS[:20]), private_pem, kill)
    assert readiness == [True, False, True]
    events = run.events()
    died = next(e for e in events if e["event"] == "subscription_died")
    restored = next(e for e in events if e["event"] == "subscription_restored")
    assert died["channel"] == restored["channel"] == "orderbook_delta"
    assert died["code"] == 25
    assert restored["old_sid"] == died["sid"] != restored["sid"]
    assert restored["markets"] == 20
    assert run.connection.deaths == {"orderbook_delta": 1}
    assert run.connection.exchange_errors[25] == 1
    assert run.connection.gaps == {}  # the error's seq never entered sequence tracking
    # The new subscription starts from fresh snapshots of every market.
    new_sid = restored["sid"]
    snapshots = [
        json.loads(d)
        for d in run.data()
        if '"orderbook_snapshot"' in d and json.loads(d)["sid"] == new_sid
    ]
    assert sorted(s["msg"]["market_ticker"] for s in snapshots) == sorted(BOOKS[:20])


async def test_an_order_book_gap_is_repaired_with_get_snapshot(
    tmp_path: Path, ed25519_keys: tuple[bytes, bytes]
) -> None:
    private_pem, public_pem = ed25519_keys

    async def gap(server: HealthServer, session: SimSession) -> None:
        session.skip_seq(session.sid_of("orderbook_delta"), 3)
        await wait_until(
            lambda: server.connection.recoveries.get(("orderbook_delta", "completed")),
            "the recovery to complete",
            seen=lambda: dict(server.connection.recoveries),
        )

    async with signed_sim(public_pem) as sim:
        run = await scenario(sim, books_tree(tmp_path, sim.url, BOOKS[:30]), private_pem, gap)
    session = sim.sessions[0]
    sid = session.sid_of("orderbook_delta")
    asks = [
        c
        for c in commands(session, "update_subscription")
        if c["params"]["action"] == "get_snapshot"
    ]
    assert [c["params"]["sids"] for c in asks] == [[sid]]
    assert sorted(asks[0]["params"]["market_tickers"]) == sorted(BOOKS[:30])
    events = [e["event"] for e in run.events()]
    assert (
        events.index("gap")
        < events.index("recovery_requested")
        < events.index("recovery_completed")
    )
    gap_event = next(e for e in run.events() if e["event"] == "gap")
    assert gap_event["received"] - gap_event["expected"] == 3
    assert run.connection.gaps == {"orderbook_delta": 1}
    # The snapshots answer the command (they carry its id) and are archived like data.
    answered = [json.loads(d) for d in run.data() if f'"id":{asks[0]["id"]}' in d]
    assert len(answered) == 30
    assert {a["type"] for a in answered} == {"orderbook_snapshot"}


async def test_error_frames_are_errors_and_duplicates_are_not_gaps(
    tmp_path: Path, ed25519_keys: tuple[bytes, bytes]
) -> None:
    private_pem, public_pem = ed25519_keys

    unknown: list[str] = []

    async def inject(server: HealthServer, session: SimSession) -> None:
        sid = session.sid_of("trade")
        await wait_until(lambda: session.seq_of(sid) > 2, "a few trades")
        # A scoped, non-terminal error carrying the sid's next seq: an error, never data.
        await session.send_raw(
            json.dumps(
                {
                    "sid": sid,
                    "seq": session.seq_of(sid) + 1,
                    "type": "error",
                    "msg": {"code": 18, "msg": "Command timeout"},
                }
            )
        )
        await session.duplicate_last(sid)
        unknown.append(await session.send_unknown_type("sim_future_type"))
        await wait_until(lambda: session.seq_of(sid) > 50, "trades flowing on")

    async with signed_sim(public_pem) as sim:
        run = await scenario(sim, books_tree(tmp_path, sim.url, BOOKS[:5]), private_pem, inject)
    assert run.connection.exchange_errors == {18: 1}
    assert run.connection.errors["exchange_error"] == 1
    assert run.connection.duplicates == {"trade": 1}
    assert run.connection.gaps == {}
    assert any(e["event"] == "exchange_error" and e["code"] == 18 for e in run.events())
    assert unknown[0] in run.data()  # a frame type nobody knows yet is data too
    assert run.data() == sim.sessions[0].sent  # errors, duplicates, unknown types: all kept


async def test_too_many_deaths_in_the_window_exit_13_with_the_reason(
    tmp_path: Path, ed25519_keys: tuple[bytes, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    private_pem, public_pem = ed25519_keys

    async def kill_twice(server: HealthServer, session: SimSession) -> None:
        for _ in range(2):
            sid = session.sid_of("trade")
            await session.end_subscription(sid, code=10)
            if _ == 0:
                await wait_until(
                    lambda sid=sid: (
                        session.subscriptions().get(sid) is None
                        and "trade" in session.subscriptions().values()
                    ),
                    "trade subscribed again",
                )
        await wait_until(lambda: not server.connection.connected, "the collector to leave")

    async with signed_sim(public_pem) as sim:
        run = await scenario(
            sim, books_tree(tmp_path, sim.url, BOOKS[:5]), private_pem, kill_twice, max_deaths=1
        )
    assert run.code == ExitCode.SUBSCRIBE_REJECTED
    assert "subscriptions ended by the exchange 2 times within 300s (limit 1)" in caplog.text
    stop = run.events()[-1]
    assert stop["event"] == "stop"
    assert stop["exit"] == "SUBSCRIBE_REJECTED"


@pytest.mark.parametrize(
    ("channel", "reason"),
    [
        ("ticker_v2", "ticker_v2 was removed by Kalshi on 2026-02-12; use ticker"),
        ("multivariate", "use multivariate_market_lifecycle"),
    ],
)
def test_removed_channels_are_refused_by_validation_with_the_reason(
    tmp_path: Path, channel: str, reason: str
) -> None:
    subscriptions = [{"channels": ["ticker", channel]}]
    tree = make_tree(tmp_path, "ws://127.0.0.1:1/trade-api/ws/v2", subscriptions=subscriptions)
    problems = [str(p) for p in validate_tree(read_directory(tree), dt.date(2026, 6, 1))]
    assert any(
        "environments/test.yaml: subscriptions[0].channels" in p and reason in p for p in problems
    ), problems
