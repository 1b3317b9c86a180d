"""The Role grants exactly the API calls the running operator makes: no more, no less.

``test_operator_manifests.py`` compares the Role with a table written by hand. Here
the table is measured: the real operator (kopf and its own client), namespaced as
``deploy/`` runs it, goes through a scenario that takes every code path that talks
to the API server (create, drift repair of both children, status, Events, Secret
and metadata triggers, scaling to shards), with every request recorded by the proxy.
Each request is mapped to the RBAC (apiGroup, resource, verb) it needs and the set
is compared with the Role from ``kubectl kustomize deploy/`` (and the ClusterRole of
``deploy/cluster-wide/``). A new call in the code without a grant fails here, and
so does a grant nothing uses.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from operator_harness import (
    CM,
    DEPLOY,
    ENV,
    NAMESPACE,
    SECRET,
    Cluster,
    FaultProxy,
    Seen,
    environment,
    keys_secret,
    proxied_operator_config,
    running,
)
from test_operator_manifests import kustomize

PROD = "kalshi-prod"
RESOURCE_PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<namespace>[^/]+))?/(?P<resource>[^/]+)"
    r"(?:/(?P<name>[^/]+)(?:/(?P<sub>[^/]+))?)?$"
)


def rbac(seen: Seen) -> tuple[str, str, str] | None:
    """(apiGroup, resource[/subresource], verb) a request needs; None for discovery."""
    m = RESOURCE_PATH.match(seen.path)
    if m is None:
        return None  # /api, /apis, /apis/<group>/<version>: discovery, open to everyone
    group = "" if m["core"] else m["group"]
    resource = m["resource"] + (f"/{m['sub']}" if m["sub"] else "")
    watch = re.search(r"(^|&)watch=(true|1)", seen.query) is not None
    verb = {
        "GET": "get" if m["name"] else ("watch" if watch else "list"),
        "POST": "create",
        "PATCH": "patch",
        "PUT": "update",
        "DELETE": "delete" if m["name"] else "deletecollection",
    }[seen.method]
    return group, resource, verb


def granted(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


async def test_role_grants_exactly_the_calls_the_operator_makes(
    cluster: Cluster, proxy: FaultProxy
) -> None:
    c = cluster
    config = proxied_operator_config(c, proxy)
    async with running(config, c, namespaces=[NAMESPACE]):
        # Create: reads, both children created, status, Events.
        await c.create(SECRET, keys_secret())
        await c.create(ENV, environment(PROD, "uid-prod", secretName="kalshi-keys"))
        await c.wait(lambda: c.get(DEPLOY, f"{PROD}-collector"), "the Deployment")
        await c.make_available(PROD)
        await c.wait_condition(PROD, "Ready", "True")
        # Drift repair of both children: patches.
        await c.patch(DEPLOY, f"{PROD}-collector", {"spec": {"replicas": 3}})
        await c.patch(CM, f"{PROD}-config", {"data": {"feeds.kalshi.yaml": "x: 1\n"}})

        async def repaired() -> bool:
            dep = await c.get(DEPLOY, f"{PROD}-collector")
            cm = await c.get(CM, f"{PROD}-config")
            return dep["spec"]["replicas"] == 1 and "x: 1" not in cm["data"]["feeds.kalshi.yaml"]

        await c.wait(repaired, "both children repaired")
        # Shards: the collectors listed, the unsharded one deleted, two created.
        await c.patch(ENV, PROD, {"metadata": {"generation": 2}, "spec": {"shards": 2}})

        async def sharded() -> bool:
            names = {d["metadata"]["name"] for d in await c.list(DEPLOY)}
            return names == {f"{PROD}-collector-0", f"{PROD}-collector-1"}

        await c.wait(sharded, "two shard collectors instead of one")
        # Triggers: the Secret and a metadata ConfigMap change.
        await c.patch(SECRET, "kalshi-keys", {"metadata": {"labels": {"rotated": "1"}}})
        await c.patch(CM, "ssmd-feeds", {"metadata": {"labels": {"touched": "1"}}})
        await c.quiet(0.3)

    calls = [(rbac(s), s) for s in proxy.seen]
    used = {call for call, _ in calls if call is not None}
    by_agent = {call for call, s in calls if call is not None and s.agent == "ssmd-operator"}
    assert ("", "secrets", "get") not in used  # key names come from kopf's index only
    assert by_agent  # the reconciler's own calls were seen, not only kopf's
    assert {("apps", "deployments", "list"), ("apps", "deployments", "delete")} <= by_agent
    for directory, kind in (("deploy", "Role"), ("deploy/cluster-wide", "ClusterRole")):
        role = next(o for o in kustomize(directory) if o["kind"] == kind)
        rules = granted(role)
        assert used - rules == set(), f"{directory}: calls without a grant"
        assert rules - used == set(), f"{directory}: grants nothing uses\n{yaml.safe_dump(role)}"
