"""``spec.shards`` against the real kopf operator and the kmock API emulator.

One collector Deployment per shard, each shard's readiness in status, and scaling in
either direction converging by deleting the collectors N no longer wants *before*
rewriting the others (reconcile.py explains why that order and ``Recreate`` keep
two collectors off one shard).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from operator_harness import (
    DEPLOY,
    ENV,
    EVENTS,
    SECRET,
    Cluster,
    environment,
    keys_secret,
    running_operator,
)

PROD = "kalshi-prod"
UNSHARDED = f"{PROD}-collector"


@pytest.fixture
async def operator(cluster: Cluster) -> AsyncIterator[Cluster]:
    async with running_operator(cluster) as c:
        yield c


def shard_names(n: int) -> list[str]:
    return [f"{PROD}-collector-{i}" for i in range(n)]


async def collectors(c: Cluster) -> dict[str, dict[str, Any]]:
    """Every Deployment named like one of kalshi-prod's collectors, by name."""
    return {
        d["metadata"]["name"]: d
        for d in await c.list(DEPLOY)
        if d["metadata"]["name"].startswith(UNSHARDED)
    }


def shard_arg(dep: dict[str, Any]) -> str | None:
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    return str(args[args.index("--shard") + 1]) if "--shard" in args else None


async def wait_collectors(c: Cluster, expected: dict[str, str | None]) -> dict[str, Any]:
    """Until exactly these collectors exist, each with this ``--shard`` (None: none)."""

    async def there() -> dict[str, Any] | None:
        found = await collectors(c)
        return found if {n: shard_arg(d) for n, d in found.items()} == expected else None

    return dict(await c.wait(there, f"collectors {expected}"))


async def wait_shards(c: Cluster, expected: list[tuple[str, bool]] | None) -> list[Any]:
    """Until ``status.shards`` is (deployment, ready) for each shard in order (None: absent)."""

    async def there() -> list[Any] | None:
        shards = ((await c.get(ENV, PROD)).get("status") or {}).get("shards")
        seen = None if shards is None else [(s["deployment"], s["ready"]) for s in shards]
        return (shards or [True]) if seen == expected else None

    return list(await c.wait(there, f"status.shards {expected}"))


async def start_sharded(c: Cluster, shards: int) -> None:
    """kalshi-prod with ``shards`` collectors, every one made available: Ready."""
    await c.create(SECRET, keys_secret())
    await c.create(ENV, environment(PROD, "uid-prod", secretName="kalshi-keys", shards=shards))
    await wait_collectors(c, {n: f"{i}/{shards}" for i, n in enumerate(shard_names(shards))})
    for name in shard_names(shards):
        await c.make_available(PROD, name)
    await c.wait_condition(PROD, "Ready", "True")


async def scale(c: Cluster, shards: int, generation: int) -> None:
    await c.patch(ENV, PROD, {"metadata": {"generation": generation}, "spec": {"shards": shards}})


def collector_writes(c: Cluster, since: int) -> list[tuple[str, str]]:
    """The operator's writes to collector Deployments after ``since`` (not the status
    patches the tests make as the Deployment controller): (method, name or "")."""
    return [
        (method, p.rsplit("/", 1)[-1] if not p.endswith("/deployments") else "")
        for method, p in c.writes()[since:]
        if "/deployments" in p and not p.endswith("/status")
    ]


async def test_shards_each_get_a_deployment_and_their_own_readiness(operator: Cluster) -> None:
    c = operator
    await c.create(SECRET, keys_secret())
    await c.create(ENV, environment(PROD, "uid-prod", secretName="kalshi-keys", shards=3))

    deps = await wait_collectors(c, {n: f"{i}/3" for i, n in enumerate(shard_names(3))})
    for i, name in enumerate(shard_names(3)):
        dep = deps[name]
        assert dep["metadata"]["ownerReferences"][0]["uid"] == "uid-prod"
        assert dep["metadata"]["labels"]["ssmd.io/shard"] == str(i)
        assert dep["spec"]["selector"]["matchLabels"]["ssmd.io/shard"] == str(i)
        assert dep["spec"]["strategy"]["type"] == "Recreate"
        assert dep["spec"]["replicas"] == 1
    # Nothing is ready yet: every shard is starting.
    shards = await wait_shards(c, [(n, False) for n in shard_names(3)])
    assert [(s["shard"], s["reason"]) for s in shards] == [(i, "Progressing") for i in range(3)]
    await c.wait_condition(PROD, "CollectorAvailable", "False", "Progressing")

    # Two of three ready: not available, and the message names the one that is not.
    await c.make_available(PROD, shard_names(3)[0])
    await c.make_available(PROD, shard_names(3)[2])
    await wait_shards(
        c, [(shard_names(3)[0], True), (shard_names(3)[1], False), (shard_names(3)[2], True)]
    )
    collector = await c.wait_condition(PROD, "CollectorAvailable", "False", "Progressing")
    assert collector["message"].startswith(f"1 of 3 shards not ready; shard 1 ({PROD}-collector-1)")

    await c.make_available(PROD, shard_names(3)[1])
    await wait_shards(c, [(n, True) for n in shard_names(3)])
    await c.wait_condition(PROD, "Ready", "True")
    await c.quiet()
    created = [e["message"] for e in await c.list(EVENTS) if e["reason"] == "CollectorCreated"]
    assert len(created) == 3, created
    assert await c.get(DEPLOY, UNSHARDED) is None
    assert c.operator_errors == []


async def test_scaling_down_deletes_the_stale_shard_before_updating_the_rest(
    operator: Cluster,
) -> None:
    c = operator
    await start_sharded(c, 3)
    # kmock assigns no uids; the API server would. The delete must name the one it saw.
    await c.patch(DEPLOY, shard_names(3)[2], {"metadata": {"uid": "uid-shard-2"}})
    await c.quiet()
    mark = len(c.writes())
    deletes_before = len([r for r in c.emulator if str(r.method.value).upper() == "DELETE"])

    await scale(c, 2, generation=2)
    await wait_collectors(c, {shard_names(2)[0]: "0/2", shard_names(2)[1]: "1/2"})
    await wait_shards(c, [(n, True) for n in shard_names(2)])
    await c.wait_condition(PROD, "Ready", "True")
    await c.quiet()
    # The stale shard goes first; only then do the others change their N.
    assert collector_writes(c, mark) == [
        ("DELETE", f"{PROD}-collector-2"),
        ("PATCH", f"{PROD}-collector-0"),
        ("PATCH", f"{PROD}-collector-1"),
    ]
    (delete,) = [r for r in c.emulator if str(r.method.value).upper() == "DELETE"][deletes_before:]
    options = json.loads(delete.text)
    assert options["propagationPolicy"] == "Background"
    assert options["preconditions"] == {"uid": "uid-shard-2"}
    reasons = [e["reason"] for e in await c.list(EVENTS)]
    assert reasons.count("CollectorDeleted") == 1
    assert c.operator_errors == []


@pytest.mark.parametrize(("first", "then"), [(1, 2), (2, 1)], ids=["1-to-2", "2-to-1"])
async def test_switching_between_sharded_and_unsharded_replaces_the_collectors(
    operator: Cluster, first: int, then: int
) -> None:
    c = operator
    await start_sharded(c, first) if first > 1 else await start_unsharded(c)
    await c.quiet()
    mark = len(c.writes())

    await scale(c, then, generation=2)
    wanted = (
        {UNSHARDED: None}
        if then == 1
        else {n: f"{i}/{then}" for i, n in enumerate(shard_names(then))}
    )
    await wait_collectors(c, wanted)
    for name in wanted:
        await c.make_available(PROD, name)
    await c.wait_condition(PROD, "Ready", "True")
    # status.shards is there for N > 1 only.
    await wait_shards(c, [(n, True) for n in wanted] if then > 1 else None)
    await c.quiet()
    writes = collector_writes(c, mark)
    old = [UNSHARDED] if first == 1 else shard_names(first)
    # Every old collector is deleted before any new one is created.
    assert sorted(writes[: len(old)]) == [("DELETE", n) for n in old]
    assert writes[len(old) :] == [("POST", "")] * len(wanted)
    assert c.operator_errors == []


async def start_unsharded(c: Cluster) -> None:
    await c.create(SECRET, keys_secret())
    await c.create(ENV, environment(PROD, "uid-prod", secretName="kalshi-keys"))
    await wait_collectors(c, {UNSHARDED: None})
    await c.make_available(PROD)
    await c.wait_condition(PROD, "Ready", "True")


async def test_each_shard_is_repaired_and_only_owned_leftovers_are_deleted(
    operator: Cluster,
) -> None:
    c = operator
    await start_sharded(c, 2)
    good = await collectors(c)
    # A hand edit makes shard 1 run shard 0's split: two collectors on one shard.
    container = dict(good[shard_names(2)[1]]["spec"]["template"]["spec"]["containers"][0])
    args = list(container["args"])
    args[args.index("--shard") + 1] = "0/2"
    container["args"] = args
    await c.patch(
        DEPLOY,
        shard_names(2)[1],
        {"spec": {"replicas": 3, "template": {"spec": {"containers": [container]}}}},
    )
    await c.delete(DEPLOY, shard_names(2)[0])

    async def repaired() -> bool:
        now = await collectors(c)
        return set(now) == set(good) and all(
            now[n]["spec"]["replicas"] == 1
            and now[n]["spec"]["template"] == good[n]["spec"]["template"]
            for n in good
        )

    await c.wait(repaired, "both shards back as rendered")
    # The recreated shard starts over: the status says which one is not ready.
    await wait_shards(c, [(shard_names(2)[0], False), (shard_names(2)[1], True)])
    await c.make_available(PROD, shard_names(2)[0])
    await c.wait_condition(PROD, "Ready", "True")

    # A leftover collector of this environment (a scale-down cut short) is deleted; one
    # with a collector's name and label that another owner holds is not touched.
    leftover = json.loads(json.dumps(good[shard_names(2)[1]]))
    leftover["metadata"] = dict(leftover["metadata"], name=f"{PROD}-collector-4")
    for key in ("resourceVersion", "uid", "creationTimestamp"):
        leftover["metadata"].pop(key, None)
    foreign = json.loads(json.dumps(leftover))
    foreign["metadata"]["name"] = f"{PROD}-collector-5"
    del foreign["metadata"]["ownerReferences"]
    await c.create(DEPLOY, leftover)
    await c.create(DEPLOY, foreign)

    async def leftover_gone() -> bool:
        return await c.get(DEPLOY, f"{PROD}-collector-4") is None

    await c.wait(leftover_gone, "the owned leftover deleted")
    await c.quiet()
    assert set(await collectors(c)) == {*shard_names(2), f"{PROD}-collector-5"}
    assert (await c.condition(PROD, "Ready") or {})["status"] == "True"  # no conflict
    assert c.operator_errors == []


async def test_a_change_of_n_waits_for_a_good_state(operator: Cluster) -> None:
    """Without the Secret nothing is written or deleted: a scale-down waits for it."""
    c = operator
    await start_sharded(c, 2)
    await c.delete(SECRET, "kalshi-keys")
    await c.wait_condition(PROD, "SecretReady", "False", "SecretNotFound")
    await c.quiet()
    mark = len(c.writes())

    await scale(c, 1, generation=2)

    async def seen() -> bool:
        status = (await c.get(ENV, PROD)).get("status") or {}
        return status.get("observedGeneration") == 2

    await c.wait(seen, "a pass over generation 2")
    await c.quiet()
    assert collector_writes(c, mark) == []
    assert set(await collectors(c)) == set(shard_names(2))
    status = (await c.get(ENV, PROD))["status"]
    assert status["feedVersion"] == "v1"  # what still runs is reported

    await c.create(SECRET, keys_secret())
    await wait_collectors(c, {UNSHARDED: None})
