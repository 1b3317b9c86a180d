"""The simulated Kalshi exchange: a WebSocket server speaking the market-data protocol.

:class:`SimServer` verifies signed handshakes (RSA-PSS or Ed25519; HTTP 401 before the
upgrade otherwise; unsigned connections only with ``SimConfig.allow_unsigned``), answers
commands through :mod:`.protocol`, streams frames from a per-connection
:class:`~.source.FrameSource` (the synthetic :class:`~.market.Feed` unless
``SimConfig.source`` names another, such as an archive replay), sends ``heartbeat``
pings, and ends each connection the way :class:`SimConfig` says (close, dropped TCP, or
silence). Every accepted connection gets a :class:`SimSession` that records what went
over the wire, for tests to assert on, and injects faults (sequence gaps, duplicates,
subscriptions killed by error 10 or 25, unknown frame types, unknown fields).

Hot path: data frames, command answers and heartbeat pings are framed here and written
to the transport in one ``write`` per batch, bypassing ``websockets``' per-message
``send()`` (about three times slower, measured). That is safe because the server never
negotiates extensions (``compression=None``) and server frames are unmasked, so a text
frame is a 2-10 byte header plus the UTF-8 payload; frames are written only while the
connection is OPEN, and ``websockets`` still owns the handshake, reading, pongs and the
closing handshake. Back-pressure goes through the connection's ``drain()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import socket
import ssl as ssl_module
import struct
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from ssmd_collector.connectors.kalshi import signing
from ssmd_collector.sim.listing import BadRequest, Listing
from ssmd_collector.sim.market import LIFECYCLE, MVE_LIFECYCLE, SEQUENCED_CHANNELS, Feed, Stream
from ssmd_collector.sim.protocol import CommandLimits, Commands, ErrorCode, SecondSubscribe
from ssmd_collector.sim.source import FrameSource

logger = logging.getLogger(__name__)

# websockets logs every request header at DEBUG, KALSHI-ACCESS-* included. The
# simulator runs in clusters too, so its websockets logger is pinned at INFO.
_WS_LOG = logging.getLogger(f"{__name__}.websockets")
_WS_LOG.setLevel(logging.INFO)

_BATCH = 512
"""Most data frames written per transport write: bounds loop latency at rate=0."""

_WRITE_LIMIT = 2**18
"""Transport high-water mark; drain() waits below it, so memory per connection is bounded."""

_PING = bytes((0x89, 9)) + b"heartbeat"
_H16 = struct.Struct("!BBH")
_H64 = struct.Struct("!BBQ")

_EXTRA_MSG = ',"sim_future_field":{"added":"2099-01-01","values":[1,"a",null]}}'
_EXTRA_TOP = ',"sim_future_envelope":true}'
"""Unknown fields appended inside ``msg`` and to the envelope of each data frame when
extra fields are on."""


def _with_extra_fields(frame: str) -> str:
    # Data frames end with the msg object: frame[:-2] is the inside of msg.
    return f"{frame[:-2]}{_EXTRA_MSG}{_EXTRA_TOP}"


def _header(opcode: int, length: int) -> bytes:
    """RFC 6455 header of an unfragmented, unmasked (server-to-client) frame."""
    if length < 126:
        return bytes((0x80 | opcode, length))
    if length < 65_536:
        return _H16.pack(0x80 | opcode, 126, length)
    return _H64.pack(0x80 | opcode, 127, length)


class Ending(enum.Enum):
    """What happens after ``SimConfig.messages`` data messages."""

    NONE = "none"
    """Stop data, keep answering commands and sending heartbeats (idle)."""
    CLOSE = "close"
    """Normal closing handshake, code 1000."""
    DROP = "drop"
    """Close TCP after the last frame without a close frame (a dropped connection)."""
    SILENT = "silent"
    """No more data, pings or answers; TCP stays open (a stuck exchange)."""


@dataclass
class SimConfig:
    """How the simulated exchange listens, authenticates, streams and ends connections."""

    host: str = "127.0.0.1"
    port: int = 8765
    """0 picks a free port; read the result from ``SimServer.url``."""
    path: str = signing.WS_PATH
    ssl: ssl_module.SSLContext | None = None
    """Serve wss:// with this context."""
    public_key_pem: bytes | None = None
    """RSA or Ed25519 public key (PEM): handshakes must carry valid KALSHI-ACCESS-*
    headers signed by its private half (else HTTP 401), and count as authenticated."""
    api_key_id: str | None = None
    """When set with ``public_key_pem``, KALSHI-ACCESS-KEY must equal it."""
    allow_unsigned: bool = False
    """Explicit opt-in to unsigned connections (Kalshi requires signing; this sim does
    too unless told otherwise). They are unauthenticated: private channels answer 9.
    With a ``public_key_pem`` too, signed handshakes are still verified. Without either,
    :class:`SimServer` refuses to start."""
    timestamp_window: float | None = 60.0
    """Largest accepted distance in s between KALSHI-ACCESS-TIMESTAMP and ``wall_clock``;
    None turns the check off (tests not about skew, so a slow signer never trips them)."""
    wall_clock: Callable[[], float] = time.time
    """Unix time in s for the timestamp check."""
    seed: int = 0
    """Same seed + same commands at the same points of the stream -> byte-identical frames."""
    rate: float = 50.0
    """Data messages per second per connection; 0 means as fast as the client reads."""
    messages: int | None = None
    """Apply ``ending`` after this many data messages (answers are not counted)."""
    ending: Ending = Ending.NONE
    heartbeat: float = 10.0
    """Seconds between Ping frames with payload ``heartbeat``; 0 disables them."""
    markets: int = 20
    """Size of the universe streamed to subscriptions without a market filter."""
    record: bool = True
    """Record data frames in ``SimSession.sent``. Long runs and benchmarks turn it off so
    memory stays bounded; answers, errors and injected frames are always recorded."""
    second_subscribe: SecondSubscribe = SecondSubscribe.IGNORE
    """Answer to a ``subscribe`` of a channel that already has a sid on the connection:
    none at all (Kalshi today) or error 6."""
    max_markets_per_subscription: int | None = None
    """Error 26 when a subscribe or add_markets would give one sid more markets."""
    max_commands_per_second: float | None = None
    """Error 27 when commands naming one sid exceed this many in any 1 s of ``clock``."""
    clock: Callable[[], float] = time.monotonic
    """Monotonic seconds for the command rate (error 27)."""
    extra_fields: bool = False
    """Add unknown fields to every data frame, in ``msg`` and in the envelope (a feed
    that grew fields the client does not know); see also ``SimSession.extra_fields``."""
    source: Callable[[], FrameSource] | None = None
    """Makes each connection's source of data frames; None: the synthetic market
    (``Feed(seed, markets)``). A source with timing of its own (an archive) is paced by
    its ``delay()``; set ``rate=0`` so the rate adds no limit of its own."""
    rest_path: str = "/trade-api/v2"
    """REST base path, served on the same port as the WebSocket (plain HTTP GETs):
    ``GET <rest_path>/markets`` and ``<rest_path>/events`` from :class:`~.listing.Listing`."""
    rest_throttle_every: int | None = None
    """Answer every n-th REST request with 429 ``{"error":"too many requests"}``."""
    life_interval: float = 0.0
    """A living universe: every this many seconds one market is listed (announced
    ``created`` on lifecycle subscriptions) and the oldest open one is determined and
    settled. 0 keeps the listing still (tests drive it with ``SimServer.create_market``)."""
    overflow_bytes: int | None = None
    """A slow consumer's fate: once more than this many bytes wait unsent on a
    connection, every sid producing data ends with error 25 (scoped: ``sid``, ``seq``).
    Keep it below 262144 (the write buffer's high-water mark) or it is never reached."""

    def limits(self) -> CommandLimits:
        return CommandLimits(
            second_subscribe=self.second_subscribe,
            max_markets_per_subscription=self.max_markets_per_subscription,
            max_commands_per_second=self.max_commands_per_second,
            clock=self.clock,
        )


@dataclass(eq=False)
class SimSession:
    """One accepted connection, as seen from the exchange side, and its fault injection.

    ``sent`` holds every text frame sent, in order, exactly as sent (answers, errors,
    data unless ``SimConfig.record`` is off, and injected frames); binary frames
    injected with :meth:`send_raw` go to ``sent_binary``. ``received`` holds every frame
    the client sent; ``commands`` those that parsed as JSON objects.
    ``request_headers`` are the upgrade request's headers, names as the client sent them.

    Fault injection (all act between two batches of data, so frames stay whole):
    :meth:`skip_seq`, :meth:`duplicate_last`, :meth:`end_subscription`,
    :meth:`send_unknown_type`, :attr:`extra_fields`, :meth:`send_raw`; and from the
    config, ``SimConfig.overflow_bytes`` (sids ended by it are listed in ``overflowed``).
    """

    request_headers: dict[str, str]
    authenticated: bool
    sent: list[str] = field(default_factory=list)
    sent_binary: list[bytes] = field(default_factory=list)
    received: list[str | bytes] = field(default_factory=list)
    commands: list[dict[str, Any]] = field(default_factory=list)
    data_sent: int = 0
    ending: Ending | None = None
    """The ending applied, once it has been."""
    done: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the ending has been applied or the connection closed."""
    extra_fields: bool = False
    """While True, every data frame sent gets unknown fields (``msg`` and envelope)."""
    overflowed: list[int] = field(default_factory=list)
    """sids ended by error 25 because the client read too slowly (``overflow_bytes``)."""
    _connection: ServerConnection | None = field(default=None, repr=False)
    _conversation: _Conversation | None = field(default=None, repr=False)

    def subscriptions(self) -> dict[int, str]:
        """The live subscriptions, sid -> channel, in the order they were made."""
        return {sid: s.channel for sid, s in self._talk().commands.subscriptions.items()}

    def sid_of(self, channel: str) -> int:
        """The sid subscribed to ``channel`` (KeyError when there is none)."""
        for sid, name in self.subscriptions().items():
            if name == channel:
                return sid
        raise KeyError(f"no subscription to {channel!r}: have {self.subscriptions()}")

    def seq_of(self, sid: int) -> int:
        """The last ``seq`` used on ``sid`` (0 before any)."""
        return self._subscription(sid).seq

    def skip_seq(self, sid: int, count: int = 1) -> None:
        """Leave out ``count`` sequence numbers on ``sid``: the next frame carrying a seq
        there (data or answer) jumps by ``count + 1``, as after lost frames."""
        if count < 1:
            raise ValueError(f"count must be >= 1, found {count}")
        self._subscription(sid).seq += count

    async def duplicate_last(self, sid: int) -> str:
        """Send the last sequenced data frame of ``sid`` again, byte for byte; return it."""
        frame = self._subscription(sid).last
        if not frame:
            raise ValueError(f"sid {sid} has sent no sequenced data frame yet")
        if self.extra_fields:
            frame = _with_extra_fields(frame)  # as the original went out
        await self._send([frame])
        return frame

    async def end_subscription(self, sid: int, code: int = ErrorCode.BUFFER_OVERFLOW) -> str:
        """Kill ``sid`` with a terminal error (10 Channel error or 25 Subscription buffer
        overflow): the error frame carries top-level ``sid`` and the next ``seq``; then
        the sid sends nothing more and is unknown to later commands. Returns the frame."""
        error = ErrorCode(code)
        frame = self._talk().commands.end_subscription(sid, error)
        await self._send([frame])
        return frame

    async def send_unknown_type(self, frame_type: str = "sim_future_type", sid: int = 0) -> str:
        """Send a data frame of a type no client knows; on ``sid`` (if not 0) it carries
        the sid and, on a sequenced channel, the next seq. Returns the frame."""
        envelope: dict[str, object] = {"type": frame_type}
        if sid:
            sub = self._subscription(sid)
            envelope["sid"] = sid
            if sub.channel in SEQUENCED_CHANNELS:
                envelope["seq"] = sub.next_seq()
        envelope["msg"] = {"note": "a frame type added after this client was written"}
        frame = json.dumps(envelope, separators=(",", ":"))
        await self._send([frame])
        return frame

    async def close(self) -> None:
        """End the connection with a normal close (code 1000), as an exchange going away
        does; a no-op once it is closed."""
        if self._connection is not None:
            await self._connection.close()

    async def send_raw(self, frame: str | bytes) -> None:
        """Send ``frame`` verbatim (text for ``str``, binary for ``bytes``): a test hook
        for malformed or unexpected frames. Raises ``ConnectionClosed`` once closed."""
        connection = self._connection
        if connection is None:
            raise RuntimeError("session has no connection")
        if isinstance(frame, str):
            self.sent.append(frame)
        else:
            self.sent_binary.append(frame)
        await connection.send(frame)

    def _talk(self) -> _Conversation:
        if self._conversation is None:
            raise RuntimeError("session has no conversation")
        return self._conversation

    def _subscription(self, sid: int) -> Stream:
        sub = self._talk().commands.subscriptions.get(sid)
        if sub is None:
            raise KeyError(f"no live subscription with sid {sid}: have {self.subscriptions()}")
        return sub

    async def _send(self, frames: list[str]) -> None:
        talk = self._talk()
        if not talk.write(frames, data=False):
            raise ConnectionClosed(None, None)
        await talk.connection.drain()


class SimServer:
    """The simulated exchange, as an async context manager::

    async with SimServer(SimConfig(port=0, public_key_pem=pem)) as sim:
        headers = signing.auth_headers(key_id, private_key)
        async with websockets.connect(sim.url, additional_headers=headers) as ws: ...
    """

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.url = ""
        self.sessions: list[SimSession] = []
        self.rejected_handshakes = 0
        self.rejections: list[str] = []
        """Why each rejected handshake was rejected, in order."""
        pem = config.public_key_pem
        if pem is None and not config.allow_unsigned:
            raise ValueError(
                "SimConfig: public_key_pem is required (Kalshi accepts signed connections "
                "only); set allow_unsigned=True to opt in to unsigned ones"
            )
        self._public_key = None if pem is None else signing.load_public_key(pem)
        self._authenticated: weakref.WeakKeyDictionary[ServerConnection, bool] = (
            weakref.WeakKeyDictionary()
        )
        self._server: Server | None = None
        self._session_added: asyncio.Condition | None = None
        self.listing = Listing(config.markets)
        """The markets REST reports; changed through :meth:`create_market` and
        :meth:`settle_market` so lifecycle subscriptions hear of it."""
        self.rest_requests: list[str] = []
        """Every REST request's path and query, in order (429s included)."""
        self._throttle = 0
        self._life: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SimServer:
        config = self.config
        self._session_added = asyncio.Condition()
        sock = _listening_socket(config.host, config.port)
        try:
            self._server = await serve(
                self._handle,
                sock=sock,
                ssl=config.ssl,
                process_request=self._process_request,
                # No permessage-deflate: it would dominate the send path at benchmark
                # rates, and the raw framing in this module relies on no extensions.
                compression=None,
                ping_interval=None,  # heartbeats are ours: Kalshi's payload, no pong timeout
                close_timeout=2,
                write_limit=_WRITE_LIMIT,
                logger=_WS_LOG,
            )
        except BaseException:
            sock.close()
            raise
        scheme = "wss" if config.ssl is not None else "ws"
        host = config.host or "localhost"  # "" listens everywhere; connect locally
        host = f"[{host}]" if ":" in host else host
        self.url = f"{scheme}://{host}:{sock.getsockname()[1]}{config.path}"
        http = "https" if config.ssl is not None else "http"
        self.rest_url = f"{http}://{host}:{sock.getsockname()[1]}{config.rest_path}"
        if config.life_interval > 0:
            self._life = asyncio.create_task(self._live(), name="sim-life")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._life is not None:
            self._life.cancel()
            await asyncio.gather(self._life, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # -- the listing (REST) and its life -----------------------------------------

    def throttle(self, requests: int) -> None:
        """Answer the next ``requests`` REST requests with 429, as Kalshi's rate limit."""
        self._throttle += requests

    def create_market(self, event_ticker: str | None = None) -> str:
        """List a new open market and announce it (``created``) on every lifecycle
        subscription; its order book flows once a client adds it. Returns its ticker."""
        ticker, msg = self.listing.create(event_ticker)
        self._announce(msg, multivariate=False)
        return ticker

    def settle_market(self, ticker: str) -> None:
        """Determine and settle ``ticker``, announced on every lifecycle subscription."""
        determined = self.listing.determine(ticker)
        settled = self.listing.settle(ticker)
        for msg in (determined, settled):
            self._announce(msg, multivariate=ticker.startswith("KXMVE"))

    def _announce(self, msg: dict[str, Any], *, multivariate: bool) -> None:
        channel = MVE_LIFECYCLE if multivariate else LIFECYCLE
        for session in self.sessions:
            talk = session._conversation
            # Only the synthetic market lives; a replayed archive streams what it holds.
            if talk is not None and not session.done.is_set() and isinstance(talk.feed, Feed):
                talk.feed.announce(channel, msg)
                talk.wake.set()

    async def _live(self) -> None:
        while True:
            await asyncio.sleep(self.config.life_interval)
            self.create_market()
            oldest = next((m.ticker for m in self.listing if m.status == "active"
                           and not m.multivariate), None)  # fmt: skip
            if oldest is not None:
                self.settle_market(oldest)

    def _rest(self, connection: ServerConnection, request: Request) -> Response:
        """A REST GET on the listing: JSON body, 400 naming a bad parameter, 404, 429."""
        self.rest_requests.append(request.path)
        parts = urlsplit(request.path)
        if self._public_key is not None and signing.KEY_HEADER in request.headers:
            problem = self._signature_problem(request.headers, parts.path)
            if problem is not None:
                return _json(connection, HTTPStatus.UNAUTHORIZED, {"error": problem})
        every = self.config.rest_throttle_every
        if self._throttle > 0 or (every and len(self.rest_requests) % every == 0):
            self._throttle = max(0, self._throttle - 1)
            return _json(connection, HTTPStatus.TOO_MANY_REQUESTS, {"error": "too many requests"})
        params = dict(parse_qsl(parts.query))
        route = parts.path.removeprefix(self.config.rest_path)
        try:
            if route == "/markets":
                return _json(connection, HTTPStatus.OK, self.listing.get_markets(params))
            if route == "/events":
                return _json(connection, HTTPStatus.OK, self.listing.get_events(params))
        except BadRequest as exc:
            body = {"error": {"code": "bad_request", "message": str(exc)}}
            return _json(connection, HTTPStatus.BAD_REQUEST, body)
        body = {"error": {"code": "not_found", "message": f"no endpoint at {parts.path}"}}
        return _json(connection, HTTPStatus.NOT_FOUND, body)

    async def wait_session(self, index: int = 0, timeout: float = 30) -> SimSession:  # noqa: ASYNC109
        """The ``index``-th accepted connection (0-based), waiting up to ``timeout`` s."""
        if self._session_added is None:
            raise RuntimeError("SimServer is not running; use it as 'async with'")
        try:
            async with asyncio.timeout(timeout), self._session_added:
                await self._session_added.wait_for(lambda: len(self.sessions) > index)
        except TimeoutError:
            raise TimeoutError(
                f"no connection #{index} within {timeout} s "
                f"({len(self.sessions)} accepted, {self.rejected_handshakes} rejected)"
            ) from None
        return self.sessions[index]

    # -- handshake -------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path.startswith(self.config.rest_path + "/") and "Upgrade" not in request.headers:
            return self._rest(connection, request)
        if path != self.config.path:
            return self._reject(
                connection, HTTPStatus.NOT_FOUND, f"no endpoint at {path}; use {self.config.path}"
            )
        signed = any(
            h in request.headers
            for h in (signing.KEY_HEADER, signing.TIMESTAMP_HEADER, signing.SIGNATURE_HEADER)
        )
        if self._public_key is None or (self.config.allow_unsigned and not signed):
            self._authenticated[connection] = False  # allow_unsigned (checked at start)
            return None
        problem = self._signature_problem(request.headers, path)
        if problem is not None:
            return self._reject(connection, HTTPStatus.UNAUTHORIZED, problem)
        self._authenticated[connection] = True
        return None

    def _signature_problem(self, headers: Headers, path: str) -> str | None:
        """Why the KALSHI-ACCESS-* headers do not authenticate, or None when they do."""
        assert self._public_key is not None
        key_id = headers.get(signing.KEY_HEADER, "")
        timestamp = headers.get(signing.TIMESTAMP_HEADER, "")
        signature = headers.get(signing.SIGNATURE_HEADER, "")
        missing = [
            name
            for name, value in (
                (signing.KEY_HEADER, key_id),
                (signing.TIMESTAMP_HEADER, timestamp),
                (signing.SIGNATURE_HEADER, signature),
            )
            if not value
        ]
        if missing:
            return f"missing header(s) {', '.join(missing)}"
        if self.config.api_key_id is not None and key_id != self.config.api_key_id:
            return f"unknown {signing.KEY_HEADER}"
        if not timestamp.isdigit():
            return f"{signing.TIMESTAMP_HEADER} must be unix time in milliseconds"
        skew_s = abs(self.config.wall_clock() - int(timestamp) / 1000)
        window = self.config.timestamp_window
        if window is not None and skew_s > window:
            return f"{signing.TIMESTAMP_HEADER} is {skew_s:.0f} s away from server time"
        if not signing.verify(self._public_key, timestamp, "GET", path, signature):
            return f"{signing.SIGNATURE_HEADER} does not verify for GET {path}"
        return None

    def _reject(self, connection: ServerConnection, status: HTTPStatus, reason: str) -> Response:
        self.rejected_handshakes += 1
        self.rejections.append(reason)
        logger.info("sim: rejected handshake (%d): %s", status, reason)
        return connection.respond(status, f"{reason}\n")

    # -- connections -----------------------------------------------------------

    async def _handle(self, connection: ServerConnection) -> None:
        assert connection.request is not None
        assert self._session_added is not None
        session = SimSession(
            request_headers=dict(connection.request.headers.raw_items()),
            authenticated=self._authenticated.pop(connection, False),
            _connection=connection,
        )
        self.sessions.append(session)
        async with self._session_added:
            self._session_added.notify_all()
        conversation = _Conversation(self.config, connection, session)
        session._conversation = conversation
        try:
            await conversation.run()
        finally:
            session.done.set()


class _Conversation:
    """One connection's tasks: the command reader (here), the streamer, the heartbeat."""

    def __init__(self, config: SimConfig, connection: ServerConnection, session: SimSession):
        self.config = config
        self.connection = connection
        self.session = session
        self.feed: FrameSource = (
            config.source() if config.source else Feed(seed=config.seed, markets=config.markets)
        )
        self.commands = Commands(
            self.feed, authenticated=session.authenticated, limits=config.limits()
        )
        session.extra_fields = config.extra_fields
        self.wake = asyncio.Event()
        self.silent = False

    async def run(self) -> None:
        tasks = [asyncio.create_task(self._stream(), name="sim-stream")]
        if self.config.heartbeat > 0:
            tasks.append(asyncio.create_task(self._heartbeat(), name="sim-heartbeat"))
        for task in tasks:
            task.add_done_callback(self._crashed)
        try:
            await self._read()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _crashed(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            # A simulator bug must not look like a quiet exchange: fail the connection.
            logger.error("sim: %s failed", task.get_name(), exc_info=task.exception())
            self.connection.transport.abort()

    def write(self, frames: list[str], *, data: bool) -> bool:
        """Frame and write text frames in one transport write; False once not OPEN."""
        if self.connection.protocol.state is not State.OPEN:
            return False
        if data and self.session.extra_fields:
            frames = [_with_extra_fields(f) for f in frames]
        parts: list[bytes] = []
        for frame in frames:
            payload = frame.encode()
            parts.append(_header(0x1, len(payload)))
            parts.append(payload)
        self.connection.transport.write(b"".join(parts))
        if self.config.record or not data:
            self.session.sent.extend(frames)
        return True

    async def _read(self) -> None:
        session = self.session
        with contextlib.suppress(ConnectionClosed):
            async for message in self.connection:
                session.received.append(message)
                if isinstance(message, str):
                    with contextlib.suppress(ValueError):
                        parsed = json.loads(message)
                        if isinstance(parsed, dict):
                            session.commands.append(parsed)
                if self.silent:
                    continue  # a stuck exchange reads but never answers
                answers = self.commands.handle(message)
                self.wake.set()
                if self.write(answers, data=False):
                    await self.connection.drain()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat)
            if self.silent or self.connection.protocol.state is not State.OPEN:
                return
            self.connection.transport.write(_PING)

    async def _stream(self) -> None:
        config, feed, session = self.config, self.feed, self.session
        loop = asyncio.get_running_loop()
        remaining = config.messages
        rate = config.rate
        start, emitted = loop.time(), 0
        while remaining is None or remaining > 0:
            if feed.exhausted:
                break
            if not feed.active:
                self.wake.clear()
                await self.wake.wait()
                start, emitted = loop.time(), 0  # pacing restarts with the stream
                continue
            delay = feed.delay()
            if delay > 0:
                # A source with its own clock (a replay): wait for its next frame, or for
                # a command that may change which frame that is.
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), delay)
                continue
            count = _BATCH
            if rate > 0:
                # Token bucket anchored at `start`: frame k is due at start + k / rate, so
                # sleep granularity never accumulates into drift.
                now = loop.time()
                due = int((now - start) * rate) + 1 - emitted
                if due <= 0:
                    await asyncio.sleep(start + emitted / rate - now)
                    continue
                backlog_limit = max(1, int(rate))
                if due > backlog_limit:  # blocked by back-pressure: catch up 1 s at most
                    emitted += due - backlog_limit
                    due = backlog_limit
                count = min(count, due)
            if remaining is not None:
                count = min(count, remaining)
            frames = feed.take(count)
            if not self.write(frames, data=True):
                return
            emitted += len(frames)
            session.data_sent += len(frames)
            if remaining is not None:
                remaining -= len(frames)
            limit = config.overflow_bytes
            if limit is not None and self.connection.transport.get_write_buffer_size() > limit:
                self._overflow()
            await self.connection.drain()
            if rate <= 0:
                await asyncio.sleep(0)  # let the reader and the heartbeat run
        await self._end()

    def _overflow(self) -> None:
        """A slow consumer: end every data-producing sid with error 25, as Kalshi does
        when a subscription's outbound buffer fills."""
        ended = [
            self.commands.end_subscription(sid, ErrorCode.BUFFER_OVERFLOW)
            for sid in self.feed.streaming_sids()
        ]
        self.session.overflowed.extend(json.loads(frame)["sid"] for frame in ended)
        self.write(ended, data=False)

    async def _end(self) -> None:
        ending = self.config.ending
        self.session.ending = ending
        if ending is Ending.CLOSE:
            await self.connection.close(1000)
        elif ending is Ending.DROP:
            # Let the frames already written reach the socket, then close TCP without a
            # close frame: the client sees all data, then an abnormal closure (1006).
            transport = self.connection.transport
            for _ in range(400):
                if transport.get_write_buffer_size() == 0:
                    break
                await asyncio.sleep(0.005)
            transport.abort()
        elif ending is Ending.SILENT:
            self.silent = True
        self.session.done.set()


def _json(connection: ServerConnection, status: HTTPStatus, body: object) -> Response:
    response = connection.respond(status, "")
    payload = json.dumps(body, separators=(",", ":")).encode()
    del response.headers["Content-Type"]
    del response.headers["Content-Length"]
    response.headers["Content-Type"] = "application/json"
    response.headers["Content-Length"] = str(len(payload))
    response.body = payload
    return response


def _listening_socket(host: str, port: int) -> socket.socket:
    """One listening socket on the first address of ``host`` (IPv4 preferred).

    ``serve(host, port=0)`` would bind every address of a name like ``localhost`` on a
    different random port; one socket gives one unambiguous URL.
    """
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
