"""Fixtures of the kind end-to-end suite: the cluster, the images, the deployed stack.

Run it with ``make e2e`` (or ``.venv/bin/pytest e2e -v -rs``); see e2e/README.md for
the environment variables. Where docker (with a running daemon) or kind is missing,
every test is collected and skipped before any fixture runs, all with one reason from
one place, so ``-rs`` prints a single line and pytest exits 0; SSMD_E2E_REQUIRE=1 (CI's
e2e job) makes that a usage error instead, so a broken runner cannot pass by skipping.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import stack
from cluster import (
    KIND_CONFIG,
    Kubectl,
    condition,
    node_kubectl,
    requirements_missing,
    run,
    tool,
    wait_until,
)

from ssmd_operator.names import GROUP, PLURAL

REUSE_CLUSTER = os.environ.get("SSMD_E2E_CLUSTER", "")
"""Name of an existing kind cluster to use (its context ``kind-<name>`` in KUBECONFIG)."""
KEEP_CLUSTER = os.environ.get("SSMD_E2E_KEEP") == "1"
LOGS_DIR = os.environ.get("SSMD_E2E_LOGS_DIR", "")
"""Where ``kind export logs`` writes the node and pod logs when a test failed."""
NODE_IMAGE = os.environ.get("SSMD_E2E_NODE_IMAGE", "")


HERE = Path(__file__).resolve().parent


def _in_this_suite(item: pytest.Item) -> bool:
    """Hooks in this conftest see every item of the session (``pytest tests e2e``)."""
    return item.path.is_relative_to(HERE)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    ours = [item for item in items if _in_this_suite(item)]
    for item in ours:
        # The first test pays for cluster creation and two image builds; pyproject's
        # 120 s default is for the fast suite.
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(1800))
        item.add_marker(pytest.mark.e2e)
    if ours and os.environ.get("SSMD_E2E_REQUIRE") == "1" and (missing := requirements_missing()):
        raise pytest.UsageError(f"SSMD_E2E_REQUIRE=1 but {missing}")


def _skip_reason() -> str | None:
    if os.environ.get("SSMD_E2E_SKIP") == "1":
        # Where kind happens to be installed but e2e runs elsewhere (CI's fast job).
        return "SSMD_E2E_SKIP=1: e2e runs in its own job (`make e2e`)"
    return requirements_missing()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip before any fixture (cluster, images) is set up; raised here, so every skip
    reports this one location and ``-rs`` groups them into one line."""
    if _in_this_suite(item) and (reason := _skip_reason()):
        pytest.skip(reason)


# -- the cluster ------------------------------------------------------------------------------


@dataclass(frozen=True)
class KindCluster:
    name: str
    kind: str
    kubeconfig: Path | None
    created: bool

    @property
    def context(self) -> str:
        return f"kind-{self.name}"


@pytest.fixture(scope="session")
def kind_cluster(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[KindCluster]:
    """A new kind cluster for this run, or the existing one named by SSMD_E2E_CLUSTER."""
    kind = tool("kind")
    assert kind
    if REUSE_CLUSTER:
        existing = run([kind, "get", "clusters"], timeout=60).stdout.split()
        assert REUSE_CLUSTER in existing, (
            f"SSMD_E2E_CLUSTER={REUSE_CLUSTER}: no such kind cluster (have: {existing})"
        )
        cluster = KindCluster(REUSE_CLUSTER, kind, None, created=False)
    else:
        kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
        cluster = KindCluster(f"ssmd-e2e-{secrets.token_hex(3)}", kind, kubeconfig, created=True)
    try:
        if cluster.created:
            config = tmp_path_factory.mktemp("kind-config") / "kind.yaml"
            config.write_text(KIND_CONFIG)
            create = [kind, "create", "cluster", "--name", cluster.name, "--config", str(config)]
            create += ["--kubeconfig", str(cluster.kubeconfig), "--wait", "180s"]
            if NODE_IMAGE:
                create += ["--image", NODE_IMAGE]
            run(create, timeout=600)
        yield cluster
    finally:
        if LOGS_DIR and request.session.testsfailed:
            export = [kind, "export", "logs", LOGS_DIR, "--name", cluster.name]
            run(export, timeout=300, check=False)
        if cluster.created and KEEP_CLUSTER:
            kept = f"kind cluster {cluster.name}, kubeconfig {cluster.kubeconfig}"
            print(f"\nSSMD_E2E_KEEP=1: kept {kept}")
        elif cluster.created:
            delete = [kind, "delete", "cluster", "--name", cluster.name]
            run([*delete, "--kubeconfig", str(cluster.kubeconfig)], timeout=300, check=False)


# -- the images -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def images(kind_cluster: KindCluster, tmp_path_factory: pytest.TempPathFactory) -> stack.Images:
    """Both images built from this checkout and loaded into the cluster's nodes.

    A tag unique to the run: a reused cluster never runs a stale image under an old tag,
    and a re-applied operator Deployment always rolls to the new one.
    """
    docker = tool("docker")
    assert docker
    tag = f"e2e-{dt.datetime.now(dt.UTC):%Y%m%d%H%M%S}-{secrets.token_hex(2)}"
    built = stack.Images.tagged(tag)
    revision = run(["git", "rev-parse", "HEAD"], timeout=30, check=False, cwd=stack.REPO)
    for dockerfile, image in (
        ("Dockerfile.collector", built.collector),
        ("Dockerfile.operator", built.operator),
    ):
        run(
            [
                docker,
                "build",
                "--file",
                str(stack.REPO / dockerfile),
                "--tag",
                image,
                "--build-arg",
                f"REVISION={revision.stdout.strip() or 'unknown'}",
                str(stack.REPO),
            ],
            timeout=1200,
        )
        load_image(kind_cluster, docker, image, tmp_path_factory.mktemp("image"))
    return built


def load_image(cluster: KindCluster, docker: str, image: str, scratch: Path) -> None:
    """``kind load docker-image``, or its documented fallback through an archive.

    With Docker's containerd image store (the default of fresh Docker 29 installs),
    ``kind load docker-image`` fails with "content digest ... not found"
    (kubernetes-sigs/kind#3795); kind's known-issues page gives the workaround used
    here: save a single-platform archive and ``kind load image-archive`` it.
    """
    direct = [cluster.kind, "load", "docker-image", image, "--name", cluster.name]
    if run(direct, timeout=600, check=False).returncode == 0:
        return
    arch = run([docker, "version", "--format", "{{.Server.Arch}}"], timeout=30).stdout.strip()
    archive = scratch / "image.tar"
    save = [docker, "image", "save", "--platform", f"linux/{arch}", "--output", str(archive)]
    run([*save, image], timeout=600)
    run([cluster.kind, "load", "image-archive", str(archive), "--name", cluster.name], timeout=600)
    archive.unlink()


# -- the deployed stack -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def deployed(
    kind_cluster: KindCluster, images: stack.Images, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[stack.Deployed]:
    """crds/, deploy/ (operator image swapped), the simulator, the Secret, metadata, the CR."""
    docker = tool("docker")
    assert docker
    workdir = tmp_path_factory.mktemp("stack")
    # The node's own kubectl: the same minor as the API server (the dev extra's one
    # can be two minors ahead, outside kubectl's supported skew).
    kubectl_binary = node_kubectl(docker, f"{kind_cluster.name}-control-plane", workdir / "bin")
    rendered = run([kubectl_binary, "kustomize", str(stack.REPO / "deploy")], timeout=60).stdout
    operator = stack.read_operator_deployment(rendered)
    k = Kubectl(kubectl_binary, kind_cluster.context, operator.namespace, kind_cluster.kubeconfig)

    # 1. The CRD, and wait until the API server serves it.
    crds = stack.REPO / "crds"
    if (crds / "kustomization.yaml").exists():
        k("apply", "-k", str(crds), namespaced=False)
    else:
        k("apply", "-f", str(crds), namespaced=False)
    k(
        "wait",
        "--for=condition=Established",
        f"crd/{PLURAL}.{GROUP}",
        "--timeout=60s",
        namespaced=False,
        timeout=90,
    )

    # 2. The operator, as deploy/ has it, running the image built above.
    k.apply_kustomization(stack.operator_overlay(workdir / "operator", operator, images))
    k("rollout", "status", f"deployment/{operator.deployment}", "--timeout=180s", timeout=210)

    # 3. The key pair: the Secret for the collector, the public half for the simulator.
    keys = stack.generate_key_pair()
    k.apply([stack.secret(operator.namespace, keys)])
    sim_dir = stack.sim_overlay(workdir / "sim", operator.namespace, images, keys.public_pem)
    applied = k("apply", "-k", str(sim_dir), namespaced=False, timeout=120)
    assert "PodSecurity" not in applied.stderr, applied.stderr
    k("rollout", "status", f"deployment/{stack.SIM_NAME}", "--timeout=180s", timeout=210)

    # 4. Metadata (exchanges/ + the e2e environment, the sim feed pointed in-cluster), the CR.
    k.apply_kustomization(stack.metadata_overlay(workdir / "metadata", operator.namespace))
    k.apply([stack.environment(operator.namespace, images)])

    yield stack.Deployed(k, images, operator, workdir)

    if not kind_cluster.created:
        # A reused cluster keeps deploy/ and the metadata; the run's own objects go.
        k(
            "delete",
            "ssmdenvironment",
            stack.ENVIRONMENT,
            "--ignore-not-found",
            "--wait=false",
            check=False,
        )
        k("delete", "-k", str(sim_dir), "--ignore-not-found", check=False, namespaced=False)
        k("delete", "secret", stack.SECRET_NAME, "--ignore-not-found", check=False)


@pytest.fixture(scope="session")
def ready_environment(deployed: stack.Deployed) -> dict[str, Any]:
    """Waits (once) for the SsmdEnvironment's Ready condition; returns the object."""
    k = deployed.kubectl

    def ready() -> dict[str, Any] | None:
        obj = k.get("ssmdenvironment", stack.ENVIRONMENT)
        if obj and condition(obj, "Ready").get("status") == "True":
            return obj
        return None

    return wait_until(
        f"SsmdEnvironment {stack.ENVIRONMENT} to be Ready",
        ready,
        timeout=300,
        diagnose=k.diagnose,
    )


def pytest_report_header() -> list[str]:
    missing = requirements_missing()
    kind = "reuse " + REUSE_CLUSTER if REUSE_CLUSTER else "new cluster per run"
    return [f"e2e: {'ready' if missing is None else 'requirements missing'}; kind: {kind}"]
