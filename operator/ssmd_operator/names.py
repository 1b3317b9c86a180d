"""Names defined once: the API group, label and annotation keys, child object names, defaults.

The CRD (``crds/``), the RBAC in ``deploy/`` and the docs spell the same strings;
tests check that they agree with this module.
"""

from __future__ import annotations

GROUP = "ssmd.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "SsmdEnvironment"
PLURAL = "ssmdenvironments"

OPERATOR_NAME = "ssmd-operator"
"""Reported as the Events' source and the children's ``managed-by`` label."""

DEFAULT_IMAGE = "ghcr.io/ssmd/ssmd-collector:0.1.0"
"""Collector image when ``spec.image`` is empty (the CRD defaults to the same)."""

METADATA_DIRECTORIES = ("feeds", "schemas", "environments")
DEFAULT_METADATA_CONFIGMAPS: tuple[tuple[str, str], ...] = (
    ("ssmd-feeds", "feeds"),
    ("ssmd-schemas", "schemas"),
    ("ssmd-environments", "environments"),
)
"""(ConfigMap name, metadata directory) pairs that ``exchanges/kustomization.yaml`` generates."""

# Labels every child carries.
LABEL_NAME = "app.kubernetes.io/name"
LABEL_ENVIRONMENT = f"{GROUP}/environment"
"""The SsmdEnvironment's name: selects its collector pods."""
LABEL_INSTANCE = "app.kubernetes.io/instance"
"""Not set on new children: Argo CD's default label tracking reads it as "belongs to
the Application of that name", so a CR named like its Application would have its
children pruned. Only the selector of a Deployment created before keeps it (a
selector cannot change)."""
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
COLLECTOR_APP = "ssmd-collector"

ANNOTATION_SNAPSHOT_HASH = f"{GROUP}/snapshot-hash"
"""On the snapshot ConfigMap and the pod template: a metadata change rolls the pod."""

ANNOTATION_FEED_VERSION = f"{GROUP}/feed-version"
"""On the pod template: the collector resolves the feed version by date when it starts,
so a new version taking effect (same files, new day) must roll the pod too."""

CONTAINER_NAME = "collector"
CONFIG_DIR = "/etc/ssmd/exchanges"
DATA_DIR = "/var/lib/ssmd/data"
HTTP_PORT = 8080
RUN_AS_USER = 10001
"""Numeric, so ``runAsNonRoot`` can be verified by the kubelet without reading the image."""


def config_map_name(environment_cr: str) -> str:
    """The snapshot ConfigMap of one SsmdEnvironment (named after the CR, unique per namespace)."""
    return f"{environment_cr}-config"


def deployment_name(environment_cr: str) -> str:
    return f"{environment_cr}-collector"
