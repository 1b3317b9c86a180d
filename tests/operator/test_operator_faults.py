"""Operator faults: API errors, lost answers, conflicts, timeouts, restarts.

The real operator (kopf and every handler) runs against kmock through a fault
injecting proxy (``operator_harness.FaultProxy``). Each test breaks something the
way a real API server does, then checks that the operator neither hammers the
server nor writes twice, and that it converges once the fault is gone.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Callable
from typing import Any

import kopf
import pytest
from deadlines import deadline
from operator_harness import (
    CM,
    DEPLOY,
    ENV,
    EVENTS,
    NAMESPACE,
    SECRET,
    Cluster,
    Fault,
    FaultProxy,
    Seen,
    environment,
    keys_secret,
    proxied_operator_config,
    running,
)

from ssmd_operator.handlers import LIST_CHUNK_SIZE, OperatorConfig
from ssmd_operator.kube import KubeApi
from ssmd_operator.names import DEFAULT_IMAGE
from ssmd_operator.reconcile import Reconciler

PROD = "kalshi-prod"
SIM = "kalshi-sim"  # needs no keys
CR_PATH = f"/apis/ssmd.io/v1alpha1/namespaces/{NAMESPACE}/ssmdenvironments/{PROD}"
POST_CM = rf"^/api/v1/namespaces/{NAMESPACE}/configmaps$"
POST_DEPLOY = rf"^/apis/apps/v1/namespaces/{NAMESPACE}/deployments$"
STATUS = r"/ssmdenvironments/[^/]+/status$"
WRITES = {"POST", "PATCH", "PUT", "DELETE"}


def fast_retries(cluster: Cluster, proxy: FaultProxy, **changes: Any) -> OperatorConfig:
    """Backoff 0.1 s doubling to 0.8 s: the production shape (10 s to 300 s), scaled down."""
    return proxied_operator_config(
        cluster, proxy, retry_seconds=0.1, retry_max_seconds=0.8, **changes
    )


async def until(c: Cluster, check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    async def probe() -> bool:
        return check()

    await c.wait(probe, what, timeout)


async def converged(c: Cluster, env: str = PROD) -> None:
    """Children there, pod made available (no kubelet here), Ready=True."""
    await c.wait(lambda: c.get(DEPLOY, f"{env}-collector"), f"{env} Deployment")
    await c.make_available(env)
    await c.wait_condition(env, "Ready", "True")


async def children(c: Cluster) -> tuple[list[str], list[str]]:
    deployments = sorted(d["metadata"]["name"] for d in await c.list(DEPLOY))
    snapshots = sorted(
        m["metadata"]["name"] for m in await c.list(CM) if m["metadata"]["name"].endswith("-config")
    )
    return deployments, snapshots


def test_backoff_doubles_up_to_the_cap_with_bounded_jitter() -> None:
    r = Reconciler(KubeApi(), retry_seconds=10, retry_max_seconds=300)
    for failures, base in [(1, 10), (2, 20), (3, 40), (5, 160), (6, 300), (50, 300), (10**6, 300)]:
        for _ in range(20):
            assert 0.8 * base <= r.backoff(failures) <= 1.2 * base


async def test_server_errors_are_retried_with_backoff_and_converge(
    cluster: Cluster, proxy: FaultProxy
) -> None:
    c = cluster
    await c.create(SECRET, keys_secret())
    proxy.add(Fault("POST", POST_CM, 503))  # every snapshot create fails until cleared
    async with running(fast_retries(c, proxy), c):
        # kopf's initial listings trigger passes of their own: let them settle, so that
        # every pass below is one the backoff scheduled.
        await c.quiet(0.3)
        await c.create(ENV, environment(PROD, "uid-prod", secretName="kalshi-keys"))

        def attempts() -> list[Seen]:
            return proxy.requests("POST", POST_CM)

        def retries() -> list[tuple[int, float]]:
            return scheduled_retries(c.operator_errors)

        await until(c, lambda: len(retries()) >= 6, "six scheduled retries of the snapshot")
        # What the reconciler scheduled, not measured gaps (wall-clock time on a loaded
        # machine says nothing): failures counted in a row, delays doubling from 0.1 s to
        # the 0.8 s cap with +-20 % jitter, and one attempt per scheduled retry.
        seen = retries()[:6]
        assert [n for n, _ in seen] == [1, 2, 3, 4, 5, 6], seen
        for (n, delay), base in zip(seen, [0.1, 0.2, 0.4, 0.8, 0.8, 0.8], strict=True):
            assert 0.8 * base - 0.01 <= delay <= 1.2 * base + 0.01, (
                n,
                delay,
                seen,
            )  # logged to 0.01
        assert len(attempts()) <= len(retries()) + 1, (len(attempts()), seen)
        assert await c.get(DEPLOY, f"{PROD}-collector") is None  # nothing half-done
        assert any("retrying in" in e for e in c.operator_errors)

        proxy.clear()
        await converged(c)
        assert await children(c) == ([f"{PROD}-collector"], [f"{PROD}-config"])
        assert [s.answer for s in proxy.requests("POST", POST_DEPLOY)] == ["forwarded"]

        # A good pass resets the backoff: the next failure is retried after ~0.1 s again.
        proxy.add(Fault("PATCH", r"/deployments/", 503, times=1))
        await c.patch(DEPLOY, f"{PROD}-collector", {"spec": {"replicas": 5}})

        def patches() -> list[Seen]:
            return proxy.requests("PATCH", r"/deployments/")

        await until(c, lambda: len(patches()) >= 2, "the drift repair retried")
        first, second = patches()[:2]
        assert (first.answer, second.answer) == ("503", "forwarded")
        # The retry after the reset was scheduled as a first failure: ~0.1 s, not 0.8 s.
        n, delay = retries()[-1]
        assert n == 1, retries()
        assert 0.07 <= delay <= 0.13, retries()
        await c.wait(lambda: _replicas(c, 1), "replicas repaired after the failed patch")


_RETRY = re.compile(r"failed \((\d+) in a row\); retrying in ([0-9.]+) s")


def scheduled_retries(errors: list[str]) -> list[tuple[int, float]]:
    """(failures in a row, delay chosen) of each retry the reconciler logged, in order."""
    found = (_RETRY.search(e) for e in errors)
    return [(int(m[1]), float(m[2])) for m in found if m]


async def _replicas(c: Cluster, n: int) -> bool:
    return bool((await c.get(DEPLOY, f"{PROD}-collector"))["spec"]["replicas"] == n)


async def test_answers_lost_after_the_server_applied_them_are_not_written_twice(
    cluster: Cluster, proxy: FaultProxy
) -> None:
    """503 after the server applied the write (a timeout on the way back)."""
    c = cluster
    await c.create(SECRET, keys_secret())
    proxy.add(
        Fault("POST", POST_CM, action="lost", times=1),
        Fault("POST", POST_DEPLOY, action="lost", times=1),
        Fault("PATCH", STATUS, action="lost", times=1),
    )
    async with running(fast_retries(c, proxy), c):
        await c.create(ENV, environment(PROD, "uid-prod", secretName="kalshi-keys"))
        await converged(c)
        await c.quiet(0.3)
    # Each child was created exactly once: the retried passes found what was applied.
    assert [s.answer for s in proxy.requests("POST", POST_CM)] == ["lost"]
    assert [s.answer for s in proxy.requests("POST", POST_DEPLOY)] == ["lost"]
    assert await children(c) == ([f"{PROD}-collector"], [f"{PROD}-config"])
    assert not proxy.requests("PATCH", r"/deployments/|/configmaps/")  # nothing to repair


def _staged_deployment(owner_uid: str) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": "ssmd-collector", "app.kubernetes.io/instance": PROD}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": f"{PROD}-collector",
            "namespace": NAMESPACE,
            "ownerReferences": [
                {
                    "apiVersion": "ssmd.io/v1alpha1",
                    "kind": "SsmdEnvironment",
                    "name": PROD,
                    "uid": owner_uid,
                    "controller": True,
                }
            ],
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "collector", "image": "busybox:latest"}]},
            },
        },
    }


@pytest.mark.parametrize("owner_uid", ["uid-prod", "uid-someone-else"])
async def test_create_conflict_continues_from_what_is_there_unless_foreign(
    cluster: Cluster, proxy: FaultProxy, owner_uid: str
) -> None:
    """Between the operator's read and its create, someone creates the Deployment: 409."""
    c = cluster
    await c.create(SECRET, keys_secret())

    async def race() -> None:
        await c.create(DEPLOY, _staged_deployment(owner_uid))

    proxy.add(Fault("POST", POST_DEPLOY, action="forward", times=1, before=race))
    async with running(fast_retries(c, proxy), c):
        await c.create(ENV, environment(PROD, "uid-prod", secretName="kalshi-keys"))
        await until(c, lambda: bool(proxy.requests("POST", POST_DEPLOY)), "the racing create")
        if owner_uid == "uid-prod":
            # Ours (a previous operator's): patched to what is rendered within the same
            # pass, no error, no retry.
            async def repaired() -> bool:
                dep = await c.get(DEPLOY, f"{PROD}-collector")
                return bool(
                    dep["spec"]["template"]["spec"]["containers"][0]["image"] == DEFAULT_IMAGE
                )

            await c.wait(repaired, "the Deployment patched to the rendered one")
            await converged(c)
            assert c.operator_errors == []
            reasons = [e["reason"] for e in await c.list(EVENTS)]
            assert "CollectorUpdated" in reasons
            assert "CollectorCreated" not in reasons
        else:
            # Someone else's: never adopted, and the status says so.
            cond = await c.wait_condition(PROD, "CollectorAvailable", "False", "ResourceConflict")
            assert f"{PROD}-collector" in cond["message"]
            await c.quiet(0.3)
            dep = await c.get(DEPLOY, f"{PROD}-collector")
            assert dep["metadata"]["ownerReferences"][0]["uid"] == owner_uid
            assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox:latest"
            assert not proxy.requests("PATCH", r"/deployments/")
    assert len(proxy.requests("POST", POST_DEPLOY)) == 1


async def test_hung_requests_time_out_and_the_pass_is_retried(
    cluster: Cluster, proxy: FaultProxy
) -> None:
    c = cluster
    await c.create(SECRET, keys_secret())
    # Hung for an hour: only the client's own timeout can end these requests, so the
    # Deployment appearing at all (within the deadline) proves the timeout works.
    proxy.add(Fault("GET", f"^{CR_PATH}$", action="hang", times=2, hang_seconds=3600))
    config = fast_retries(c, proxy, api=KubeApi(timeout=deadline(1.0)))
    async with running(config, c):
        await c.create(ENV, environment(PROD, "uid-prod", secretName="kalshi-keys"))
        await c.wait(lambda: c.get(DEPLOY, f"{PROD}-collector"), "the Deployment")
        await converged(c)
    assert any("retrying in" in e for e in c.operator_errors), c.operator_errors
    hung = [s for s in proxy.requests("GET", f"^{CR_PATH}$") if s.answer == "hang"]
    assert len(hung) == 2


async def test_kopfs_own_list_errors_are_retried_by_kopf(
    cluster: Cluster, proxy: FaultProxy
) -> None:
    """The watch side: kopf's list of SsmdEnvironments fails twice (kopf's backoff: 1 s, 1 s)."""
    c = cluster
    await c.create(ENV, environment(SIM, "uid-sim"))
    proxy.add(Fault("GET", r"/ssmdenvironments$", 503, times=2, agent=None))
    async with running(fast_retries(c, proxy), c):
        await converged(c, SIM)
    lists = proxy.requests("GET", r"/ssmdenvironments$", agent=None)
    assert [s.answer for s in lists[:3]] == ["503", "503", "forwarded"]


async def test_restart_after_convergence_writes_nothing(
    cluster: Cluster, proxy: FaultProxy
) -> None:
    c = cluster
    await c.create(SECRET, keys_secret())
    async with running(fast_retries(c, proxy), c):
        await c.create(ENV, environment(PROD, "uid-prod", secretName="kalshi-keys"))
        await c.create(ENV, environment(SIM, "uid-sim"))
        await converged(c)
        await converged(c, SIM)
        await c.quiet(0.3)
    before = {n: (await c.get(ENV, n))["status"] for n in (PROD, SIM)}
    events = len(await c.list(EVENTS))
    mark = len(proxy.seen)

    async with running(fast_retries(c, proxy), c):  # a fresh operator: no memory at all

        def passes() -> set[str]:
            return {s.path for s in proxy.seen[mark:] if s.method == "GET" and "/ssmdenv" in s.path}

        await until(c, lambda: {CR_PATH, CR_PATH.replace(PROD, SIM)} <= passes(), "both passes")
        await c.quiet(0.3)
    assert [(s.method, s.path) for s in proxy.seen[mark:] if s.method in WRITES] == []
    assert await children(c) == (
        [f"{PROD}-collector", f"{SIM}-collector"],
        [f"{PROD}-config", f"{SIM}-config"],
    )
    assert {n: (await c.get(ENV, n))["status"] for n in (PROD, SIM)} == before
    assert len(await c.list(EVENTS)) == events
    assert c.operator_errors == []


async def test_restart_mid_way_converges_without_duplicates(
    cluster: Cluster, proxy: FaultProxy
) -> None:
    """The first operator created the children (one answer lost) but never wrote status."""
    c = cluster
    await c.create(SECRET, keys_secret())
    proxy.add(
        Fault("POST", POST_DEPLOY, action="lost", times=1),
        Fault("PATCH", STATUS, 503),
    )
    async with running(fast_retries(c, proxy), c):
        await c.create(ENV, environment(PROD, "uid-prod", secretName="kalshi-keys"))
        await until(c, lambda: len(proxy.requests("PATCH", STATUS)) >= 2, "status failing")
    # Stopped with a retry scheduled: the retry must not reopen (and leak) an API session.
    gc.collect()
    assert [e for e in c.operator_errors if "retrying in" not in e] == []
    assert (await c.get(ENV, PROD)).get("status") is None
    mark = len(proxy.seen)
    proxy.clear()

    async with running(fast_retries(c, proxy), c):
        await converged(c)
        await c.quiet(0.3)
    again = [(s.method, s.path) for s in proxy.seen[mark:] if s.method == "POST"]
    assert [p for p in again if not p[1].endswith("/events")] == []  # nothing re-created
    assert await children(c) == ([f"{PROD}-collector"], [f"{PROD}-config"])
    status = (await c.get(ENV, PROD))["status"]
    assert status["snapshotHash"].startswith("sha256:")


async def test_shutdown_cancels_retries_and_the_closed_client_stays_closed(
    proxy: FaultProxy,
) -> None:
    """A retry waking after shutdown must not reopen (and leak) an API session."""
    api = KubeApi(timeout=1.0)
    api.use(kopf.ConnectionInfo(server=proxy.url, insecure=True))
    reconciler = Reconciler(api, retry_seconds=60)
    proxy.add(Fault("GET", r"/ssmdenvironments/", 503))
    await reconciler.reconcile(NAMESPACE, PROD, lambda namespace, name: None)
    retry = reconciler._slots[(NAMESPACE, PROD)].retry
    assert retry is not None
    assert not retry.done()

    await reconciler.stop()
    await api.close()
    assert retry.cancelled()
    with pytest.raises(RuntimeError, match="closed"):
        await api.get(CR_PATH)
    assert api._session is None
    await reconciler.reconcile(NAMESPACE, PROD, lambda namespace, name: None)
    assert reconciler._slots[(NAMESPACE, PROD)].retry is retry  # no new retry scheduled


@pytest.mark.parametrize(
    ("status", "verb", "path"),
    [
        (422, "POST", POST_DEPLOY),  # validation: requests above limits on a new collector
        (403, "POST", POST_CM),  # a policy webhook or a missing permission
        (422, "PATCH", r"/deployments/"),  # an update to a running collector
    ],
    ids=["create-invalid", "snapshot-forbidden", "update-invalid"],
)
async def test_refused_child_writes_land_in_status_not_in_a_retry_loop(
    cluster: Cluster, proxy: FaultProxy, status: int, verb: str, path: str
) -> None:
    """A 4xx the server means (not 404/409/429) is reported, not retried with backoff."""
    c = cluster
    await c.create(SECRET, keys_secret())
    async with running(fast_retries(c, proxy), c):
        if verb == "PATCH":
            await c.create(ENV, environment(PROD, "uid-prod", secretName="kalshi-keys"))
            await converged(c)
            proxy.add(Fault(verb, path, status))
            # A new generation the server refuses (CPU requests above limits).
            resources = {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}
            await c.patch(
                ENV, PROD, {"metadata": {"generation": 2}, "spec": {"resources": resources}}
            )
            generation = 2
        else:
            proxy.add(Fault(verb, path, status))
            await c.create(ENV, environment(PROD, "uid-prod", secretName="kalshi-keys"))
            generation = 1
        cond = await c.wait_condition(PROD, "CollectorAvailable", "False", "ApplyRejected")
        assert f"HTTP {status}: injected by the test proxy" in cond["message"]
        env = await c.get(ENV, PROD)
        assert env["status"]["observedGeneration"] == generation
        assert cond["observedGeneration"] == generation
        ready = await c.condition(PROD, "Ready")
        assert ready is not None
        assert (ready["status"], ready["reason"]) == ("False", "ApplyRejected")

        async def warnings() -> list[dict[str, Any]]:
            return [
                e
                for e in await c.list(EVENTS)
                if e["type"] == "Warning" and e["reason"] == "ApplyRejected"
            ]

        await c.wait(warnings, "a Warning Event ApplyRejected")
        # Then silence until the next resync: the same request gets the same answer,
        # so a backoff retry loop (0.1 s doubling to 0.8 s here) would only load the
        # server and never settle.
        await c.quiet(1.0)
        assert proxy.requests(verb, path)[-1].answer == str(status)
        assert not any("retrying in" in e for e in c.operator_errors)
        assert len(await warnings()) == 1  # Ready repeating the reason adds no second one


async def test_initial_listings_are_paginated(cluster: Cluster, proxy: FaultProxy) -> None:
    """Cluster-wide, the first list of Secrets, ConfigMaps and Deployments covers the
    whole cluster: it must come in pages (``?limit=``), not as one body in memory."""
    c = cluster
    async with running(fast_retries(c, proxy), c):

        def listed() -> set[str]:
            return {
                s.path.rsplit("/", 1)[-1]
                for s in proxy.requests("GET", r"/(secrets|configmaps|deployments)$", agent=None)
                if "watch=" not in s.query
            }

        await until(c, lambda: listed() == {"secrets", "configmaps", "deployments"}, "lists")
    lists = [
        s
        for s in proxy.requests("GET", r"/(secrets|configmaps|deployments)$", agent=None)
        if "watch=" not in s.query
    ]
    assert all(f"limit={LIST_CHUNK_SIZE}" in s.query.split("&") for s in lists), lists


def _add_sidecar(body: dict[str, Any]) -> dict[str, Any]:
    """A service-mesh style webhook: every pod template gets a proxy container appended."""
    pod = body.get("spec", {}).get("template", {}).get("spec", {})
    if "containers" in pod and all(c["name"] != "mesh-proxy" for c in pod["containers"]):
        pod["containers"].append({"name": "mesh-proxy", "image": "mesh/proxy:1"})
    return body


def _round_resources(body: dict[str, Any]) -> dict[str, Any]:
    """The API server's SetDefaults_ResourceList: requests/limits rounded up to 1m."""
    pod = body.get("spec", {}).get("template", {}).get("spec", {})
    for c in pod.get("containers", []):
        for part in (c.get("resources") or {}).values():
            for name, value in part.items():
                if value == "0.0005":
                    part[name] = "1m"
    return body


@pytest.mark.parametrize(
    ("mutate", "resources"),
    [(_add_sidecar, None), (_round_resources, {"requests": {"cpu": "0.0005"}})],
    ids=["webhook-appends-a-sidecar", "server-rounds-sub-milli-cpu"],
)
async def test_what_the_server_puts_back_is_not_an_update_every_pass(
    cluster: Cluster,
    proxy: FaultProxy,
    mutate: Callable[[dict[str, Any]], dict[str, Any]],
    resources: dict[str, Any] | None,
) -> None:
    c = cluster
    await c.create(SECRET, keys_secret())
    for verb, path in (("POST", POST_DEPLOY), ("PATCH", r"/deployments/")):
        proxy.add(Fault(verb, path, action="mutate", mutate=mutate))
    spec: dict[str, Any] = {"secretName": "kalshi-keys"}
    if resources is not None:
        spec["resources"] = resources
    async with running(fast_retries(c, proxy, resync_seconds=0.2), c):
        await c.create(ENV, environment(PROD, "uid-prod", **spec))
        await converged(c)

        def passes() -> int:
            return len(proxy.requests("GET", f"^{CR_PATH}$"))

        seen = passes()
        await until(c, lambda: passes() >= seen + 5, "five resync passes")
    reasons = [e["reason"] for e in await c.list(EVENTS)]
    assert reasons.count("CollectorCreated") == 1
    assert "CollectorUpdated" not in reasons, reasons
    if mutate is _round_resources:
        # Compared as the server stores it, 0.0005 CPU already matches 1m: no patch at all.
        assert not proxy.requests("PATCH", r"/deployments/")
