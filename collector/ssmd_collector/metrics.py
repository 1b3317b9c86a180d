"""Prometheus metrics of the collector: names defined once, values read at scrape time.

The hot path only bumps plain integers on ``Stats``; ``StatsCollector`` turns
them into metric families when ``/metrics`` is scraped. That keeps per-message
cost to an attribute increment instead of a locked ``Counter.inc()``.
Labels stay low-cardinality: feed, error type, channel; never a market ticker.
"""

from __future__ import annotations

import bisect
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from . import __version__

MESSAGES = "ssmd_messages"  # counter; exposed as ssmd_messages_total
ERRORS = "ssmd_errors"
CONNECTED = "ssmd_connected"
LAST_MESSAGE = "ssmd_last_message_timestamp"
SEQUENCE_GAPS = "ssmd_sequence_gaps"
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
    """Live counters and state of one collector, shared by the data path and HTTP."""

    feed: str
    messages: int = 0
    last_message_ns: int = 0
    bytes_written: int = 0
    lines_written: int = 0
    connected: bool = False
    subscribed: bool = False
    subscriptions: int = 0
    last_flush_seconds: float = 0.0
    errors: Tally[str] = field(default_factory=Tally)
    gaps: Tally[str] = field(default_factory=Tally)
    """Sequence gaps by channel."""
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    queue: Callable[[], tuple[int, int]] = lambda: (0, 0)
    """Returns (lines, bytes) received but not yet handed to the OS."""

    @property
    def ready(self) -> bool:
        return self.connected and self.subscribed


class StatsCollector(Collector):
    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        feed = [s.feed]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=["feed"])
            g.add_metric(feed, value)
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            c = CounterMetricFamily(name, doc, labels=["feed"])
            c.add_metric(feed, value)
            return c

        yield counter(MESSAGES, "Messages received from the exchange (incl. rejected).", s.messages)
        errors = CounterMetricFamily(ERRORS, "Errors by type.", labels=["feed", "type"])
        for kind, n in sorted(s.errors.items()):
            errors.add_metric([s.feed, kind], n)
        yield errors
        gaps = CounterMetricFamily(
            SEQUENCE_GAPS, "Breaks in a subscription's seq numbers.", labels=["feed", "channel"]
        )
        for channel, n in sorted(s.gaps.items()):
            gaps.add_metric([s.feed, channel], n)
        yield gaps
        yield gauge(CONNECTED, "1 while the WebSocket is open.", float(s.connected))
        yield gauge(READY, "1 while connected and subscribed.", float(s.ready))
        yield gauge(
            LAST_MESSAGE, "Unix time of the last message received.", s.last_message_ns / 1e9
        )
        yield gauge(
            SUBSCRIPTIONS, "Channel subscriptions confirmed by the exchange.", s.subscriptions
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


def registry_for(stats: Stats, others: Iterable[Collector] = ()) -> CollectorRegistry:
    """A registry of its own (not the global one), so tests can run many collectors.

    ``others`` are the collectors of components that own their metrics (the archive).
    """
    registry = CollectorRegistry(auto_describe=True)
    registry.register(StatsCollector(stats))
    for collector in others:
        registry.register(collector)
    return registry
