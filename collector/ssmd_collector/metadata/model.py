"""Typed, immutable models of the GitOps metadata (feeds, schemas, environments).

These mirror the existing ssmd YAML formats. Only fields the code uses are modelled;
unknown fields in the YAML are ignored so that metadata can evolve in git before code.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

DEFAULT_CHANNELS: tuple[str, ...] = ("ticker", "trade", "market_lifecycle_v2")
"""Public all-market channels subscribed to when an environment lists no subscriptions."""


@dataclass(frozen=True)
class FeedVersion:
    version: str
    effective_from: dt.date
    effective_to: dt.date | None
    endpoint: str
    transport: str
    message_format: str
    auth_method: str | None
    rate_limit_per_second: float | None
    rest_endpoint: str = ""
    """Base URL of the exchange's REST API (market discovery): the feed's
    ``rest_endpoint``, or derived from ``endpoint`` by :func:`derive_rest_endpoint`."""

    def effective_on(self, day: dt.date) -> bool:
        started = self.effective_from <= day
        return started and (self.effective_to is None or day <= self.effective_to)


def derive_rest_endpoint(ws_endpoint: str) -> str:
    """The REST base URL that goes with a WebSocket endpoint, when a feed names none.

    Rule (Kalshi's hosts, KALSHI.md section 1): ``wss`` becomes ``https`` and ``ws``
    becomes ``http``; a host starting ``external-api-ws.`` becomes ``external-api.``;
    the path segment ``ws`` is dropped (``/trade-api/ws/v2`` -> ``/trade-api/v2``).
    ``wss://api.elections.kalshi.com/trade-api/ws/v2`` thus gives
    ``https://api.elections.kalshi.com/trade-api/v2``, and the simulator's
    ``ws://127.0.0.1:8765/trade-api/ws/v2`` gives ``http://127.0.0.1:8765/trade-api/v2``
    (it serves REST on its WebSocket port).
    """
    scheme, sep, rest = ws_endpoint.partition("://")
    if not sep:
        return ""
    scheme = {"wss": "https", "ws": "http"}.get(scheme, scheme)
    host, slash, path = rest.partition("/")
    if host.startswith("external-api-ws."):
        host = "external-api." + host.removeprefix("external-api-ws.")
    path = "/".join(part for part in path.split("/") if part != "ws")
    return f"{scheme}://{host}{slash}{path}".rstrip("/")


@dataclass(frozen=True)
class Feed:
    name: str
    display_name: str
    type: str
    status: str
    versions: tuple[FeedVersion, ...]
    file: str
    exchange: str = "kalshi"
    """Which exchange plug-in speaks this feed (``ssmd_collector.connectors``)."""

    def version_on(self, day: dt.date) -> FeedVersion | None:
        """The version in force on ``day``: the latest ``effective_from <= day`` still open."""
        candidates = [v for v in self.versions if v.effective_on(day)]
        return max(candidates, key=lambda v: v.effective_from, default=None)


@dataclass(frozen=True)
class SchemaVersion:
    version: str
    effective_from: dt.date
    status: str
    hash: str


@dataclass(frozen=True)
class Schema:
    name: str
    format: str
    schema_file: str
    versions: tuple[SchemaVersion, ...]
    file: str

    def version(self, name: str) -> SchemaVersion | None:
        return next((v for v in self.versions if v.version == name), None)


@dataclass(frozen=True)
class KeySpec:
    """A credential the environment needs, and where its fields come from."""

    name: str
    type: str
    required: bool
    fields: tuple[str, ...]
    source: str


MARKET_STATUSES = ("unopened", "open", "paused", "closed", "settled")
"""The ``status`` filter words of Kalshi's ``GET /markets`` (one per call, KALSHI.md s. 8)."""
MULTIVARIATE = ("exclude", "only", "include")


@dataclass(frozen=True)
class MarketSelector:
    """Markets found by discovery (``GET /markets``) and kept current while running.

    A market is selected when it has ``status`` and the multivariate rule allows it
    and, for each of ``series``, ``events`` and ``tickers`` that is given, it is one of
    them (any value of a list; every list given).
    """

    status: str = "open"
    series: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    tickers: tuple[str, ...] = ()
    multivariate: str = "exclude"
    """``exclude`` multivariate combos (KXMVE*), take ``only`` them, or ``include`` both."""


@dataclass(frozen=True)
class Subscription:
    channels: tuple[str, ...]
    market_tickers: tuple[str, ...] = ()
    markets: MarketSelector | None = None
    """Discovered markets, beside or instead of the fixed ``market_tickers``."""

    @property
    def filtered(self) -> bool:
        """Whether this entry names markets (a fixed list, a selector or both)."""
        return bool(self.market_tickers) or self.markets is not None


@dataclass(frozen=True)
class Storage:
    """Where the collector writes (``path``) and, for ``s3``, where sealed files go."""

    type: str
    path: str
    bucket: str | None = None
    prefix: str = ""
    endpoint: str | None = None
    region: str | None = None
    local_retention_hours: float = 0.0
    """How long an uploaded file stays on the local disk (0: removed once verified)."""


@dataclass(frozen=True)
class Environment:
    name: str
    feed: str
    schema_name: str
    schema_version: str
    keys: tuple[KeySpec, ...]
    transport: str
    storage: Storage
    subscriptions: tuple[Subscription, ...]
    file: str

    @property
    def channels(self) -> frozenset[str]:
        return frozenset(c for s in self.subscriptions for c in s.channels)


@dataclass(frozen=True)
class Catalog:
    """Everything that parsed cleanly from a metadata tree, keyed by name."""

    feeds: dict[str, Feed] = field(default_factory=dict)
    schemas: dict[str, Schema] = field(default_factory=dict)
    environments: dict[str, Environment] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class Resolved:
    """An environment with the feed version and schema version it runs with on a day."""

    environment: Environment
    feed: Feed
    feed_version: FeedVersion
    schema: Schema
    schema_version: SchemaVersion
    day: dt.date

    @property
    def files(self) -> tuple[str, ...]:
        """Relative paths of every metadata file this environment depends on."""
        return (
            self.environment.file,
            self.feed.file,
            self.schema.file,
            f"schemas/{self.schema.schema_file}",
        )
