"""The Kalshi subscription rules as a pure state machine: commands out, answers in.

Time is an injected clock, so back-offs, answer deadlines, snapshot deadlines and
the death window are tested exactly, on any machine. The same machine runs against
the simulator over real sockets in test_connector.py.
"""

from __future__ import annotations

import json
from itertools import count
from typing import Any

import pytest

from ssmd_collector.connectors import ConnectorMetrics, SubscribeRejected
from ssmd_collector.connectors.kalshi.sequence import Sequences, Verdict
from ssmd_collector.connectors.kalshi.subscriptions import (
    Command,
    Subscriptions,
    wanted_channels,
)
from ssmd_collector.metadata import Subscription

TICKERS = tuple(f"KXT-26JAN01-T{i}" for i in range(600))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Events:
    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def record(self, event: str, ns: int | None = None, /, **fields: object) -> None:
        self.lines.append({"event": event, **fields})

    def kinds(self) -> list[str]:
        return [line["event"] for line in self.lines]


def machine(
    wanted: dict[str, tuple[str, ...] | None], **kw: Any
) -> tuple[Subscriptions, Clock, Events, ConnectorMetrics]:
    clock, events, metrics = Clock(), Events(), ConnectorMetrics()
    options: dict[str, Any] = {
        "batch_size": 256,
        "answer_timeout": 10.0,
        "snapshot_timeout": 5.0,
        "max_deaths": 2,
        "death_window": 60.0,
    }
    subs = Subscriptions(
        wanted,
        **(options | kw),
        events=events,
        metrics=metrics,
        ids=count(1),
        monotonic=clock,
    )
    return subs, clock, events, metrics


def subscribed(command: Command, sid: int) -> dict[str, Any]:
    return {"id": command.id, "type": "subscribed", "msg": {"channel": command.channel, "sid": sid}}


def ok(command: Command, sid: int) -> dict[str, Any]:
    return {"id": command.id, "sid": sid, "seq": 1, "type": "ok", "msg": {"market_tickers": []}}


def error(code: int, *, cmd: Command | None = None, sid: int | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "msg": {"code": code, "msg": f"error {code}"}}
    if cmd is not None:
        frame["id"] = cmd.id
    if sid is not None:
        frame["sid"] = sid
    return frame


def go_live(subs: Subscriptions, first: Command, sid: int) -> list[Command]:
    """Answer a subscribe and every add_markets after it; the add_markets sent."""
    added = []
    pending = subs.answer(subscribed(first, sid), 0)
    while pending:
        (command,) = pending
        added.append(command)
        pending = subs.answer(ok(command, sid), 0)
    return added


def test_one_subscribe_per_channel_then_add_markets_batches() -> None:
    subs, _, events, metrics = machine({"orderbook_delta": TICKERS, "ticker": None})
    book, ticker = subs.start()
    assert json.loads(book.encode()) == {
        "id": 1,
        "cmd": "subscribe",
        "params": {"channels": ["orderbook_delta"], "market_tickers": list(TICKERS[:256])},
    }
    assert json.loads(ticker.encode())["params"] == {"channels": ["ticker"]}
    assert subs.answer(subscribed(ticker, 2), 0) == []
    assert not subs.live
    added = go_live(subs, book, 1)
    assert [c.params for c in added] == [
        {"sids": [1], "action": "add_markets", "market_tickers": list(TICKERS[256:512])},
        {"sids": [1], "action": "add_markets", "market_tickers": list(TICKERS[512:])},
    ]
    assert subs.live
    assert metrics.markets == {"orderbook_delta": 600}
    assert metrics.subscriptions_live == metrics.subscriptions_wanted == 2
    assert events.lines == [
        {"event": "subscribed", "channel": "ticker", "sid": 2},
        {"event": "subscribed", "channel": "orderbook_delta", "sid": 1, "markets": 600},
    ]


def test_channels_sharing_a_market_list_share_one_subscribe() -> None:
    subs, _, _, _ = machine({"ticker": None, "trade": None, "orderbook_delta": TICKERS[:3]})
    both, book = subs.start()
    assert both.params == {"channels": ["ticker", "trade"]}
    assert book.params["channels"] == ["orderbook_delta"]
    assert subs.answer(subscribed(both, 1) | {"msg": {"channel": "trade", "sid": 1}}, 0) == []
    assert subs.answer(subscribed(both, 2) | {"msg": {"channel": "ticker", "sid": 2}}, 0) == []
    subs.answer(subscribed(book, 3), 0)
    assert subs.live
    assert (subs.channel_of(1), subs.channel_of(2), subs.channel_of(3)) == (
        "trade",
        "ticker",
        "orderbook_delta",
    )


def test_the_older_bare_subscribed_answer_is_understood() -> None:
    subs, _, _, _ = machine({"trade": None})
    (command,) = subs.start()
    assert subs.answer({"type": "subscribed", "id": command.id, "sid": 4}, 0) == []
    assert subs.live
    assert subs.channel_of(4) == "trade"


def test_an_error_answer_names_the_command_channel_and_code() -> None:
    subs, _, events, metrics = machine({"orderbook_delta": TICKERS})
    (first,) = subs.start()
    (adding,) = subs.answer(subscribed(first, 1), 0)
    with pytest.raises(SubscribeRejected, match=r"update_subscription add_markets of "
                       r"orderbook_delta refused by the exchange: code 11"):  # fmt: skip
        subs.answer(error(11, cmd=adding), 0)
    assert metrics.exchange_errors[11] == 1
    assert events.kinds()[-1] == "command_rejected"


def test_the_market_limit_is_reported_never_dropped_silently() -> None:
    subs, _, events, metrics = machine({"orderbook_delta": TICKERS})
    (first,) = subs.start()
    (adding,) = subs.answer(subscribed(first, 1), 0)
    assert subs.answer(error(26, cmd=adding), 0) == []
    assert subs.live  # what the exchange took is recorded; the rest is reported
    assert metrics.overflow == {"orderbook_delta": 344}
    assert metrics.markets == {"orderbook_delta": 256}
    limit = next(line for line in events.lines if line["event"] == "market_limit")
    assert limit["markets_subscribed"] == 256
    assert limit["markets_refused"] == 344


def test_too_many_requests_is_retried_after_a_growing_back_off() -> None:
    subs, clock, events, _ = machine({"orderbook_delta": TICKERS})
    (first,) = subs.start()
    (adding,) = subs.answer(subscribed(first, 1), 0)
    first_id = adding.id
    assert subs.answer(error(27, cmd=adding), 0) == []
    assert subs.due() == []  # not yet: the back-off runs on the injected clock
    clock.now += 0.49
    assert subs.due() == []
    clock.now += 0.02
    (retry,) = subs.due()
    assert retry.params == adding.params
    assert retry.id != first_id
    assert subs.answer(error(27, cmd=retry), 0) == []
    clock.now += 0.99
    assert subs.due() == []  # the second wait is twice as long
    clock.now += 0.02
    assert len(subs.due()) == 1
    assert events.kinds().count("command_throttled") == 2


def test_an_unanswered_command_ends_the_run_after_the_answer_timeout() -> None:
    subs, clock, _, _ = machine({"trade": None})
    subs.start()
    clock.now += 10.0
    assert subs.due() == []
    clock.now += 0.01
    with pytest.raises(SubscribeRejected, match=r"no answer within 10s to subscribe of trade"):
        subs.due()


@pytest.mark.parametrize("code", [10, 25, 17])
def test_a_terminal_error_on_a_sid_subscribes_the_channel_again(code: int) -> None:
    subs, _, events, metrics = machine({"orderbook_delta": TICKERS[:10], "trade": None})
    book, trade = subs.start()
    subs.answer(subscribed(book, 1), 0)
    subs.answer(subscribed(trade, 2), 0)
    assert subs.live
    (again,) = subs.answer(error(code, sid=1), 0)
    assert not subs.live
    assert metrics.subscriptions_live == 1
    assert again.params == {"channels": ["orderbook_delta"], "market_tickers": list(TICKERS[:10])}
    assert subs.answer(subscribed(again, 3), 0) == []
    assert subs.live
    assert subs.channel_of(3) == "orderbook_delta"
    assert subs.channel_of(1) == "unknown"
    assert metrics.deaths == {"orderbook_delta": 1}
    assert events.lines[-2:] == [
        {"event": "subscription_died", "channel": "orderbook_delta", "sid": 1, "code": code,
         "msg": f"error {code}"},
        {"event": "subscription_restored", "old_sid": 1, "channel": "orderbook_delta", "sid": 3,
         "markets": 10},
    ]  # fmt: skip


def test_too_many_deaths_within_the_window_end_the_run() -> None:
    subs, clock, _, _ = machine({"trade": None}, max_deaths=2, death_window=60.0)
    (command,) = subs.start()
    sid = 1
    subs.answer(subscribed(command, sid), 0)
    for _ in range(2):
        (command,) = subs.answer(error(25, sid=sid), 0)
        sid += 1
        subs.answer(subscribed(command, sid), 0)
        clock.now += 20
    clock.now += 30  # the first death is now 70 s old: out of the window
    (command,) = subs.answer(error(25, sid=sid), 0)
    sid += 1
    subs.answer(subscribed(command, sid), 0)
    with pytest.raises(SubscribeRejected, match=r"3 times within 60s \(limit 2\)"):
        subs.answer(error(25, sid=sid), 0)


def test_an_error_without_a_known_command_or_sid_is_counted_and_recorded() -> None:
    subs, _, events, metrics = machine({"trade": None})
    (command,) = subs.start()
    subs.answer(subscribed(command, 1), 0)
    assert subs.answer(error(18, sid=99), 0) == []
    assert subs.answer(error(29), 0) == []  # a code nobody documented yet
    assert subs.live
    assert metrics.exchange_errors == {18: 1, 29: 1}
    assert [line["code"] for line in events.lines if line["event"] == "exchange_error"] == [18, 29]


def test_an_order_book_gap_asks_for_snapshots_and_completes_when_all_arrive() -> None:
    subs, _, events, metrics = machine({"orderbook_delta": TICKERS[:300]})
    (first,) = subs.start()
    go_live(subs, first, 1)
    requests = subs.gap(1, 0)
    assert [c.params["action"] for c in requests] == ["get_snapshot", "get_snapshot"]
    assert [t for c in requests for t in c.params["market_tickers"]] == list(TICKERS[:300])
    assert subs.gap(1, 0) == []  # one recovery at a time per subscription
    for ticker in TICKERS[:300]:
        subs.snapshot(1, ticker, 0)
    assert metrics.recoveries == {
        ("orderbook_delta", "requested"): 1,
        ("orderbook_delta", "completed"): 1,
    }
    assert events.kinds()[-2:] == ["recovery_requested", "recovery_completed"]
    assert subs.due() == []  # get_snapshot needs no ok: nothing is left waiting


def test_snapshots_that_do_not_come_lead_to_a_resubscribe() -> None:
    subs, clock, events, metrics = machine({"orderbook_delta": TICKERS[:5]})
    (first,) = subs.start()
    go_live(subs, first, 1)
    subs.gap(1, 0)
    subs.snapshot(1, TICKERS[0], 0)
    clock.now += 5.01
    (unsubscribe,) = subs.due()
    assert json.loads(unsubscribe.encode())["cmd"] == "unsubscribe"
    assert unsubscribe.params == {"sids": [1]}
    assert not subs.live
    (again,) = subs.answer({"id": unsubscribe.id, "sid": 1, "seq": 9, "type": "unsubscribed"}, 0)
    assert again.params["channels"] == ["orderbook_delta"]
    subs.answer(subscribed(again, 2), 0)
    assert subs.live
    assert metrics.recoveries[("orderbook_delta", "resubscribed")] == 1
    assert "subscription_restored" in events.kinds()


def test_gaps_on_other_channels_are_only_recorded() -> None:
    subs, _, _, _ = machine({"trade": None})
    (command,) = subs.start()
    subs.answer(subscribed(command, 1), 0)
    assert subs.gap(1, 0) == []


def test_wanted_channels_merge_entries_per_channel() -> None:
    wanted = wanted_channels(
        [
            Subscription(("ticker", "trade")),
            Subscription(("orderbook_delta",), ("A", "B")),
            Subscription(("orderbook_delta",), ("B", "C")),
        ]
    )
    assert wanted == {"ticker": None, "trade": None, "orderbook_delta": ("A", "B", "C")}


@pytest.mark.parametrize(
    ("seqs", "verdicts"),
    [
        pytest.param([5, 6, 7], ["in_order"] * 3, id="any-start-then-contiguous"),
        pytest.param([1, 2, 5, 6], ["in_order", "in_order", "gap", "in_order"], id="gap"),
        pytest.param([1, 2, 2, 3], ["in_order", "in_order", "duplicate", "in_order"], id="dup"),
        pytest.param([1, 3, 2, 4], ["in_order", "gap", "duplicate", "in_order"], id="late"),
    ],
)
def test_sequences(seqs: list[int], verdicts: list[str]) -> None:
    sequences = Sequences()
    assert [sequences.check(7, s)[0].value for s in seqs] == verdicts
    sequences.forget(7)
    assert sequences.check(7, 100) == (Verdict.IN_ORDER, 99)  # a new sid is a new sequence
