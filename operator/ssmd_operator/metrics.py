"""Prometheus metrics of the operator: names defined once, environments counted at scrape time.

Served on their own port (``--metrics-port``, default 8082) so kopf's liveness
endpoint stays what the kubelet probes and nothing else. Each operator has its own
registry (tests run several in one process). Labels are low-cardinality by design:
a failure *reason* from a fixed set and a condition type and status, never a
namespace or an environment name (that is what the SsmdEnvironment's status and
Events are for).

- ``ssmd_operator_reconciles_total``: passes run.
- ``ssmd_operator_reconcile_failures_total{reason}``: passes that failed, by
  ``REASONS``; ``apply_rejected`` is a pass that completed but whose write the API
  server refused (it is in the status, and retried only by the resync).
- ``ssmd_operator_reconcile_duration_seconds``: histogram of pass durations.
- ``ssmd_operator_environments{condition,status,reason}``: environments whose last
  pass computed that condition (``Ready``/``False``/``Paused`` and so on); the reason
  lets an alert leave paused environments alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import aiohttp
import aiohttp.web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .kube import ApiError

RECONCILES = "ssmd_operator_reconciles"
FAILURES = "ssmd_operator_reconcile_failures"
DURATION = "ssmd_operator_reconcile_duration_seconds"
ENVIRONMENTS = "ssmd_operator_environments"

APPLY_REJECTED = "apply_rejected"
REASONS = ("server_error", "throttled", "api_error", "timeout", "connection", "error")
"""Why a pass failed (``failure_reason``), plus ``APPLY_REJECTED``."""

ConditionCounts = Callable[[], Mapping[tuple[str, str, str], int]]
"""() -> {(condition type, status, reason): number of environments}."""


def failure_reason(exc: BaseException) -> str:
    """A failed pass's exception as one of ``REASONS``."""
    if isinstance(exc, ApiError):
        if exc.status >= 500:
            return "server_error"
        return "throttled" if exc.status == 429 else "api_error"
    if isinstance(exc, TimeoutError):  # asyncio.TimeoutError too, since Python 3.11
        return "timeout"
    if isinstance(exc, aiohttp.ClientError | OSError):
        return "connection"
    return "error"


class _Environments:
    """A custom collector: counts are read from the reconciler when scraped."""

    def __init__(self, counts: ConditionCounts) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            ENVIRONMENTS,
            "SsmdEnvironments by condition status and reason, as of their last reconcile",
            labels=["condition", "status", "reason"],
        )
        for (type_, status, reason), n in sorted(self.counts().items()):
            family.add_metric([type_, status, reason], n)
        yield family


class OperatorMetrics:
    """What the reconciler reports; ``text()`` is the exposition."""

    def __init__(self, counts: ConditionCounts) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._passes = Counter(RECONCILES, "Reconcile passes run", registry=self.registry)
        self._failures = Counter(
            FAILURES, "Reconcile passes that failed, by reason", ["reason"], registry=self.registry
        )
        for reason in (*REASONS, APPLY_REJECTED):
            self._failures.labels(reason)  # every series exists from the start at 0
        self._duration = Histogram(
            DURATION,
            "Duration of reconcile passes",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.registry.register(_Environments(counts))

    def observe(self, seconds: float, failure: str | None) -> None:
        self._passes.inc()
        self._duration.observe(seconds)
        if failure is not None:
            self._failures.labels(failure).inc()

    def text(self) -> bytes:
        return generate_latest(self.registry)


async def serve(metrics: OperatorMetrics, host: str, port: int) -> aiohttp.web.AppRunner:
    """``GET /metrics`` on ``host:port``; the caller cleans the runner up."""

    async def handler(_: aiohttp.web.Request) -> aiohttp.web.Response:
        response = aiohttp.web.Response(body=metrics.text())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = aiohttp.web.Application()
    app.add_routes([aiohttp.web.get("/metrics", handler)])
    runner = aiohttp.web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    await aiohttp.web.TCPSite(runner, host, port).start()
    return runner


def condition_counts(latest: Iterable[Iterable[Any]]) -> dict[tuple[str, str, str], int]:
    """Count (type, status, reason) over the environments' latest conditions."""
    counts: dict[tuple[str, str, str], int] = {}
    for conditions in latest:
        for c in conditions:
            key = (str(c.type), str(c.status), str(c.reason))
            counts[key] = counts.get(key, 0) + 1
    return counts
