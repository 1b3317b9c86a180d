"""The real kopf operator against the kmock API emulator: the reconciliation contract.

Each test starts the operator, changes the emulated cluster over HTTP the way a
user, GitOps or a hand edit would, and waits for the resulting objects and status.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml
from operator_harness import (
    API_KEY,
    CM,
    DEPLOY,
    ENV,
    EVENTS,
    NAMESPACE,
    PRIVATE_KEY,
    SECRET,
    TODAY,
    Cluster,
    OperatorThread,
    environment,
    keys_secret,
    operator_config,
    running,
    running_operator,
)


@pytest.fixture
async def operator(cluster: Cluster) -> AsyncIterator[Cluster]:
    async with running_operator(cluster) as c:
        yield c


PROD = "kalshi-prod"
PROD_FILES = {
    "environments.kalshi-prod.yaml",
    "feeds.kalshi.yaml",
    "schemas.trade.yaml",
    "schemas.trade.capnp",
}


async def start_prod(c: Cluster) -> dict[str, Any]:
    """kalshi-prod with its Secret, converged and made available; returns the Deployment."""
    await c.create(SECRET, keys_secret())
    await c.create(ENV, environment(PROD, "uid-prod", secretName="kalshi-keys"))
    await c.wait_condition(PROD, "SecretReady", "True")
    await c.make_available(PROD)
    await c.wait_condition(PROD, "Ready", "True")
    return dict(await c.get(DEPLOY, f"{PROD}-collector"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def snapshot_hash(deployment: dict[str, Any]) -> str:
    return str(deployment["spec"]["template"]["metadata"]["annotations"]["ssmd.io/snapshot-hash"])


async def test_create_writes_snapshot_deployment_and_status(operator: Cluster) -> None:
    c = operator
    await c.create(SECRET, keys_secret())
    await c.create(ENV, environment(PROD, "uid-prod", secretName="kalshi-keys"))

    cm = await c.wait(lambda: c.get(CM, f"{PROD}-config"), "snapshot ConfigMap")
    assert set(cm["data"]) == PROD_FILES  # kalshi-sim's files are not part of it
    owner = cm["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "SsmdEnvironment",
        PROD,
        "uid-prod",
        True,
    )

    dep = await c.wait(lambda: c.get(DEPLOY, f"{PROD}-collector"), "collector Deployment")
    assert dep["metadata"]["ownerReferences"][0]["uid"] == "uid-prod"
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"][:4] == ["--env", PROD, "--config-dir", "/etc/ssmd/exchanges"]
    assert {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]} == {
        "KALSHI_API_KEY": {"name": "kalshi-keys", "key": "api_key"},
        "KALSHI_PRIVATE_KEY": {"name": "kalshi-keys", "key": "private_key"},
    }
    assert snapshot_hash(dep) == cm["metadata"]["annotations"]["ssmd.io/snapshot-hash"]

    # Until its pod is ready the environment is not Ready: the collector is starting.
    collector = await c.wait_condition(PROD, "CollectorAvailable", "False", "Progressing")
    assert collector["observedGeneration"] == 1
    await c.make_available(PROD)
    ready = await c.wait_condition(PROD, "Ready", "True")
    assert set(ready) == {
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
        "observedGeneration",
    }
    status = (await c.get(ENV, PROD))["status"]
    assert status["feed"] == "kalshi"
    assert status["feedVersion"] == "v1"
    assert status["endpoint"] == "wss://api.elections.kalshi.com/trade-api/ws/v2"
    assert status["environment"] == PROD
    assert status["observedGeneration"] == 1
    assert {x["type"]: x["status"] for x in status["conditions"]} == {
        "MetadataResolved": "True",
        "SecretReady": "True",
        "CollectorAvailable": "True",
        "Ready": "True",
    }
    expected = {"SnapshotWritten", "CollectorCreated", "Resolved", "SecretReady", "Ready"}

    async def events_posted() -> bool:
        return expected <= {e["reason"] for e in await c.list(EVENTS)}

    await c.wait(events_posted, f"Events {expected}")
    assert c.operator_errors == []


async def test_second_reconcile_with_nothing_changed_writes_nothing(operator: Cluster) -> None:
    c = operator
    await start_prod(c)
    await c.quiet()
    before = len(c.writes())
    reads_before = len(list(c.emulator))
    # An annotation change is an event for the operator, but no change of what it renders.
    await c.patch(ENV, PROD, {"metadata": {"annotations": {"touched": "1"}}})
    # The metadata ConfigMap events go through the reference index the same way.
    await c.patch(CM, "ssmd-feeds", {"metadata": {"annotations": {"touched": "1"}}})
    # Both changes trigger reconcile passes (each pass starts by reading the resource)...
    cr_path = "/apis/ssmd.io/v1alpha1/namespaces/ssmd/ssmdenvironments/kalshi-prod"

    async def passes_ran() -> bool:
        reads = [r for r in list(c.emulator)[reads_before:] if r.url.path == cr_path]
        return len([r for r in reads if str(r.method.value).upper() == "GET"]) >= 2

    await c.wait(passes_ran, "two reconcile passes")
    await c.quiet()
    # ...and no pass wrote anything: only the test's own two patches are there.
    assert c.writes()[before:] == [
        ("PATCH", "/apis/ssmd.io/v1alpha1/namespaces/ssmd/ssmdenvironments/kalshi-prod"),
        ("PATCH", "/api/v1/namespaces/ssmd/configmaps/ssmd-feeds"),
    ]


async def test_metadata_change_rolls_the_snapshot_hash(operator: Cluster) -> None:
    c = operator
    first = await start_prod(c)
    # A file this environment does not use: nothing to roll.
    feeds = await c.get(CM, "ssmd-feeds")
    sim = yaml.safe_load(feeds["data"]["kalshi-sim.yaml"])
    sim["display_name"] = "changed"
    await c.patch(CM, "ssmd-feeds", {"data": {"kalshi-sim.yaml": yaml.safe_dump(sim)}})
    await c.quiet()
    assert snapshot_hash(await c.get(DEPLOY, f"{PROD}-collector")) == snapshot_hash(first)

    # Its own feed moves to a new endpoint: new snapshot, new pod template, new status.
    prod = yaml.safe_load(feeds["data"]["kalshi.yaml"])
    prod["versions"][0]["endpoint"] = "wss://api.kalshi.example/trade-api/ws/v2"
    await c.patch(CM, "ssmd-feeds", {"data": {"kalshi.yaml": yaml.safe_dump(prod)}})

    async def rolled() -> Any:
        dep = await c.get(DEPLOY, f"{PROD}-collector")
        return dep if snapshot_hash(dep) != snapshot_hash(first) else None

    dep = await c.wait(rolled, "a new snapshot hash on the pod template")
    cm = await c.get(CM, f"{PROD}-config")
    assert "api.kalshi.example" in cm["data"]["feeds.kalshi.yaml"]
    assert cm["metadata"]["annotations"]["ssmd.io/snapshot-hash"] == snapshot_hash(dep)

    async def endpoint() -> Any:
        status = (await c.get(ENV, PROD))["status"]
        return status["endpoint"] == "wss://api.kalshi.example/trade-api/ws/v2"

    await c.wait(endpoint, "the new endpoint in status")
    assert "SnapshotWritten" in [e["reason"] for e in await c.list(EVENTS)]


async def test_shared_schema_change_rolls_every_environment_using_it(operator: Cluster) -> None:
    c = operator
    first = await start_prod(c)
    await c.create(ENV, environment("kalshi-sim", "uid-sim"))
    sim_first = await c.wait(lambda: c.get(DEPLOY, "kalshi-sim-collector"), "sim Deployment")

    schemas = await c.get(CM, "ssmd-schemas")
    capnp = schemas["data"]["trade.capnp"] + "# a comment\n"
    meta = yaml.safe_load(schemas["data"]["trade.yaml"])
    meta["versions"][0]["hash"] = "sha256:" + hashlib.sha256(capnp.encode()).hexdigest()
    await c.patch(
        CM, "ssmd-schemas", {"data": {"trade.capnp": capnp, "trade.yaml": yaml.safe_dump(meta)}}
    )

    for name, before in ((PROD, first), ("kalshi-sim", sim_first)):

        async def rolled(name: str = name, before: Any = before) -> Any:
            dep = await c.get(DEPLOY, f"{name}-collector")
            return snapshot_hash(dep) != snapshot_hash(before)

        await c.wait(rolled, f"{name} rolled to the new schema")


async def test_hand_edits_to_owned_objects_are_repaired(operator: Cluster) -> None:
    c = operator
    good = await start_prod(c)
    name = f"{PROD}-collector"
    container = dict(good["spec"]["template"]["spec"]["containers"][0])
    container["image"] = "busybox:latest"
    container["env"] = []
    await c.patch(
        DEPLOY,
        name,
        {"spec": {"replicas": 3, "template": {"spec": {"containers": [container]}}}},
    )

    async def repaired() -> Any:
        dep = await c.get(DEPLOY, name)
        live = dep["spec"]["template"]["spec"]["containers"][0]
        return (
            dep["spec"]["replicas"] == 1
            and live == good["spec"]["template"]["spec"]["containers"][0]
        )

    await c.wait(repaired, "the Deployment back as rendered")

    await c.patch(CM, f"{PROD}-config", {"data": {"feeds.kalshi.yaml": "tampered: true\n"}})

    async def snapshot_restored() -> Any:
        cm = await c.get(CM, f"{PROD}-config")
        return "tampered" not in cm["data"]["feeds.kalshi.yaml"]

    await c.wait(snapshot_restored, "the snapshot ConfigMap back as resolved")

    await c.delete(DEPLOY, name)
    recreated = await c.wait(lambda: c.get(DEPLOY, name), "the deleted Deployment recreated")
    assert snapshot_hash(recreated) == snapshot_hash(good)


async def test_missing_secret_is_reported_and_nothing_is_deployed(operator: Cluster) -> None:
    c = operator
    await c.create(ENV, environment(PROD, "uid-prod", secretName="kalshi-keys"))
    cond = await c.wait_condition(PROD, "SecretReady", "False", "SecretNotFound")
    assert "kalshi-keys" in cond["message"]
    ready = await c.wait_condition(PROD, "Ready", "False", "SecretNotFound")
    assert ready["message"].startswith("SecretReady:")
    assert await c.get(DEPLOY, f"{PROD}-collector") is None
    assert await c.get(CM, f"{PROD}-config") is None

    # The Event follows the status patch: wait for it rather than read right away.
    async def reported() -> bool:
        return "SecretNotFound" in {e["reason"] for e in await c.list(EVENTS)}

    await c.wait(reported, "a SecretNotFound Event")

    # A Secret missing a field is named precisely.
    await c.create(SECRET, keys_secret(api_key=API_KEY))
    cond = await c.wait_condition(PROD, "SecretReady", "False", "SecretMissingFields")
    assert "private_key" in cond["message"]

    # Completing the Secret re-reconciles through the Secret index: the collector starts.
    await c.patch(SECRET, "kalshi-keys", keys_secret())
    await c.wait(lambda: c.get(DEPLOY, f"{PROD}-collector"), "the collector Deployment")
    await c.wait_condition(PROD, "SecretReady", "True")


async def test_deleted_secret_leaves_the_running_collector_alone(operator: Cluster) -> None:
    c = operator
    good = await start_prod(c)
    await c.delete(SECRET, "kalshi-keys")
    await c.wait_condition(PROD, "SecretReady", "False", "SecretNotFound")
    # A metadata change now would need a rollout; without the Secret it must wait.
    feeds = await c.get(CM, "ssmd-feeds")
    prod = yaml.safe_load(feeds["data"]["kalshi.yaml"])
    prod["versions"][0]["endpoint"] = "wss://api.kalshi.example/trade-api/ws/v2"
    await c.patch(CM, "ssmd-feeds", {"data": {"kalshi.yaml": yaml.safe_dump(prod)}})
    await c.quiet()
    dep = await c.get(DEPLOY, f"{PROD}-collector")
    assert dep["spec"] == good["spec"]
    status = (await c.get(ENV, PROD))["status"]
    assert status["endpoint"] == "wss://api.elections.kalshi.com/trade-api/ws/v2"  # still running
    assert {x["type"]: x["status"] for x in status["conditions"]}["CollectorAvailable"] == "True"


async def test_invalid_metadata_keeps_the_last_good_snapshot(operator: Cluster) -> None:
    c = operator
    good = await start_prod(c)
    good_cm = await c.get(CM, f"{PROD}-config")
    envs = await c.get(CM, "ssmd-environments")
    broken = envs["data"]["kalshi-prod.yaml"].replace("feed: kalshi\n", "feed: no-such-feed\n")
    await c.patch(CM, "ssmd-environments", {"data": {"kalshi-prod.yaml": broken}})

    cond = await c.wait_condition(PROD, "MetadataResolved", "False", "MetadataInvalid")
    # File, field, expectation: the loader's own problem text.
    assert "environments/kalshi-prod.yaml: feed: expected an existing feed" in cond["message"]
    assert "last good snapshot" in cond["message"]
    await c.wait_condition(PROD, "Ready", "False", "MetadataInvalid")
    await c.quiet()
    assert (await c.get(CM, f"{PROD}-config"))["data"] == good_cm["data"]
    assert (await c.get(DEPLOY, f"{PROD}-collector"))["spec"] == good["spec"]
    status = (await c.get(ENV, PROD))["status"]
    assert status["snapshotHash"] == snapshot_hash(good)
    assert {x["type"]: x["status"] for x in status["conditions"]}["CollectorAvailable"] == "True"

    # Drift is still repaired from the last good snapshot while metadata is broken.
    await c.delete(DEPLOY, f"{PROD}-collector")
    again = await c.wait(lambda: c.get(DEPLOY, f"{PROD}-collector"), "Deployment recreated")
    assert snapshot_hash(again) == snapshot_hash(good)

    await c.patch(
        CM, "ssmd-environments", {"data": {"kalshi-prod.yaml": envs["data"]["kalshi-prod.yaml"]}}
    )
    await c.wait_condition(PROD, "MetadataResolved", "True")


async def test_pause_scales_to_zero_and_back(operator: Cluster) -> None:
    c = operator
    await start_prod(c)
    name = f"{PROD}-collector"
    await c.patch(ENV, PROD, {"metadata": {"generation": 2}, "spec": {"paused": True}})

    async def replicas(n: int) -> Any:
        return (await c.get(DEPLOY, name))["spec"]["replicas"] == n

    await c.wait(lambda: replicas(0), "zero replicas")
    cond = await c.wait_condition(PROD, "CollectorAvailable", "False", "Paused")
    assert cond["observedGeneration"] == 2
    await c.wait_condition(PROD, "Ready", "False", "Paused")

    await c.patch(ENV, PROD, {"metadata": {"generation": 3}, "spec": {"paused": False}})
    await c.wait(lambda: replicas(1), "one replica again")
    await c.wait_condition(PROD, "Ready", "True")


async def test_deleted_environment_is_not_resurrected(operator: Cluster) -> None:
    c = operator
    await start_prod(c)
    # Let passes already under way finish: one that read the resource just before its
    # deletion may still create a child, which a real cluster's GC removes (kmock has none).
    await c.quiet()
    await c.delete(ENV, PROD)
    # kmock has no garbage collector: do what the ownerReferences make a cluster do.
    await c.delete(DEPLOY, f"{PROD}-collector")
    await c.delete(CM, f"{PROD}-config")
    await c.quiet()
    assert await c.get(DEPLOY, f"{PROD}-collector") is None
    assert await c.get(CM, f"{PROD}-config") is None
    assert c.operator_errors == []


async def test_secret_values_never_leave_the_secret(operator: Cluster, caplog: Any) -> None:
    c = operator
    caplog.set_level("DEBUG")
    await start_prod(c)
    await c.create(ENV, environment("no-secret", "uid-2", environment=PROD, secretName="nope"))
    await c.wait_condition("no-secret", "SecretReady", "False")
    await c.quiet()
    needles = [API_KEY, PRIVATE_KEY.splitlines()[1]]
    needles += [keys_secret()["data"]["api_key"], keys_secret()["data"]["private_key"]]
    secret_path = "/api/v1/namespaces/ssmd/secrets"
    for request in c.emulator:
        if request.url.path.startswith(secret_path):
            continue  # the test's own writes of the Secret
        for needle in needles:
            assert needle not in request.text, f"{request.method} {request.url.path}"
    for resource in (ENV, CM, EVENTS, DEPLOY):
        for obj in await c.list(resource):
            for needle in needles:
                assert needle not in str(obj)
    assert "created deployments ssmd/kalshi-prod-collector" in caplog.text  # logs were captured
    for needle in needles:
        assert needle not in caplog.text


async def test_namespaced_operator_with_liveness_endpoint(cluster: Cluster) -> None:
    """``ssmd-operator --namespace ssmd`` mode, and kopf's liveness endpoint with our probe."""
    port = free_port()
    runner = OperatorThread(
        operator_config(cluster),
        namespaces=[NAMESPACE],
        liveness_endpoint=f"http://127.0.0.1:{port}/healthz",
    )
    runner.start()
    try:
        await cluster.create(ENV, environment("kalshi-sim", "uid-sim"))
        await cluster.wait(lambda: cluster.get(DEPLOY, "kalshi-sim-collector"), "sim Deployment")

        async def healthy() -> Any:
            try:
                async with cluster.session.get(f"http://127.0.0.1:{port}/healthz") as r:
                    return await r.json() if r.status == 200 else None
            except OSError:
                return None

        probes = await cluster.wait(healthy, "liveness endpoint answering 200")
        assert probes["environments"] == 1
    finally:
        await runner.stop()


async def test_resync_rolls_the_collector_when_a_new_feed_version_takes_effect(
    cluster: Cluster,
) -> None:
    """No event marks midnight: the periodic resync re-resolves by date."""
    feeds = await cluster.get(CM, "ssmd-feeds")
    prod = yaml.safe_load(feeds["data"]["kalshi.yaml"])
    v2 = dict(prod["versions"][0], version="v2", effective_from="2026-01-16")
    v2["endpoint"] = "wss://v2.kalshi.example/trade-api/ws/v2"
    prod["versions"].append(v2)
    await cluster.patch(CM, "ssmd-feeds", {"data": {"kalshi.yaml": yaml.safe_dump(prod)}})
    today = [TODAY]
    config = operator_config(cluster)
    config.clock = lambda: today[0]
    config.resync_seconds = 0.3
    runner = OperatorThread(config)
    runner.start()
    try:
        await cluster.create(SECRET, keys_secret())
        await cluster.create(ENV, environment(PROD, "uid-prod", secretName="kalshi-keys"))
        await cluster.wait_condition(PROD, "SecretReady", "True")
        assert (await cluster.get(ENV, PROD))["status"]["feedVersion"] == "v1"
        first = await cluster.get(DEPLOY, f"{PROD}-collector")

        today[0] = TODAY + dt.timedelta(days=1)

        async def on_v2() -> Any:
            return (await cluster.get(ENV, PROD))["status"]["feedVersion"] == "v2"

        await cluster.wait(on_v2, "feed version v2 after midnight")
        rolled = await cluster.get(DEPLOY, f"{PROD}-collector")
        # Same files, so the same snapshot; the pod rolls on the feed version it resolves.
        assert snapshot_hash(rolled) == snapshot_hash(first)
        template = rolled["spec"]["template"]["metadata"]["annotations"]
        assert template["ssmd.io/feed-version"] == "v2"
        assert first["spec"]["template"]["metadata"]["annotations"]["ssmd.io/feed-version"] == "v1"
        status = (await cluster.get(ENV, PROD))["status"]
        assert status["endpoint"] == "wss://v2.kalshi.example/trade-api/ws/v2"
    finally:
        await runner.stop()


async def test_crd_missing_at_start_fails_liveness(cluster: Cluster, kmock: Any) -> None:
    """Scanning is off, so kopf resolves the CRD once: if it arrives later, nothing is
    ever watched. Liveness must fail (the kubelet restarts the operator) instead of
    reporting a healthy operator that watches nothing."""
    crd_key = "ssmd.io/v1alpha1/ssmdenvironments"
    info = kmock.resources[crd_key]
    del kmock.resources[crd_key]
    endpoint = f"http://127.0.0.1:{free_port()}/healthz"

    async def liveness() -> tuple[int, Any] | None:
        try:
            async with cluster.session.get(endpoint) as r:
                return r.status, await r.text()
        except OSError:
            return None

    async with running(operator_config(cluster), cluster, liveness_endpoint=endpoint):
        status, _ = await cluster.wait(liveness, "liveness endpoint answering", timeout=30)
        assert status == 500
        assert any("is not served" in e for e in cluster.operator_errors), cluster.operator_errors
        # Installing the CRD now does not make this process watch it: still failing.
        kmock.resources[crd_key] = info
        await cluster.create(ENV, environment("kalshi-sim", "uid-sim"))
        await asyncio.sleep(0.5)
        assert (await liveness() or (0, ""))[0] == 500
    # The restart the kubelet would do: now the CRD is found and reconciled.
    async with running(operator_config(cluster), cluster, liveness_endpoint=endpoint):
        await cluster.wait(lambda: cluster.get(DEPLOY, "kalshi-sim-collector"), "sim Deployment")

        async def healthy() -> Any:
            answer = await liveness()
            return json.loads(answer[1]) if answer and answer[0] == 200 else None

        probes = await cluster.wait(healthy, "liveness 200 after the restart")
        assert probes["crd"] == "watched"


async def test_starting_and_pausing_raise_no_warnings(operator: Cluster) -> None:
    """A just-created collector is progressing, not failing; a pause is one Normal Event."""
    c = operator
    await c.create(ENV, environment("kalshi-sim", "uid-sim"))
    await c.wait_condition("kalshi-sim", "CollectorAvailable", "False", "Progressing")

    async def reasons(kind: str) -> list[str]:
        return [e["reason"] for e in await c.list(EVENTS) if e["type"] == kind]

    await c.wait(lambda: _has(reasons("Normal"), "Progressing"), "a Normal Progressing Event")
    await c.make_available("kalshi-sim")
    await c.wait_condition("kalshi-sim", "Ready", "True")
    await c.patch(ENV, "kalshi-sim", {"metadata": {"generation": 2}, "spec": {"paused": True}})
    await c.wait_condition("kalshi-sim", "Ready", "False", "Paused")
    await c.wait(lambda: _has(reasons("Normal"), "Paused"), "a Normal Paused Event")
    await c.quiet(0.3)
    assert await reasons("Warning") == []
    assert (await reasons("Normal")).count("Paused") == 1


async def _has(reasons: Any, reason: str) -> bool:
    return reason in await reasons
