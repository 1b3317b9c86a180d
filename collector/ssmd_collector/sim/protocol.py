"""Kalshi WebSocket command handling for the simulator, without any I/O.

:class:`Commands` takes one client frame and returns the answer frames, exactly as the
exchange shapes them (Kalshi's AsyncAPI spec, ``asyncapi.yaml`` on docs.kalshi.com):

- ``subscribed``: ``{"id":1,"type":"subscribed","msg":{"channel":"ticker","sid":1}}``,
  one per channel;
- ``unsubscribed``: ``{"type":"unsubscribed","id":2,"sid":1,"seq":7}``, one per sid
  (key order as captured from the live exchange);
- ``ok`` for ``update_subscription``:
  ``{"id":3,"sid":1,"seq":9,"type":"ok","msg":{"market_tickers":[...]}}`` (full list);
- ``ok`` for ``list_subscriptions``: ``{"id":4,"type":"ok","msg":[{"channel":..,"sid":..}]}``;
- ``error``: ``{"id":5,"type":"error","msg":{"code":8,"msg":"Unknown channel name"}}``.

An ``id`` of 0 or no ``id`` is echoed by omission, as the spec says. Answers that carry a
``seq`` (``unsubscribed``, ``ok``) take the next number of that sid's sequence, so the
seq stays contiguous over every frame of the sid that carries one.

Subscriptions are applied to the connection's :class:`~.market.Feed` as a side effect,
so data starts flowing right after the answer is sent.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass

from ssmd_collector.sim.market import (
    LIFECYCLE,
    ORDERBOOK,
    Feed,
    Stream,
    is_market_ticker,
)

PUBLIC_CHANNELS = frozenset({"ticker", "ticker_v2", "trade", "market_lifecycle_v2", "multivariate"})
PRIVATE_CHANNELS = frozenset(
    {
        "orderbook_delta",
        "fill",
        "market_positions",
        "communications",
        "order_group_updates",
        "user_orders",
    }
)
CHANNELS = PUBLIC_CHANNELS | PRIVATE_CHANNELS

# Channels that take no market filter: update_subscription on them is a channel error.
_UNFILTERED_CHANNELS = frozenset(
    {LIFECYCLE, "multivariate", "communications", "order_group_updates"}
)


class ErrorCode(enum.IntEnum):
    """Kalshi's WebSocket error codes (the ``msg.code`` of an ``error`` answer)."""

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

    @property
    def text(self) -> str:
        return _ERROR_TEXT[self]


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
}


@dataclass(slots=True)
class Subscription(Stream):
    """A live subscription: its stream plus the market filter (``None``: all markets)."""

    tickers: list[str] | None = None


class CommandError(Exception):
    """A command fails as a whole with one Kalshi error code."""

    def __init__(self, code: ErrorCode, market_ticker: str | None = None) -> None:
        super().__init__(code.text)
        self.code = code
        self.market_ticker = market_ticker


def _dump(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


def error_frame(cmd_id: int | None, code: ErrorCode, market_ticker: str | None = None) -> str:
    msg: dict[str, object] = {"code": int(code), "msg": code.text}
    if market_ticker is not None:
        msg["market_ticker"] = market_ticker
    return _dump({**_id(cmd_id), "type": "error", "msg": msg})


def _id(cmd_id: int | None) -> dict[str, int]:
    return {"id": cmd_id} if cmd_id else {}


def _tickers(params: dict[str, object]) -> list[str] | None:
    """The market filter of a command: ``market_ticker`` or ``market_tickers``, deduplicated."""
    single, many = params.get("market_ticker"), params.get("market_tickers")
    if single is not None and many is not None:
        raise CommandError(ErrorCode.INVALID_PARAMETER)  # mutually exclusive per the spec
    if single is None and many is None:
        return None
    values = [single] if single is not None else many
    if not isinstance(values, list) or not values:
        raise CommandError(ErrorCode.INVALID_PARAMETER)
    for value in values:
        if not isinstance(value, str):
            raise CommandError(ErrorCode.INVALID_PARAMETER)
        if not is_market_ticker(value):
            raise CommandError(ErrorCode.MARKET_NOT_FOUND, market_ticker=value)
    return list(dict.fromkeys(values))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Commands:
    """Command handling and subscription bookkeeping for one connection.

    ``authenticated`` is whether the handshake carried a verified signature: private
    channels answer error 9 otherwise. sids are allocated from 1 and never reused.
    """

    def __init__(self, feed: Feed, *, authenticated: bool) -> None:
        self.feed = feed
        self.authenticated = authenticated
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
        if cmd_id is not None and (
            not isinstance(cmd_id, int) or isinstance(cmd_id, bool) or cmd_id < 0
        ):
            return [error_frame(None, ErrorCode.UNABLE_TO_PROCESS)]
        try:
            return self._dispatch(cmd_id, command)
        except CommandError as exc:
            return [error_frame(cmd_id, exc.code, exc.market_ticker)]

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
        answers: list[str] = []
        for channel in dict.fromkeys(channels):
            code = self._refusal(channel, tickers)
            if code is not None:
                answers.append(error_frame(cmd_id, code))
                continue
            sub = Subscription(
                sid=self._next_sid,
                channel=channel,
                tickers=None if tickers is None else list(tickers),
            )
            self._next_sid += 1
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

    def _refusal(self, channel: str, tickers: list[str] | None) -> ErrorCode | None:
        if channel not in CHANNELS:
            return ErrorCode.UNKNOWN_CHANNEL
        if channel in PRIVATE_CHANNELS and not self.authenticated:
            return ErrorCode.AUTH_REQUIRED
        if channel == ORDERBOOK and tickers is None:
            return ErrorCode.MARKET_TICKER_REQUIRED
        for sub in self.subscriptions.values():
            if sub.channel == channel and (
                sub.tickers is None or tickers is None or set(sub.tickers) & set(tickers)
            ):
                return ErrorCode.ALREADY_SUBSCRIBED
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
                _dump({"type": "unsubscribed", **_id(cmd_id), "sid": sid, "seq": sub.next_seq()})
            )
        return answers

    def _update(self, cmd_id: int | None, params: dict[str, object]) -> list[str]:
        action = params.get("action")
        if action is None:
            raise CommandError(ErrorCode.ACTION_REQUIRED)
        if action not in ("add_markets", "delete_markets"):
            raise CommandError(ErrorCode.UNSUPPORTED_ACTION)
        sub = self.subscriptions.get(self._single_sid(params))
        if sub is None:
            raise CommandError(ErrorCode.UNKNOWN_SID)
        tickers = _tickers(params)
        if tickers is None:
            raise CommandError(ErrorCode.MARKET_TICKER_REQUIRED)
        if sub.channel in _UNFILTERED_CHANNELS:
            raise CommandError(ErrorCode.CHANNEL_ERROR)
        if sub.tickers is None:
            # An all-markets subscription has no list to add to or delete from.
            raise CommandError(ErrorCode.INVALID_PARAMETER)
        if action == "add_markets":
            added = [t for t in tickers if t not in sub.tickers]
            sub.tickers.extend(added)
            self.feed.add_markets(sub, added)
        else:
            sub.tickers = [t for t in sub.tickers if t not in tickers]
            self.feed.remove_markets(sub, tickers)
        ok = {
            **_id(cmd_id),
            "sid": sub.sid,
            "seq": sub.next_seq(),
            "type": "ok",
            "msg": {"market_tickers": list(sub.tickers)},
        }
        return [_dump(ok)]

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
        if not isinstance(sid, int) or isinstance(sid, bool):
            raise CommandError(ErrorCode.INVALID_PARAMETER)
        return sid
