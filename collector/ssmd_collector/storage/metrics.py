"""Metrics of the archive, owned by the archive and read at scrape time.

The archive thread bumps plain attributes; ``ArchiveCollector`` turns them into
metric families when ``/metrics`` is scraped (the same pattern as ``Stats``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

UPLOAD_LAG = "ssmd_upload_lag_seconds"
UPLOAD_PENDING = "ssmd_upload_pending_files"
UPLOADED_BYTES = "ssmd_uploaded_bytes"  # counter; exposed with _total
UPLOADED_FILES = "ssmd_uploaded_files"
UPLOAD_FAILURES = "ssmd_upload_failures"
SEALED_FILES = "ssmd_sealed_files"
SEAL_FAILURES = "ssmd_seal_failures"


@dataclass
class ArchiveStats:
    feed: str
    sealed_files: int = 0
    seal_failures: int = 0
    uploaded_files: int = 0
    uploaded_bytes: int = 0
    upload_failures: int = 0
    pending_files: int = 0
    oldest_pending_sealed_at: float | None = None
    """When the oldest sealed, not yet uploaded file was sealed (None: nothing pending)."""


class ArchiveCollector(Collector):
    def __init__(self, stats: ArchiveStats, clock: Callable[[], float] = time.time) -> None:
        self.stats = stats
        self.clock = clock

    def lag(self) -> float:
        oldest = self.stats.oldest_pending_sealed_at
        return 0.0 if oldest is None else max(0.0, self.clock() - oldest)

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        feed = [s.feed]
        families: list[tuple[type[GaugeMetricFamily | CounterMetricFamily], str, str, float]] = [
            (
                GaugeMetricFamily,
                UPLOAD_LAG,
                "Age of the oldest sealed file not yet uploaded (0 when none is pending).",
                self.lag(),
            ),
            (GaugeMetricFamily, UPLOAD_PENDING, "Sealed files not yet uploaded.", s.pending_files),
            (CounterMetricFamily, UPLOADED_BYTES, "Bytes uploaded and verified.", s.uploaded_bytes),
            (CounterMetricFamily, UPLOADED_FILES, "Files uploaded and verified.", s.uploaded_files),
            (
                CounterMetricFamily,
                UPLOAD_FAILURES,
                "Upload attempts that failed (retried with back-off).",
                s.upload_failures,
            ),
            (CounterMetricFamily, SEALED_FILES, "Files sealed (zstd + manifest).", s.sealed_files),
            (CounterMetricFamily, SEAL_FAILURES, "Seal attempts that failed.", s.seal_failures),
        ]
        for kind, name, doc, value in families:
            family = kind(name, doc, labels=["feed"])
            family.add_metric(feed, value)
            yield family
