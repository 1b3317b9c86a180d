"""The exchange simulator, seen from real WebSocket clients on loopback.

Each test pins down one protocol fact of KALSHI.md the collector relies on: frame
shapes per channel (fields, types, decimals), answers per command, errors per code,
per-sid sequences over data and control frames, determinism per seed, heartbeats,
endings, signed handshakes (RSA-PSS and Ed25519), wss, and the fault injection tests
build on. Where a client library would hide what is on the wire (pings, close frame vs
dropped TCP), the tests use :class:`RawClient`, built on websockets' Sans-I/O client.

Connections are signed with an Ed25519 key unless a test is about something else;
the timestamp window is off except in the one test that proves it works.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from deadlines import deadline, wait_until, within
from tls_material import TLS
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosedError, InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.uri import parse_uri

from ssmd_collector.connectors.kalshi import signing
from ssmd_collector.sim import (
    Ending,
    ErrorCode,
    SecondSubscribe,
    SimConfig,
    SimServer,
    mve_universe,
    universe,
)

MARKETS = universe(20)
SUB_CENT = MARKETS[3]
"""A deci_cent market (0.001 ticks): every 4th market of the universe is one."""
KEY_ID = "key-1"
ED_KEY = ed25519.Ed25519PrivateKey.generate()
ED_PUBLIC = signing.public_pem(ED_KEY)


def cmd(cmd_id: int, name: str, **params: Any) -> str:
    return json.dumps({"id": cmd_id, "cmd": name, "params": params})


def compact(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


def error(cmd_id: int, code: int, text: str) -> str:
    """An error answer, byte for byte as the exchange sends it."""
    return f'{{"id":{cmd_id},"type":"error","msg":{{"code":{code},"msg":"{text}"}}}}'


def sim(**overrides: Any) -> SimServer:
    """A sim that requires handshakes signed by ``ED_KEY`` (no skew check)."""
    settings: dict[str, Any] = {
        "port": 0,
        "heartbeat": 0,
        "rate": 1000.0,
        "public_key_pem": ED_PUBLIC,
        "api_key_id": KEY_ID,
        "timestamp_window": None,
    }
    return SimServer(SimConfig(**(settings | overrides)))


def signed(key: signing.PrivateKey = ED_KEY, **kwargs: Any) -> dict[str, str]:
    return signing.auth_headers(KEY_ID, key, **kwargs)


@asynccontextmanager
async def client(
    url: str, headers: dict[str, str] | None = None, **kwargs: Any
) -> AsyncIterator[ClientConnection]:
    """A websockets client, signed with ``ED_KEY`` unless ``headers`` are given."""
    async with connect(
        url,
        ping_interval=None,
        compression=None,
        additional_headers=signed() if headers is None else headers,
        **kwargs,
    ) as ws:
        yield ws


async def recv(ws: ClientConnection, timeout: float = 10) -> str:
    async with asyncio.timeout(deadline(timeout)):
        message = await ws.recv()
    assert isinstance(message, str)
    return message


async def answer(ws: ClientConnection, cmd_id: int | None = None) -> str:
    """The next frame that is a command answer (skipping data frames)."""
    while True:
        frame = await recv(ws)
        parsed = json.loads(frame)
        if parsed.get("type") in ("subscribed", "unsubscribed", "ok", "error") and (
            cmd_id is None or parsed.get("id") == cmd_id
        ):
            return frame


async def until(
    ws: ClientConnection, done: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    """Frames up to and including the first for which ``done`` holds."""
    frames: list[dict[str, Any]] = []
    while not frames or not done(frames[-1]):
        frames.append(json.loads(await recv(ws)))
    return frames


async def drain_until_closed(ws: ClientConnection) -> list[str]:
    frames: list[str] = []
    async with asyncio.timeout(deadline(30)):
        async for message in ws:
            assert isinstance(message, str)
            frames.append(message)
    return frames


def data_only(frames: list[str]) -> list[str]:
    return [f for f in frames if "id" not in json.loads(f)]


class RawClient:
    """A WebSocket client that shows every frame, pings and close frames included."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, url: str):
        self.reader, self.writer = reader, writer
        self.protocol = ClientProtocol(parse_uri(url))
        self.events: deque[Frame | Response] = deque()
        self.eof = False

    @classmethod
    async def open(cls, url: str) -> RawClient:
        uri = parse_uri(url)
        reader, writer = await asyncio.open_connection(uri.host, uri.port)
        raw = cls(reader, writer, url)
        request = raw.protocol.connect()
        for name, value in signed().items():
            request.headers[name] = value
        raw.protocol.send_request(request)
        raw._flush()
        response = await raw.next(timeout=10)
        assert isinstance(response, Response)
        assert response.status_code == 101
        return raw

    def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.writer.write(data)

    async def next(self, timeout: float = 3) -> Frame | Response | None:
        """The next event, or None at end of stream (TCP closed)."""
        while not self.events:
            if self.eof:
                return None
            async with asyncio.timeout(timeout):
                data = await self.reader.read(2**16)
            if data:
                self.protocol.receive_data(data)
            else:
                self.eof = True
                self.protocol.receive_eof()
            for event in self.protocol.events_received():
                assert not isinstance(event, Request)  # a client only receives responses
                self.events.append(event)
            self._flush()  # pongs and close replies
        return self.events.popleft()

    async def frame(self, timeout: float = 10) -> Frame | None:
        event = await self.next(deadline(timeout))
        assert not isinstance(event, Response)
        return event

    async def until_quiet(self, quiet: float) -> list[Frame | None]:
        """Frames until ``quiet`` seconds pass without one (None last if TCP closed)."""
        frames: list[Frame | None] = []
        while not frames or frames[-1] is not None:
            try:
                event = await self.next(timeout=quiet)
            except TimeoutError:
                break
            assert not isinstance(event, Response)
            frames.append(event)
        return frames

    def send(self, text: str) -> None:
        self.protocol.send_text(text.encode())
        self._flush()

    def close(self) -> None:
        self.writer.close()


async def run_bounded(url: str, command: str, **kwargs: Any) -> list[str]:
    """Every frame of a connection that sends one command and ends with CLOSE."""
    async with client(url, **kwargs) as ws:
        await ws.send(command)
        return await drain_until_closed(ws)


# -- commands and answers ----------------------------------------------------------


async def test_subscribe_answers_once_per_channel_with_new_sids_then_streams() -> None:
    async with sim() as server, client(server.url) as ws:
        await ws.send(cmd(1, "subscribe", channels=["ticker", "trade"]))
        assert await recv(ws) == '{"id":1,"type":"subscribed","msg":{"channel":"ticker","sid":1}}'
        assert await recv(ws) == '{"id":1,"type":"subscribed","msg":{"channel":"trade","sid":2}}'
        await ws.send(cmd(2, "subscribe", channels=["market_lifecycle_v2"]))
        assert await answer(ws, 2) == (
            '{"id":2,"type":"subscribed","msg":{"channel":"market_lifecycle_v2","sid":3}}'
        )
        await ws.send(json.dumps({"id": 3, "cmd": "list_subscriptions"}))
        assert await answer(ws, 3) == (
            '{"id":3,"type":"ok","msg":[{"channel":"ticker","sid":1},'
            '{"channel":"trade","sid":2},{"channel":"market_lifecycle_v2","sid":3}]}'
        )
        data = json.loads(await recv(ws))
        assert data["type"] in ("ticker", "trade", "market_lifecycle_v2", "event_lifecycle",
                                "event_fee_update")  # fmt: skip
        session = await server.wait_session()
        assert session.commands[0] == json.loads(cmd(1, "subscribe", channels=["ticker", "trade"]))
        assert session.subscriptions() == {1: "ticker", 2: "trade", 3: "market_lifecycle_v2"}
        assert session.sid_of("trade") == 2


async def test_nothing_streams_before_a_subscription() -> None:
    async with sim(rate=0) as server, client(server.url) as ws:
        await ws.send(json.dumps({"id": 1, "cmd": "list_subscriptions"}))
        # Answers and data share one ordered stream: the answer comes first and alone.
        assert await recv(ws) == '{"id":1,"type":"ok","msg":[]}'
        assert (await server.wait_session()).data_sent == 0


ERROR_CASES = [
    ("not json", None, 1, "Unable to process message"),
    ("[1, 2]", None, 1, "Unable to process message"),
    ('{"id": "one", "cmd": "list_subscriptions"}', None, 1, "Unable to process message"),
    ('{"id": 1, "cmd": "subscribe"}', 1, 2, "Params required"),
    (cmd(2, "subscribe"), 2, 3, "Channels required"),
    (cmd(3, "subscribe", channels=[]), 3, 3, "Channels required"),
    (cmd(4, "unsubscribe"), 4, 4, "Subscription IDs required"),
    (cmd(5, "frobnicate"), 5, 5, "Unknown command"),
    ('{"id": 0, "cmd": "frobnicate"}', None, 5, "Unknown command"),  # id 0 means no id
    (cmd(6, "unsubscribe", sids=[42]), 6, 7, "Unknown subscription ID"),
    (cmd(7, "subscribe", channels=["nope"]), 7, 8, "Unknown channel name"),
    (cmd(8, "subscribe", channels=["ticker_v2"]), 8, 8, "Unknown channel name"),
    (cmd(9, "subscribe", channels=["multivariate"]), 9, 8, "Unknown channel name"),
    (cmd(10, "subscribe", channels=["ticker"], market_tickers=MARKETS[0]), 10, 11,
     "Invalid parameter"),
    (cmd(11, "subscribe", channels=["ticker"], market_ticker="A", market_tickers=["B"]), 11,
     11, "Invalid parameter"),
    (cmd(12, "update_subscription", sids=[1, 2], action="add_markets", market_ticker="A"), 12,
     12, "Exactly one subscription ID is required"),
    (cmd(13, "update_subscription", sid=1, action="replace_markets"), 13, 13,
     "Unsupported action"),
    (cmd(14, "subscribe", channels=["orderbook_delta"]), 14, 14, "Market Ticker required"),
    (cmd(15, "update_subscription", sid=1, market_ticker="A"), 15, 15, "Action required"),
    (cmd(16, "update_subscription", sid=9, action="add_markets", market_ticker="A"), 16, 7,
     "Unknown subscription ID"),
    (cmd(17, "subscribe", channels=["communications"], shard_factor=0), 17, 19,
     "shard_factor must be > 0"),
    (cmd(18, "subscribe", channels=["communications"], shard_key=1), 18, 20,
     "shard_factor is required when shard_key is set"),
    (cmd(19, "subscribe", channels=["communications"], shard_factor=2, shard_key=2), 19, 21,
     "shard_key must be >= 0 and < shard_factor"),
    (cmd(20, "subscribe", channels=["communications"], shard_factor=101), 20, 22,
     "shard_factor must be <= 100"),
    (cmd(21, "subscribe", channels=["cfbenchmarks_value"]), 21, 24, "Index IDs required"),
    (cmd(22, "subscribe", channels=["pyth_value"]), 22, 28, "Underlying tickers required"),
]  # fmt: skip


@pytest.mark.parametrize(("command", "cmd_id", "code", "text"), ERROR_CASES)
async def test_error_answers_have_kalshis_codes_and_shape(
    command: str, cmd_id: int | None, code: int, text: str
) -> None:
    expected: dict[str, Any] = {"type": "error", "msg": {"code": code, "msg": text}}
    if cmd_id is not None:
        expected = {"id": cmd_id, **expected}
    assert ErrorCode(code).text == text
    async with sim() as server, client(server.url) as ws:
        await ws.send(command)
        assert await recv(ws) == compact(expected)


def test_error_codes_1_to_28_are_named_and_any_other_int_is_accepted() -> None:
    assert [c.value for c in ErrorCode] == list(range(1, 29))
    assert ErrorCode(25).name == "BUFFER_OVERFLOW"
    assert ErrorCode(26).text == "Subscription market limit exceeded"
    later = ErrorCode(29)  # a code Kalshi added after this enum was written
    assert (later.name, later.text, later == 29) == ("UNKNOWN_29", "Error 29", True)
    with pytest.raises(ValueError, match="not a valid ErrorCode"):
        ErrorCode("25")


async def test_a_malformed_ticker_is_invalid_parameter_naming_it_never_retired_16() -> None:
    async with sim() as server, client(server.url) as ws:
        await ws.send(cmd(1, "subscribe", channels=["ticker"], market_tickers=["ok-not"]))
        assert await recv(ws) == (
            '{"id":1,"type":"error","msg":{"code":11,"msg":"Invalid parameter",'
            '"market_ticker":"ok-not"}}'
        )
        await ws.send(b'{"id":2,"cmd":"list_subscriptions"}')
        assert (
            await recv(ws) == '{"type":"error","msg":{"code":1,"msg":"Unable to process message"}}'
        )
        session = await server.wait_session()
        assert session.received[1] == b'{"id":2,"cmd":"list_subscriptions"}'


async def test_index_channels_are_accepted_quietly_with_their_ids() -> None:
    async with sim() as server, client(server.url) as ws:
        await ws.send(cmd(1, "subscribe", channels=["cfbenchmarks_value"], index_ids=["BRTI"]))
        await ws.send(cmd(2, "subscribe", channels=["pyth_value"], underlying_tickers=["all"]))
        await ws.send(json.dumps({"id": 3, "cmd": "list_subscriptions"}))
        assert [await recv(ws) for _ in range(3)] == [
            '{"id":1,"type":"subscribed","msg":{"channel":"cfbenchmarks_value","sid":1}}',
            '{"id":2,"type":"subscribed","msg":{"channel":"pyth_value","sid":2}}',
            '{"id":3,"type":"ok","msg":[{"channel":"cfbenchmarks_value","sid":1},'
            '{"channel":"pyth_value","sid":2}]}',
        ]
        assert (await server.wait_session()).data_sent == 0


async def test_a_failing_channel_does_not_stop_the_others_in_the_same_command() -> None:
    async with sim() as server, client(server.url) as ws:
        await ws.send(cmd(1, "subscribe", channels=["ticker", "ticker_v2", "orderbook_delta"]))
        assert await recv(ws) == '{"id":1,"type":"subscribed","msg":{"channel":"ticker","sid":1}}'
        assert await recv(ws) == error(1, 8, "Unknown channel name")
        assert await recv(ws) == error(1, 14, "Market Ticker required")
        assert json.loads(await recv(ws))["sid"] == 1


@pytest.mark.parametrize(
    ("policy", "second_answer"),
    [
        (SecondSubscribe.IGNORE, []),
        (SecondSubscribe.ERROR, [error(2, 6, "Already subscribed")]),
    ],
    ids=["ignore", "error-6"],
)
async def test_a_second_subscribe_of_a_channel_follows_the_configured_policy(
    policy: SecondSubscribe, second_answer: list[str]
) -> None:
    async with sim(second_subscribe=policy, rate=0) as server, client(server.url) as ws:
        await ws.send(cmd(1, "subscribe", channels=["fill"]))
        await ws.send(cmd(2, "subscribe", channels=["fill", "user_orders"], market_ticker="X-1"))
        await ws.send(json.dumps({"id": 3, "cmd": "list_subscriptions"}))
        # fill and user_orders produce no data: every frame here is an answer, in order.
        answers = [await recv(ws) for _ in range(3 + len(second_answer))]
    assert answers == [
        '{"id":1,"type":"subscribed","msg":{"channel":"fill","sid":1}}',
        *second_answer,
        '{"id":2,"type":"subscribed","msg":{"channel":"user_orders","sid":2}}',
        '{"id":3,"type":"ok","msg":[{"channel":"fill","sid":1},{"channel":"user_orders","sid":2}]}',
    ]


async def test_the_default_policy_is_no_answer_as_on_kalshi_today() -> None:
    assert SimConfig().second_subscribe is SecondSubscribe.IGNORE


async def test_unsubscribe_answers_per_sid_with_seq_and_stops_that_stream() -> None:
    async with sim(rate=2000.0) as server, client(server.url) as ws:
        await ws.send(cmd(1, "subscribe", channels=["ticker", "trade"]))
        before = await until(ws, lambda f: f.get("type") == "trade" and f["seq"] >= 5)
        await ws.send(cmd(3, "unsubscribe", sids=[2, 7]))
        after = await until(ws, lambda f: f.get("id") == 3)
        frame = after.pop()
        trades = [f["seq"] for f in before + after if f.get("type") == "trade"]
        assert frame["type"] == "unsubscribed"
        assert list(frame) == ["type", "id", "sid", "seq"]
        assert frame["sid"] == 2
        assert frame["seq"] == trades[-1] + 1  # the answer continues the sid's sequence
        assert await recv(ws) == error(3, 7, "Unknown subscription ID")
        for _ in range(50):
            assert json.loads(await recv(ws))["sid"] == 1
        await ws.send(json.dumps({"id": 4, "cmd": "list_subscriptions"}))
        assert await answer(ws, 4) == '{"id":4,"type":"ok","msg":[{"channel":"ticker","sid":1}]}'


async def test_update_subscription_answers_ok_and_snapshots_added_markets() -> None:
    a, b = MARKETS[0], MARKETS[1]
    async with sim() as server, client(server.url) as ws:
        await ws.send(cmd(1, "subscribe", channels=["orderbook_delta"], market_ticker=a))
        await ws.send(
            cmd(2, "update_subscription", sids=[1], action="add_markets", market_tickers=[b])
        )
        frames = await until(ws, lambda f: f.get("id") == 2 and f["type"] == "ok")
        ok = frames[-1]
        assert compact(ok) == (
            f'{{"id":2,"sid":1,"seq":{ok["seq"]},"type":"ok","msg":{{"market_tickers":["{a}","{b}"]}}}}'
        )
        while len(frames) < 60:
            frames.append(json.loads(await recv(ws)))
        await ws.send(
            cmd(3, "update_subscription", sid=1, action="delete_markets", market_ticker=a)
        )
        frames += await until(ws, lambda f: f.get("id") == 3)
        assert frames[-1]["msg"] == {"market_tickers": [b]}
        for _ in range(40):
            frames.append(json.loads(await recv(ws)))
    seqs = [f["seq"] for f in frames[1:]]  # frames[0] is the subscribed answer
    assert seqs == list(range(1, len(seqs) + 1))  # ok answers included, no gap
    first_b = next(i for i, f in enumerate(frames) if f.get("msg", {}).get("market_ticker") == b)
    assert frames[first_b]["type"] == "orderbook_snapshot"
    deleted_at = next(i for i, f in enumerate(frames) if f.get("id") == 3)
    assert all(f["msg"]["market_ticker"] == b for f in frames[deleted_at + 1 :])


async def test_skip_ticker_ack_leaves_the_market_list_out_of_ok() -> None:
    a, b = MARKETS[0], MARKETS[1]
    async with sim(rate=0) as server, client(server.url) as ws:
        await ws.send(cmd(1, "subscribe", channels=["fill"], market_ticker=a, skip_ticker_ack=True))
        await ws.send(cmd(2, "update_subscription", sid=1, action="add_markets", market_ticker=b))
        assert await answer(ws, 2) == '{"id":2,"sid":1,"seq":1,"type":"ok","msg":{}}'


async def test_update_subscription_refuses_channels_without_market_lists() -> None:
    async with sim() as server, client(server.url) as ws:
        await ws.send(cmd(1, "subscribe", channels=["ticker", "market_lifecycle_v2"]))
        await ws.send(cmd(2, "update_subscription", sid=1, action="add_markets", market_ticker="X"))
        assert await answer(ws, 2) == error(2, 11, "Invalid parameter")
        await ws.send(cmd(3, "update_subscription", sid=2, action="add_markets", market_ticker="X"))
        assert await answer(ws, 3) == error(3, 13, "Unsupported action")
        await ws.send(cmd(4, "update_subscription", sid=1, action="add_markets"))
        assert await answer(ws, 4) == error(4, 14, "Market Ticker required")


async def test_get_snapshot_sends_one_snapshot_per_market_with_the_id_on_the_sid() -> None:
    a, b = MARKETS[0], MARKETS[1]
    async with sim(rate=500.0) as server, client(server.url) as ws:
        await ws.send(cmd(1, "subscribe", channels=["orderbook_delta"], market_tickers=[a, b]))
        frames = await until(ws, lambda f: f.get("type") == "orderbook_delta" and f["seq"] > 10)
        command = cmd(2, "update_subscription", sids=[1], action="get_snapshot",
                      market_tickers=[b, a])  # fmt: skip
        await ws.send(command)
        frames += await until(ws, lambda f: f.get("id") == 2 and f["msg"]["market_ticker"] == a)
        frames += [json.loads(await recv(ws)) for _ in range(30)]
        session = await server.wait_session()
    answered = [f for f in frames if f.get("id") == 2]
    assert [(f["type"], f["sid"], f["msg"]["market_ticker"]) for f in answered] == [
        ("orderbook_snapshot", 1, b),
        ("orderbook_snapshot", 1, a),
    ]
    assert list(answered[0]) == ["type", "sid", "seq", "id", "msg"]
    seqs = [f["seq"] for f in frames[1:]]
    assert seqs == list(range(1, len(seqs) + 1))  # one sequence: deltas, snapshots, deltas
    assert session.subscriptions() == {1: "orderbook_delta"}  # the subscription is unchanged
    assert frames[-1]["type"] == "orderbook_delta"
    assert not any(f.get("type") == "ok" for f in frames)  # no ok follows the snapshots


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"sid": 2, "market_tickers": [MARKETS[0]]},
         '{"id":3,"sid":2,"seq":1,"type":"error","msg":{"code":13,"msg":"Unsupported action"}}'),
        ({"sid": 1, "market_ticker": MARKETS[0]}, error(3, 11, "Invalid parameter")),
        ({"sid": 1}, error(3, 14, "Market Ticker required")),
        ({"sid": 1, "market_tickers": [MARKETS[5]]},
         '{"id":3,"sid":1,"seq":2,"type":"error","msg":{"code":11,"msg":"Invalid parameter",'
         f'"market_ticker":"{MARKETS[5]}"}}}}'),
    ],
    ids=["not-orderbook", "single-ticker-form", "no-tickers", "market-not-on-sid"],
)  # fmt: skip
async def test_get_snapshot_refusals(params: dict[str, Any], expected: str) -> None:
    async with sim(rate=0, messages=1, ending=Ending.NONE) as server, client(server.url) as ws:
        await ws.send(cmd(1, "subscribe", channels=["orderbook_delta"], market_ticker=MARKETS[0]))
        await ws.send(cmd(2, "subscribe", channels=["fill"]))
        await until(ws, lambda f: f.get("id") == 2)
        await ws.send(cmd(3, "update_subscription", action="get_snapshot", **params))
        assert await answer(ws, 3) == expected


# -- data: field sets per channel --------------------------------------------------------

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
DOLLARS = re.compile(r"^[01]\.\d{4}$")
"""Kalshi's WS prices: dollar strings with exactly 4 decimals."""
FP = re.compile(r"^-?\d+\.\d{2}$")
"""Counts: strings with exactly 2 decimals."""
RFC3339_S = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
RFC3339_US = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")

Check = Callable[[object], bool]


def _is(kind: type) -> Check:
    return lambda v: isinstance(v, kind) and not (kind is int and isinstance(v, bool))


def _match(pattern: re.Pattern[str]) -> Check:
    return lambda v: isinstance(v, str) and pattern.match(v) is not None


def _levels(v: object) -> bool:
    return (
        isinstance(v, list)
        and bool(v)
        and all(
            isinstance(lv, list) and len(lv) == 2 and DOLLARS.match(lv[0]) and FP.match(lv[1])
            for lv in v
        )
    )


def _ranges(v: object) -> bool:
    return isinstance(v, list) and all(
        isinstance(r, dict) and set(r) == {"start", "end", "step"}
        and all(DOLLARS.match(x) for x in r.values())
        for r in v
    )  # fmt: skip


INT, STR, BOOL = _is(int), _is(str), _is(bool)
NUMBER: Check = lambda v: isinstance(v, int | float) and not isinstance(v, bool)  # noqa: E731
OPT_STR: Check = lambda v: v is None or isinstance(v, str)  # noqa: E731
OPT_NUMBER: Check = lambda v: v is None or NUMBER(v)  # noqa: E731
TICKER_STR, ID = _match(re.compile(r"^[A-Z0-9][A-Z0-9._-]*$")), _match(UUID)
PRICE, COUNT = _match(DOLLARS), _match(FP)

# Required fields and their checks, per frame type (KALSHI.md section 5). A frame must
# have exactly these keys in msg, plus the optional ones listed apart.
SHAPES: dict[str, dict[str, Check]] = {
    "ticker": {
        "market_id": ID, "market_ticker": TICKER_STR, "price_dollars": PRICE,
        "yes_bid_dollars": PRICE, "yes_ask_dollars": PRICE, "volume_fp": COUNT,
        "open_interest_fp": COUNT, "dollar_volume": INT, "dollar_open_interest": INT,
        "yes_bid_size_fp": COUNT, "yes_ask_size_fp": COUNT, "last_trade_size_fp": COUNT,
        "ts": INT, "ts_ms": INT, "time": _match(RFC3339_US),
    },
    "trade": {
        "trade_id": ID, "market_ticker": TICKER_STR, "yes_price_dollars": PRICE,
        "no_price_dollars": PRICE, "count_fp": COUNT,
        "taker_side": _match(re.compile("^(yes|no)$")),
        "taker_outcome_side": _match(re.compile("^(yes|no)$")),
        "taker_book_side": _match(re.compile("^(bid|ask)$")), "is_block_trade": BOOL,
        "ts": INT, "ts_ms": INT,
    },
    "orderbook_snapshot": {"market_ticker": TICKER_STR, "market_id": ID},
    "orderbook_delta": {
        "market_ticker": TICKER_STR, "market_id": ID, "price_dollars": PRICE, "delta_fp": COUNT,
        "side": _match(re.compile("^(yes|no)$")), "ts": _match(RFC3339_S), "ts_ms": INT,
    },
    "event_lifecycle": {
        "event_ticker": TICKER_STR, "exchange_index": INT, "title": STR, "subtitle": STR,
        "collateral_return_type": _match(re.compile("^(MECNET|DIRECNET|)$")),
        "series_ticker": TICKER_STR,
    },
    "event_fee_update": {
        "event_ticker": TICKER_STR, "fee_type_override": OPT_STR,
        "fee_multiplier_override": OPT_NUMBER,
    },
}  # fmt: skip
OPTIONAL: dict[str, dict[str, Check]] = {
    "orderbook_snapshot": {"yes_dollars_fp": _levels, "no_dollars_fp": _levels},
    "event_lifecycle": {"strike_date": INT, "strike_period": STR},
}
_METADATA = {
    "name": STR, "title": STR, "yes_sub_title": STR, "no_sub_title": STR,
    "rules_primary": STR, "rules_secondary": STR, "can_close_early": BOOL,
    "event_ticker": TICKER_STR, "expected_expiration_ts": INT,
}  # fmt: skip
_STRIKES = {
    "strike_type": STR,
    "floor_strike": NUMBER,
    "cap_strike": NUMBER,
    "custom_strike": _is(dict),
}
LIFECYCLE_EVENTS: dict[str, dict[str, Check]] = {
    "created": {
        "exchange_index": INT, "open_ts": INT, "close_ts": INT, "additional_metadata": _is(dict),
        "price_level_structure": _match(re.compile("^(linear_cent|deci_cent)$")),
        "price_ranges": _ranges,
    },
    "activated": {"is_deactivated": lambda v: v is False},
    "deactivated": {"is_deactivated": lambda v: v is True},
    "close_date_updated": {"close_ts": INT},
    "determined": {
        "determination_ts": INT, "result": _match(re.compile("^(yes|no)$")),
        "settlement_value": PRICE,
    },
    "settled": {"settled_ts": INT},
    "price_level_structure_updated": {
        "price_level_structure": _match(re.compile("^(linear_cent|deci_cent)$")),
        "price_ranges": _ranges,
    },
    "metadata_updated": {"yes_sub_title": STR},
}  # fmt: skip
MVE_EVENTS = {"created", "activated", "deactivated", "close_date_updated", "determined", "settled"}

REMOVED_FIELDS = {
    "price", "yes_bid", "yes_ask", "volume", "open_interest", "yes_price", "no_price", "count",
    "delta", "Clock", "yes", "no", "yes_dollars", "no_dollars",
}  # fmt: skip
"""Integer-cent and integer-count fields Kalshi removed on 2026-03-12, and ``Clock``."""


def shape_problems(frame: dict[str, Any]) -> list[str]:
    """How a data frame differs from KALSHI.md's field set for its type ([] if it does not)."""
    kind, msg = frame["type"], frame["msg"]
    required = dict(SHAPES.get(kind, {}))
    optional = dict(OPTIONAL.get(kind, {}))
    if kind in ("market_lifecycle_v2", "multivariate_market_lifecycle"):
        event = msg.get("event_type")
        allowed = MVE_EVENTS if kind == "multivariate_market_lifecycle" else LIFECYCLE_EVENTS
        if event not in allowed:
            return [f"{kind}: event_type {event!r} not one of {sorted(allowed)}"]
        required = {"market_ticker": TICKER_STR, "event_type": STR, **LIFECYCLE_EVENTS[event]}
        if event == "metadata_updated":
            optional = _STRIKES
    problems = [f"{kind}: missing {k}" for k in required if k not in msg]
    problems += [f"{kind}: unexpected {k}" for k in msg if k not in required | optional]
    checks = required | optional
    problems += [
        f"{kind}: bad {k}={v!r}" for k, v in msg.items() if k in checks and not checks[k](v)
    ]
    if kind == "market_lifecycle_v2" and msg.get("event_type") == "created":
        meta = msg["additional_metadata"]
        problems += [f"created: metadata lacks {k}" for k in _METADATA if k not in meta]
        problems += [f"created: metadata has {k}" for k in meta if k not in _METADATA | _STRIKES]
    return problems


ALL_CHANNELS = ["ticker", "trade", "orderbook_delta", "market_lifecycle_v2",
                "multivariate_market_lifecycle"]  # fmt: skip
ALL_FEEDS = cmd(1, "subscribe", channels=ALL_CHANNELS, market_tickers=MARKETS[:4])


@pytest.fixture(scope="module")
def long_run() -> list[str]:
    """6000 data frames of every data channel (ED_KEY-signed), seed 5."""

    async def record() -> list[str]:
        async with sim(rate=0, messages=6000, ending=Ending.CLOSE, seed=5) as server:
            return await run_bounded(server.url, ALL_FEEDS)

    return asyncio.run(record())


def test_every_data_frame_has_todays_field_set(long_run: list[str]) -> None:
    frames = [json.loads(f) for f in long_run[len(ALL_CHANNELS) :]]
    assert len(frames) == 6000
    kinds = {f["type"] for f in frames}
    assert kinds == {"ticker", "trade", "orderbook_snapshot", "orderbook_delta",
                     "market_lifecycle_v2", "event_lifecycle", "event_fee_update",
                     "multivariate_market_lifecycle"}  # fmt: skip
    problems = [p for f in frames for p in shape_problems(f)]
    assert problems == []
    assert not [f for f in frames if REMOVED_FIELDS & set(f["msg"])]
    for f in frames:
        envelope = ["type", "sid", "seq", "msg"] if "seq" in f else ["type", "sid", "msg"]
        assert list(f) == envelope
        assert ("seq" in f) == (f["type"] != "ticker")  # only ticker is unsequenced here
        if "ts_ms" in f["msg"] and isinstance(f["msg"]["ts"], int):
            assert f["msg"]["ts"] == f["msg"]["ts_ms"] // 1000


def test_every_lifecycle_event_type_occurs_on_the_right_channel(long_run: list[str]) -> None:
    frames = [json.loads(f) for f in long_run[len(ALL_CHANNELS) :]]
    v2 = [f for f in frames if f["sid"] == 4]
    mve = [f for f in frames if f["sid"] == 5]
    assert {f["msg"].get("event_type", f["type"]) for f in v2} == set(LIFECYCLE_EVENTS) | {
        "event_lifecycle",
        "event_fee_update",
    }
    assert {f["type"] for f in v2} == {"market_lifecycle_v2", "event_lifecycle",
                                        "event_fee_update"}  # fmt: skip
    assert {f["msg"].get("event_type", f["type"]) for f in mve} == MVE_EVENTS | {"event_lifecycle"}
    # KXMVE markets and events only on their own channel, never on market_lifecycle_v2.
    assert not [f for f in v2 if json.dumps(f["msg"]).find('"KXMVE') >= 0]
    assert all(f["msg"].get("market_ticker", f["msg"].get("event_ticker")).startswith("KXMVE")
               for f in mve)  # fmt: skip
    # Market events cover the whole universe, whatever the subscribe's market filter.
    listed = {f["msg"]["market_ticker"] for f in v2 if f["type"] == "market_lifecycle_v2"}
    assert listed - set(MARKETS[:4])
    assert set(mve_universe(20)) & {f["msg"].get("market_ticker") for f in mve}
    determined = [f["msg"] for f in v2 if f["msg"].get("event_type") == "determined"]
    assert {(d["result"], d["settlement_value"]) for d in determined} <= {
        ("yes", "1.0000"),
        ("no", "0.0000"),
    }


def test_sub_cent_markets_quote_in_tenths_of_a_cent(long_run: list[str]) -> None:
    """deci_cent markets quote in 0.001 steps; linear_cent ones in whole cents until a
    price_level_structure_updated moves them to deci_cent."""
    frames = [json.loads(f) for f in long_run[len(ALL_CHANNELS) :]]
    deci = {SUB_CENT}
    prices: dict[str, set[str]] = defaultdict(set)
    for f in frames:
        msg = f["msg"]
        if msg.get("event_type") == "price_level_structure_updated":
            deci.add(msg["market_ticker"])
        for key in ("price_dollars", "yes_bid_dollars", "yes_ask_dollars", "yes_price_dollars"):
            if key in msg:
                price = msg[key]
                prices[msg["market_ticker"]].add(price)
                assert price.endswith("0" if msg["market_ticker"] in deci else "00"), msg
    assert prices.keys() == set(MARKETS[:4])
    assert any(p[4] != "0" for p in prices[SUB_CENT])  # e.g. "0.4530"


def test_sequences_are_contiguous_per_sid_and_snapshots_come_first(long_run: list[str]) -> None:
    assert long_run[: len(ALL_CHANNELS)] == [
        f'{{"id":1,"type":"subscribed","msg":{{"channel":"{channel}","sid":{sid}}}}}'
        for sid, channel in enumerate(ALL_CHANNELS, start=1)
    ]
    data = [json.loads(f) for f in long_run[len(ALL_CHANNELS) :]]
    by_sid: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for frame in data:
        by_sid[frame["sid"]].append(frame)
    assert set(by_sid) == {1, 2, 3, 4, 5}
    for sid in (2, 3, 4, 5):
        assert [f["seq"] for f in by_sid[sid]] == list(range(1, len(by_sid[sid]) + 1)), sid
    book = by_sid[3]
    assert [f["type"] for f in book[:4]] == ["orderbook_snapshot"] * 4
    assert {f["msg"]["market_ticker"] for f in book[:4]} == set(MARKETS[:4])
    assert all(f["type"] == "orderbook_delta" for f in book[4:])
    filtered = by_sid[1] + by_sid[2] + book
    assert {f["msg"]["market_ticker"] for f in filtered} == set(MARKETS[:4])


def test_frames_are_compact_json_of_realistic_size(long_run: list[str]) -> None:
    sizes: dict[str, list[int]] = defaultdict(list)
    for frame in long_run:
        parsed = json.loads(frame)
        assert compact(parsed) == frame
        sizes[parsed["type"]].append(len(frame))
    for kind in ("ticker", "trade", "orderbook_delta"):
        assert 200 <= min(sizes[kind]) <= max(sizes[kind]) <= 600, kind
    assert 80 <= min(sizes["market_lifecycle_v2"]) <= max(sizes["market_lifecycle_v2"]) <= 1200
    assert max(sizes["orderbook_snapshot"]) <= 8000
    ticker = json.loads(next(f for f in long_run if '"type":"ticker"' in f))["msg"]
    assert float(ticker["yes_bid_dollars"]) < float(ticker["yes_ask_dollars"])


async def test_order_book_deltas_replay_onto_the_snapshot_without_going_negative() -> None:
    command = cmd(1, "subscribe", channels=["orderbook_delta"], market_ticker=SUB_CENT)
    async with sim(rate=0, messages=1500, ending=Ending.CLOSE) as server:
        frames = await run_bounded(server.url, command)
    snapshot, *deltas = (json.loads(f)["msg"] for f in frames[1:])
    book = {
        side: {p: float(q) for p, q in snapshot.get(f"{side}_dollars_fp", [])}
        for side in ("yes", "no")
    }
    assert book["yes"]
    assert book["no"]
    for delta in deltas:
        side, price = book[delta["side"]], delta["price_dollars"]
        side[price] = round(side.get(price, 0.0) + float(delta["delta_fp"]), 2)
        assert side[price] >= 0
        assert "0.0010" <= price <= "0.9990"


async def test_same_seed_gives_identical_bytes_and_another_seed_does_not() -> None:
    command = cmd(1, "subscribe", channels=["ticker", "trade", "market_lifecycle_v2"])
    async with sim(rate=0, messages=400, ending=Ending.CLOSE, seed=42) as server:
        first = await run_bounded(server.url, command)
        second = await run_bounded(server.url, command)
    async with sim(rate=0, messages=400, ending=Ending.CLOSE, seed=43) as server:
        other = await run_bounded(server.url, command)
    assert len(first) == 403
    assert first == second
    assert data_only(first) != data_only(other)
    assert first[:3] == other[:3]  # answers do not depend on the seed


async def test_seq_is_contiguous_over_data_and_every_control_frame_of_a_sid() -> None:
    """ok, get_snapshot answers, scoped errors (26, 27) and unsubscribed all take the next
    number of the sid's one sequence."""
    now = [100.0]
    a, b, c = MARKETS[0], MARKETS[1], MARKETS[2]
    async with sim(max_markets_per_subscription=2, max_commands_per_second=3,
                   clock=lambda: now[0]) as server, client(server.url) as ws:  # fmt: skip
        await ws.send(cmd(1, "subscribe", channels=["orderbook_delta"], market_ticker=a))
        frames = await until(ws, lambda f: f.get("seq", 0) >= 5)
        steps = [
            cmd(2, "update_subscription", sid=1, action="add_markets", market_ticker=b),  # ok
            cmd(3, "update_subscription", sid=1, action="add_markets", market_ticker=c),  # 26
            cmd(4, "update_subscription", sid=1, action="get_snapshot", market_tickers=[a]),
            cmd(5, "update_subscription", sid=1, action="delete_markets", market_ticker=b),  # 27
        ]
        for step in steps:
            await ws.send(step)
            cmd_id = json.loads(step)["id"]
            frames += await until(ws, lambda f, i=cmd_id: f.get("id") == i)
        await ws.send(cmd(6, "unsubscribe", sids=[1]))
        frames += await until(ws, lambda f: f.get("id") == 6)
    answers = {f["id"]: f for f in frames if "id" in f}
    assert answers[2]["type"] == "ok"
    assert answers[3]["msg"] == {"code": 26, "msg": "Subscription market limit exceeded"}
    assert answers[4]["type"] == "orderbook_snapshot"
    assert answers[5]["msg"] == {"code": 27, "msg": "Too many requests"}
    assert answers[6]["type"] == "unsubscribed"
    sequenced = [f for f in frames if "seq" in f]
    assert all(f["sid"] == 1 for f in sequenced)
    assert [f["seq"] for f in sequenced] == list(range(1, len(sequenced) + 1))


# -- fault injection -------------------------------------------------------------------


async def test_skip_seq_leaves_a_gap_of_exactly_that_size() -> None:
    async with sim(rate=500.0) as server, client(server.url) as ws:
        await ws.send(cmd(1, "subscribe", channels=["trade"]))
        frames = await until(ws, lambda f: f.get("seq", 0) >= 3)
        session = await server.wait_session()
        skipped_after = session.seq_of(1)
        session.skip_seq(1, 4)
        frames += await until(ws, lambda f: f.get("seq", 0) >= skipped_after + 10)
    seqs = [f["seq"] for f in frames[1:]]
    assert seqs == [*range(1, skipped_after + 1), *range(skipped_after + 5, seqs[-1] + 1)]


async def test_duplicate_last_resends_the_last_sequenced_frame_byte_for_byte() -> None:
    async with sim(rate=500.0) as server, client(server.url) as ws:
        await ws.send(cmd(1, "subscribe", channels=["ticker", "orderbook_delta"],
                          market_ticker=MARKETS[0]))  # fmt: skip
        texts = [await recv(ws) for _ in range(10)]
        session = await server.wait_session()
        duplicate = await session.duplicate_last(2)

        async def both_copies() -> None:
            while texts.count(duplicate) < 2:
                texts.append(await recv(ws))

        await within(both_copies(), "the duplicate")
        texts += [await recv(ws) for _ in range(20)]
    book = [json.loads(t) for t in texts if json.loads(t).get("sid") == 2]
    seqs = [f["seq"] for f in book]
    dup_seq = json.loads(duplicate)["seq"]
    # The same seq twice in a row on the sid, then the sequence goes on.
    assert seqs == [*range(1, dup_seq + 1), dup_seq, *range(dup_seq + 1, seqs[-1] + 1)]


@pytest.mark.parametrize(("code", "text"), [(10, "Channel error"),
                                            (25, "Subscription buffer overflow")])  # fmt: skip
async def test_a_terminal_error_ends_the_sid_with_sid_and_seq_on_the_error(
    code: int, text: str
) -> None:
    async with sim(rate=500.0) as server, client(server.url) as ws:
        await ws.send(cmd(1, "subscribe", channels=["ticker", "trade"]))
        frames = await until(ws, lambda f: f.get("seq", 0) >= 5)
        session = await server.wait_session()
        last = session.seq_of(2)
        sent = await session.end_subscription(2, code)
        assert sent == (
            f'{{"sid":2,"seq":{last + 1},"type":"error","msg":{{"code":{code},"msg":"{text}"}}}}'
        )
        frames += await until(ws, lambda f: f.get("type") == "error")
        await ws.send(cmd(2, "unsubscribe", sids=[2]))
        after = await until(ws, lambda f: f.get("id") == 2)
        after += [json.loads(await recv(ws)) for _ in range(30)]
    trade_seqs = [f["seq"] for f in frames if f.get("sid") == 2]
    assert trade_seqs == list(range(1, last + 2))  # the error takes the next seq
    assert after[-31] == json.loads(error(2, 7, "Unknown subscription ID"))
    assert all(f["sid"] == 1 for f in after if f.get("id") != 2)
    assert session.subscriptions() == {1: "ticker"}


async def test_a_slow_consumer_gets_error_25_on_every_data_sid() -> None:
    config = {"rate": 0, "overflow_bytes": 100_000}
    async with sim(**config) as server, client(server.url, max_queue=1) as ws:
        await ws.send(cmd(1, "subscribe", channels=["ticker", "trade", "fill"]))
        session = await server.wait_session()
        # Not reading: the kernel's socket buffers fill, then the sim's own.
        await wait_until(lambda: session.overflowed, "the sim to see an overflow")
        frames = await until(ws, lambda f: f.get("type") == "error" and f["sid"] == 2)
        await ws.send(json.dumps({"id": 2, "cmd": "list_subscriptions"}))
        frames += await until(ws, lambda f: f.get("id") == 2)
    errors = [f for f in frames if f.get("type") == "error"]
    last_trade = max(f["seq"] for f in frames if f.get("type") == "trade")
    assert errors == [
        {"sid": 1, "seq": 1, "type": "error",
         "msg": {"code": 25, "msg": "Subscription buffer overflow"}},
        {"sid": 2, "seq": last_trade + 1, "type": "error",
         "msg": {"code": 25, "msg": "Subscription buffer overflow"}},
    ]  # fmt: skip
    after = frames[frames.index(errors[-1]) + 1 :]
    assert after == [{"id": 2, "type": "ok", "msg": [{"channel": "fill", "sid": 3}]}]
    assert session.overflowed == [1, 2]  # fill produces nothing, so it lives on


async def test_unknown_frame_types_and_extra_fields() -> None:
    async with sim(rate=500.0) as server, client(server.url) as ws:
        await ws.send(cmd(1, "subscribe", channels=["trade"]))
        await until(ws, lambda f: f.get("seq", 0) >= 2)
        session = await server.wait_session()
        before = session.seq_of(1)
        unknown = await session.send_unknown_type("rfq_rumour", sid=1)
        assert json.loads(unknown)["seq"] == before + 1  # on a sequenced sid it takes a seq
        loose = await session.send_unknown_type()
        assert json.loads(loose) == {"type": "sim_future_type", "msg": json.loads(loose)["msg"]}
        frames = await until(ws, lambda f: f["type"] == "sim_future_type")
        assert any(f["type"] == "rfq_rumour" for f in frames)
        session.extra_fields = True
        extended = (await until(ws, lambda f: "sim_future_envelope" in f))[-1]
    assert extended["type"] == "trade"
    assert extended["sim_future_envelope"] is True
    assert extended["msg"]["sim_future_field"]["values"] == [1, "a", None]
    assert shape_problems({**extended, "msg": {k: v for k, v in extended["msg"].items()
                                               if k != "sim_future_field"}}) == []  # fmt: skip


async def test_extra_fields_from_the_config_apply_to_every_data_frame_not_to_answers() -> None:
    async with sim(rate=0, messages=50, ending=Ending.CLOSE, extra_fields=True) as server:
        frames = [json.loads(f) for f in await run_bounded(server.url, ALL_FEEDS)]
    answers, data = frames[: len(ALL_CHANNELS)], frames[len(ALL_CHANNELS) :]
    assert not any("sim_future_envelope" in f for f in answers)
    assert len(data) == 50
    assert all(f["sim_future_envelope"] and "sim_future_field" in f["msg"] for f in data)


async def test_market_limit_is_error_26_on_subscribe_and_scoped_on_add_markets() -> None:
    a, b, c = MARKETS[0], MARKETS[1], MARKETS[2]
    async with sim(rate=0, max_markets_per_subscription=2) as server, client(server.url) as ws:
        await ws.send(cmd(1, "subscribe", channels=["fill"], market_tickers=[a, b, c]))
        assert await recv(ws) == error(1, 26, "Subscription market limit exceeded")
        await ws.send(cmd(2, "subscribe", channels=["fill"], market_tickers=[a, b]))
        assert await recv(ws) == '{"id":2,"type":"subscribed","msg":{"channel":"fill","sid":1}}'
        await ws.send(cmd(3, "update_subscription", sid=1, action="add_markets", market_ticker=c))
        assert await recv(ws) == (
            '{"id":3,"sid":1,"seq":1,"type":"error",'
            '"msg":{"code":26,"msg":"Subscription market limit exceeded"}}'
        )
        await ws.send(cmd(4, "update_subscription", sid=1, action="add_markets", market_ticker=a))
        assert await recv(ws) == (  # the failed add changed nothing
            f'{{"id":4,"sid":1,"seq":2,"type":"ok","msg":{{"market_tickers":["{a}","{b}"]}}}}'
        )


async def test_command_rate_is_error_27_per_subscription_on_an_injected_clock() -> None:
    now = [50.0]
    config = {"rate": 0, "max_commands_per_second": 2, "clock": lambda: now[0]}
    async with sim(**config) as server, client(server.url) as ws:
        await ws.send(cmd(1, "subscribe", channels=["fill", "user_orders"], market_ticker="A"))
        await until(ws, lambda f: f["msg"]["sid"] == 2)

        async def update(cmd_id: int, sid: int) -> dict[str, Any]:
            await ws.send(cmd(cmd_id, "update_subscription", sid=sid,
                              action="add_markets", market_ticker="B"))  # fmt: skip
            return json.loads(await recv(ws))

        assert [(await update(i, 1))["type"] for i in (2, 3)] == ["ok", "ok"]
        refused = await update(4, 1)
        assert refused == {"id": 4, "sid": 1, "seq": 3, "type": "error",
                           "msg": {"code": 27, "msg": "Too many requests"}}  # fmt: skip
        assert (await update(5, 2))["type"] == "ok"  # the limit is per subscription
        now[0] += 1.0  # a second later the window has room again
        assert (await update(6, 1))["type"] == "ok"


# -- keep-alive and endings ------------------------------------------------------------


async def test_heartbeat_pings_carry_the_heartbeat_payload() -> None:
    async with sim(heartbeat=0.1) as server:
        raw = await RawClient.open(server.url)
        pings = [await raw.frame() for _ in range(3)]
        raw.close()
    assert all(p is not None and p.opcode is Opcode.PING for p in pings)
    assert [bytes(p.data) for p in pings if p is not None] == [b"heartbeat"] * 3


async def test_close_ending_sends_exactly_n_messages_then_close_code_1000() -> None:
    async with sim(rate=0, messages=50, ending=Ending.CLOSE) as server:
        async with client(server.url) as ws:
            await ws.send(cmd(1, "subscribe", channels=["ticker"]))
            frames = await drain_until_closed(ws)
            assert ws.close_code == 1000
        session = await server.wait_session()
        await within(session.done.wait(), "the session to end")
    assert len(data_only(frames)) == session.data_sent == 50
    assert session.ending is Ending.CLOSE
    assert session.sent == frames


async def test_drop_ending_closes_tcp_without_a_close_frame() -> None:
    async with sim(rate=0, messages=50, ending=Ending.DROP) as server:
        raw = await RawClient.open(server.url)
        raw.send(cmd(1, "subscribe", channels=["trade"]))
        events = []
        while (event := await raw.frame()) is not None:
            events.append(event)
        raw.close()
        session = await server.wait_session()
    assert [e.opcode for e in events] == [Opcode.TEXT] * 51  # no CLOSE frame
    assert json.loads(bytes(events[-1].data))["seq"] == 50
    assert session.ending is Ending.DROP
    assert session.done.is_set()


async def test_drop_ending_is_an_abnormal_closure_for_a_websockets_client() -> None:
    async with sim(rate=0, messages=10, ending=Ending.DROP) as server, client(server.url) as ws:
        await ws.send(cmd(1, "subscribe", channels=["ticker"]))
        with pytest.raises(ConnectionClosedError) as closed:
            await drain_until_closed(ws)
        assert closed.value.rcvd is None


async def test_silent_ending_stops_data_pings_and_answers_but_keeps_tcp_open() -> None:
    async with sim(rate=0, messages=20, ending=Ending.SILENT, heartbeat=0.05) as server:
        raw = await RawClient.open(server.url)
        raw.send(cmd(1, "subscribe", channels=["ticker"]))
        texts = 0
        while texts < 21:
            frame = await raw.frame()
            assert frame is not None
            texts += frame.opcode is Opcode.TEXT
        session = await server.wait_session()
        await within(session.done.wait(), "the silent ending")
        raw.send(json.dumps({"id": 2, "cmd": "list_subscriptions"}))
        # Pings already in flight when the ending struck may still arrive; then nothing.
        late = await raw.until_quiet(0.4)  # 8 heartbeat intervals
        assert all(f is not None and f.opcode is Opcode.PING for f in late)
        assert len(late) <= 1
        assert not raw.eof
        assert session.ending is Ending.SILENT
        assert session.commands[-1] == {"id": 2, "cmd": "list_subscriptions"}
        raw.close()


async def test_none_ending_goes_idle_but_keeps_answering_and_pinging() -> None:
    async with sim(rate=0, messages=10, ending=Ending.NONE, heartbeat=0.05) as server:
        raw = await RawClient.open(server.url)
        raw.send(cmd(1, "subscribe", channels=["ticker"]))
        session = await server.wait_session()
        await within(session.done.wait(), "the idle ending")
        raw.send(json.dumps({"id": 2, "cmd": "list_subscriptions"}))
        frames = [await raw.frame() for _ in range(16)]
        raw.close()
    texts = [bytes(f.data).decode() for f in frames if f is not None and f.opcode is Opcode.TEXT]
    assert texts[-1] == '{"id":2,"type":"ok","msg":[{"channel":"ticker","sid":1}]}'
    assert len(data_only(texts)) == 10
    assert any(f is not None and f.opcode is Opcode.PING for f in frames)
    assert session.data_sent == 10


# -- authentication and transport ------------------------------------------------------


def _pkcs1(pkcs8: bytes) -> bytes:
    key = serialization.load_pem_private_key(pkcs8, password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


@pytest.mark.parametrize("kind", ["ed25519", "rsa-pkcs8", "rsa-pkcs1"])
async def test_signed_handshakes_of_both_key_types_unlock_private_channels(
    rsa_keys: tuple[bytes, bytes], kind: str
) -> None:
    private, public = {
        "ed25519": (signing.private_pem(ED_KEY), ED_PUBLIC),
        "rsa-pkcs8": rsa_keys,
        "rsa-pkcs1": (_pkcs1(rsa_keys[0]), rsa_keys[1]),
    }[kind]
    headers = signed(signing.load_private_key(private))
    async with sim(public_key_pem=public) as server, client(server.url, headers) as ws:
        await ws.send(cmd(1, "subscribe", channels=["orderbook_delta"], market_ticker=MARKETS[0]))
        assert await recv(ws) == (
            '{"id":1,"type":"subscribed","msg":{"channel":"orderbook_delta","sid":1}}'
        )
        assert json.loads(await recv(ws))["type"] == "orderbook_snapshot"
        session = await server.wait_session()
    assert session.authenticated
    assert session.request_headers[signing.KEY_HEADER] == KEY_ID
    assert server.rejected_handshakes == 0


def _wrong_key(rsa: signing.PrivateKey) -> dict[str, str]:
    return signed(ed25519.Ed25519PrivateKey.generate())


def _other_type(rsa: signing.PrivateKey) -> dict[str, str]:
    return signed(rsa)  # an RSA signature presented for an Ed25519 key


def _wrong_key_id(rsa: signing.PrivateKey) -> dict[str, str]:
    return {**signed(), signing.KEY_HEADER: "key-2"}


def _wrong_path(rsa: signing.PrivateKey) -> dict[str, str]:
    return signed(path="/trade-api/v2/portfolio/balance")


def _no_signature(rsa: signing.PrivateKey) -> dict[str, str]:
    headers = signed()
    del headers[signing.SIGNATURE_HEADER]
    return headers


def _unsigned(rsa: signing.PrivateKey) -> dict[str, str]:
    return {}


def _not_ms(rsa: signing.PrivateKey) -> dict[str, str]:
    return {**signed(), signing.TIMESTAMP_HEADER: "2026-01-01T00:00:00Z"}


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (_unsigned, "missing header(s) KALSHI-ACCESS-KEY, KALSHI-ACCESS-TIMESTAMP"),
        (_no_signature, "missing header(s) KALSHI-ACCESS-SIGNATURE"),
        (_wrong_key, "KALSHI-ACCESS-SIGNATURE does not verify"),
        (_other_type, "KALSHI-ACCESS-SIGNATURE does not verify"),
        (_wrong_path, "KALSHI-ACCESS-SIGNATURE does not verify"),
        (_wrong_key_id, "unknown KALSHI-ACCESS-KEY"),
        (_not_ms, "KALSHI-ACCESS-TIMESTAMP must be unix time in milliseconds"),
    ],
)
async def test_bad_signatures_get_http_401_on_the_upgrade(
    rsa_keys: tuple[bytes, bytes],
    headers: Callable[[signing.PrivateKey], dict[str, str]],
    reason: str,
) -> None:
    async with sim() as server:
        with pytest.raises(InvalidStatus) as rejected:
            async with client(server.url, headers(signing.load_private_key(rsa_keys[0]))):
                pass
        assert rejected.value.response.status_code == 401
        assert server.rejected_handshakes == 1
        assert server.rejections[0].startswith(reason)
        assert server.sessions == []
        async with client(server.url):
            assert (await server.wait_session()).authenticated


async def test_a_timestamp_outside_the_window_is_refused() -> None:
    """The skew check is real: an hour-old signature fails against a 60 s window (the
    server's clock is injected, so the distance is exact whatever the machine's speed)."""
    signed_at = 1_767_225_600.0
    async with sim(timestamp_window=60.0, wall_clock=lambda: signed_at + 3600) as server:
        with pytest.raises(InvalidStatus) as rejected:
            async with client(server.url, signed(now=signed_at)):
                pass
        assert rejected.value.response.status_code == 401
        assert server.rejections == ["KALSHI-ACCESS-TIMESTAMP is 3600 s away from server time"]
        async with client(server.url, signed(now=signed_at + 3600 - 59)):
            assert (await server.wait_session()).authenticated


def test_the_sim_will_not_start_without_a_key_unless_told_to() -> None:
    with pytest.raises(ValueError, match=r"public_key_pem is required .* allow_unsigned=True"):
        SimServer(SimConfig(port=0))
    assert SimConfig().allow_unsigned is False


async def test_allow_unsigned_serves_public_channels_to_unsigned_clients() -> None:
    async with sim(public_key_pem=None, allow_unsigned=True) as server:
        async with client(server.url, headers={}) as ws:
            await ws.send(cmd(1, "subscribe", channels=["market_positions", "trade"]))
            assert await recv(ws) == error(1, 9, "Authentication required")
            assert await recv(ws) == (
                '{"id":1,"type":"subscribed","msg":{"channel":"trade","sid":1}}'
            )
        assert not (await server.wait_session()).authenticated


async def test_allow_unsigned_with_a_key_still_verifies_signed_handshakes() -> None:
    async with sim(allow_unsigned=True) as server:
        async with client(server.url, headers={}):
            assert not (await server.wait_session(0)).authenticated
        async with client(server.url):
            assert (await server.wait_session(1)).authenticated
        with pytest.raises(InvalidStatus):
            async with client(server.url, _wrong_key_id(ED_KEY)):
                pass
        assert server.rejected_handshakes == 1


async def test_wrong_path_is_404() -> None:
    async with sim() as server:
        with pytest.raises(InvalidStatus) as rejected:
            async with client(server.url.replace("/ws/v2", "/ws/v1")):
                pass
    assert rejected.value.response.status_code == 404


async def test_wss_with_a_private_ca(tls: TLS) -> None:
    async with sim(ssl=tls.server_context, messages=5, ending=Ending.CLOSE) as server:
        assert server.url.startswith("wss://127.0.0.1:")
        frames = await run_bounded(
            server.url, cmd(1, "subscribe", channels=["ticker"]), ssl=tls.client_context
        )
    assert len(data_only(frames)) == 5


async def test_send_raw_delivers_frames_verbatim_and_records_them() -> None:
    async with sim() as server, client(server.url) as ws:
        session = await server.wait_session()
        await session.send_raw("{not json")
        await session.send_raw(b"\x00\x01binary")
        assert await recv(ws) == "{not json"
        assert await ws.recv() == b"\x00\x01binary"
    assert session.sent == ["{not json"]
    assert session.sent_binary == [b"\x00\x01binary"]


async def test_unrecorded_data_keeps_answers_only() -> None:
    async with sim(rate=0, messages=100, ending=Ending.CLOSE, record=False) as server:
        frames = await run_bounded(server.url, cmd(1, "subscribe", channels=["ticker"]))
        session = await server.wait_session()
    assert session.sent == frames[:1]
    assert session.data_sent == len(frames) - 1 == 100


async def test_wait_session_times_out_with_a_useful_message() -> None:
    async with sim() as server:
        with pytest.raises(TimeoutError, match=r"no connection #0 within 0.05 s"):
            await server.wait_session(timeout=0.05)


# -- the `ssmd sim` process ------------------------------------------------------------

SIM_SCRIPT = "import typer; from ssmd_collector.sim.cli import sim_command; typer.run(sim_command)"


async def test_sim_command_serves_until_sigterm_and_exits_0(tls: TLS, tmp_path: Path) -> None:
    cert, key, public = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "public.pem"
    cert.write_bytes(tls.cert_chain_pem)
    key.write_bytes(tls.private_key_pem)
    public.write_bytes(ED_PUBLIC)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SIM_SCRIPT,
        "--port", "0", "--rate", "0", "--messages", "3", "--ending", "close",
        "--certfile", str(cert), "--keyfile", str(key),
        "--public-key", str(public), "--api-key-id", KEY_ID,
        "--second-subscribe", "error", "--max-markets-per-subscription", "1",
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert process.stderr is not None
    try:
        line = (await within(process.stderr.readline(), "ssmd sim to listen")).decode()
        assert line.startswith("ssmd sim: serving wss://127.0.0.1:"), line
        url = line.split()[-1]
        async with client(url, ssl=tls.client_context) as ws:
            await ws.send(cmd(1, "subscribe", channels=["trade"], market_tickers=["A", "B"]))
            assert await recv(ws) == error(1, 26, "Subscription market limit exceeded")
            await ws.send(cmd(2, "subscribe", channels=["trade"]))
            await ws.send(cmd(3, "subscribe", channels=["trade"]))
            frames = await drain_until_closed(ws)
        assert error(3, 6, "Already subscribed") in frames
        assert len(data_only(frames)) == 3
        process.send_signal(signal.SIGTERM)
        assert await within(process.wait(), "ssmd sim to exit") == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_sim_command_refuses_to_start_without_a_key_or_the_opt_in() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SIM_SCRIPT, "--port", "0",
        stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    _, stderr = await within(process.communicate(), "ssmd sim to refuse")
    assert process.returncode == 2
    assert "--public-key" in stderr.decode()
    assert "--allow-unsigned" in stderr.decode()
