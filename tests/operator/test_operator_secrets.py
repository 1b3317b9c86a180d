"""Secret values never leave the Secret, in the error paths too.

``test_operator_loop.py::test_secret_values_never_leave_the_secret`` covers the
happy path and a missing Secret. This test goes through the paths where leaks hide:
a Secret holding the recognisable values under the wrong key names
(``SecretMissingFields``), a Secret with extra keys, API errors with tracebacks
logged while the Secret is in use, and the repair. Every request the operator (kopf
and its own client) sends goes through the fault proxy, so the check covers all of
them, not only what reaches the emulator.
"""

from __future__ import annotations

import base64

import pytest
from operator_harness import (
    API_KEY,
    CM,
    DEPLOY,
    ENV,
    EVENTS,
    PRIVATE_KEY,
    SECRET,
    Cluster,
    Fault,
    FaultProxy,
    environment,
    keys_secret,
    proxied_operator_config,
    running,
)

PROD = "kalshi-prod"
EXTRA_VALUE = "LEAKCHECK-extra-value-90d2"
NEEDLES = [
    API_KEY,
    PRIVATE_KEY.splitlines()[1],
    EXTRA_VALUE,
    *(base64.b64encode(v.encode()).decode() for v in (API_KEY, PRIVATE_KEY, EXTRA_VALUE)),
]


def leaks(text: str) -> list[str]:
    return [n for n in NEEDLES if n in text]


async def test_secret_values_stay_secret_in_error_paths(
    cluster: Cluster, proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")  # the operator's and kopf's own debug lines included
    c = cluster
    config = proxied_operator_config(c, proxy, retry_seconds=0.1, retry_max_seconds=0.4)
    # The right values under the wrong names, plus a key nobody asked for.
    wrong = keys_secret(apikey=API_KEY, privatekey=PRIVATE_KEY, extra=EXTRA_VALUE)
    await c.create(SECRET, wrong)
    async with running(config, c):
        await c.create(ENV, environment(PROD, "uid-prod", secretName="kalshi-keys"))
        cond = await c.wait_condition(PROD, "SecretReady", "False", "SecretMissingFields")
        assert "api_key" in cond["message"]
        assert "private_key" in cond["message"]

        # Fixed while the API server fails: passes fail with tracebacks in the log.
        proxy.add(
            Fault("POST", r"/deployments$", 503, times=1),
            Fault("PATCH", r"/status$", 500, times=2),
        )
        fixed = keys_secret()
        fixed["data"]["extra"] = wrong["data"]["extra"]
        await c.patch(SECRET, "kalshi-keys", {"data": {"apikey": None, "privatekey": None}})
        await c.patch(SECRET, "kalshi-keys", {"data": fixed["data"]})
        await c.wait(lambda: c.get(DEPLOY, f"{PROD}-collector"), "the Deployment")
        await c.make_available(PROD)
        await c.wait_condition(PROD, "Ready", "True")
        await c.quiet(0.3)

    # The error paths were taken, and logged with their tracebacks.
    assert [f.hits for f in proxy.faults] == [1, 2]
    assert "Traceback" in caplog.text
    assert "HTTP 500" in caplog.text
    assert "lacks data key(s) api_key, private_key" in str(await c.list(EVENTS))

    # Nothing the operator sent carries a value (kopf only lists and watches Secrets;
    # the operator's own client never asks for one).
    for seen in proxy.seen:
        assert leaks(f"{seen.path}?{seen.query} {seen.body}") == [], (seen.method, seen.path)
    secret_requests = [s for s in proxy.seen if "/secrets" in s.path]
    assert secret_requests
    assert {(s.method, s.agent.split("/")[0]) for s in secret_requests} == {("GET", "kopf")}
    assert all(s.path.endswith("/secrets") for s in secret_requests)  # lists, never one by name

    # Nothing stored outside the Secret carries a value: status, Events, every ConfigMap,
    # the Deployment.
    for resource in (ENV, CM, EVENTS, DEPLOY):
        for obj in await c.list(resource):
            assert leaks(str(obj)) == [], (resource, obj["metadata"]["name"])
    env_var_sources = (await c.get(DEPLOY, f"{PROD}-collector"))["spec"]["template"]["spec"]
    assert all("valueFrom" in e for e in env_var_sources["containers"][0]["env"])

    # Nor any log line, message or traceback, at DEBUG.
    assert leaks(caplog.text) == []
    assert leaks("\n".join(c.operator_errors)) == []
    for record in caplog.records:
        assert leaks(repr(record.args)) == [], record.name
