"""What the e2e suite deploys, as files and manifests built from the repository's own.

Nothing here talks to a cluster. The repository's manifests are used as they are
(``crds/``, ``deploy/``, ``exchanges/``); the suite only layers kustomize overlays on
top, written into a scratch directory, for the three things a test run must change:

- the operator image: ``images:`` on ``deploy/`` (the image name is read from the
  rendered ``deploy/``, not assumed);
- the metadata: ``exchanges/`` with the ``kalshi-sim`` feed's endpoint pointed at the
  in-cluster simulator Service and the e2e-only environment ``e2e/metadata/kalshi-e2e.yaml``
  added (``configMapGenerator`` ``behavior: merge``);
- the simulator: ``e2e/manifests/sim`` with the collector image tag and the per-run
  public key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cluster import Kubectl
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

REPO = Path(__file__).resolve().parent.parent
E2E = REPO / "e2e"

COLLECTOR_REPOSITORY = "ssmd-collector"
OPERATOR_REPOSITORY = "ssmd-operator"

SIM_NAME = "ssmd-sim"
SIM_PORT = 8765
SIM_PATH = "/trade-api/ws/v2"
SIM_API_KEY_ID = "ssmd-e2e"
"""The only KALSHI-ACCESS-KEY the simulator accepts (its --api-key-id in e2e/manifests/sim)."""
SIM_PUBLIC_KEY_CONFIGMAP = "ssmd-sim-public-key"

SIM_FEED = "kalshi-sim"
SIM_FEED_FILE = "feeds/kalshi-sim.yaml"
SIM_FEED_LOCAL_ENDPOINT = "ws://127.0.0.1:8765/trade-api/ws/v2"
"""The endpoint exchanges/feeds/kalshi-sim.yaml ships with (the laptop demo's)."""
ENVIRONMENT = "kalshi-e2e"
ENVIRONMENT_FILE = E2E / "metadata" / f"{ENVIRONMENT}.yaml"
SECRET_NAME = "kalshi-e2e-keys"


@dataclass(frozen=True)
class Images:
    collector: str
    operator: str

    @classmethod
    def tagged(cls, tag: str) -> Images:
        return cls(f"{COLLECTOR_REPOSITORY}:{tag}", f"{OPERATOR_REPOSITORY}:{tag}")

    @property
    def tag(self) -> str:
        return self.collector.rpartition(":")[2]


def sim_endpoint(namespace: str) -> str:
    # The namespace-qualified short name resolves through the pod's DNS search path
    # whatever the cluster domain is.
    return f"ws://{SIM_NAME}.{namespace}.svc:{SIM_PORT}{SIM_PATH}"


def _relative(target: Path, start: Path) -> str:
    """kustomize wants resource paths relative to the kustomization."""
    return os.path.relpath(target, start)


def _write_kustomization(directory: Path, body: Mapping[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    document = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}
    (directory / "kustomization.yaml").write_text(
        yaml.safe_dump({**document, **body}, sort_keys=False)
    )
    return directory


@dataclass(frozen=True)
class OperatorDeployment:
    """The facts of ``deploy/`` the suite adapts to, read from its rendered output."""

    namespace: str
    deployment: str
    container: str
    image: str

    @property
    def image_name(self) -> str:
        """The image without tag or digest: what kustomize ``images:`` matches on."""
        name = self.image.split("@", 1)[0]
        last = name.rsplit("/", 1)[-1]
        return name.rsplit(":", 1)[0] if ":" in last else name


def read_operator_deployment(rendered: str) -> OperatorDeployment:
    """Find the operator Deployment (the one whose container runs ``ssmd-operator``)."""
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    for doc in docs:
        if doc.get("kind") != "Deployment":
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            command = [*container.get("command", []), *container.get("args", [])]
            if "ssmd-operator" in command or OPERATOR_REPOSITORY in container["image"]:
                return OperatorDeployment(
                    namespace=doc["metadata"]["namespace"],
                    deployment=doc["metadata"]["name"],
                    container=container["name"],
                    image=container["image"],
                )
    raise AssertionError("deploy/ renders no Deployment running ssmd-operator")


def operator_overlay(directory: Path, found: OperatorDeployment, images: Images) -> Path:
    """``deploy/`` with the operator image replaced by the one loaded into kind."""
    name, _, tag = images.operator.rpartition(":")
    return _write_kustomization(
        directory,
        {
            "resources": [_relative(REPO / "deploy", directory)],
            "images": [{"name": found.image_name, "newName": name, "newTag": tag}],
        },
    )


def metadata_overlay(directory: Path, namespace: str) -> Path:
    """``exchanges/`` as ConfigMaps in ``namespace``, the sim feed and e2e env patched in."""
    directory.mkdir(parents=True, exist_ok=True)
    feed = (REPO / "exchanges" / SIM_FEED_FILE).read_text()
    if SIM_FEED_LOCAL_ENDPOINT not in feed:
        raise AssertionError(
            f"exchanges/{SIM_FEED_FILE} no longer names {SIM_FEED_LOCAL_ENDPOINT}; "
            "update e2e/stack.py to point the feed at the in-cluster simulator"
        )
    (directory / "kalshi-sim.yaml").write_text(
        feed.replace(SIM_FEED_LOCAL_ENDPOINT, sim_endpoint(namespace))
    )
    (directory / ENVIRONMENT_FILE.name).write_text(ENVIRONMENT_FILE.read_text())
    return _write_kustomization(
        directory,
        {
            "namespace": namespace,
            "resources": [_relative(REPO / "exchanges", directory)],
            # Same fixed names as exchanges/ (the CRD's default spec.metadata.configMaps).
            "generatorOptions": {"disableNameSuffixHash": True},
            "configMapGenerator": [
                {"name": "ssmd-feeds", "behavior": "merge", "files": ["kalshi-sim.yaml"]},
                {
                    "name": "ssmd-environments",
                    "behavior": "merge",
                    "files": [ENVIRONMENT_FILE.name],
                },
            ],
        },
    )


def sim_overlay(directory: Path, namespace: str, images: Images, public_pem: bytes) -> Path:
    """The simulator from the collector image, trusting ``public_pem`` only."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "public.pem").write_bytes(public_pem)
    name, _, tag = images.collector.rpartition(":")
    return _write_kustomization(
        directory,
        {
            "namespace": namespace,
            "resources": [_relative(E2E / "manifests" / "sim", directory)],
            "images": [{"name": COLLECTOR_REPOSITORY, "newName": name, "newTag": tag}],
            # A hash-suffixed name: a new key rolls the simulator (kustomize rewrites the
            # volume's reference).
            "configMapGenerator": [{"name": SIM_PUBLIC_KEY_CONFIGMAP, "files": ["public.pem"]}],
        },
    )


@dataclass(frozen=True)
class KeyPair:
    private_pem: str
    public_pem: bytes


def generate_key_pair() -> KeyPair:
    """A fresh RSA key per run, PKCS#8 like Kalshi's downloads; 2048 bits keeps it quick."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyPair(private, public)


def secret(namespace: str, keys: KeyPair) -> dict[str, Any]:
    """One data key per key field, as the operator expects (``api_key``, ``private_key``)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET_NAME, "namespace": namespace},
        "type": "Opaque",
        "stringData": {"api_key": SIM_API_KEY_ID, "private_key": keys.private_pem},
    }


def environment(namespace: str, images: Images) -> dict[str, Any]:
    """The one SsmdEnvironment under test; metadata ConfigMaps are the CRD's defaults."""
    return {
        "apiVersion": "ssmd.io/v1alpha1",
        "kind": "SsmdEnvironment",
        "metadata": {"name": ENVIRONMENT, "namespace": namespace},
        "spec": {
            "environment": ENVIRONMENT,
            "secretName": SECRET_NAME,
            "image": images.collector,
            # Loaded by `kind load`: a missing image fails at once (ErrImageNeverPull)
            # instead of after a pull from a registry that never had it.
            "imagePullPolicy": "Never",
            "logFormat": "json",
            "storage": {"emptyDir": {"sizeLimit": "256Mi"}},
        },
    }


@dataclass(frozen=True)
class Deployed:
    """What the tests reach for once everything is applied (conftest's ``deployed``)."""

    kubectl: Kubectl
    """Bound to the kind context and the operator's namespace."""
    images: Images
    operator: OperatorDeployment
    workdir: Path
    """The scratch directory holding the overlays that were applied."""

    @property
    def namespace(self) -> str:
        return self.operator.namespace
