"""Kalshi subscriptions on one connection: commands out, answers in, no I/O.

Rules (KALSHI.md sections 4, 6, 7, 9):

- One ``subscribe`` per channel per connection (Kalshi no longer answers a second
  one). Channels with the same market list share one command at start (Kalshi answers
  one ``subscribed`` per channel, each with its own sid), as the environment groups
  them; a market list longer than one batch grows each channel's subscription with
  ``update_subscription`` ``add_markets``, one batch in flight per channel.
- The wanted markets of a channel change while running (:meth:`Subscriptions.add`,
  :meth:`Subscriptions.remove`): the sid follows with ``add_markets`` and
  ``delete_markets`` batches, each confirmed change an event. A market-filtered channel
  with no market at all is not subscribed (an empty list would mean every market); it
  idles, counted live, until its first market comes.
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
import logging
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..protocol import ConnectorMetrics, EventSink, SubscribeRejected
from . import channels as ch

log = logging.getLogger("ssmd_collector.kalshi")


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
    wanted: dict[str, None] | None
    """The markets this channel should have, in the order they were wanted (an ordered
    set); None: every market (no filter)."""
    sid: int | None = None
    live: bool = False
    announced: bool = False
    """The current subscription's ``subscribed`` event was recorded."""
    subscribed: dict[str, None] = field(default_factory=dict)
    """Markets the exchange confirmed on this sid (ordered set)."""
    refused: set[str] = field(default_factory=set)
    """Markets the exchange would not add (error 26, its per-subscription limit)."""
    busy: bool = False
    """A subscribe, add_markets or delete_markets of this channel awaits its answer."""
    restoring: int | None = None
    """The sid this subscription replaces, while it is being restored."""
    unsubscribing: bool = False
    recovery: _Recovery | None = None

    def to_add(self, limit: int) -> tuple[str, ...]:
        """Up to ``limit`` wanted markets not yet on the sid (nor refused)."""
        out: list[str] = []
        for ticker in self.wanted or ():
            if ticker not in self.subscribed and ticker not in self.refused:
                out.append(ticker)
                if len(out) == limit:
                    break
        return tuple(out)

    def to_delete(self, limit: int) -> tuple[str, ...]:
        wanted = self.wanted or {}
        return tuple(t for t in self.subscribed if t not in wanted)[:limit]


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
        self._channels = {
            name: _Channel(name, None if tickers is None else dict.fromkeys(tickers))
            for name, tickers in wanted.items()
        }
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
            key = None if channel.wanted is None else tuple(channel.wanted)
            groups.setdefault(key, []).append(channel)
        return [command for group in groups.values() for command in self._subscribe(*group)]

    def _command(self, channel: _Channel, purpose: str, params: dict[str, Any],
                 tickers: tuple[str, ...] = ()) -> Command:  # fmt: skip
        command = Command(next(self._ids), channel.name, purpose, params, tickers)
        command.sent_at = self._now()
        self._pending[command.id] = command
        return command

    def _subscribe(self, *channels: _Channel) -> list[Command]:
        """One ``subscribe`` for ``channels`` (which share their market list) with the
        first batch; none for market-filtered channels with no market yet (an empty list
        would mean every market): they idle, live, until markets are added."""
        first = channels[0]
        for channel in channels:  # a new sid starts with no market on it
            channel.sid = None
            channel.subscribed, channel.refused = {}, set()
        params: dict[str, Any] = {"channels": [c.name for c in channels]}
        batch: tuple[str, ...] = ()
        if first.wanted is not None:
            batch = first.to_add(self.batch_size)
            params["market_tickers"] = list(batch)
        for channel in channels:
            channel.live = channel.busy = channel.announced = False
            if first.wanted is not None and not batch:
                channel.live = True
                self.metrics.markets[channel.name] = 0
                if channel.restoring is None:
                    self.events.record("subscription_idle", channel=channel.name, markets=0)
                channel.restoring = None
            else:
                channel.busy = True
        self._update_live()
        if first.wanted is not None and not batch:
            return []
        command = self._command(first, "subscribe", params, batch)
        command.waiting = {c.name for c in channels}
        return [command]

    def _next(self, channel: _Channel) -> list[Command]:
        """The channel's next ``add_markets`` or ``delete_markets``, or nothing once the
        sid has exactly the wanted markets (then it is live)."""
        channel.busy = False
        if channel.sid is None or channel.unsubscribing:
            return []
        adds = channel.to_add(self.batch_size)
        action = "add_markets" if adds else "delete_markets"
        batch = adds or channel.to_delete(self.batch_size)
        if not batch:
            if not channel.live or not channel.announced:
                self._became_live(channel)
            return []
        channel.busy = True
        params = {"sids": [channel.sid], "action": action, "market_tickers": list(batch)}
        return [self._command(channel, action, params, batch)]

    def _became_live(self, channel: _Channel) -> None:
        channel.live, channel.announced = True, True
        if channel.wanted is not None:
            self.metrics.markets[channel.name] = len(channel.subscribed)
        self._update_live()
        fields: dict[str, object] = {"channel": channel.name, "sid": channel.sid}
        if channel.wanted is not None:
            fields["markets"] = len(channel.subscribed)
        if channel.restoring is not None:
            self.events.record("subscription_restored", old_sid=channel.restoring, **fields)
            channel.restoring = None
        else:
            self.events.record("subscribed", **fields)

    # -- a changing universe ---------------------------------------------------

    def markets(self, channel: str) -> list[str]:
        """The markets the exchange confirmed on ``channel``'s sid."""
        return list(self._channels[channel].subscribed)

    def wanted(self, channel: str) -> list[str] | None:
        """The markets ``channel`` should have (None: every market)."""
        wanted = self._channels[channel].wanted
        return None if wanted is None else list(wanted)

    def add(self, channel: str, tickers: Sequence[str]) -> list[Command]:
        """Want ``tickers`` on ``channel`` too: ``add_markets`` batches follow (or the
        channel's first ``subscribe``, if it had no market yet)."""
        found = self._channels[channel]
        if found.wanted is None:
            return []
        found.wanted.update(dict.fromkeys(tickers))
        return self._resume(found)

    def remove(self, channel: str, tickers: Sequence[str]) -> list[Command]:
        """Stop wanting ``tickers`` on ``channel``: ``delete_markets`` batches follow."""
        found = self._channels[channel]
        if found.wanted is None:
            return []
        for ticker in tickers:
            found.wanted.pop(ticker, None)
        return self._resume(found)

    def _resume(self, channel: _Channel) -> list[Command]:
        if channel.busy or channel.unsubscribing:
            return []  # the answer in flight picks the change up
        if channel.sid is None:
            if not channel.live:
                return []  # a subscribe or restore is on its way
            commands = self._subscribe(channel)
            channel.live = True  # an idle channel getting its first markets stays ready
            self._update_live()
            return commands
        return self._next(channel)

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
            channel.subscribed = dict.fromkeys(command.tickers)
            return self._next(channel)
        if kind == "ok" and command.purpose in ("add_markets", "delete_markets"):
            return self._changed(channel, command, ns)
        if kind == "ok" and command.purpose == "get_snapshot":
            return []
        if kind == "unsubscribed" and command.purpose == "unsubscribe":
            channel.unsubscribing = False
            return self._subscribe(channel)
        self._pending[command.id] = command  # not its answer: keep waiting
        return []

    def _changed(self, channel: _Channel, command: Command, ns: int) -> list[Command]:
        """An ``add_markets``/``delete_markets`` confirmed: after start-up, each change
        of a live channel is an event (``markets_added``, ``markets_removed``)."""
        if command.purpose == "add_markets":
            channel.subscribed.update(dict.fromkeys(command.tickers))
        else:
            for ticker in command.tickers:
                channel.subscribed.pop(ticker, None)
            channel.refused.clear()  # room freed: refused markets are tried again
            self.metrics.overflow.pop(channel.name, None)
        if channel.wanted is not None:
            self.metrics.markets[channel.name] = len(channel.subscribed)
        if channel.announced:
            event = "markets_added" if command.purpose == "add_markets" else "markets_removed"
            self.events.record(
                event, ns, channel=channel.name, sid=channel.sid, count=len(command.tickers),
                markets=list(command.tickers), subscribed=len(channel.subscribed),
            )  # fmt: skip
        return self._next(channel)

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
            # The sid is full: this batch and every wanted market not on it yet stay
            # off, reported (event, metric) until a removal frees room.
            channel.refused.update(command.tickers)
            channel.refused.update(channel.to_add(len(channel.wanted or ())))
            self.metrics.overflow[channel.name] = len(channel.refused)
            self.events.record(
                "market_limit", ns, channel=channel.name, sid=channel.sid, code=code,
                markets_subscribed=len(channel.subscribed), markets_refused=len(channel.refused),
            )  # fmt: skip
            log.warning(
                "%s: the exchange refused %d market(s) beyond its per-subscription limit "
                "(%d subscribed on sid %s)", channel.name, len(channel.refused),
                len(channel.subscribed), channel.sid,
            )  # fmt: skip
            return self._next(channel)
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
        return self._subscribe(channel)

    # -- sequence problems -----------------------------------------------------

    def gap(self, sid: int, ns: int) -> list[Command]:
        """A gap on ``sid``: order books ask for fresh snapshots; others cannot be replayed."""
        channel = self._by_sid.get(sid)
        if channel is None or channel.name != ch.ORDERBOOK or channel.recovery is not None:
            return []
        tickers = tuple(channel.subscribed)
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
            return self._subscribe(channel)
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
