"""Kalshi subscriptions on one connection: commands out, answers in, no I/O.

Rules (KALSHI.md sections 4, 6, 7, 9):

- One ``subscribe`` per channel per connection (Kalshi no longer answers a second
  one). Channels with the same market list share one command at start (Kalshi answers
  one ``subscribed`` per channel, each with its own sid), as the environment groups
  them; a market list longer than one batch grows each channel's subscription with
  ``update_subscription`` ``add_markets``, one batch in flight per channel.
- A channel is live once subscribed and every batch acknowledged; the collector is
  ready only while every wanted channel is live.
- An error answer to a ``subscribe`` or ``add_markets`` ends the run (exit 13), except
  26 (the per-subscription market limit: the overflow is reported, never dropped
  silently) and 27 (too many commands: retried after a back-off).
- An error frame carrying a ``sid`` with a terminal code (10, 25, 17) means that
  subscription is gone: the channel is subscribed again (order books restart from
  fresh snapshots). Too many deaths within a window end the run.
- An order book gap asks for fresh snapshots of the sid's markets (``get_snapshot``);
  when they do not all come in time, the channel is unsubscribed and subscribed again.
- A command unanswered within the answer timeout ends the run (exit 13).

Everything that happens is reported to the events file and the connector's metrics.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...metadata import Subscription
from ..protocol import ConnectorMetrics, EventSink, SubscribeRejected
from . import channels as ch


@dataclass
class Command:
    """One command sent (or to send) and what its answer will mean."""

    id: int
    channel: str
    """The channel it is about (the first, for a subscribe of several)."""
    purpose: str
    """subscribe, add_markets, get_snapshot or unsubscribe."""
    params: dict[str, Any]
    tickers: tuple[str, ...] = ()
    sent_at: float | None = None
    retries: int = 0
    waiting: set[str] = field(default_factory=set)
    """Channels of a subscribe not answered yet."""

    @property
    def name(self) -> str:
        return {"subscribe": "subscribe", "unsubscribe": "unsubscribe"}.get(
            self.purpose, "update_subscription"
        )

    def describe(self) -> str:
        """``subscribe of trade``, ``update_subscription add_markets of orderbook_delta``."""
        action = "" if self.name == self.purpose else f" {self.purpose}"
        channels = self.params.get("channels") or [self.channel]
        return f"{self.name}{action} of {', '.join(channels)}"

    def encode(self) -> str:
        return json.dumps({"id": self.id, "cmd": self.name, "params": self.params})


@dataclass
class _Recovery:
    sid: int
    waiting: set[str]
    started: float
    command_ids: set[int] = field(default_factory=set)


@dataclass
class _Channel:
    name: str
    tickers: tuple[str, ...] | None
    """None: every market (no filter)."""
    sid: int | None = None
    live: bool = False
    sent: int = 0
    """Tickers sent so far on this subscription (subscribe + add_markets batches)."""
    confirmed: int = 0
    overflow: int = 0
    busy: bool = False
    """A subscribe or add_markets of this channel awaits its answer."""
    restoring: int | None = None
    """The sid this subscription replaces, while it is being restored."""
    unsubscribing: bool = False
    recovery: _Recovery | None = None


def wanted_channels(subscriptions: Sequence[Subscription]) -> dict[str, tuple[str, ...] | None]:
    """One entry per channel: its market tickers in first-seen order, None for all."""
    wanted: dict[str, tuple[str, ...] | None] = {}
    for sub in subscriptions:
        for name in sub.channels:
            tickers = tuple(sub.market_tickers) or None
            if name not in wanted:
                wanted[name] = tickers
            elif wanted[name] is not None and tickers is not None:
                wanted[name] = tuple(dict.fromkeys((*wanted[name], *tickers)))  # type: ignore[misc]
            else:
                wanted[name] = None
    return wanted


class Subscriptions:
    def __init__(
        self,
        wanted: Mapping[str, tuple[str, ...] | None],
        *,
        batch_size: int,
        answer_timeout: float,
        snapshot_timeout: float,
        max_deaths: int,
        death_window: float,
        events: EventSink,
        metrics: ConnectorMetrics,
        ids: Iterator[int],
        monotonic: Callable[[], float],
    ) -> None:
        self.batch_size = batch_size
        self.answer_timeout = answer_timeout
        self.snapshot_timeout = snapshot_timeout
        self.max_deaths = max_deaths
        self.death_window = death_window
        self.events = events
        self.metrics = metrics
        self._ids = ids
        self._now = monotonic
        self._channels = {name: _Channel(name, tickers) for name, tickers in wanted.items()}
        self._by_sid: dict[int, _Channel] = {}
        self._pending: dict[int, Command] = {}
        self._retry: list[tuple[float, Command]] = []
        self._deaths: deque[float] = deque()
        metrics.subscriptions_wanted = len(self._channels)

    # -- state -----------------------------------------------------------------

    @property
    def live(self) -> bool:
        return all(c.live for c in self._channels.values())

    def channel_of(self, sid: int) -> str:
        found = self._by_sid.get(sid)
        return found.name if found is not None else "unknown"

    def waiting_for(self) -> list[str]:
        """Channels not live yet, for a timeout message."""
        return sorted(c.name for c in self._channels.values() if not c.live)

    def _update_live(self) -> None:
        self.metrics.subscriptions_live = sum(c.live for c in self._channels.values())

    # -- commands out ----------------------------------------------------------

    def start(self) -> list[Command]:
        """The first ``subscribe`` of every channel: one command per market list."""
        groups: dict[tuple[str, ...] | None, list[_Channel]] = {}
        for channel in self._channels.values():
            groups.setdefault(channel.tickers, []).append(channel)
        return [self._subscribe(*group) for group in groups.values()]

    def _command(self, channel: _Channel, purpose: str, params: dict[str, Any],
                 tickers: tuple[str, ...] = ()) -> Command:  # fmt: skip
        command = Command(next(self._ids), channel.name, purpose, params, tickers)
        command.sent_at = self._now()
        self._pending[command.id] = command
        return command

    def _subscribe(self, *channels: _Channel) -> Command:
        """One subscribe for ``channels``, which share their market list."""
        first = channels[0]
        params: dict[str, Any] = {"channels": [c.name for c in channels]}
        batch: tuple[str, ...] = ()
        if first.tickers is not None:
            batch = first.tickers[: self.batch_size]
            params["market_tickers"] = list(batch)
        for channel in channels:
            channel.live = False
            channel.busy = True
            channel.sid = None
            channel.sent, channel.confirmed, channel.overflow = len(batch), 0, 0
        command = self._command(first, "subscribe", params, batch)
        command.waiting = {c.name for c in channels}
        return command

    def _next_batch(self, channel: _Channel) -> list[Command]:
        """The next ``add_markets`` of a channel, or nothing once all are confirmed."""
        assert channel.sid is not None
        tickers = channel.tickers or ()
        if channel.sent >= len(tickers):
            self._became_live(channel)
            return []
        batch = tickers[channel.sent : channel.sent + self.batch_size]
        channel.sent += len(batch)
        channel.busy = True
        params = {"sids": [channel.sid], "action": "add_markets", "market_tickers": list(batch)}
        return [self._command(channel, "add_markets", params, batch)]

    def _became_live(self, channel: _Channel) -> None:
        channel.live, channel.busy = True, False
        if channel.tickers is not None:
            self.metrics.markets[channel.name] = channel.confirmed
        self._update_live()
        fields: dict[str, object] = {"channel": channel.name, "sid": channel.sid}
        if channel.tickers is not None:
            fields["markets"] = channel.confirmed
        if channel.restoring is not None:
            self.events.record("subscription_restored", old_sid=channel.restoring, **fields)
            channel.restoring = None
        else:
            self.events.record("subscribed", **fields)

    # -- answers in ------------------------------------------------------------

    def answer(self, frame: Mapping[str, Any], ns: int) -> list[Command]:
        """Handle a control frame (``subscribed``, ``ok``, ``unsubscribed``, ``error``)."""
        kind = frame.get("type")
        cmd_id = frame.get("id")
        command = self._pending.pop(cmd_id, None) if isinstance(cmd_id, int) else None
        if kind == "error":
            return self._error(frame, command, ns)
        if command is None:
            return []
        channel = self._channels[command.channel]
        body = frame.get("msg")
        if kind == "subscribed" and command.purpose == "subscribe":
            named = body.get("channel") if isinstance(body, dict) else None
            if named in command.waiting:
                channel = self._channels[str(named)]
            else:  # the older bare answer names no channel: the next one waiting
                channel = self._channels[min(command.waiting)]
            command.waiting.discard(channel.name)
            if command.waiting:
                self._pending[command.id] = command  # more answers to come
            sid = body.get("sid") if isinstance(body, dict) else frame.get("sid")
            if not isinstance(sid, int):
                raise SubscribeRejected(
                    f"subscribe {channel.name}: the exchange's answer carries no sid: "
                    f"{json.dumps(frame)[:300]}"
                )
            channel.sid = sid
            self._by_sid[sid] = channel
            channel.confirmed = len(command.tickers)
            return self._next_batch(channel)
        if kind == "ok" and command.purpose == "add_markets":
            channel.confirmed += len(command.tickers)
            return self._next_batch(channel)
        if kind == "ok" and command.purpose == "get_snapshot":
            return []
        if kind == "unsubscribed" and command.purpose == "unsubscribe":
            channel.unsubscribing = False
            return [self._subscribe(channel)]
        self._pending[command.id] = command  # not its answer: keep waiting
        return []

    def _error(self, frame: Mapping[str, Any], command: Command | None, ns: int) -> list[Command]:
        body = frame.get("msg") if isinstance(frame.get("msg"), dict) else {}
        assert isinstance(body, dict)
        code = body.get("code")
        text = str(body.get("msg", ""))
        sid = frame.get("sid")
        if isinstance(code, int):
            self.metrics.exchange_errors[code] += 1
        self.metrics.errors["exchange_error"] += 1
        if command is not None:
            return self._command_failed(command, code, text, body, ns)
        channel = self._by_sid.get(sid) if isinstance(sid, int) else None
        if channel is not None and code in ch.TERMINAL_ERRORS:
            return self._died(channel, code, text, ns)
        self.events.record(
            "exchange_error", ns, code=code, msg=text, **({"sid": sid} if sid is not None else {})
        )
        return []

    def _command_failed(
        self, command: Command, code: object, text: str, body: Mapping[str, Any], ns: int
    ) -> list[Command]:
        channel = self._channels[command.channel]
        what = command.describe()
        if command.purpose == "add_markets" and code == ch.MARKET_LIMIT:
            refused = len((channel.tickers or ())[channel.sent - len(command.tickers) :])
            channel.overflow = refused
            channel.sent = len(channel.tickers or ())
            self.metrics.overflow[channel.name] = refused
            self.events.record(
                "market_limit", ns, channel=channel.name, sid=channel.sid, code=code,
                markets_subscribed=channel.confirmed, markets_refused=refused,
            )  # fmt: skip
            self._became_live(channel)
            return []
        if code == ch.TOO_MANY_REQUESTS and command.retries < 8:
            command.retries += 1
            delay = min(0.25 * 2**command.retries, 10.0)
            self._retry.append((self._now() + delay, command))
            self.events.record("command_throttled", ns, command=what, code=code, retry_in=delay)
            return []
        if command.purpose == "get_snapshot":
            return self._resubscribe(channel, ns, f"get_snapshot refused: code {code}")
        self.events.record("command_rejected", ns, command=what, code=code, msg=text)
        raise SubscribeRejected(
            f"{what} refused by the exchange: code {code}: {text}"
            + (f" (market {body['market_ticker']})" if "market_ticker" in body else "")
        )

    def _died(self, channel: _Channel, code: object, text: str, ns: int) -> list[Command]:
        sid = channel.sid
        assert sid is not None
        del self._by_sid[sid]
        channel.live = False
        channel.recovery = None
        self._update_live()
        self.metrics.deaths[channel.name] += 1
        self.events.record(
            "subscription_died", ns, channel=channel.name, sid=sid, code=code, msg=text
        )
        now = self._now()
        self._deaths.append(now)
        while self._deaths and self._deaths[0] < now - self.death_window:
            self._deaths.popleft()
        if len(self._deaths) > self.max_deaths:
            raise SubscribeRejected(
                f"subscriptions ended by the exchange {len(self._deaths)} times within "
                f"{self.death_window:g}s (limit {self.max_deaths}); last: {channel.name} "
                f"sid {sid}, code {code}: {text}"
            )
        channel.restoring = sid
        return [self._subscribe(channel)]

    # -- sequence problems -----------------------------------------------------

    def gap(self, sid: int, ns: int) -> list[Command]:
        """A gap on ``sid``: order books ask for fresh snapshots; others cannot be replayed."""
        channel = self._by_sid.get(sid)
        if channel is None or channel.name != ch.ORDERBOOK or channel.recovery is not None:
            return []
        tickers = (channel.tickers or ())[: channel.confirmed]
        recovery = _Recovery(sid, set(tickers), self._now())
        channel.recovery = recovery
        self.metrics.recoveries[(channel.name, "requested")] += 1
        self.events.record(
            "recovery_requested", ns, channel=channel.name, sid=sid, method="get_snapshot",
            markets=len(tickers),
        )  # fmt: skip
        commands = []
        for i in range(0, len(tickers), self.batch_size):
            batch = tickers[i : i + self.batch_size]
            params = {"sids": [sid], "action": "get_snapshot", "market_tickers": list(batch)}
            command = self._command(channel, "get_snapshot", params, batch)
            recovery.command_ids.add(command.id)
            commands.append(command)
        return commands

    def snapshot(self, sid: int, market: str | None, ns: int) -> None:
        """An ``orderbook_snapshot`` arrived on ``sid`` (maybe one a recovery waits for)."""
        channel = self._by_sid.get(sid)
        recovery = channel.recovery if channel is not None else None
        if channel is None or recovery is None or market is None:
            return
        recovery.waiting.discard(market)
        if not recovery.waiting:
            channel.recovery = None
            for command_id in recovery.command_ids:
                self._pending.pop(command_id, None)
            self.metrics.recoveries[(channel.name, "completed")] += 1
            self.events.record(
                "recovery_completed", ns, channel=channel.name, sid=sid, method="get_snapshot"
            )

    def _resubscribe(self, channel: _Channel, ns: int | None, why: str) -> list[Command]:
        """Start the channel over: unsubscribe its sid, then subscribe again."""
        sid = channel.sid
        if channel.recovery is not None:
            for command_id in channel.recovery.command_ids:
                self._pending.pop(command_id, None)
        channel.recovery = None
        self.metrics.recoveries[(channel.name, "resubscribed")] += 1
        self.events.record(
            "recovery_requested",
            ns,
            channel=channel.name,
            sid=sid,
            method="resubscribe",
            reason=why,
        )
        if sid is None:
            return [self._subscribe(channel)]
        self._by_sid.pop(sid, None)
        channel.live = False
        channel.restoring = sid
        channel.unsubscribing = True
        self._update_live()
        return [self._command(channel, "unsubscribe", {"sids": [sid]})]

    # -- time ------------------------------------------------------------------

    def due(self) -> list[Command]:
        """Commands whose time has come: retries after a back-off, and the fallback of
        recoveries whose snapshots did not all arrive. Raises on an unanswered command."""
        now = self._now()
        for command in self._pending.values():
            if command.purpose == "get_snapshot":
                continue  # Kalshi may not answer it; its recovery has a deadline of its own
            if command.sent_at is not None and now - command.sent_at > self.answer_timeout:
                raise SubscribeRejected(
                    f"no answer within {self.answer_timeout:g}s to {command.describe()}"
                )
        out: list[Command] = []
        ready = [c for t, c in self._retry if t <= now]
        self._retry = [(t, c) for t, c in self._retry if t > now]
        for command in ready:
            command.id = next(self._ids)
            command.sent_at = now
            self._pending[command.id] = command
            out.append(command)
        for channel in self._channels.values():
            recovery = channel.recovery
            if recovery is not None and now - recovery.started > self.snapshot_timeout:
                out.extend(
                    self._resubscribe(
                        channel, None, f"{len(recovery.waiting)} snapshot(s) missing after "
                        f"{self.snapshot_timeout:g}s",
                    )
                )  # fmt: skip
        return out
