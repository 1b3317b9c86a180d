"""The operator's own Prometheus metrics, scraped from the running operator over HTTP."""

from __future__ import annotations

import socket
from typing import Any

import aiohttp
import pytest
from operator_harness import (
    DEPLOY,
    ENV,
    Cluster,
    Fault,
    FaultProxy,
    environment,
    proxied_operator_config,
    running,
)
from prometheus_client.parser import text_string_to_metric_families

from ssmd_operator import metrics
from ssmd_operator.kube import ApiError

POST_DEPLOY = r"/deployments$"
Samples = dict[tuple[str, tuple[Any, ...]], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def scrape(
    session: aiohttp.ClientSession, url: str
) -> dict[tuple[str, tuple[Any, ...]], float]:
    """{(sample name, sorted labels): value} of one scrape."""
    async with session.get(url) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum over the samples of ``name`` that have these labels (and maybe others)."""
    return sum(
        v for (n, have), v in samples.items() if n == name and set(labels.items()) <= set(have)
    )


async def test_reconciles_failures_durations_and_environments_by_condition(
    cluster: Cluster, proxy: FaultProxy
) -> None:
    c = cluster
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    config = proxied_operator_config(
        c, proxy, retry_seconds=0.1, retry_max_seconds=0.4, metrics_address=("127.0.0.1", port)
    )
    ready = ("ssmd_operator_environments", "Ready")

    async def sample() -> Samples:
        try:
            return await scrape(c.session, url)
        except aiohttp.ClientConnectionError:
            return {}

    async with running(config, c):
        before = await c.wait(sample, "the metrics endpoint")
        for reason in (*metrics.REASONS, metrics.APPLY_REJECTED):  # present from the start
            assert ("ssmd_operator_reconcile_failures_total", (("reason", reason),)) in before

        # A good environment: counted by its conditions, Ready=False until its pod is.
        await c.create(ENV, environment("kalshi-sim", "uid-sim"))
        await c.wait(lambda: c.get(DEPLOY, "kalshi-sim-collector"), "sim Deployment")
        await c.wait_condition("kalshi-sim", "CollectorAvailable", "False", "Progressing")

        async def counted(status: str, n: int) -> Any:
            s = await sample()
            return s if value(s, ready[0], condition=ready[1], status=status) == n else None

        await c.wait(lambda: counted("False", 1), "Ready=False counted")
        await c.make_available("kalshi-sim")
        s = await c.wait(lambda: counted("True", 1), "Ready=True counted")
        assert value(s, ready[0], condition="Ready", status="False") == 0
        assert value(s, ready[0], condition="MetadataResolved", status="True") == 1
        assert value(s, ready[0], condition="Ready", status="True", reason="Ready") == 1

        # Server errors fail passes (and back off); a refused write completes but counts.
        proxy.add(Fault("POST", POST_DEPLOY, 503, times=2))
        await c.create(ENV, environment("kalshi-sim-b", "uid-b", environment="kalshi-sim"))

        async def failed(reason: str) -> Any:
            s = await sample()
            return s if value(s, "ssmd_operator_reconcile_failures_total", reason=reason) else None

        await c.wait(lambda: failed("server_error"), "server_error counted")
        proxy.add(Fault("POST", POST_DEPLOY, 422))
        await c.create(ENV, environment("kalshi-sim-c", "uid-c", environment="kalshi-sim"))
        await c.wait(lambda: failed("apply_rejected"), "apply_rejected counted")
        await c.quiet(0.3)
        s = await sample()
    passes = value(s, "ssmd_operator_reconciles_total")
    assert passes >= 4
    assert value(s, "ssmd_operator_reconcile_duration_seconds_count") == passes
    assert value(s, "ssmd_operator_reconcile_duration_seconds_sum") > 0
    assert value(s, ready[0], condition="CollectorAvailable", status="False") >= 1


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (ApiError(503, "GET", "/x", "busy"), "server_error"),
        (ApiError(500, "GET", "/x", "oops"), "server_error"),
        (ApiError(429, "GET", "/x", "slow down"), "throttled"),
        (ApiError(404, "PATCH", "/x", "gone"), "api_error"),
        (TimeoutError(), "timeout"),
        (aiohttp.ClientConnectionError(), "connection"),
        (ConnectionRefusedError(), "connection"),
        (ValueError("bug"), "error"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_failure_reasons_are_a_fixed_set(exc: BaseException, reason: str) -> None:
    assert metrics.failure_reason(exc) == reason
    assert reason in metrics.REASONS
