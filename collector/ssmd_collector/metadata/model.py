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

    def effective_on(self, day: dt.date) -> bool:
        started = self.effective_from <= day
        return started and (self.effective_to is None or day <= self.effective_to)


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


@dataclass(frozen=True)
class Subscription:
    channels: tuple[str, ...]
    market_tickers: tuple[str, ...] = ()


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
