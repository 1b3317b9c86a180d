"""Desired child objects of one SsmdEnvironment: the snapshot ConfigMap and the Deployment.

Pure functions from typed inputs to plain manifests. The manifests double as JSON
merge patches (RFC 7386): every list the operator owns is written whole, and a
``None`` value means "this field must be absent" (a merge patch deletes it); use
``without_nones`` for a create body.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ssmd_collector.storage.settings import ENV_OVERRIDES as ARCHIVE_ENV

from .names import (
    ANNOTATION_FEED_VERSION,
    ANNOTATION_SNAPSHOT_HASH,
    API_VERSION,
    COLLECTOR_APP,
    CONFIG_DIR,
    CONTAINER_NAME,
    DATA_DIR,
    HTTP_PORT,
    KIND,
    LABEL_COMPONENT,
    LABEL_ENVIRONMENT,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    OPERATOR_NAME,
    RUN_AS_USER,
    config_map_name,
    deployment_name,
)
from .secrets import SecretEnvVar
from .snapshot import Snapshot
from .spec import EnvironmentSpec, S3Spec

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Owner:
    """The SsmdEnvironment a child belongs to (its uid makes the ownerReference exact)."""

    name: str
    namespace: str
    uid: str


def labels(owner: Owner) -> dict[str, str | None]:
    """Labels of every child; ``app.kubernetes.io/instance`` is removed (see names.py)."""
    return {
        LABEL_NAME: COLLECTOR_APP,
        LABEL_ENVIRONMENT: owner.name,
        LABEL_COMPONENT: "collector",
        LABEL_MANAGED_BY: OPERATOR_NAME,
        LABEL_INSTANCE: None,
    }


def selector(
    owner: Owner, current: Mapping[str, Any] | None = None, shard: int | None = None
) -> dict[str, str]:
    """The collector pods' selector: the live Deployment's if there is one.

    A selector cannot change after creation, so a Deployment created with the
    former ``app.kubernetes.io/instance`` selector keeps it (and its pods the label).
    A shard's Deployment selects on its index too (``ssmd.io/shard``), for life.
    """
    live = (((current or {}).get("spec") or {}).get("selector") or {}).get("matchLabels")
    if isinstance(live, Mapping) and live:
        return {str(k): str(v) for k, v in live.items()}
    base = {LABEL_NAME: COLLECTOR_APP, LABEL_ENVIRONMENT: owner.name}
    return base if shard is None else base | {LABEL_SHARD: str(shard)}


LABEL_SHARD = "ssmd.io/shard"
"""On a shard's Deployment and pods: its index I of ``--shard I/N``."""


def collector_names(environment_cr: str, shards: int) -> list[str]:
    """The collector Deployments of ``shards`` shards: ``<cr>-collector`` alone for one,
    else ``<cr>-collector-<I>`` for I in 0..N-1. Each shard index has exactly one
    Deployment (``Recreate``), so no shard ever runs twice, even while N changes."""
    base = deployment_name(environment_cr)
    return [base] if shards == 1 else [f"{base}-{i}" for i in range(shards)]


def stale_collectors(environment_cr: str, shards: int, existing: list[str]) -> list[str]:
    """Owned collector Deployments that ``shards`` no longer wants (scaling down, or
    between sharded and unsharded): to delete so the set converges."""
    wanted = set(collector_names(environment_cr, shards))
    return [n for n in live_collectors(environment_cr, existing) if n not in wanted]


def live_collectors(environment_cr: str, existing: list[str]) -> list[str]:
    """The names among ``existing`` that are collector names of this environment, in
    shard order (the unsharded one first): what runs, whatever ``spec.shards`` says."""
    base = deployment_name(environment_cr)

    def index(name: str) -> int | None:
        if name == base:
            return -1
        suffix = name[len(base) + 1 :]
        return int(suffix) if name.startswith(f"{base}-") and suffix.isdigit() else None

    indexed = [(i, n) for n in set(existing) if (i := index(n)) is not None]
    return [n for _, n in sorted(indexed)]


def deployments(
    owner: Owner,
    spec: EnvironmentSpec,
    snapshot: Snapshot,
    secret_env: tuple[SecretEnvVar, ...],
    feed_version: str,
    *,
    uid: int | None = RUN_AS_USER,
    current: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Manifest]:
    """One collector Deployment per shard (``spec.shards``), in shard order; ``current``
    maps Deployment names to the live objects (their selectors are kept)."""
    live = current or {}
    names = collector_names(owner.name, spec.shards)
    shards: list[int | None] = [None] if spec.shards == 1 else list(range(spec.shards))
    return [
        deployment(
            owner,
            spec,
            snapshot,
            secret_env,
            feed_version,
            uid=uid,
            current=live.get(name),
            shard=shard,
        )
        for name, shard in zip(names, shards, strict=True)
    ]


def owner_reference(owner: Owner) -> dict[str, Any]:
    """Controller reference without ``blockOwnerDeletion``.

    Setting that flag needs ``update`` on ``ssmdenvironments/finalizers`` wherever
    the OwnerReferencesPermissionEnforcement admission plugin runs (OpenShift among
    them), or every create is refused. It only makes a *foreground* deletion of the
    SsmdEnvironment wait for its children, which nothing here relies on, so the
    operator leaves it out rather than ask for the extra permission.
    """
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
    }


def _metadata(owner: Owner, name: str, annotations: Mapping[str, str]) -> Manifest:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels(owner),
        "annotations": dict(annotations),
        "ownerReferences": [owner_reference(owner)],
    }


def config_map(
    owner: Owner, snapshot: Snapshot, current: Mapping[str, Any] | None = None
) -> Manifest:
    """The snapshot ConfigMap; keys ``current`` has but the snapshot lacks are set to None.

    A merge patch only adds and replaces map keys, so a file the environment no
    longer needs must be named explicitly to be removed.
    """
    data, binary = snapshot.config_map_data()
    sections: dict[str, dict[str, str | None]] = {"data": dict(data), "binaryData": dict(binary)}
    for section, wanted in sections.items():
        for key in (current or {}).get(section) or {}:
            if key not in wanted:
                wanted[key] = None
    manifest: Manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(
            owner, config_map_name(owner.name), {ANNOTATION_SNAPSHOT_HASH: snapshot.hash}
        ),
    }
    manifest.update({section: wanted for section, wanted in sections.items() if wanted})
    return manifest


def deployment(
    owner: Owner,
    spec: EnvironmentSpec,
    snapshot: Snapshot,
    secret_env: tuple[SecretEnvVar, ...],
    feed_version: str,
    *,
    uid: int | None = RUN_AS_USER,
    current: Mapping[str, Any] | None = None,
    shard: int | None = None,
) -> Manifest:
    """The collector Deployment (of one ``shard`` when ``spec.shards`` > 1); see
    docs/operator.md for why each setting is there.

    ``uid`` None leaves the user, group and fsGroup to the platform (OpenShift's
    restricted SCC assigns them per namespace and refuses pods that pin one outside
    its range); ``runAsNonRoot`` stays, so the kubelet still refuses uid 0. The keys
    are written as None, not dropped, so a merge patch removes a uid pinned before.
    ``current`` is the live Deployment, whose selector is kept.
    """
    pod_selector = selector(owner, current, shard)
    shard_args = [] if shard is None else ["--shard", f"{shard}/{spec.shards}"]
    name = (
        deployment_name(owner.name)
        if shard is None
        else collector_names(owner.name, spec.shards)[shard]
    )
    shard_labels = {} if shard is None else {LABEL_SHARD: str(shard)}
    container: Manifest = {
        "name": CONTAINER_NAME,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "args": [
            "--env",
            spec.environment,
            "--config-dir",
            CONFIG_DIR,
            "--data-dir",
            DATA_DIR,
            "--port",
            str(HTTP_PORT),
            "--log-format",
            spec.log_format,
            *shard_args,
        ],
        "env": [
            {
                "name": var.name,
                "valueFrom": {"secretKeyRef": {"name": spec.secret_name, "key": var.secret_key}},
            }
            for var in secret_env
        ]
        + archive_env(spec.storage.s3),
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 2,
        },
        "resources": {k: dict(v) for k, v in spec.resources.items()},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": uid,
            "runAsGroup": uid,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "metadata", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "data", "mountPath": DATA_DIR},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - a private emptyDir
        ],
    }
    if spec.storage.claim_name is not None:
        data_volume: Manifest = {
            "name": "data",
            "persistentVolumeClaim": {"claimName": spec.storage.claim_name},
        }
    else:
        empty_dir = {"sizeLimit": spec.storage.size_limit} if spec.storage.size_limit else {}
        data_volume = {"name": "data", "emptyDir": empty_dir}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(owner, name, {}) | {"labels": labels(owner) | shard_labels},
        "spec": {
            "replicas": 0 if spec.paused else 1,
            "revisionHistoryLimit": 3,
            # Two collectors for one environment would write the same day files:
            # the old pod must be gone before the new one starts.
            "strategy": {"type": "Recreate", "rollingUpdate": None},
            "selector": {"matchLabels": pod_selector},
            "template": {
                "metadata": {
                    "labels": {**labels(owner), **pod_selector},
                    "annotations": {
                        ANNOTATION_SNAPSHOT_HASH: snapshot.hash,
                        ANNOTATION_FEED_VERSION: feed_version,
                        "kubectl.kubernetes.io/default-container": CONTAINER_NAME,
                    },
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": uid,
                        "runAsGroup": uid,
                        "fsGroup": uid,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [
                        {
                            "name": "metadata",
                            "configMap": {
                                "name": config_map_name(owner.name),
                                "items": snapshot.items,
                                "defaultMode": 0o444,
                            },
                        },
                        data_volume,
                        {"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}},
                    ],
                },
            },
        },
    }


def archive_env(s3: S3Spec | None) -> list[Manifest]:
    """The collector's ``SSMD_S3_*`` overrides, and AWS keys by reference to their Secret.

    Bucket settings are not secret and go in as values; the keys only ever as
    ``secretKeyRef``, so no credential is copied into the Deployment.
    """
    if s3 is None:
        return []
    settings = {
        "bucket": s3.bucket,
        "prefix": s3.prefix,
        "endpoint": s3.endpoint,
        "region": s3.region,
    }
    env: list[Manifest] = [
        {"name": ARCHIVE_ENV[field], "value": value}
        for field, value in settings.items()
        if value is not None
    ]
    if s3.secret_name is not None:
        for name, key in (
            ("AWS_ACCESS_KEY_ID", s3.access_key_id_key),
            ("AWS_SECRET_ACCESS_KEY", s3.secret_access_key_key),
        ):
            env.append(
                {"name": name, "valueFrom": {"secretKeyRef": {"name": s3.secret_name, "key": key}}}
            )
    return env


def without_nones(value: Any) -> Any:
    """A create body: drop the ``None`` markers that only make sense in a merge patch."""
    if isinstance(value, Mapping):
        return {k: without_nones(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nones(v) for v in value]
    return value
