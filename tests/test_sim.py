"""The exchange simulator, seen from real WebSocket clients on loopback.

Each test pins down one protocol fact the collector relies on (answer shapes, error
codes, sequencing, determinism, heartbeats, endings, authentication, wss). Where a
client library would hide what is on the wire (pings, close frame vs dropped TCP), the
tests use :class:`RawClient`, built on websockets' Sans-I/O client protocol.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from tls_material import TLS
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosedError, InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.uri import parse_uri

from ssmd_collector.connectors.kalshi import signing
from ssmd_collector.sim import Ending, SimConfig, SimServer, universe

MARKETS = universe(20)


def cmd(cmd_id: int, name: str, **params: Any) -> str:
    return json.dumps({"id": cmd_id, "cmd": name, "params": params})


def error(cmd_id: int, code: int, text: str) -> str:
    """An error answer, byte for byte as the exchange sends it."""
    return f'{{"id":{cmd_id},"type":"error","msg":{{"code":{code},"msg":"{text}"}}}}'


def sim(**overrides: Any) -> SimServer:
    settings: dict[str, Any] = {"port": 0, "heartbeat": 0, "rate": 1000.0}
    return SimServer(SimConfig(**(settings | overrides)))


@asynccontextmanager
async def client(url: str, **kwargs: Any) -> AsyncIterator[ClientConnection]:
    async with connect(url, ping_interval=None, compression=None, **kwargs) as ws:
        yield ws


async def recv(ws: ClientConnection, timeout: float = 3) -> str:
    async with asyncio.timeout(timeout):
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


async def drain_until_closed(ws: ClientConnection) -> list[str]:
    frames: list[str] = []
    async with asyncio.timeout(10):
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
        raw.protocol.send_request(raw.protocol.connect())
        raw._flush()
        response = await raw.next()
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

    async def frame(self, timeout: float = 3) -> Frame | None:
        event = await self.next(timeout)
        assert not isinstance(event, Response)
        return event

    async def until_quiet(self, quiet: float) -> list[Frame | None]:
        """Frames until ``quiet`` seconds pass without one (None last if TCP closed)."""
        frames: list[Frame | None] = []
        while not frames or frames[-1] is not None:
            try:
                frames.append(await self.frame(timeout=quiet))
            except TimeoutError:
                break
        return frames

    def send(self, text: str) -> None:
        self.protocol.send_text(text.encode())
        self._flush()

    def close(self) -> None:
        self.writer.close()


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
        assert data["type"] in ("ticker", "trade", "market_lifecycle_v2")
        session = await server.wait_session()
        assert session.commands[0] == json.loads(cmd(1, "subscribe", channels=["ticker", "trade"]))


async def test_nothing_streams_before_a_subscription() -> None:
    async with sim(rate=0) as server, client(server.url) as ws:
        with pytest.raises(TimeoutError):
            await recv(ws, timeout=0.2)
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
    (cmd(8, "subscribe", channels=["orderbook_delta"], market_ticker=MARKETS[0]), 8, 9,
     "Authentication required"),
    (cmd(9, "subscribe", channels=["fill"]), 9, 9, "Authentication required"),
    (cmd(10, "subscribe", channels=["ticker"], market_tickers=MARKETS[0]), 10, 11,
     "Invalid parameter"),
    (cmd(11, "subscribe", channels=["ticker"], market_ticker="A", market_tickers=["B"]), 11,
     11, "Invalid parameter"),
    (cmd(12, "update_subscription", sids=[1, 2], action="add_markets", market_ticker="A"), 12,
     12, "Exactly one subscription ID is required"),
    (cmd(13, "update_subscription", sid=1, action="replace_markets"), 13, 13,
     "Unsupported action"),
    (cmd(14, "update_subscription", sid=1, market_ticker="A"), 14, 15, "Action required"),
    (cmd(15, "update_subscription", sid=9, action="add_markets", market_ticker="A"), 15, 7,
     "Unknown subscription ID"),
]  # fmt: skip


@pytest.mark.parametrize(("command", "cmd_id", "code", "text"), ERROR_CASES)
async def test_error_answers_have_kalshis_codes_and_shape(
    command: str, cmd_id: int | None, code: int, text: str
) -> None:
    expected: dict[str, Any] = {"type": "error", "msg": {"code": code, "msg": text}}
    if cmd_id is not None:
        expected = {"id": cmd_id, **expected}
    async with sim() as server, client(server.url) as ws:
        await ws.send(command)
        assert await recv(ws) == json.dumps(expected, separators=(",", ":"))


async def test_unknown_market_names_the_ticker_and_binary_commands_are_unprocessable() -> None:
    async with sim() as server, client(server.url) as ws:
        await ws.send(cmd(1, "subscribe", channels=["ticker"], market_tickers=["ok-not"]))
        assert await recv(ws) == (
            '{"id":1,"type":"error","msg":{"code":16,"msg":"Market not found",'
            '"market_ticker":"ok-not"}}'
        )
        await ws.send(b'{"id":2,"cmd":"list_subscriptions"}')
        assert (
            await recv(ws) == '{"type":"error","msg":{"code":1,"msg":"Unable to process message"}}'
        )
        session = await server.wait_session()
        assert session.received[1] == b'{"id":2,"cmd":"list_subscriptions"}'


async def test_a_failing_channel_does_not_stop_the_others_in_the_same_command() -> None:
    async with sim() as server, client(server.url) as ws:
        await ws.send(cmd(1, "subscribe", channels=["ticker", "nope", "orderbook_delta"]))
        assert await recv(ws) == '{"id":1,"type":"subscribed","msg":{"channel":"ticker","sid":1}}'
        assert await recv(ws) == error(1, 8, "Unknown channel name")
        assert await recv(ws) == error(1, 9, "Authentication required")
        assert json.loads(await recv(ws))["sid"] == 1


async def test_unsubscribe_answers_per_sid_with_seq_and_stops_that_stream() -> None:
    async with sim(rate=2000.0) as server, client(server.url) as ws:
        await ws.send(cmd(1, "subscribe", channels=["ticker", "trade"]))
        await ws.send(cmd(2, "subscribe", channels=["ticker"], market_ticker=MARKETS[0]))
        assert await answer(ws, 2) == error(2, 6, "Already subscribed")
        trade_seq = 0
        while trade_seq < 5:
            frame = json.loads(await recv(ws))
            if frame.get("type") == "trade":
                trade_seq = frame["seq"]
        await ws.send(cmd(3, "unsubscribe", sids=[2, 7]))
        after: list[dict[str, Any]] = []
        while True:
            frame = json.loads(await recv(ws))
            if frame.get("id") == 3:
                break
            after.append(frame)
        assert frame["type"] == "unsubscribed"
        assert list(frame) == ["type", "id", "sid", "seq"]
        assert frame["sid"] == 2
        last_trade = max([f["seq"] for f in after if f["type"] == "trade"], default=trade_seq)
        assert frame["seq"] == last_trade + 1  # the answer continues the sid's sequence
        assert await recv(ws) == error(3, 7, "Unknown subscription ID")
        for _ in range(50):
            assert json.loads(await recv(ws))["sid"] == 1
        await ws.send(json.dumps({"id": 4, "cmd": "list_subscriptions"}))
        assert await answer(ws, 4) == '{"id":4,"type":"ok","msg":[{"channel":"ticker","sid":1}]}'


# -- data: sequencing, snapshots, determinism, realism ---------------------------------


@pytest.fixture
def keyed(rsa_keys: tuple[bytes, bytes]) -> Callable[..., SimServer]:
    """A sim that requires signed handshakes, and the headers to pass with it."""

    def make(**overrides: Any) -> SimServer:
        return sim(public_key_pem=rsa_keys[1], api_key_id="key-1", **overrides)

    return make


def signed(rsa_keys: tuple[bytes, bytes], **kwargs: Any) -> dict[str, str]:
    return signing.auth_headers("key-1", signing.load_private_key(rsa_keys[0]), **kwargs)


async def run_bounded(url: str, command: str, **kwargs: Any) -> list[str]:
    """Every frame of a connection that sends one command and ends with CLOSE."""
    async with client(url, **kwargs) as ws:
        await ws.send(command)
        return await drain_until_closed(ws)


ALL_FEEDS = cmd(
    1,
    "subscribe",
    channels=["ticker", "trade", "orderbook_delta", "market_lifecycle_v2"],
    market_tickers=MARKETS[:3],
)


async def test_sequences_are_contiguous_per_sid_and_snapshots_come_first(
    keyed: Callable[..., SimServer], rsa_keys: tuple[bytes, bytes]
) -> None:
    async with keyed(rate=0, messages=3000, ending=Ending.CLOSE) as server:
        frames = await run_bounded(server.url, ALL_FEEDS, additional_headers=signed(rsa_keys))
        session = await server.wait_session()
    assert frames[:4] == [
        f'{{"id":1,"type":"subscribed","msg":{{"channel":"{channel}","sid":{sid}}}}}'
        for sid, channel in enumerate(
            ["ticker", "trade", "orderbook_delta", "market_lifecycle_v2"], start=1
        )
    ]
    data = [json.loads(f) for f in frames[4:]]
    assert len(data) == session.data_sent == 3000
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for frame in data:
        by_type[frame["type"]].append(frame)
    assert set(by_type) == {
        "ticker",
        "trade",
        "orderbook_snapshot",
        "orderbook_delta",
        "market_lifecycle_v2",
    }
    assert {f["sid"] for f in by_type["ticker"]} == {1}
    assert all("seq" not in f for f in by_type["ticker"] + by_type["market_lifecycle_v2"])
    trades = [f["seq"] for f in by_type["trade"]]
    assert trades == list(range(1, len(trades) + 1))
    book = [f for f in data if f["sid"] == 3]
    assert [f["seq"] for f in book] == list(range(1, len(book) + 1))
    assert [f["type"] for f in book[:3]] == ["orderbook_snapshot"] * 3
    assert {f["msg"]["market_ticker"] for f in book[:3]} == set(MARKETS[:3])
    assert all(f["type"] == "orderbook_delta" for f in book[3:])
    filtered = by_type["ticker"] + by_type["trade"] + book
    assert {f["msg"]["market_ticker"] for f in filtered} == set(MARKETS[:3])
    # Lifecycle is not filtered by market on Kalshi: it covers the whole universe.
    assert {f["msg"]["market_ticker"] for f in by_type["market_lifecycle_v2"]} <= set(MARKETS)


async def test_order_book_deltas_replay_onto_the_snapshot_without_going_negative(
    keyed: Callable[..., SimServer], rsa_keys: tuple[bytes, bytes]
) -> None:
    command = cmd(1, "subscribe", channels=["orderbook_delta"], market_ticker=MARKETS[4])
    async with keyed(rate=0, messages=1500, ending=Ending.CLOSE) as server:
        frames = await run_bounded(server.url, command, additional_headers=signed(rsa_keys))
    snapshot, *deltas = (json.loads(f)["msg"] for f in frames[1:])
    book = {side: {p: q for p, q in snapshot.get(side, [])} for side in ("yes", "no")}
    for delta in deltas:
        side = book[delta["side"]]
        side[delta["price"]] = side.get(delta["price"], 0) + delta["delta"]
        assert side[delta["price"]] >= 0
        assert 1 <= delta["price"] <= 99
        assert delta["price_dollars"] == f"0.{delta['price']:02d}0"


async def test_update_subscription_answers_ok_and_snapshots_added_markets(
    keyed: Callable[..., SimServer], rsa_keys: tuple[bytes, bytes]
) -> None:
    a, b = MARKETS[0], MARKETS[1]
    async with keyed() as server, client(server.url, additional_headers=signed(rsa_keys)) as ws:
        await ws.send(cmd(1, "subscribe", channels=["orderbook_delta"], market_ticker=a))
        await ws.send(
            cmd(2, "update_subscription", sids=[1], action="add_markets", market_tickers=[b])
        )
        frames: list[dict[str, Any]] = []
        while not frames or frames[-1].get("id") != 2:
            frames.append(json.loads(await recv(ws)))
        ok = frames[-1]
        assert json.dumps(ok, separators=(",", ":")) == (
            f'{{"id":2,"sid":1,"seq":{ok["seq"]},"type":"ok","msg":{{"market_tickers":["{a}","{b}"]}}}}'
        )
        while len(frames) < 60:
            frames.append(json.loads(await recv(ws)))
        await ws.send(
            cmd(3, "update_subscription", sid=1, action="delete_markets", market_ticker=a)
        )
        while frames[-1].get("id") != 3:
            frames.append(json.loads(await recv(ws)))
        assert frames[-1]["msg"] == {"market_tickers": [b]}
        for _ in range(40):
            frames.append(json.loads(await recv(ws)))
    seqs = [f["seq"] for f in frames[1:]]  # frames[0] is the subscribed answer
    assert seqs == list(range(1, len(seqs) + 1))  # ok answers included, no gap
    first_b = next(i for i, f in enumerate(frames) if f.get("msg", {}).get("market_ticker") == b)
    assert frames[first_b]["type"] == "orderbook_snapshot"
    deleted_at = next(i for i, f in enumerate(frames) if f.get("id") == 3)
    assert all(f["msg"]["market_ticker"] == b for f in frames[deleted_at + 1 :])


async def test_update_subscription_refuses_channels_without_market_lists() -> None:
    async with sim() as server, client(server.url) as ws:
        await ws.send(cmd(1, "subscribe", channels=["ticker", "market_lifecycle_v2"]))
        await ws.send(cmd(2, "update_subscription", sid=1, action="add_markets", market_ticker="X"))
        assert await answer(ws, 2) == error(2, 11, "Invalid parameter")
        await ws.send(cmd(3, "update_subscription", sid=2, action="add_markets", market_ticker="X"))
        assert await answer(ws, 3) == error(3, 10, "Channel error")
        await ws.send(cmd(4, "update_subscription", sid=1, action="add_markets"))
        assert await answer(ws, 4) == error(4, 14, "Market Ticker required")


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


async def test_frames_are_compact_json_of_realistic_size(
    keyed: Callable[..., SimServer], rsa_keys: tuple[bytes, bytes]
) -> None:
    async with keyed(rate=0, messages=2000, ending=Ending.CLOSE, seed=5) as server:
        frames = await run_bounded(server.url, ALL_FEEDS, additional_headers=signed(rsa_keys))
    sizes: dict[str, list[int]] = defaultdict(list)
    for frame in frames:
        parsed = json.loads(frame)
        assert json.dumps(parsed, separators=(",", ":")) == frame
        sizes[parsed["type"]].append(len(frame))
    for kind in ("ticker", "trade", "orderbook_delta"):
        assert 150 <= min(sizes[kind]) <= max(sizes[kind]) <= 500, kind
    assert 100 <= min(sizes["market_lifecycle_v2"]) <= max(sizes["market_lifecycle_v2"]) <= 300
    assert max(sizes["orderbook_snapshot"]) <= 8000
    ticker = json.loads(next(f for f in frames if '"type":"ticker"' in f))["msg"]
    assert ticker["yes_bid"] < ticker["yes_ask"]
    assert ticker["yes_bid_dollars"] == f"0.{ticker['yes_bid']:02d}0"
    assert set(ticker) >= {"market_ticker", "market_id", "price", "volume", "open_interest", "ts"}


# -- keep-alive and endings ------------------------------------------------------------


async def test_heartbeat_pings_carry_the_heartbeat_payload() -> None:
    async with sim(heartbeat=0.1) as server:
        raw = await RawClient.open(server.url)
        pings = [await raw.frame(timeout=1) for _ in range(3)]
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
        await asyncio.wait_for(session.done.wait(), 2)
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
        await asyncio.wait_for(session.done.wait(), 1)
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
        await asyncio.wait_for(session.done.wait(), 1)
        raw.send(json.dumps({"id": 2, "cmd": "list_subscriptions"}))
        frames = [await raw.frame() for _ in range(16)]
        raw.close()
    texts = [bytes(f.data).decode() for f in frames if f is not None and f.opcode is Opcode.TEXT]
    assert texts[-1] == '{"id":2,"type":"ok","msg":[{"channel":"ticker","sid":1}]}'
    assert len(data_only(texts)) == 10
    assert any(f is not None and f.opcode is Opcode.PING for f in frames)
    assert session.data_sent == 10


# -- authentication and transport ------------------------------------------------------


async def test_signed_handshake_is_accepted_and_unlocks_private_channels(
    keyed: Callable[..., SimServer], rsa_keys: tuple[bytes, bytes]
) -> None:
    async with keyed() as server, client(server.url, additional_headers=signed(rsa_keys)) as ws:
        await ws.send(cmd(1, "subscribe", channels=["orderbook_delta"]))
        assert await recv(ws) == error(1, 14, "Market Ticker required")
        await ws.send(cmd(2, "subscribe", channels=["orderbook_delta"], market_ticker=MARKETS[0]))
        assert await answer(ws, 2) == (
            '{"id":2,"type":"subscribed","msg":{"channel":"orderbook_delta","sid":1}}'
        )
        assert json.loads(await recv(ws))["type"] == "orderbook_snapshot"
        session = await server.wait_session()
    assert session.authenticated
    assert session.request_headers[signing.KEY_HEADER] == "key-1"
    assert server.rejected_handshakes == 0


def _stale(rsa_keys: tuple[bytes, bytes], other: tuple[bytes, bytes]) -> dict[str, str]:
    return signed(rsa_keys, now=time.time() - 3600)


def _wrong_key(rsa_keys: tuple[bytes, bytes], other: tuple[bytes, bytes]) -> dict[str, str]:
    return signed(other)


def _wrong_key_id(rsa_keys: tuple[bytes, bytes], other: tuple[bytes, bytes]) -> dict[str, str]:
    return {**signed(rsa_keys), signing.KEY_HEADER: "key-2"}


def _wrong_path(rsa_keys: tuple[bytes, bytes], other: tuple[bytes, bytes]) -> dict[str, str]:
    return signed(rsa_keys, path="/trade-api/v2/portfolio/balance")


def _no_signature(rsa_keys: tuple[bytes, bytes], other: tuple[bytes, bytes]) -> dict[str, str]:
    headers = signed(rsa_keys)
    del headers[signing.SIGNATURE_HEADER]
    return headers


def _unsigned(rsa_keys: tuple[bytes, bytes], other: tuple[bytes, bytes]) -> dict[str, str]:
    return {}


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (_unsigned, "missing header(s) KALSHI-ACCESS-KEY, KALSHI-ACCESS-TIMESTAMP"),
        (_no_signature, "missing header(s) KALSHI-ACCESS-SIGNATURE"),
        (_wrong_key, "KALSHI-ACCESS-SIGNATURE does not verify"),
        (_wrong_path, "KALSHI-ACCESS-SIGNATURE does not verify"),
        (_wrong_key_id, "unknown KALSHI-ACCESS-KEY"),
        (_stale, "KALSHI-ACCESS-TIMESTAMP is 3600 s away"),
    ],
)
async def test_bad_signatures_get_http_401_on_the_upgrade(
    keyed: Callable[..., SimServer],
    rsa_keys: tuple[bytes, bytes],
    other_rsa_keys: tuple[bytes, bytes],
    headers: Callable[[tuple[bytes, bytes], tuple[bytes, bytes]], dict[str, str]],
    reason: str,
) -> None:
    async with keyed() as server:
        with pytest.raises(InvalidStatus) as rejected:
            async with client(server.url, additional_headers=headers(rsa_keys, other_rsa_keys)):
                pass
        assert rejected.value.response.status_code == 401
        assert server.rejected_handshakes == 1
        assert server.rejections[0].startswith(reason)
        assert server.sessions == []
        async with client(server.url, additional_headers=signed(rsa_keys)):
            assert (await server.wait_session()).authenticated


async def test_wrong_path_is_404() -> None:
    async with sim() as server:
        with pytest.raises(InvalidStatus) as rejected:
            async with client(server.url.replace("/ws/v2", "/ws/v1")):
                pass
    assert rejected.value.response.status_code == 404


async def test_unsigned_connections_are_public_only_when_no_key_is_configured() -> None:
    async with sim() as server, client(server.url) as ws:
        await ws.send(cmd(1, "subscribe", channels=["market_positions", "trade"]))
        assert await recv(ws) == error(1, 9, "Authentication required")
        assert await recv(ws) == '{"id":1,"type":"subscribed","msg":{"channel":"trade","sid":1}}'
        assert not (await server.wait_session()).authenticated


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
        assert await ws.recv() == "{not json"
        assert await ws.recv() == b"\x00\x01binary"
    assert session.sent == ["{not json"]
    assert session.sent_binary == [b"\x00\x01binary"]


async def count_for(ws: ClientConnection, seconds: float) -> int:
    """Frames received in ``seconds``, reading all along (a client that stops reading
    stalls its own closing handshake behind unread data)."""
    loop = asyncio.get_running_loop()
    deadline, received = loop.time() + seconds, 0
    while True:
        try:
            async with asyncio.timeout_at(deadline):
                await ws.recv()
        except TimeoutError:
            return received
        received += 1


async def test_rate_is_roughly_honoured() -> None:
    async with sim(rate=200.0) as server, client(server.url) as ws:
        await ws.send(cmd(1, "subscribe", channels=["ticker"]))
        await recv(ws)
        received = await count_for(ws, 0.5)
    # About 100 expected; the bounds only catch "unthrottled" and "stuck".
    assert 25 <= received <= 300


async def test_unrecorded_data_keeps_answers_only(keyed: Callable[..., SimServer]) -> None:
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


async def test_sim_command_serves_until_sigterm_and_exits_0(tls: TLS, tmp_path: Any) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(tls.cert_chain_pem)
    key.write_bytes(tls.private_key_pem)
    script = "import typer; from ssmd_collector.sim.cli import sim_command; typer.run(sim_command)"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script,
        "--port", "0", "--rate", "0", "--messages", "3", "--ending", "close",
        "--certfile", str(cert), "--keyfile", str(key),
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert process.stderr is not None
    try:
        async with asyncio.timeout(20):
            line = (await process.stderr.readline()).decode()
        assert line.startswith("ssmd sim: serving wss://127.0.0.1:"), line
        url = line.split()[-1]
        frames = await run_bounded(
            url, cmd(1, "subscribe", channels=["trade"]), ssl=tls.client_context
        )
        assert len(data_only(frames)) == 3
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
