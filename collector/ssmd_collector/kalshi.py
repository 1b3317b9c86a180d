"""Kalshi WebSocket connector: signed handshake, subscriptions, liveness, sequence tracking.

It yields raw frames exactly as received and interprets only what the protocol
needs: subscribe answers (every one is checked; an error stops the process),
``seq`` per ``sid`` (gaps are counted), and late ``error`` messages. The runner
parses each frame once and hands it back through ``inspect`` so nothing is
parsed twice on the hot path.

Liveness: Kalshi pings every 10 s. A connection with neither data nor pings
for ``silence_timeout`` seconds is treated as dead and aborted, so the process
exits and Kubernetes restarts it (fail fast, never hang).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from itertools import count
from typing import Any
from urllib.parse import urlsplit

import orjson
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.frames import Frame, Opcode

from .metadata import Subscription
from .metrics import ErrorType, Stats
from .signing import auth_headers, load_private_key

log = logging.getLogger(__name__)

_ALIVE_OPCODES = frozenset({Opcode.TEXT, Opcode.BINARY, Opcode.CONT, Opcode.PING})

# websockets logs every request header at DEBUG, KALSHI-ACCESS-* included. Its
# logger is pinned at INFO so that --log-level debug can never print credentials.
_WS_LOG = logging.getLogger("ssmd_collector.kalshi.websockets")
_WS_LOG.setLevel(logging.INFO)


class AuthRejected(Exception):
    """The exchange refused the handshake (HTTP 401/403): the keys are wrong."""


class SubscribeRejected(Exception):
    """The exchange answered a subscribe command with an error."""


class Disconnected(Exception):
    """The connection could not be opened or was lost."""


@dataclass(frozen=True)
class Credentials:
    api_key: str
    private_key_pem: bytes

    def __repr__(self) -> str:  # never let key material reach a log or traceback
        return "Credentials(api_key=<redacted>, private_key_pem=<redacted>)"


class _WatchedConnection(ClientConnection):
    """Records when the server last sent data or a ping (pongs do not count:
    a server that only answers our pings but sends nothing is not alive for us)."""

    last_alive: float = 0.0

    def process_event(self, event: Any) -> None:
        if isinstance(event, Frame) and event.opcode in _ALIVE_OPCODES:
            self.last_alive = self.loop.time()
        super().process_event(event)


class KalshiConnector:
    def __init__(
        self,
        endpoint: str,
        subscriptions: Sequence[Subscription],
        stats: Stats,
        *,
        credentials: Credentials | None = None,
        ssl_context: ssl.SSLContext | None = None,
        batch_size: int = 256,
        batch_pause: float = 0.05,
        open_timeout: float = 10.0,
        subscribe_timeout: float = 10.0,
        silence_timeout: float = 30.0,
        max_frame_bytes: int = 8 << 20,
    ) -> None:
        self.endpoint = endpoint
        self.subscriptions = subscriptions
        self.stats = stats
        self.credentials = credentials
        self.ssl_context = ssl_context
        self.batch_size = batch_size
        self.batch_pause = batch_pause
        self.open_timeout = open_timeout
        self.subscribe_timeout = subscribe_timeout
        self.silence_timeout = silence_timeout
        self.max_frame_bytes = max_frame_bytes
        self.disconnect_reason = ""
        self._ws: _WatchedConnection | None = None
        self._early: deque[str | bytes] = deque()
        self._ids = count(1)
        self._last_seq: dict[int, int] = {}
        self._channel_of: dict[int, str] = {}
        self._watchdog: asyncio.Task[None] | None = None

    # -- connect and subscribe -------------------------------------------------

    async def connect(self) -> None:
        headers = None
        if self.credentials is not None:
            key = load_private_key(self.credentials.private_key_pem)
            headers = auth_headers(self.credentials.api_key, key, urlsplit(self.endpoint).path)
        try:
            ws = await websockets.connect(
                self.endpoint,
                additional_headers=headers,
                create_connection=_WatchedConnection,
                ssl=self.ssl_context if self.endpoint.startswith("wss:") else None,
                open_timeout=self.open_timeout,
                max_size=self.max_frame_bytes,
                # Once we decide to leave, the exchange's close frame can sit behind
                # data websockets stopped reading (back-pressure); do not wait long.
                close_timeout=1.0,
                user_agent_header="ssmd-connector",
                logger=_WS_LOG,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise AuthRejected(
                    f"{self.endpoint} rejected the handshake with HTTP {status}: check the API "
                    "key id and that the private key matches the key registered with Kalshi"
                ) from None
            raise Disconnected(
                f"{self.endpoint} answered the handshake with HTTP {status}"
            ) from None
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise Disconnected(f"cannot connect to {self.endpoint}: {exc}") from None
        assert isinstance(ws, _WatchedConnection)
        ws.last_alive = ws.loop.time()
        self._ws = ws
        self.stats.connected = True
        log.info(
            "connected to %s (%s)", self.endpoint, "signed" if self.credentials else "unsigned"
        )
        await self._subscribe(ws)
        self.stats.subscribed = True
        self._watchdog = asyncio.create_task(self._watch(ws), name="silence-watchdog")

    def _commands(self) -> list[dict[str, Any]]:
        """Subscribe commands: one per subscription, ticker lists cut into batches."""
        commands: list[dict[str, Any]] = []
        for sub in self.subscriptions:
            tickers = list(sub.market_tickers)
            batches = [
                tickers[i : i + self.batch_size] for i in range(0, len(tickers), self.batch_size)
            ]
            for batch in batches or [[]]:
                params: dict[str, Any] = {"channels": list(sub.channels)}
                if batch:
                    params["market_tickers"] = batch
                commands.append({"id": next(self._ids), "cmd": "subscribe", "params": params})
        return commands

    async def _subscribe(self, ws: ClientConnection) -> None:
        pending: dict[int, set[str]] = {}
        for i, command in enumerate(self._commands()):
            if i and self.batch_pause:
                await asyncio.sleep(self.batch_pause)
            pending[command["id"]] = set(command["params"]["channels"])
            await ws.send(orjson.dumps(command).decode())
        try:
            async with asyncio.timeout(self.subscribe_timeout):
                while pending:
                    raw = await ws.recv()
                    self._early.append(raw)
                    self._answer(raw, pending)
        except TimeoutError:
            waiting = sorted({c for chans in pending.values() for c in chans})
            raise SubscribeRejected(
                f"no answer within {self.subscribe_timeout:g}s to subscribe for "
                f"{', '.join(waiting)}"
            ) from None
        except ConnectionClosed as exc:
            raise Disconnected(f"connection closed while subscribing: {_closed(exc)}") from None

    def _answer(self, raw: str | bytes, pending: dict[int, set[str]]) -> None:
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        if not isinstance(msg, dict) or msg.get("id") not in pending:
            return
        cid = msg["id"]
        body = msg.get("msg")
        if not isinstance(body, dict):
            body = {}
        if msg.get("type") == "error":
            self.stats.errors[ErrorType.SUBSCRIBE_REJECTED] += 1
            raise SubscribeRejected(
                f"subscribe to {', '.join(sorted(pending[cid]))} refused by the exchange: "
                f"code {body.get('code')}: {body.get('msg')}"
            )
        if msg.get("type") == "subscribed":
            channel, sid = body.get("channel"), body.get("sid")
            pending[cid].discard(str(channel))
            if isinstance(sid, int):
                self._channel_of[sid] = str(channel)
            self.stats.subscriptions += 1
            log.info("subscribed to %s (sid %s)", channel, sid)
            if not pending[cid]:
                del pending[cid]

    # -- streaming ---------------------------------------------------------------

    async def messages(self) -> AsyncIterator[str | bytes]:
        """Raw frames in arrival order, starting with those read while subscribing."""
        while self._early:
            yield self._early.popleft()
        ws = self._ws
        if ws is None:  # never connected: nothing more to read
            return
        recv = ws.recv
        try:
            while True:
                yield await recv()
        except ConnectionClosed as exc:
            if not self.disconnect_reason:
                self.disconnect_reason = _closed(exc)
        finally:
            self.stats.connected = self.stats.subscribed = False

    def inspect(self, msg: Any) -> None:
        """Protocol bookkeeping on each parsed frame: seq per sid, late errors."""
        if type(msg) is not dict:
            return
        seq = msg.get("seq")
        if seq is not None:
            sid = msg.get("sid")
            last = self._last_seq.get(sid)  # type: ignore[arg-type]
            if last is not None and seq != last + 1 and type(seq) is int:
                channel = self._channel_of.get(sid, "unknown")  # type: ignore[arg-type]
                self.stats.gaps[channel] += 1
                self.stats.errors[ErrorType.SEQUENCE_GAP] += 1
                log.warning("sequence gap on %s sid %s: %s -> %s", channel, sid, last, seq)
            self._last_seq[sid] = seq  # type: ignore[index]
        elif msg.get("type") == "error":
            self.stats.errors[ErrorType.EXCHANGE_ERROR] += 1
            body = msg.get("msg")
            log.error("exchange error: %s", body)

    async def _watch(self, ws: _WatchedConnection) -> None:
        period = min(1.0, self.silence_timeout / 4)
        while True:
            await asyncio.sleep(period)
            silent = ws.loop.time() - ws.last_alive
            if silent > self.silence_timeout:
                self.disconnect_reason = (
                    f"no data or heartbeat from the exchange for {silent:.1f}s "
                    f"(limit {self.silence_timeout:g}s)"
                )
                log.error("%s: dropping the connection", self.disconnect_reason)
                if ws.transport is not None:
                    ws.transport.abort()
                return

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._ws is not None:
            await self._ws.close()
        self.stats.connected = self.stats.subscribed = False


def _closed(exc: ConnectionClosed) -> str:
    if exc.rcvd is not None:
        reason = f" ({exc.rcvd.reason})" if exc.rcvd.reason else ""
        return f"closed by the exchange with code {exc.rcvd.code}{reason}"
    if exc.sent is not None:
        return f"closed by us with code {exc.sent.code} ({exc.sent.reason})"
    return "connection lost without a close frame"
