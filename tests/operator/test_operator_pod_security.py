"""Every pod ssmd runs meets the ``restricted`` Pod Security Standard, and then some.

Pods checked: the collector Deployment as the operator renders it (every storage and
pause variant) and the operator Deployment from ``kubectl kustomize deploy/`` and
``deploy/cluster-wide/``. For every pod and container, with container settings
overriding the pod's as the kubelet does: non-root with a numeric uid, read-only
root filesystem, no privilege escalation, all capabilities dropped and none added,
seccomp RuntimeDefault, not privileged, no host namespaces, ports or paths. The
collector gets no service-account token (it never talks to the API server); the
operator runs as its own ServiceAccount, the one the Role is bound to.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
from pathlib import Path
from typing import Any

import pytest
from test_operator_manifests import kustomize

from ssmd_collector.metadata import read_directory, resolve_environment
from ssmd_operator import render, snapshot
from ssmd_operator.names import RUN_AS_USER
from ssmd_operator.secrets import check_secret
from ssmd_operator.spec import parse_spec

EXCHANGES = Path(__file__).resolve().parents[2] / "exchanges"
OWNER = render.Owner("kalshi-prod", "ssmd", "uid-1")
COLLECTOR_SPECS: dict[str, dict[str, Any]] = {
    "emptyDir": {},
    "emptyDir-sizeLimit": {"storage": {"emptyDir": {"sizeLimit": "2Gi"}}},
    "pvc": {"storage": {"persistentVolumeClaim": {"claimName": "data"}}},
    "pvc-s3": {
        "storage": {
            "persistentVolumeClaim": {"claimName": "data"},
            "s3": {"bucket": "market-data", "credentialsSecret": {"name": "s3-keys"}},
        }
    },
    "paused": {"paused": True},
    "text-logs-custom-image": {"logFormat": "text", "image": "registry.example/c:1"},
}


def collector(spec: dict[str, Any]) -> dict[str, Any]:
    tree = read_directory(EXCHANGES)
    resolved = resolve_environment(tree, "kalshi-prod", dt.date(2026, 1, 15))
    snap = snapshot.take(resolved, tree)
    parsed = parse_spec("kalshi-prod", {"secretName": "keys", **spec})
    secret = check_secret(resolved.environment.keys, "keys", {"api_key", "private_key"})
    manifest: dict[str, Any] = render.without_nones(
        render.deployment(OWNER, parsed, snap, secret.env, "v1")
    )
    return manifest


@functools.cache
def _kustomized(directory: str) -> tuple[dict[str, Any], ...]:
    return tuple(kustomize(directory))


def operator_objects(directory: str) -> list[dict[str, Any]]:
    return copy.deepcopy(list(_kustomized(directory)))


def operator_deployment(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return next(o for o in objs if o["kind"] == "Deployment")


def problems(pod: dict[str, Any]) -> list[str]:
    """Where ``pod`` (a pod spec) falls short; [] means it passes every check."""
    found: list[str] = []
    pod_sc = pod.get("securityContext") or {}
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(host):
            found.append(f"pod: {host}")
    for volume in pod.get("volumes") or []:
        if "hostPath" in volume:
            found.append(f"volume {volume['name']}: hostPath")
    containers = [
        *(pod.get("initContainers") or []),
        *(pod.get("containers") or []),
        *(pod.get("ephemeralContainers") or []),
    ]
    if not containers:
        found.append("pod: no containers")
    for c in containers:
        sc = c.get("securityContext") or {}
        where = f"container {c.get('name')}"

        def effective(key: str, sc: dict[str, Any] = sc) -> Any:
            return sc[key] if key in sc else pod_sc.get(key)

        if effective("runAsNonRoot") is not True:
            found.append(f"{where}: runAsNonRoot is not true")
        uid = effective("runAsUser")
        if not isinstance(uid, int) or isinstance(uid, bool) or uid <= 0:
            found.append(f"{where}: runAsUser {uid!r} is not a numeric non-root uid")
        if sc.get("readOnlyRootFilesystem") is not True:
            found.append(f"{where}: readOnlyRootFilesystem is not true")
        if sc.get("allowPrivilegeEscalation") is not False:
            found.append(f"{where}: allowPrivilegeEscalation is not false")
        if sc.get("privileged"):
            found.append(f"{where}: privileged")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            found.append(f"{where}: capabilities do not drop ALL")
        if caps.get("add"):
            found.append(f"{where}: capabilities add {caps['add']}")
        seccomp = (effective("seccompProfile") or {}).get("type")
        if seccomp != "RuntimeDefault":
            found.append(f"{where}: seccompProfile {seccomp!r}, not RuntimeDefault")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                found.append(f"{where}: hostPort {port['hostPort']}")
    return found


def pods() -> list[tuple[str, dict[str, Any]]]:
    out = [(f"collector-{k}", collector(v)) for k, v in COLLECTOR_SPECS.items()]
    out += [(f"operator-{d}", operator_deployment(operator_objects(d))) for d in DEPLOY_DIRS]
    return out


DEPLOY_DIRS = ("deploy", "deploy/cluster-wide")


@pytest.mark.parametrize(
    "name", [*(f"collector-{k}" for k in COLLECTOR_SPECS), *(f"operator-{d}" for d in DEPLOY_DIRS)]
)
def test_every_pod_is_restricted(name: str) -> None:
    deployment = dict(pods())[name]
    pod = deployment["spec"]["template"]["spec"]
    assert problems(pod) == []
    # A read-only root needs somewhere small to write temporary files.
    tmp = [
        m for c in pod["containers"] for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"
    ]
    assert tmp, "a /tmp emptyDir for the read-only root filesystem"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[tmp[0]["name"]]["emptyDir"]["sizeLimit"]


@pytest.mark.parametrize("variant", list(COLLECTOR_SPECS))
def test_collector_pods_get_no_api_access(variant: str) -> None:
    pod = collector(COLLECTOR_SPECS[variant])["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert pod["securityContext"]["runAsUser"] == RUN_AS_USER  # the images' USER (test_images)
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["metadata"]["readOnly"] is True  # the snapshot cannot be changed in the pod


@pytest.mark.parametrize(
    ("directory", "role_kind"), [("deploy", "Role"), ("deploy/cluster-wide", "ClusterRole")]
)
def test_operator_runs_as_its_own_service_account(directory: str, role_kind: str) -> None:
    objs = operator_objects(directory)
    pod = operator_deployment(objs)["spec"]["template"]["spec"]
    accounts = [o for o in objs if o["kind"] == "ServiceAccount"]
    assert [a["metadata"]["name"] for a in accounts] == [pod["serviceAccountName"]]
    assert pod["serviceAccountName"] != "default"
    # It needs its token (the API is all it talks to); nothing turns it off.
    assert pod.get("automountServiceAccountToken", True) is not False
    assert accounts[0].get("automountServiceAccountToken", True) is not False
    binding = next(o for o in objs if o["kind"] == f"{role_kind}Binding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": role_kind,
        "name": next(o for o in objs if o["kind"] == role_kind)["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": pod["serviceAccountName"],
            "namespace": accounts[0]["metadata"]["namespace"],
        }
    ]


def _drop_non_root(pod: dict[str, Any]) -> None:
    pod["securityContext"].pop("runAsNonRoot")
    pod["containers"][0]["securityContext"].pop("runAsNonRoot")


BREAKAGES = {
    "root": lambda p: p["securityContext"].update(runAsUser=0),
    "user-name": lambda p: p["securityContext"].update(runAsUser="ssmd"),
    "no-nonroot": lambda p: _drop_non_root(p),
    "writable-root": lambda p: p["containers"][0]["securityContext"].pop("readOnlyRootFilesystem"),
    "escalation": lambda p: p["containers"][0]["securityContext"].update(
        allowPrivilegeEscalation=True
    ),
    "caps-kept": lambda p: p["containers"][0]["securityContext"].update(capabilities={}),
    "caps-added": lambda p: p["containers"][0]["securityContext"]["capabilities"].update(
        add=["NET_ADMIN"]
    ),
    "unconfined": lambda p: p["securityContext"].update(seccompProfile={"type": "Unconfined"}),
    "privileged": lambda p: p["containers"][0]["securityContext"].update(privileged=True),
    "host-network": lambda p: p.update(hostNetwork=True),
    "host-path": lambda p: p["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
    "host-port": lambda p: p["containers"][0]["ports"][0].update(hostPort=8080),
    "init-container": lambda p: p.update(initContainers=[{"name": "init", "image": "busybox"}]),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_the_checks_catch_each_breakage(breakage: str) -> None:
    """The checker is not vacuous: each way of weakening the collector pod is reported."""
    pod = copy.deepcopy(collector({})["spec"]["template"]["spec"])
    # The container repeats the pod's user settings; weaken both where both are set.
    container_sc = pod["containers"][0]["securityContext"]
    if breakage in ("root", "user-name"):
        container_sc.pop("runAsUser")
    BREAKAGES[breakage](pod)
    assert problems(pod) != []
