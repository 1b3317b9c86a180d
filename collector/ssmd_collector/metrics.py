"""Prometheus metrics of the collector: names defined once, values read at scrape time.

Each component owns its counters as plain attributes: the data path its ``Stats``,
the connector its ``ConnectorMetrics``. ``CollectorMetrics`` turns them into metric
families when ``/metrics`` is scraped. That keeps per-message cost to an attribute
increment instead of a locked ``Counter.inc()``.
Labels stay low-cardinality: feed, error type, channel; never a market ticker.
"""

from __future__ import annotations

import bisect
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from . import __version__

if TYPE_CHECKING:
    from .connectors import ConnectorMetrics

MESSAGES = "ssmd_messages"  # counter; exposed as ssmd_messages_total
ERRORS = "ssmd_errors"
CONNECTED = "ssmd_connected"
LAST_MESSAGE = "ssmd_last_message_timestamp"
SEQUENCE_GAPS = "ssmd_sequence_gaps"
SEQUENCE_DUPLICATES = "ssmd_sequence_duplicates"
EXCHANGE_ERRORS = "ssmd_exchange_errors"
SUBSCRIPTIONS_WANTED = "ssmd_subscriptions_wanted"
SUBSCRIPTION_DEATHS = "ssmd_subscription_deaths"
RECOVERIES = "ssmd_recoveries"
SUBSCRIBED_MARKETS = "ssmd_subscribed_markets"
OVERFLOW_MARKETS = "ssmd_subscription_overflow_markets"
DISCOVERY_RUNS = "ssmd_discovery_runs"
DISCOVERY_SECONDS = "ssmd_discovery_duration_seconds"
DISCOVERED_MARKETS = "ssmd_discovered_markets"
REST_RESPONSES = "ssmd_rest_responses"
BYTES_WRITTEN = "ssmd_bytes_written"
LINES_WRITTEN = "ssmd_lines_written"
QUEUE_DEPTH = "ssmd_queue_depth"
QUEUE_BYTES = "ssmd_queue_bytes"
SUBSCRIPTIONS = "ssmd_subscriptions"
READY = "ssmd_ready"
FLUSH_SECONDS = "ssmd_last_flush_duration_seconds"
WRITE_LATENCY = "ssmd_write_latency_seconds"
WRITE_LATENCY_MAX = "ssmd_write_latency_max_seconds"
INFO = "ssmd_build"


class ErrorType:
    """Values of the ``type`` label on ``ssmd_errors_total``."""

    INVALID_JSON = "invalid_json"
    BINARY_FRAME = "binary_frame"
    FRAME_TOO_LARGE = "frame_too_large"
    EXCHANGE_ERROR = "exchange_error"
    SEQUENCE_GAP = "sequence_gap"
    DISCONNECT = "disconnect"
    WRITE_FAILED = "write_failed"
    AUTH_REJECTED = "auth_rejected"
    SUBSCRIBE_REJECTED = "subscribe_rejected"


LATENCY_SAMPLE_EVERY = 16
"""One message in this many has its receipt-to-write latency measured (cheap, unbiased)."""


class LatencyHistogram:
    """Cumulative-on-export histogram of receipt-to-write latency, in seconds.

    Observed from the writer thread only; read (racily, harmlessly) at scrape time.
    """

    BOUNDS = (
        0.00025,
        0.0005,
        0.001,
        0.0025,
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1.0,
        2.5,
        5.0,
    )

    def __init__(self) -> None:
        self.counts = [0] * (len(self.BOUNDS) + 1)
        self.total = 0.0
        self.max = 0.0

    def observe_many(self, seconds: list[float]) -> None:
        bounds, counts = self.BOUNDS, self.counts
        for x in seconds:
            counts[bisect.bisect_left(bounds, x)] += 1
        self.total += sum(seconds)
        self.max = max(self.max, *seconds) if seconds else self.max

    def buckets(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, n in zip((*map(str, self.BOUNDS), "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, float(running)))
        return out


@dataclass
class Stats:
    """Counters of the data path (runner and writer); the HTTP side only reads them."""

    feed: str
    messages: int = 0
    last_message_ns: int = 0
    bytes_written: int = 0
    lines_written: int = 0
    last_flush_seconds: float = 0.0
    errors: Tally[str] = field(default_factory=Tally)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    queue: Callable[[], tuple[int, int]] = lambda: (0, 0)
    """Returns (lines, bytes) received but not yet handed to the OS."""


class CollectorMetrics(Collector):
    """Every collector metric, gathered from the components that own the values."""

    def __init__(self, stats: Stats, connector: ConnectorMetrics) -> None:
        self.stats = stats
        self.connector = connector

    def collect(self) -> Iterator[Metric]:
        s, c = self.stats, self.connector
        feed = [s.feed]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=["feed"])
            g.add_metric(feed, value)
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(name, doc, labels=["feed"])
            family.add_metric(feed, value)
            return family

        def by(
            kind: type[CounterMetricFamily] | type[GaugeMetricFamily],
            name: str,
            doc: str,
            label: str,
            values: Mapping[str, float] | Mapping[int, float],
        ) -> Metric:
            family = kind(name, doc, labels=["feed", label])
            for key, n in sorted(values.items()):
                family.add_metric([s.feed, str(key)], n)
            return family

        yield counter(MESSAGES, "Messages received from the exchange (incl. rejected).", s.messages)
        yield by(CounterMetricFamily, ERRORS, "Errors by type.", "type", s.errors + c.errors)
        yield by(
            CounterMetricFamily,
            EXCHANGE_ERRORS,
            "Error frames from the exchange by its error code.",
            "code",
            c.exchange_errors,
        )
        yield by(
            CounterMetricFamily,
            SEQUENCE_GAPS,
            "Breaks in a subscription's seq numbers.",
            "channel",
            c.gaps,
        )
        yield by(
            CounterMetricFamily,
            SEQUENCE_DUPLICATES,
            "Repeated or out-of-order seq numbers.",
            "channel",
            c.duplicates,
        )
        yield by(
            CounterMetricFamily,
            SUBSCRIPTION_DEATHS,
            "Subscriptions the exchange ended (errors 10, 17, 25).",
            "channel",
            c.deaths,
        )
        recoveries = CounterMetricFamily(
            RECOVERIES, "Order book recoveries by outcome.", labels=["feed", "channel", "outcome"]
        )
        for (channel, outcome), n in sorted(c.recoveries.items()):
            recoveries.add_metric([s.feed, channel, outcome], n)
        yield recoveries
        yield by(
            GaugeMetricFamily,
            SUBSCRIBED_MARKETS,
            "Markets confirmed per market-filtered channel.",
            "channel",
            c.markets,
        )
        yield by(
            GaugeMetricFamily,
            OVERFLOW_MARKETS,
            "Markets the exchange refused to add (its per-subscription limit).",
            "channel",
            c.overflow,
        )
        yield by(
            CounterMetricFamily,
            DISCOVERY_RUNS,
            "Market discoveries (GET /markets walks) by outcome: ok, failed.",
            "outcome",
            c.discovery_runs,
        )
        yield gauge(
            DISCOVERY_SECONDS, "Duration of the last market discovery.", c.discovery_seconds
        )
        yield gauge(
            DISCOVERED_MARKETS, "Markets the last discovery selected here.", c.discovered_markets
        )
        yield by(
            CounterMetricFamily,
            REST_RESPONSES,
            "REST answers by HTTP status (0: no answer).",
            "status",
            c.rest_responses,
        )
        yield gauge(CONNECTED, "1 while the WebSocket is open.", float(c.connected))
        yield gauge(READY, "1 while connected and every subscription is live.", float(c.ready))
        yield gauge(
            LAST_MESSAGE, "Unix time of the last message received.", s.last_message_ns / 1e9
        )
        yield gauge(SUBSCRIPTIONS, "Channel subscriptions live.", c.subscriptions_live)
        yield gauge(
            SUBSCRIPTIONS_WANTED, "Channel subscriptions configured.", c.subscriptions_wanted
        )
        yield counter(BYTES_WRITTEN, "Bytes appended to archive files.", s.bytes_written)
        yield counter(LINES_WRITTEN, "Lines appended to archive files.", s.lines_written)
        lines, size = s.queue()
        yield gauge(QUEUE_DEPTH, "Lines received and not yet handed to the OS.", lines)
        yield gauge(QUEUE_BYTES, "Bytes received and not yet handed to the OS.", size)
        yield gauge(FLUSH_SECONDS, "Duration of the last batch write.", s.last_flush_seconds)
        latency = HistogramMetricFamily(
            WRITE_LATENCY,
            f"Receipt to hand-off to the OS, sampled 1 in {LATENCY_SAMPLE_EVERY} messages.",
            labels=["feed"],
        )
        latency.add_metric(feed, s.latency.buckets(), s.latency.total)
        yield latency
        yield gauge(WRITE_LATENCY_MAX, "Largest sampled receipt-to-write latency.", s.latency.max)
        info = GaugeMetricFamily(INFO + "_info", "Build information.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info


def registry_for(
    stats: Stats, connector: ConnectorMetrics, others: Iterable[Collector] = ()
) -> CollectorRegistry:
    """A registry of its own (not the global one), so tests can run many collectors.

    ``others`` are the collectors of further components that own their metrics (the
    archive).
    """
    registry = CollectorRegistry(auto_describe=True)
    registry.register(CollectorMetrics(stats, connector))
    for collector in others:
        registry.register(collector)
    return registry
