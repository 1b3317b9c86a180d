"""What every exchange plug-in provides, and what the rest of the collector may rely on.

The runner, the writer and the HTTP endpoints know only these types. An exchange
plug-in (one subpackage of :mod:`ssmd_collector.connectors`) supplies a
:class:`Connector` that opens the feed, decodes each frame once, does the protocol's
bookkeeping (subscriptions, sequence numbers, recovery) and hands over every message
with its verdict: ``None`` for a message to archive, or a :class:`Rejection` for one
that is kept aside in the rejected file.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from ..metadata import Resolved, Subscription


class Rejection(NamedTuple):
    """Why a message is not archived as data (it goes to ``<feed>.rejected.jsonl``)."""

    reason: str
    """An ``ErrorType`` value: ``invalid_json`` or ``binary_frame``."""
    detail: str


Delivery = tuple[int, bytes, Rejection | None]
"""(receive time in ns since the epoch, payload exactly as received, verdict)."""


class ConnectorError(Exception):
    """A connector cannot go on; the subclass says which exit code applies."""


class AuthRejected(ConnectorError):
    """The exchange refused the handshake (HTTP 401/403): the keys are wrong."""


class SubscribeRejected(ConnectorError):
    """The exchange refused a subscription, never answered it, or kept killing it."""


class CredentialsInvalid(Exception):
    """Keys that cannot be used; the message names the key and field, never a value."""

    def __init__(self, key: str, field: str, problem: str) -> None:
        super().__init__(f"key '{key}' field {field}: {problem}")
        self.key, self.field, self.problem = key, field, problem


class Disconnected(ConnectorError):
    """The connection could not be opened or was lost."""


@dataclass
class ConnectorMetrics:
    """Counters a connector owns; the metrics module reads them at scrape time."""

    connected: bool = False
    subscriptions_live: int = 0
    subscriptions_wanted: int = 0
    errors: Tally[str] = field(default_factory=Tally)
    """By ``ErrorType`` value (exchange_error, disconnect, auth_rejected, ...)."""
    exchange_errors: Tally[int] = field(default_factory=Tally)
    """Error frames from the exchange, by its error code."""
    gaps: Tally[str] = field(default_factory=Tally)
    """Sequence gaps by channel."""
    duplicates: Tally[str] = field(default_factory=Tally)
    """Repeated or out-of-order sequence numbers by channel."""
    deaths: Tally[str] = field(default_factory=Tally)
    """Subscriptions the exchange ended (error 10, 25, 17) by channel."""
    recoveries: Tally[tuple[str, str]] = field(default_factory=Tally)
    """(channel, outcome) of each recovery: requested, completed, resubscribed."""
    markets: dict[str, int] = field(default_factory=dict)
    """Markets confirmed per market-filtered channel."""
    overflow: dict[str, int] = field(default_factory=dict)
    """Markets the exchange refused to add per channel (its per-subscription limit)."""
    discovery_runs: Tally[str] = field(default_factory=Tally)
    """Market discoveries (start-up and periodic) by outcome: ok, failed."""
    discovery_seconds: float = 0.0
    """Duration of the last completed discovery."""
    discovered_markets: int = 0
    """Markets the last discovery selected for this collector (its shard)."""
    rest_responses: Tally[int] = field(default_factory=Tally)
    """REST answers by HTTP status (0: none, e.g. connection refused)."""

    @property
    def ready(self) -> bool:
        return self.connected and self.subscriptions_live == self.subscriptions_wanted > 0


class EventSink(Protocol):
    """Where a connector reports facts a reader of the archive needs (``events.py``)."""

    def record(self, event: str, ns: int | None = None, /, **fields: object) -> None: ...


class Connector(Protocol):
    """A live connection to one exchange feed."""

    metrics: ConnectorMetrics
    disconnect_reason: str

    async def connect(self) -> None:
        """Open the connection and subscribe; raise a ``ConnectorError`` on failure."""

    def batches(self) -> AsyncIterator[list[Delivery]]:
        """Messages in arrival order, in batches, each with its verdict. Ends when the
        connection is lost; raises ``SubscribeRejected`` when subscriptions cannot be
        kept alive."""
        ...

    def pending(self) -> list[Delivery]:
        """Messages read but not yet handed over, without waiting (drained on a stop)."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class ConnectorOptions:
    """Exchange-independent knobs, from :class:`~ssmd_collector.settings.Settings`."""

    silence_timeout: float
    max_frame_bytes: int
    subscribe_batch_size: int
    answer_timeout: float
    snapshot_timeout: float
    max_deaths: int
    death_window: float
    discovery_interval: float
    rest_rate: float
    add_debounce: float
    removal_grace: float
    shard_index: int
    shard_count: int


class Exchange(Protocol):
    """One exchange plug-in: its name, its metadata rules, its connector."""

    name: str

    def check_subscriptions(
        self, subscriptions: Sequence[Subscription], has_keys: bool
    ) -> list[tuple[str, str, object]]:
        """Problems with an environment's subscriptions: (field, expected, found)."""
        ...

    def load_credentials(self, keys: Mapping[str, Mapping[str, str]]) -> object | None:
        """The credentials this exchange signs with, from the environment's resolved keys
        (``None`` for an unsigned connection); raises ``CredentialsInvalid``."""
        ...

    def connector(
        self,
        resolved: Resolved,
        credentials: object | None,
        options: ConnectorOptions,
        events: EventSink,
        *,
        ssl_context: object | None,
        clock_ns: Callable[[], int],
        pages: Callable[[str, bytes], None] | None = None,
    ) -> Connector:
        """``pages`` receives every REST page the connector reads (URL, body as received)
        for the archive."""
        ...
