"""Pure rendering of the snapshot ConfigMap and the collector Deployment."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from ssmd_collector.keys import env_var_names
from ssmd_collector.metadata import Storage, read_directory, resolve_environment
from ssmd_collector.storage.settings import archive_settings
from ssmd_operator import cli, events, render, snapshot
from ssmd_operator.drift import matches
from ssmd_operator.secrets import check_secret
from ssmd_operator.spec import parse_spec

EXCHANGES = Path(__file__).resolve().parents[2] / "exchanges"
DAY = dt.date(2026, 1, 15)
OWNER = render.Owner("kalshi-prod", "ssmd", "uid-1")
K8S_VERSION = "1.31"


def prod(**spec: Any) -> tuple[dict[str, Any], dict[str, Any], snapshot.Snapshot]:
    tree = read_directory(EXCHANGES)
    resolved = resolve_environment(tree, "kalshi-prod", DAY)
    snap = snapshot.take(resolved, tree)
    parsed = parse_spec("kalshi-prod", {"secretName": "keys", **spec})
    secret = check_secret(resolved.environment.keys, "keys", {"api_key", "private_key"})
    return (
        render.config_map(OWNER, snap),
        render.deployment(OWNER, parsed, snap, secret.env, "v1"),
        snap,
    )


def container(dep: dict[str, Any]) -> dict[str, Any]:
    return dict(dep["spec"]["template"]["spec"]["containers"][0])


def test_deployment_runs_one_collector_that_never_overlaps_itself() -> None:
    _, dep, snap = prod()
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate", "rollingUpdate": None}
    assert container(dep)["args"] == [
        "--env", "kalshi-prod",
        "--config-dir", "/etc/ssmd/exchanges",
        "--data-dir", "/var/lib/ssmd/data",
        "--port", "8080",
        "--log-format", "json",
    ]  # fmt: skip
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations["ssmd.io/snapshot-hash"] == snap.hash
    assert annotations["ssmd.io/feed-version"] == "v1"


def test_shards_render_one_deployment_each_that_never_overlaps_itself() -> None:
    tree = read_directory(EXCHANGES)
    resolved = resolve_environment(tree, "kalshi-prod", DAY)
    snap = snapshot.take(resolved, tree)
    parsed = parse_spec("kalshi-prod", {"secretName": "keys", "shards": 3})
    secret = check_secret(resolved.environment.keys, "keys", {"api_key", "private_key"})
    deps = render.deployments(OWNER, parsed, snap, secret.env, "v1")
    assert [d["metadata"]["name"] for d in deps] == [
        "kalshi-prod-collector-0", "kalshi-prod-collector-1", "kalshi-prod-collector-2"
    ]  # fmt: skip
    for i, dep in enumerate(deps):
        assert container(dep)["args"][-2:] == ["--shard", f"{i}/3"]
        assert dep["spec"]["strategy"]["type"] == "Recreate"
        assert dep["spec"]["replicas"] == 1
        assert dep["spec"]["selector"]["matchLabels"]["ssmd.io/shard"] == str(i)
        assert dep["spec"]["template"]["metadata"]["labels"]["ssmd.io/shard"] == str(i)
        kubernetes_validate.validate(render.without_nones(dep), K8S_VERSION, strict=True)
    (single,) = render.deployments(OWNER, parse_spec("kalshi-prod", {"secretName": "keys"}),
                                   snap, secret.env, "v1")  # fmt: skip
    assert single["metadata"]["name"] == "kalshi-prod-collector"
    assert "--shard" not in container(single)["args"]


@pytest.mark.parametrize(
    ("shards", "existing", "stale"),
    [
        (3, ["p-collector"], ["p-collector"]),  # 1 -> 3: the unsharded one goes
        (2, ["p-collector-0", "p-collector-1", "p-collector-2"], ["p-collector-2"]),
        (1, ["p-collector-0", "p-collector-1"], ["p-collector-0", "p-collector-1"]),
        (2, ["p-collector-0", "p-collector-1", "p-collector-x", "other"], []),
    ],
    ids=["1-to-3", "3-to-2", "2-to-1", "foreign-names-kept"],
)
def test_scaling_converges_on_exactly_the_wanted_deployments(
    shards: int, existing: list[str], stale: list[str]
) -> None:
    assert render.stale_collectors("p", shards, existing) == stale


def test_live_collectors_come_in_shard_order() -> None:
    existing = ["p-collector-10", "other", "p-collector-2", "p-collector", "p-collector-x"]
    assert render.live_collectors("p", existing) == [
        "p-collector",
        "p-collector-2",
        "p-collector-10",
    ]


def test_secret_env_uses_the_collectors_own_variable_names() -> None:
    _, dep, _ = prod()
    names = env_var_names(
        "kalshi", ["api_key", "private_key"], "env:KALSHI_API_KEY,KALSHI_PRIVATE_KEY"
    )
    assert container(dep)["env"] == [
        {"name": names[f], "valueFrom": {"secretKeyRef": {"name": "keys", "key": f}}}
        for f in ("api_key", "private_key")
    ]


def test_probes_port_and_hardening() -> None:
    _, dep, _ = prod()
    c = container(dep)
    pod = dep["spec"]["template"]["spec"]
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["runAsNonRoot"] is True
    assert isinstance(c["securityContext"]["runAsUser"], int)
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False


def test_metadata_volume_maps_keys_back_to_paths() -> None:
    cm, dep, _ = prod()
    volume = dep["spec"]["template"]["spec"]["volumes"][0]
    assert volume["configMap"]["name"] == "kalshi-prod-config"
    items = {i["key"]: i["path"] for i in volume["configMap"]["items"]}
    assert items == {
        "environments.kalshi-prod.yaml": "environments/kalshi-prod.yaml",
        "feeds.kalshi.yaml": "feeds/kalshi.yaml",
        "schemas.trade.yaml": "schemas/trade.yaml",
        "schemas.trade.capnp": "schemas/trade.capnp",
    }
    assert set(items) == set(cm["data"])
    assert all("/" not in key for key in cm["data"])


def test_mounted_snapshot_resolves_like_the_source() -> None:
    """What the collector reads from the volume resolves to the same environment."""
    cm, _, snap = prod()
    mounted = snapshot.from_config_map(cm)
    assert mounted.hash == snap.hash
    resolved = resolve_environment(mounted.files, "kalshi-prod", DAY)
    assert resolved.feed_version.endpoint.startswith("wss://")


def test_storage_resources_pause_and_pull_policy() -> None:
    _, dep, _ = prod(
        storage={"persistentVolumeClaim": {"claimName": "archive"}},
        resources={"requests": {"cpu": "1"}, "limits": {"memory": "1Gi"}},
        paused=True,
        imagePullPolicy="Always",
        image="registry.example/ssmd:1",
    )
    assert dep["spec"]["replicas"] == 0
    data = dep["spec"]["template"]["spec"]["volumes"][1]
    assert data == {"name": "data", "persistentVolumeClaim": {"claimName": "archive"}}
    c = container(dep)
    assert c["resources"] == {"requests": {"cpu": "1"}, "limits": {"memory": "1Gi"}}
    assert (c["image"], c["imagePullPolicy"]) == ("registry.example/ssmd:1", "Always")
    _, dep, _ = prod(storage={"emptyDir": {"sizeLimit": "2Gi"}})
    assert dep["spec"]["template"]["spec"]["volumes"][1]["emptyDir"] == {"sizeLimit": "2Gi"}


def test_s3_settings_go_in_as_values_and_keys_only_by_secret_reference() -> None:
    s3 = {
        "bucket": "market-data",
        "prefix": "ssmd/prod",
        "endpoint": "https://minio.data:9000",
        "credentialsSecret": {"name": "s3-keys", "secretAccessKeyKey": "secret"},
    }
    _, dep, _ = prod(storage={"emptyDir": {}, "s3": s3})
    env = container(dep)["env"]
    assert env[2:] == [
        {"name": "SSMD_S3_BUCKET", "value": "market-data"},
        {"name": "SSMD_S3_PREFIX", "value": "ssmd/prod"},
        {"name": "SSMD_S3_ENDPOINT", "value": "https://minio.data:9000"},
        {
            "name": "AWS_ACCESS_KEY_ID",
            "valueFrom": {"secretKeyRef": {"name": "s3-keys", "key": "AWS_ACCESS_KEY_ID"}},
        },
        {
            "name": "AWS_SECRET_ACCESS_KEY",
            "valueFrom": {"secretKeyRef": {"name": "s3-keys", "key": "secret"}},
        },
    ]
    # The variables are the ones the collector reads.
    values = {e["name"]: e["value"] for e in env if "value" in e}
    settings = archive_settings(Storage("local", "/data"), Path("/data"), "kalshi", values)
    assert settings.s3 is not None
    assert (settings.s3.bucket, settings.s3.prefix) == ("market-data", "ssmd/prod")
    # Without a Secret (IRSA and the like), no key variables at all.
    _, dep, _ = prod(storage={"emptyDir": {}, "s3": {"bucket": "market-data"}})
    assert container(dep)["env"][2:] == [{"name": "SSMD_S3_BUCKET", "value": "market-data"}]
    kubernetes_validate.validate(render.without_nones(dep), K8S_VERSION, strict=True)


def test_children_are_owned_and_labelled() -> None:
    cm, dep, _ = prod()
    for obj in (cm, dep):
        ref = obj["metadata"]["ownerReferences"]
        assert ref == [
            {
                "apiVersion": "ssmd.io/v1alpha1",
                "kind": "SsmdEnvironment",
                "name": "kalshi-prod",
                "uid": "uid-1",
                "controller": True,
            }
        ]
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "ssmd-operator"
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector.items() <= dep["spec"]["template"]["metadata"]["labels"].items()


def test_config_map_removes_files_no_longer_needed_and_keeps_binary() -> None:
    snap = snapshot.Snapshot({"feeds/a.yaml": b"a: 1\n", "schemas/x.bin": b"\xff\x00"})
    current = {
        "data": {"feeds.a.yaml": "a: 0\n", "feeds.old.yaml": "x"},
        "binaryData": {"y": "AA=="},
    }
    cm = render.config_map(OWNER, snap, current)
    assert cm["data"] == {"feeds.a.yaml": "a: 1\n", "feeds.old.yaml": None}
    assert cm["binaryData"] == {"schemas.x.bin": "/wA=", "y": None}
    assert snapshot.from_config_map(render.without_nones(cm)).files == snap.files


@pytest.mark.parametrize("paused", [False, True])
def test_rendered_objects_validate_against_official_schemas(paused: bool) -> None:
    cm, dep, _ = prod(paused=paused, storage={"persistentVolumeClaim": {"claimName": "c"}})
    event = events.event(OWNER, "Normal", "Ready", "ok", dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    for obj in (cm, dep, event):
        kubernetes_validate.validate(render.without_nones(obj), K8S_VERSION, strict=True)


def test_a_created_object_matches_its_own_patch() -> None:
    """Create-then-compare is a no-op: the create body and the patch agree."""
    cm, dep, _ = prod()
    for obj in (cm, dep):
        assert matches(obj, render.without_nones(obj))


def test_platform_assigned_uid_pins_none_and_unpins_an_old_one() -> None:
    """``--collector-uid=platform`` (OpenShift): no uid, gid or fsGroup, still non-root;
    the merge patch names them as None so a Deployment that pinned 10001 loses them."""
    tree = read_directory(EXCHANGES)
    resolved = resolve_environment(tree, "kalshi-prod", DAY)
    snap = snapshot.take(resolved, tree)
    parsed = parse_spec("kalshi-prod", {"secretName": "keys"})
    secret = check_secret(resolved.environment.keys, "keys", {"api_key", "private_key"})
    dep = render.deployment(OWNER, parsed, snap, secret.env, "v1", uid=None)
    pod = dep["spec"]["template"]["spec"]
    for context, keys in (
        (pod["securityContext"], ("runAsUser", "runAsGroup", "fsGroup")),
        (container(dep)["securityContext"], ("runAsUser", "runAsGroup")),
    ):
        assert context["runAsNonRoot"] is True
        assert all(context[k] is None for k in keys), context
    created = render.without_nones(dep)
    assert "runAsUser" not in created["spec"]["template"]["spec"]["securityContext"]
    kubernetes_validate.validate(created, K8S_VERSION, strict=True)
    _, pinned, _ = prod()
    assert not matches(dep, pinned)  # a pinned Deployment is patched to unpin


@pytest.mark.parametrize(
    ("text", "uid"), [("platform", None), ("10001", 10001), ("1000680000", 1000680000)]
)
def test_collector_uid_flag(text: str, uid: int | None) -> None:
    assert cli.parse_args(["--collector-uid", text]).collector_uid == uid


@pytest.mark.parametrize("text", ["0", "-5", "root"])
def test_collector_uid_flag_refuses_root_and_nonsense(
    text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        cli.parse_args(["--collector-uid", text])
    assert "expected a uid above 0 or 'platform'" in capsys.readouterr().err


def _label_keys(value: Any) -> set[str]:
    """Every label key set anywhere in a manifest (metadata, template, selector)."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, sub in value.items():
            if key in ("labels", "matchLabels") and isinstance(sub, dict):
                found |= {k for k, v in sub.items() if v is not None}
            found |= _label_keys(sub)
    elif isinstance(value, list):
        for sub in value:
            found |= _label_keys(sub)
    return found


def test_new_children_carry_no_argo_cd_tracking_label() -> None:
    """Argo CD's default tracking label is app.kubernetes.io/instance: children carrying
    the CR's name there would be claimed (and pruned) by an Application of that name."""
    cm, dep, _ = prod()
    for obj in (render.without_nones(cm), render.without_nones(dep)):
        assert "app.kubernetes.io/instance" not in _label_keys(obj), obj["kind"]
        assert obj["metadata"]["labels"]["ssmd.io/environment"] == "kalshi-prod"
    assert dep["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "ssmd-collector",
        "ssmd.io/environment": "kalshi-prod",
    }
    # A merge patch onto an older child removes the label from its metadata.
    assert cm["metadata"]["labels"]["app.kubernetes.io/instance"] is None


def test_a_deployment_created_with_the_former_selector_keeps_it() -> None:
    """Selectors are immutable: patching one would be refused (422) on every pass."""
    old = {"app.kubernetes.io/name": "ssmd-collector", "app.kubernetes.io/instance": "kalshi-prod"}
    tree = read_directory(EXCHANGES)
    resolved = resolve_environment(tree, "kalshi-prod", DAY)
    snap = snapshot.take(resolved, tree)
    parsed = parse_spec("kalshi-prod", {"secretName": "keys"})
    secret = check_secret(resolved.environment.keys, "keys", {"api_key", "private_key"})
    live = {"spec": {"selector": {"matchLabels": old}}}
    dep = render.deployment(OWNER, parsed, snap, secret.env, "v1", current=live)
    assert dep["spec"]["selector"]["matchLabels"] == old
    template = dep["spec"]["template"]["metadata"]["labels"]
    assert old.items() <= template.items()  # the pods still match their selector
    assert template["ssmd.io/environment"] == "kalshi-prod"
    assert dep["metadata"]["labels"]["app.kubernetes.io/instance"] is None
