"""Kalshi WebSocket connector: signed handshake, subscriptions, liveness, sequence tracking.

It hands over raw messages exactly as received, in batches (see ``inbox.py``),
and interprets only what the protocol needs: subscribe answers (every one is
checked; an error stops the process), ``seq`` per ``sid`` (gaps are counted),
and late ``error`` messages. ``check`` validates a message as JSON and does that
bookkeeping in one decode of just the envelope fields.

Liveness: Kalshi pings every 10 s. A connection with no bytes at all (data,
heartbeat or close) for ``silence_timeout`` seconds is treated as dead and
aborted, so the process exits and Kubernetes restarts it (fail fast, never
hang). We send no keepalive pings of our own: a server that answers pings but
sends nothing is not alive for a recorder, and its pongs would hide that.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from itertools import count
from typing import Any
from urllib.parse import urlsplit

import msgspec
import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.frames import CloseCode

from .inbox import InboxConnection, Message
from .metadata import Subscription
from .metrics import ErrorType, Stats
from .signing import auth_headers, load_private_key

log = logging.getLogger(__name__)

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


class Envelope(msgspec.Struct):
    """The fields of a Kalshi message the collector reads; all others are skipped
    (still syntax-checked) without building objects for them."""

    type: str = ""
    sid: int | None = None
    seq: int | None = None


_decode_envelope = msgspec.json.Decoder(Envelope).decode
_decode_any = msgspec.json.Decoder().decode


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
        clock_ns: Callable[[], int] = time.time_ns,
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
        self.clock_ns = clock_ns
        self.disconnect_reason = ""
        self._ws: InboxConnection | None = None
        self._early: deque[Message] = deque()
        self._ids = count(1)
        self._last_seq: dict[int | None, int] = {}
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
                # websockets calls this with the protocol and keyword options.
                create_connection=functools.partial(  # type: ignore[arg-type]
                    InboxConnection, clock_ns=self.clock_ns
                ),
                ping_interval=None,  # liveness is the exchange's heartbeat (see above)
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
        assert isinstance(ws, InboxConnection)
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

    async def _subscribe(self, ws: InboxConnection) -> None:
        pending: dict[int, set[str]] = {}
        for i, command in enumerate(self._commands()):
            if i and self.batch_pause:
                await asyncio.sleep(self.batch_pause)
            pending[command["id"]] = set(command["params"]["channels"])
            await ws.send(msgspec.json.encode(command).decode())
        try:
            async with asyncio.timeout(self.subscribe_timeout):
                while pending:
                    batch = await ws.inbox.take()
                    if not batch:
                        raise Disconnected(
                            f"connection closed while subscribing: {self._close_reason(ws)}"
                        )
                    self._early.extend(batch)
                    for _, text, payload in batch:
                        if text:
                            self._answer(payload, pending)
                        if not pending:
                            break
        except TimeoutError:
            waiting = sorted({c for chans in pending.values() for c in chans})
            raise SubscribeRejected(
                f"no answer within {self.subscribe_timeout:g}s to subscribe for "
                f"{', '.join(waiting)}"
            ) from None

    def _answer(self, raw: bytes, pending: dict[int, set[str]]) -> None:
        try:
            msg = _decode_any(raw)
        except (msgspec.DecodeError, UnicodeDecodeError):
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

    async def batches(self) -> AsyncIterator[list[Message]]:
        """Messages in arrival order, as batches; those read while subscribing first."""
        if self._early:
            early, self._early = list(self._early), deque()
            yield early
        ws = self._ws
        if ws is None:  # never connected: nothing more to read
            return
        take = ws.inbox.take
        try:
            while batch := await take():
                yield batch
            if not self.disconnect_reason:
                self.disconnect_reason = self._close_reason(ws)
        finally:
            self.stats.connected = self.stats.subscribed = False

    def pending(self) -> list[Message]:
        """Messages already read but not yet handed over, without waiting (for a stop)."""
        early, self._early = list(self._early), deque()
        if self._ws is not None:
            early.extend(self._ws.inbox.take_nowait())
        return early

    def check(self, payload: bytes) -> str | None:
        """Validate one text message as JSON and track its ``seq``; the problem, or None."""
        try:
            env = _decode_envelope(payload)
            if not payload.isascii():
                payload.decode()  # the envelope decode skips strings without UTF-8 checks
        except msgspec.ValidationError:
            # Valid JSON of another shape (an array, a string sid...): data all the same.
            try:
                _decode_any(payload)
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                return str(exc)
            return None
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            return str(exc)
        seq = env.seq
        if seq is not None:
            sid = env.sid
            last = self._last_seq.get(sid)
            if last is not None and seq != last + 1:
                channel = self._channel_of.get(sid, "unknown") if sid is not None else "unknown"
                self.stats.gaps[channel] += 1
                self.stats.errors[ErrorType.SEQUENCE_GAP] += 1
                log.warning("sequence gap on %s sid %s: %s -> %s", channel, sid, last, seq)
            self._last_seq[sid] = seq
        elif env.type == "error":
            self.stats.errors[ErrorType.EXCHANGE_ERROR] += 1
            log.error("exchange error: %s", payload[:500].decode(errors="replace"))
        return None

    def _close_reason(self, ws: InboxConnection) -> str:
        exc = ws.protocol.close_exc
        if exc.sent is not None and exc.sent.code == CloseCode.MESSAGE_TOO_BIG:
            self.stats.errors[ErrorType.FRAME_TOO_LARGE] += 1
        return _closed(exc)

    async def _watch(self, ws: InboxConnection) -> None:
        period = min(1.0, self.silence_timeout / 4)
        while True:
            await asyncio.sleep(period)
            if ws.inbox.paused:  # we stopped reading (storage is behind), not the exchange
                continue
            silent = time.monotonic() - ws.last_read
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
