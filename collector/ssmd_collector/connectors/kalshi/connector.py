"""Kalshi WebSocket connector: signed handshake, subscriptions kept alive, sequences checked.

It hands over raw messages exactly as received, in batches (see ``inbox.py``), each
with its verdict, after one decode of just the envelope fields (``type``, ``id``,
``sid``, ``seq``). Control frames (answers and errors) drive :class:`Subscriptions`;
every frame with a ``sid`` and a ``seq``, except errors, goes through the sequence
check; gaps on an order book ask for fresh snapshots. Frame types it does not know
are archived like any other message.

Liveness: Kalshi pings every 10 s. A connection with no bytes at all (data,
heartbeat or close) for ``silence_timeout`` seconds is treated as dead and aborted,
so the process exits and Kubernetes restarts it (fail fast, never hang). We send no
keepalive pings of our own: a server that answers pings but sends nothing is not
alive for a recorder, and its pongs would hide that.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from itertools import count
from urllib.parse import urlsplit

import msgspec
import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.frames import CloseCode

from ...inbox import InboxConnection, Message
from ...metrics import ErrorType
from ..protocol import (
    AuthRejected,
    ConnectorMetrics,
    ConnectorOptions,
    Delivery,
    Disconnected,
    EventSink,
    Rejection,
    SubscribeRejected,
)
from .sequence import Sequences, Verdict
from .signing import Credentials, auth_headers, load_private_key
from .subscriptions import Command, Subscriptions

log = logging.getLogger("ssmd_collector.kalshi")

# websockets logs every request header at DEBUG, KALSHI-ACCESS-* included. Its
# logger is pinned at INFO so that --log-level debug can never print credentials.
_WS_LOG = logging.getLogger("ssmd_collector.kalshi.websockets")
_WS_LOG.setLevel(logging.INFO)

_CONTROL = frozenset({"subscribed", "ok", "unsubscribed", "error"})
_BINARY = Rejection(ErrorType.BINARY_FRAME, "binary message")
_COMMAND_PAUSE = 0.02
"""Seconds between commands of one channel sent in a row: well under Kalshi's
per-subscription command rate."""


class Envelope(msgspec.Struct):
    """The fields of a Kalshi message the connector reads; all others are skipped
    (still syntax-checked) without building objects for them."""

    type: str = ""
    id: int | None = None
    sid: int | None = None
    seq: int | None = None


class _Snapshot(msgspec.Struct):
    market_ticker: str | None = None


class _SnapshotFrame(msgspec.Struct):
    msg: _Snapshot = msgspec.field(default_factory=_Snapshot)


_decode_envelope = msgspec.json.Decoder(Envelope).decode
_decode_snapshot = msgspec.json.Decoder(_SnapshotFrame).decode
_decode_any = msgspec.json.Decoder().decode


class KalshiConnector:
    def __init__(
        self,
        endpoint: str,
        wanted: dict[str, tuple[str, ...] | None],
        options: ConnectorOptions,
        events: EventSink,
        *,
        credentials: Credentials | None = None,
        ssl_context: ssl.SSLContext | None = None,
        open_timeout: float = 10.0,
        clock_ns: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoint = endpoint
        self.options = options
        self.events = events
        self.credentials = credentials
        self.ssl_context = ssl_context
        self.open_timeout = open_timeout
        self.clock_ns = clock_ns
        self.monotonic = monotonic
        self.metrics = ConnectorMetrics()
        self.disconnect_reason = ""
        self.subscriptions = Subscriptions(
            wanted,
            batch_size=options.subscribe_batch_size,
            answer_timeout=options.answer_timeout,
            snapshot_timeout=options.snapshot_timeout,
            max_deaths=options.max_deaths,
            death_window=options.death_window,
            events=events,
            metrics=self.metrics,
            ids=count(1),
            monotonic=monotonic,
        )
        self._sequences = Sequences()
        self._ws: InboxConnection | None = None
        self._early: deque[Delivery] = deque()
        self._outbox: list[Command] = []
        self._failure: SubscribeRejected | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._send_wake = asyncio.Event()

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
                max_size=self.options.max_frame_bytes,
                # Once we decide to leave, the exchange's close frame can sit behind
                # data websockets stopped reading (back-pressure); do not wait long.
                close_timeout=1.0,
                user_agent_header="ssmd-connector",
                logger=_WS_LOG,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                self.metrics.errors[ErrorType.AUTH_REJECTED] += 1
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
        self.metrics.connected = True
        signed = self.credentials is not None
        log.info("connected to %s (%s)", self.endpoint, "signed" if signed else "unsigned")
        self.events.record("connected", endpoint=self.endpoint, signed=signed)
        self._sender = asyncio.create_task(self._send_loop(ws), name="kalshi-commands")
        self._queue(self.subscriptions.start())
        await self._until_live(ws)
        self._watchdog = asyncio.create_task(self._watch(ws), name="kalshi-watchdog")

    async def _until_live(self, ws: InboxConnection) -> None:
        """Read (and keep) what arrives until every channel is live, or fail."""
        try:
            async with asyncio.timeout(self.options.answer_timeout):
                while not self.subscriptions.live:
                    batch = await ws.inbox.take()
                    if not batch:
                        raise Disconnected(
                            f"connection closed while subscribing: {self._close_reason(ws)}"
                        )
                    self._early.extend(self._inspect(batch))
                    if self._failure is not None:
                        failure, self._failure = self._failure, None
                        raise failure
        except TimeoutError:
            raise SubscribeRejected(
                f"no answer within {self.options.answer_timeout:g}s to subscribe for "
                f"{', '.join(self.subscriptions.waiting_for())}"
            ) from None

    def _queue(self, commands: Sequence[Command]) -> None:
        if commands:
            self._outbox.extend(commands)
            self._send_wake.set()

    async def _send_loop(self, ws: InboxConnection) -> None:
        """Sends queued commands in order; commands of one channel a short pause apart
        (Kalshi limits the command rate per subscription, error 27)."""
        last_channel = ""
        while True:
            await self._send_wake.wait()
            self._send_wake.clear()
            while self._outbox:
                command = self._outbox.pop(0)
                if command.channel == last_channel:
                    await asyncio.sleep(_COMMAND_PAUSE)
                last_channel = command.channel
                command.sent_at = self.monotonic()
                try:
                    await ws.send(command.encode())
                except ConnectionClosed:
                    return
            last_channel = ""

    # -- streaming ---------------------------------------------------------------

    async def batches(self) -> AsyncIterator[list[Delivery]]:
        """Messages in arrival order, as batches; those read while subscribing first."""
        if self._early:
            early, self._early = list(self._early), deque()
            yield early
        ws = self._ws
        if ws is None:  # never connected: nothing more to read
            return
        take = ws.inbox.take
        inspect = self._inspect
        try:
            while batch := await take():
                yield inspect(batch)
                if self._failure is not None:
                    raise self._failure
            if not self.disconnect_reason:
                self.disconnect_reason = self._close_reason(ws)
            if self._failure is not None:
                raise self._failure
        finally:
            self.metrics.connected = False

    def pending(self) -> list[Delivery]:
        """Messages already read but not yet handed over, without waiting (for a stop)."""
        early, self._early = list(self._early), deque()
        if self._ws is not None:
            early.extend(self._inspect(self._ws.inbox.take_nowait()))
        return early

    def _inspect(self, batch: list[Message]) -> list[Delivery]:
        """Give each message its verdict and do the protocol's bookkeeping (hot path)."""
        out: list[Delivery] = []
        append = out.append
        decode = _decode_envelope
        check = self._sequences.check
        for ns, text, payload in batch:
            if not text:
                append((ns, payload, _BINARY))
                continue
            try:
                env = decode(payload)
                if not payload.isascii():
                    payload.decode()  # the envelope decode skips strings without UTF-8 checks
            except msgspec.ValidationError:
                # Valid JSON of another shape (an array, a string sid...): data all the same.
                append((ns, payload, _valid_json(payload)))
                continue
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                append((ns, payload, Rejection(ErrorType.INVALID_JSON, str(exc))))
                continue
            append((ns, payload, None))
            kind = env.type
            if kind in _CONTROL:
                self._control(payload, env, ns)
                if kind == "error":
                    continue  # an error is never part of a sequence, seq or not
            if env.seq is not None and env.sid is not None:
                verdict, last = check(env.sid, env.seq)
                if verdict is not Verdict.IN_ORDER:
                    self._out_of_order(verdict, env.sid, env.seq, last, ns)
            if kind == "orderbook_snapshot" and env.id is not None and env.sid is not None:
                market = _decode_snapshot(payload).msg.market_ticker
                self.subscriptions.snapshot(env.sid, market, ns)
        return out

    def _control(self, payload: bytes, env: Envelope, ns: int) -> None:
        frame = _decode_any(payload)
        if not isinstance(frame, dict):
            return
        if env.type == "error":
            msg = frame.get("msg")
            body = msg if isinstance(msg, dict) else {}
            log.error(
                "exchange error code %s: %s (id %s, sid %s, seq %s)",
                body.get("code"),
                body.get("msg"),
                env.id,
                env.sid,
                env.seq,
            )
        if env.type == "unsubscribed" and env.sid is not None:
            self._sequences.forget(env.sid)
        try:
            self._queue(self.subscriptions.answer(frame, ns))
        except SubscribeRejected as exc:
            self.metrics.errors[ErrorType.SUBSCRIBE_REJECTED] += 1
            self._fail(exc)
        if env.type == "error" and env.sid is not None and not self._sid_known(env.sid):
            self._sequences.forget(env.sid)

    def _sid_known(self, sid: int) -> bool:
        return self.subscriptions.channel_of(sid) != "unknown"

    def _out_of_order(self, verdict: Verdict, sid: int, seq: int, last: int, ns: int) -> None:
        channel = self.subscriptions.channel_of(sid)
        if verdict is Verdict.GAP:
            self.metrics.gaps[channel] += 1
            self.metrics.errors[ErrorType.SEQUENCE_GAP] += 1
            log.warning("sequence gap on %s sid %s: %s -> %s", channel, sid, last, seq)
            self.events.record("gap", ns, channel=channel, sid=sid, expected=last + 1, received=seq)
            self._queue(self.subscriptions.gap(sid, ns))
        else:
            self.metrics.duplicates[channel] += 1
            self.events.record("duplicate", ns, channel=channel, sid=sid, last=last, received=seq)

    def _fail(self, exc: SubscribeRejected) -> None:
        """Remember the first fatal subscription problem; the stream ends with it."""
        if self._failure is None:
            self._failure = exc
            self.disconnect_reason = str(exc)
            log.error("%s", exc)
            if self._ws is not None and self._ws.transport is not None:
                # End the stream: what was read is still handed over before the raise.
                self._ws.inbox.close()

    def _close_reason(self, ws: InboxConnection) -> str:
        exc = ws.protocol.close_exc
        if exc.sent is not None and exc.sent.code == CloseCode.MESSAGE_TOO_BIG:
            self.metrics.errors[ErrorType.FRAME_TOO_LARGE] += 1
        return _closed(exc)

    async def _watch(self, ws: InboxConnection) -> None:
        period = min(1.0, self.options.silence_timeout / 4)
        while True:
            await asyncio.sleep(period)
            try:
                self._queue(self.subscriptions.due())
            except SubscribeRejected as exc:
                self.metrics.errors[ErrorType.SUBSCRIBE_REJECTED] += 1
                self._fail(exc)
                return
            if ws.inbox.paused:  # we stopped reading (storage is behind), not the exchange
                continue
            silent = time.monotonic() - ws.last_read
            if silent > self.options.silence_timeout:
                self.disconnect_reason = (
                    f"no data or heartbeat from the exchange for {silent:.2f}s "
                    f"(limit {self.options.silence_timeout:g}s)"
                )
                log.error("%s: dropping the connection", self.disconnect_reason)
                if ws.transport is not None:
                    ws.transport.abort()
                return

    async def close(self) -> None:
        for task in (self._watchdog, self._sender):
            if task is not None:
                task.cancel()
        if self._ws is not None:
            await self._ws.close()
        self.metrics.connected = False


def _valid_json(payload: bytes) -> Rejection | None:
    try:
        _decode_any(payload)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return Rejection(ErrorType.INVALID_JSON, str(exc))
    return None


def _closed(exc: ConnectionClosed) -> str:
    if exc.rcvd is not None:
        reason = f" ({exc.rcvd.reason})" if exc.rcvd.reason else ""
        return f"closed by the exchange with code {exc.rcvd.code}{reason}"
    if exc.sent is not None:
        return f"closed by us with code {exc.sent.code} ({exc.sent.reason})"
    return "connection lost without a close frame"
