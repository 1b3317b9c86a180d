"""Kalshi WebSocket command handling for the simulator, without any I/O.

:class:`Commands` takes one client frame and returns the answer frames, exactly as the
exchange shapes them today (KALSHI.md section 4; Kalshi's AsyncAPI spec):

- ``subscribed``: ``{"id":1,"type":"subscribed","msg":{"channel":"ticker","sid":1}}``,
  one per channel;
- ``unsubscribed``: ``{"type":"unsubscribed","id":2,"sid":1,"seq":7}``, one per sid
  (key order as captured from the live exchange);
- ``ok`` for ``update_subscription``:
  ``{"id":3,"sid":1,"seq":9,"type":"ok","msg":{"market_tickers":[...]}}`` (the full list;
  ``"msg":{}`` when the subscription was made with ``skip_ticker_ack``);
- ``orderbook_snapshot`` frames carrying the command ``id`` for ``get_snapshot`` (one per
  requested market, on the sid's sequence; no ``ok`` follows them);
- ``ok`` for ``list_subscriptions``: ``{"id":4,"type":"ok","msg":[{"channel":..,"sid":..}]}``;
- ``error``: ``{"id":5,"type":"error","msg":{"code":8,"msg":"Unknown channel name"}}``;
  an error about one subscription (26 or 27 on an existing sid, and the 10/25 that end
  a sid) also carries top-level ``sid`` and ``seq``.

An ``id`` of 0 or no ``id`` is echoed by omission, as the spec says. Every frame that
carries a ``seq`` (data, ``ok``, ``unsubscribed``, scoped ``error``) takes the next
number of that sid's sequence, so the seq stays contiguous over all of them.

A second ``subscribe`` of a channel that already has a sid on the connection is not
answered at all (Kalshi today), or answered with error 6 (its older behaviour), as
:class:`SecondSubscribe` says. Retired codes 16 and 17 are never sent.

Subscriptions are applied to the connection's :class:`~.source.FrameSource` (the
synthetic :class:`~.market.Feed`, or an archive being replayed) as a side effect, so
data starts flowing right after the answer is sent. A source that does not own its
sequences (an archive) gets answers without ``seq``: it cannot insert numbers into a
sequence that was recorded.
"""

from __future__ import annotations

import enum
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ssmd_collector.sim.market import (
    LIFECYCLE,
    MVE_LIFECYCLE,
    ORDERBOOK,
    Stream,
    is_market_ticker,
)
from ssmd_collector.sim.source import FrameSource

PUBLIC_CHANNELS = frozenset({"ticker", "trade", LIFECYCLE, MVE_LIFECYCLE})
PRIVATE_CHANNELS = frozenset(
    {
        ORDERBOOK,
        "fill",
        "market_positions",
        "user_orders",
        "order_group_updates",
        "communications",
    }
)
INDEX_CHANNELS = frozenset({"cfbenchmarks_value", "cfbenchmarks_value_5hz", "pyth_value"})
"""Accepted (authenticated, with their id lists) but quiet: the sim has no index prices."""
CHANNELS = PUBLIC_CHANNELS | PRIVATE_CHANNELS | INDEX_CHANNELS

# Channels that take no market filter: update_subscription with market actions on them
# is refused (13, Unsupported action).
_UNFILTERED_CHANNELS = frozenset(
    {LIFECYCLE, MVE_LIFECYCLE, "communications", "order_group_updates"} | INDEX_CHANNELS
)


class ErrorCode(enum.IntEnum):
    """Kalshi's WebSocket error codes (the ``msg.code`` of an ``error`` answer).

    16 and 17 are retired (never sent by the simulator); they stay named so a reader
    of recorded frames can tell them. Kalshi may add codes, so ``ErrorCode(n)`` accepts
    any int: unknown ones become ``UNKNOWN_<n>`` members.
    """

    UNABLE_TO_PROCESS = 1
    PARAMS_REQUIRED = 2
    CHANNELS_REQUIRED = 3
    SIDS_REQUIRED = 4
    UNKNOWN_COMMAND = 5
    ALREADY_SUBSCRIBED = 6
    UNKNOWN_SID = 7
    UNKNOWN_CHANNEL = 8
    AUTH_REQUIRED = 9
    CHANNEL_ERROR = 10
    INVALID_PARAMETER = 11
    ONE_SID_REQUIRED = 12
    UNSUPPORTED_ACTION = 13
    MARKET_TICKER_REQUIRED = 14
    ACTION_REQUIRED = 15
    MARKET_NOT_FOUND = 16
    INTERNAL_ERROR = 17
    COMMAND_TIMEOUT = 18
    SHARD_FACTOR_NOT_POSITIVE = 19
    SHARD_FACTOR_REQUIRED = 20
    SHARD_KEY_OUT_OF_RANGE = 21
    SHARD_FACTOR_TOO_LARGE = 22
    MATCH_IDS_REQUIRED = 23
    INDEX_IDS_REQUIRED = 24
    BUFFER_OVERFLOW = 25
    MARKET_LIMIT_EXCEEDED = 26
    TOO_MANY_REQUESTS = 27
    UNDERLYING_TICKERS_REQUIRED = 28

    @classmethod
    def _missing_(cls, value: object) -> ErrorCode | None:
        # Any other int is a code Kalshi added later (a third-party enum already has 29):
        # a pseudo-member named UNKNOWN_<n>, so an error frame never fails to parse.
        if not isinstance(value, int) or isinstance(value, bool):
            return None
        member = int.__new__(cls, value)
        member._name_ = f"UNKNOWN_{value}"
        member._value_ = value
        return member

    @property
    def text(self) -> str:
        return _ERROR_TEXT.get(self, f"Error {int(self)}")


_ERROR_TEXT = {
    ErrorCode.UNABLE_TO_PROCESS: "Unable to process message",
    ErrorCode.PARAMS_REQUIRED: "Params required",
    ErrorCode.CHANNELS_REQUIRED: "Channels required",
    ErrorCode.SIDS_REQUIRED: "Subscription IDs required",
    ErrorCode.UNKNOWN_COMMAND: "Unknown command",
    ErrorCode.ALREADY_SUBSCRIBED: "Already subscribed",
    ErrorCode.UNKNOWN_SID: "Unknown subscription ID",
    ErrorCode.UNKNOWN_CHANNEL: "Unknown channel name",
    ErrorCode.AUTH_REQUIRED: "Authentication required",
    ErrorCode.CHANNEL_ERROR: "Channel error",
    ErrorCode.INVALID_PARAMETER: "Invalid parameter",
    ErrorCode.ONE_SID_REQUIRED: "Exactly one subscription ID is required",
    ErrorCode.UNSUPPORTED_ACTION: "Unsupported action",
    ErrorCode.MARKET_TICKER_REQUIRED: "Market Ticker required",
    ErrorCode.ACTION_REQUIRED: "Action required",
    ErrorCode.MARKET_NOT_FOUND: "Market not found",
    ErrorCode.INTERNAL_ERROR: "Internal error",
    ErrorCode.COMMAND_TIMEOUT: "Command timeout",
    ErrorCode.SHARD_FACTOR_NOT_POSITIVE: "shard_factor must be > 0",
    ErrorCode.SHARD_FACTOR_REQUIRED: "shard_factor is required when shard_key is set",
    ErrorCode.SHARD_KEY_OUT_OF_RANGE: "shard_key must be >= 0 and < shard_factor",
    ErrorCode.SHARD_FACTOR_TOO_LARGE: "shard_factor must be <= 100",
    ErrorCode.MATCH_IDS_REQUIRED: "Match IDs required",
    ErrorCode.INDEX_IDS_REQUIRED: "Index IDs required",
    ErrorCode.BUFFER_OVERFLOW: "Subscription buffer overflow",
    ErrorCode.MARKET_LIMIT_EXCEEDED: "Subscription market limit exceeded",
    ErrorCode.TOO_MANY_REQUESTS: "Too many requests",
    ErrorCode.UNDERLYING_TICKERS_REQUIRED: "Underlying tickers required",
}

TERMINAL_CODES = frozenset({ErrorCode.CHANNEL_ERROR, ErrorCode.BUFFER_OVERFLOW})
"""Codes that end a subscription (KALSHI.md section 6): the sid sends nothing more."""


class SecondSubscribe(enum.Enum):
    """How the sim answers a ``subscribe`` of a channel that already has a sid."""

    IGNORE = "ignore"
    """No answer at all, the existing sid goes on (Kalshi today: such batches time out)."""
    ERROR = "error"
    """Error 6 "Already subscribed" (the quick-start's table, retired in the spec)."""


@dataclass(frozen=True)
class CommandLimits:
    """Per-connection command rules that tests and the CLI can change."""

    second_subscribe: SecondSubscribe = SecondSubscribe.IGNORE
    max_markets_per_subscription: int | None = None
    """Error 26 when a subscribe or add_markets would give a sid more markets."""
    max_commands_per_second: float | None = None
    """Error 27 when commands naming one sid (update_subscription) exceed this many in
    any 1-second window of ``clock``."""
    clock: Callable[[], float] = time.monotonic
    """Seconds, for the command rate; tests inject a clock that does not move."""


@dataclass(slots=True)
class Subscription(Stream):
    """A live subscription: its stream plus the market filter (``None``: all markets)."""

    tickers: list[str] | None = None
    skip_ticker_ack: bool = False
    commands: deque[float] = field(default_factory=deque)
    """Clock readings of the recent commands naming this sid (for error 27)."""


class CommandError(Exception):
    """A command fails as a whole with one Kalshi error code."""

    def __init__(
        self, code: ErrorCode, market_ticker: str | None = None, sub: Subscription | None = None
    ) -> None:
        super().__init__(code.text)
        self.code = code
        self.market_ticker = market_ticker
        self.sub = sub
        """The subscription the error is about: the answer then carries its sid and seq."""


def _dump(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


def error_frame(
    cmd_id: int | None,
    code: ErrorCode,
    market_ticker: str | None = None,
    sub: Stream | None = None,
    *,
    numbered: bool = True,
) -> str:
    """An ``error`` frame; with ``sub`` it is scoped: top-level ``sid`` and (when
    ``numbered``) the next ``seq``."""
    msg: dict[str, object] = {"code": int(code), "msg": code.text}
    if market_ticker is not None:
        msg["market_ticker"] = market_ticker
    scope: dict[str, int] = {} if sub is None else {"sid": sub.sid}
    if sub is not None and numbered:
        scope["seq"] = sub.next_seq()
    return _dump({**_id(cmd_id), **scope, "type": "error", "msg": msg})


def _id(cmd_id: int | None) -> dict[str, int]:
    return {"id": cmd_id} if cmd_id else {}


def _tickers(params: dict[str, object], *, list_only: bool = False) -> list[str] | None:
    """The market filter of a command: ``market_ticker`` or ``market_tickers``, deduplicated.

    A malformed ticker is error 11 naming it (Kalshi retired 16 "Market not found").
    """
    single, many = params.get("market_ticker"), params.get("market_tickers")
    if single is not None and (many is not None or list_only):
        raise CommandError(ErrorCode.INVALID_PARAMETER)  # exclusive; get_snapshot: list only
    if single is None and many is None:
        return None
    values = [single] if single is not None else many
    if not isinstance(values, list) or not values:
        raise CommandError(ErrorCode.INVALID_PARAMETER)
    for value in values:
        if not isinstance(value, str):
            raise CommandError(ErrorCode.INVALID_PARAMETER)
        if not is_market_ticker(value):
            raise CommandError(ErrorCode.INVALID_PARAMETER, market_ticker=value)
    return list(dict.fromkeys(values))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shard_problem(params: dict[str, object]) -> ErrorCode | None:
    """Errors 19-22 of the ``communications`` sharding parameters."""
    factor, key = params.get("shard_factor"), params.get("shard_key")
    if factor is None:
        return ErrorCode.SHARD_FACTOR_REQUIRED if key is not None else None
    if not _is_int(factor) or factor <= 0:  # type: ignore[operator]
        return ErrorCode.SHARD_FACTOR_NOT_POSITIVE
    assert isinstance(factor, int)
    if factor > 100:
        return ErrorCode.SHARD_FACTOR_TOO_LARGE
    if key is not None and (not _is_int(key) or not 0 <= key < factor):  # type: ignore[operator]
        return ErrorCode.SHARD_KEY_OUT_OF_RANGE
    return None


class Commands:
    """Command handling and subscription bookkeeping for one connection.

    ``authenticated`` is whether the handshake carried a verified signature: private
    channels answer error 9 otherwise (only possible when the sim allows unsigned
    connections). sids are allocated from 1 and never reused.
    """

    def __init__(
        self, feed: FrameSource, *, authenticated: bool, limits: CommandLimits | None = None
    ) -> None:
        self.feed = feed
        self.authenticated = authenticated
        self.limits = limits or CommandLimits()
        self.subscriptions: dict[int, Subscription] = {}
        self._next_sid = 1

    def handle(self, frame: str | bytes) -> list[str]:
        """Answer frames for one client frame, in the order they must be sent."""
        if isinstance(frame, bytes):
            return [error_frame(None, ErrorCode.UNABLE_TO_PROCESS)]
        try:
            command = json.loads(frame)
        except ValueError:
            return [error_frame(None, ErrorCode.UNABLE_TO_PROCESS)]
        if not isinstance(command, dict):
            return [error_frame(None, ErrorCode.UNABLE_TO_PROCESS)]
        cmd_id = command.get("id")
        if cmd_id is not None and (not _is_int(cmd_id) or cmd_id < 0):
            return [error_frame(None, ErrorCode.UNABLE_TO_PROCESS)]
        try:
            return self._dispatch(cmd_id, command)
        except CommandError as exc:
            return [
                error_frame(
                    cmd_id, exc.code, exc.market_ticker, exc.sub, numbered=self.feed.numbers_answers
                )
            ]

    def end_subscription(self, sid: int, code: ErrorCode) -> str:
        """Kill ``sid`` as Kalshi does with a terminal error: the error frame to send
        (scoped: ``sid`` and the next ``seq``), after which the sid is gone."""
        sub = self.subscriptions.pop(sid, None)
        if sub is None:
            raise KeyError(f"no subscription with sid {sid} (have {sorted(self.subscriptions)})")
        self.feed.detach(sub)
        return error_frame(None, code, sub=sub, numbered=self.feed.numbers_answers)

    def _dispatch(self, cmd_id: int | None, command: dict[str, object]) -> list[str]:
        name = command.get("cmd")
        if name == "list_subscriptions":
            listed = [{"channel": s.channel, "sid": s.sid} for s in self.subscriptions.values()]
            return [_dump({**_id(cmd_id), "type": "ok", "msg": listed})]
        if name not in ("subscribe", "unsubscribe", "update_subscription"):
            raise CommandError(ErrorCode.UNKNOWN_COMMAND)
        params = command.get("params")
        if not isinstance(params, dict):
            raise CommandError(ErrorCode.PARAMS_REQUIRED)
        if name == "subscribe":
            return self._subscribe(cmd_id, params)
        if name == "unsubscribe":
            return self._unsubscribe(cmd_id, params)
        return self._update(cmd_id, params)

    def _subscribe(self, cmd_id: int | None, params: dict[str, object]) -> list[str]:
        channels = params.get("channels")
        if channels is None or channels == []:
            raise CommandError(ErrorCode.CHANNELS_REQUIRED)
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            raise CommandError(ErrorCode.INVALID_PARAMETER)
        tickers = _tickers(params)
        limit = self.limits.max_markets_per_subscription
        if tickers is not None and limit is not None and len(tickers) > limit:
            raise CommandError(ErrorCode.MARKET_LIMIT_EXCEEDED)
        answers: list[str] = []
        for channel in dict.fromkeys(channels):
            if any(s.channel == channel for s in self.subscriptions.values()):
                if self.limits.second_subscribe is SecondSubscribe.ERROR:
                    answers.append(error_frame(cmd_id, ErrorCode.ALREADY_SUBSCRIBED))
                continue  # IGNORE: no answer at all, the existing sid goes on
            code = self._refusal(channel, tickers, params)
            if code is not None:
                answers.append(error_frame(cmd_id, code))
                continue
            sub = Subscription(
                sid=self.feed.new_sid(channel, self._next_sid),
                channel=channel,
                tickers=None if tickers is None else list(tickers),
                skip_ticker_ack=params.get("skip_ticker_ack") is True,
            )
            self._next_sid = max(self._next_sid, sub.sid + 1)
            self.subscriptions[sub.sid] = sub
            self.feed.attach(sub, sub.tickers)
            answers.append(
                _dump(
                    {
                        **_id(cmd_id),
                        "type": "subscribed",
                        "msg": {"channel": channel, "sid": sub.sid},
                    }
                )
            )
        return answers

    def _refusal(
        self, channel: str, tickers: list[str] | None, params: dict[str, object]
    ) -> ErrorCode | None:
        if channel not in CHANNELS:
            return ErrorCode.UNKNOWN_CHANNEL  # ticker_v2 and multivariate included
        if channel not in PUBLIC_CHANNELS and not self.authenticated:
            return ErrorCode.AUTH_REQUIRED
        if channel == ORDERBOOK and tickers is None:
            return ErrorCode.MARKET_TICKER_REQUIRED
        if channel.startswith("cfbenchmarks") and not params.get("index_ids"):
            return ErrorCode.INDEX_IDS_REQUIRED
        if channel == "pyth_value" and not params.get("underlying_tickers"):
            return ErrorCode.UNDERLYING_TICKERS_REQUIRED
        if channel == "communications":
            return _shard_problem(params)
        return None

    def _unsubscribe(self, cmd_id: int | None, params: dict[str, object]) -> list[str]:
        sids = params.get("sids")
        if sids is None or sids == []:
            raise CommandError(ErrorCode.SIDS_REQUIRED)
        if not isinstance(sids, list) or not all(_is_int(s) for s in sids):
            raise CommandError(ErrorCode.INVALID_PARAMETER)
        answers: list[str] = []
        for sid in dict.fromkeys(sids):
            sub = self.subscriptions.pop(sid, None)
            if sub is None:
                answers.append(error_frame(cmd_id, ErrorCode.UNKNOWN_SID))
                continue
            self.feed.detach(sub)
            answers.append(
                _dump({"type": "unsubscribed", **_id(cmd_id), "sid": sid, **self._seq(sub)})
            )
        return answers

    def _update(self, cmd_id: int | None, params: dict[str, object]) -> list[str]:
        action = params.get("action")
        if action is None:
            raise CommandError(ErrorCode.ACTION_REQUIRED)
        if action not in ("add_markets", "delete_markets", "get_snapshot"):
            raise CommandError(ErrorCode.UNSUPPORTED_ACTION)
        sub = self.subscriptions.get(self._single_sid(params))
        if sub is None:
            raise CommandError(ErrorCode.UNKNOWN_SID)
        self._count_command(sub)
        tickers = _tickers(params, list_only=action == "get_snapshot")
        if tickers is None:
            raise CommandError(ErrorCode.MARKET_TICKER_REQUIRED)
        if sub.channel in _UNFILTERED_CHANNELS:
            raise CommandError(ErrorCode.UNSUPPORTED_ACTION)
        if action == "get_snapshot":
            return self._snapshots(cmd_id, sub, tickers)
        if sub.tickers is None:
            # An all-markets subscription has no list to add to or delete from.
            raise CommandError(ErrorCode.INVALID_PARAMETER)
        if action == "add_markets":
            added = [t for t in tickers if t not in sub.tickers]
            limit = self.limits.max_markets_per_subscription
            if limit is not None and len(sub.tickers) + len(added) > limit:
                raise CommandError(ErrorCode.MARKET_LIMIT_EXCEEDED, sub=sub)
            sub.tickers.extend(added)
            self.feed.add_markets(sub, added)
        else:
            sub.tickers = [t for t in sub.tickers if t not in tickers]
            self.feed.remove_markets(sub, tickers)
        msg = {} if sub.skip_ticker_ack else {"market_tickers": list(sub.tickers)}
        ok = {**_id(cmd_id), "sid": sub.sid, **self._seq(sub), "type": "ok", "msg": msg}
        return [_dump(ok)]

    def _seq(self, sub: Subscription) -> dict[str, int]:
        """The ``seq`` an answer about ``sub`` carries (none when the source's are fixed)."""
        return {"seq": sub.next_seq()} if self.feed.numbers_answers else {}

    def _snapshots(self, cmd_id: int | None, sub: Subscription, tickers: list[str]) -> list[str]:
        """``get_snapshot``: one ``orderbook_snapshot`` per market, carrying the command id,
        on the sid's own sequence; the subscription and its deltas are unchanged."""
        if sub.channel != ORDERBOOK:
            raise CommandError(ErrorCode.UNSUPPORTED_ACTION, sub=sub)
        assert sub.tickers is not None  # orderbook_delta always has a market list
        for ticker in tickers:
            if ticker not in sub.tickers:
                raise CommandError(ErrorCode.INVALID_PARAMETER, market_ticker=ticker, sub=sub)
        snapshots = [self.feed.get_snapshot(sub, t, cmd_id) for t in tickers]
        if any(s is None for s in snapshots):
            raise CommandError(ErrorCode.UNSUPPORTED_ACTION, sub=sub)  # e.g. an archive
        return [s for s in snapshots if s is not None]

    def _count_command(self, sub: Subscription) -> None:
        """Error 27 when this command makes the sid's rate exceed the limit."""
        limit = self.limits.max_commands_per_second
        if limit is None:
            return
        now = self.limits.clock()
        recent = sub.commands
        while recent and recent[0] <= now - 1.0:
            recent.popleft()
        if len(recent) >= limit:
            raise CommandError(ErrorCode.TOO_MANY_REQUESTS, sub=sub)
        recent.append(now)

    @staticmethod
    def _single_sid(params: dict[str, object]) -> int:
        sid, sids = params.get("sid"), params.get("sids")
        if sid is not None and sids is not None:
            raise CommandError(ErrorCode.ONE_SID_REQUIRED)
        if sids is not None:
            if not isinstance(sids, list) or len(sids) != 1:
                raise CommandError(ErrorCode.ONE_SID_REQUIRED)
            sid = sids[0]
        if sid is None:
            raise CommandError(ErrorCode.ONE_SID_REQUIRED)
        if not _is_int(sid):
            raise CommandError(ErrorCode.INVALID_PARAMETER)
        assert isinstance(sid, int)
        return sid
