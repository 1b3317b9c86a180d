"""Pure pieces of the operator: drift comparison, status, Secret check, snapshot, spec, CLI."""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal
from typing import Any

import kopf
import pytest

from ssmd_collector.metadata import KeySpec, MetadataInvalid
from ssmd_operator import snapshot
from ssmd_operator.cli import namespaces_from, parse_args
from ssmd_operator.drift import changed, matches, parse_quantity
from ssmd_operator.handlers import default_login
from ssmd_operator.secrets import check_secret
from ssmd_operator.spec import MetadataSource, SpecInvalid, parse_spec
from ssmd_operator.status import (
    Condition,
    collector_condition,
    condition,
    ready_condition,
    status_body,
    transitions,
)

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
T1 = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)

# --- drift -------------------------------------------------------------------


def test_server_defaults_and_foreign_fields_are_not_drift() -> None:
    desired = {"spec": {"containers": [{"name": "c", "image": "i"}], "replicas": 1}}
    live = {
        "spec": {
            "containers": [{"name": "c", "image": "i", "terminationMessagePath": "/dev/x"}],
            "replicas": 1,
            "progressDeadlineSeconds": 600,
        },
        "status": {"replicas": 1},
    }
    assert matches(desired, live)


@pytest.mark.parametrize(
    "live",
    [
        {"spec": {"containers": [{"name": "c", "image": "other"}], "replicas": 1}},
        {"spec": {"containers": [{"name": "c", "image": "i"}], "replicas": 3}},
        {"spec": {"containers": [{"name": "c", "image": "i"}, {"name": "x"}], "replicas": 1}},
        {"spec": {"containers": [], "replicas": 1}},
        {"spec": {"replicas": 1}},
        {"spec": {"containers": [{"name": "c", "image": "i"}], "replicas": True}},
    ],
)
def test_hand_edits_are_drift(live: dict[str, Any]) -> None:
    desired = {"spec": {"containers": [{"name": "c", "image": "i"}], "replicas": 1}}
    assert not matches(desired, live)


def test_none_means_the_field_must_be_absent() -> None:
    desired = {"strategy": {"type": "Recreate", "rollingUpdate": None}}
    assert matches(desired, {"strategy": {"type": "Recreate"}})
    assert not matches(desired, {"strategy": {"type": "Recreate", "rollingUpdate": {"a": 1}}})


def test_empty_maps_and_lists_equal_absent_ones_as_the_server_omits_them() -> None:
    desired = {"metadata": {"annotations": {}}, "spec": {"env": [], "emptyDir": {}}}
    assert matches(desired, {"metadata": {}, "spec": {"emptyDir": {}}})
    assert not matches(desired, {"metadata": {}, "spec": {"env": [{"name": "X"}], "emptyDir": {}}})


def test_quantities_compare_by_value_only_where_they_are_quantities() -> None:
    assert parse_quantity("500m") == Decimal("0.5")
    assert parse_quantity("1Gi") == Decimal(1024**3)
    assert parse_quantity("http") is None
    assert matches(
        {"resources": {"limits": {"cpu": "0.5"}}}, {"resources": {"limits": {"cpu": "500m"}}}
    )
    assert matches({"emptyDir": {"sizeLimit": "1024Mi"}}, {"emptyDir": {"sizeLimit": "1Gi"}})
    assert not matches({"args": ["0.5"]}, {"args": ["500m"]})


def res(part: str, name: str, value: str) -> dict[str, Any]:
    return {"resources": {part: {name: value}}}


@pytest.mark.parametrize(
    ("desired", "stored", "same"),
    [
        # The API server rounds container requests and limits up to whole milli-units.
        (res("requests", "cpu", "0.0005"), res("requests", "cpu", "1m"), True),
        (res("limits", "cpu", "100.5u"), res("limits", "cpu", "1m"), True),
        (res("requests", "cpu", "1.0001"), res("requests", "cpu", "1001m"), True),
        (res("requests", "memory", "0.5"), res("requests", "memory", "500m"), True),
        (res("requests", "cpu", "250m"), res("requests", "cpu", "250m"), True),
        # ...rounding up, never down, and only there: a real change is still drift.
        (res("requests", "cpu", "0.0015"), res("requests", "cpu", "1m"), False),
        (res("requests", "cpu", "1m"), res("requests", "cpu", "2m"), False),
        ({"emptyDir": {"sizeLimit": "0.0005"}}, {"emptyDir": {"sizeLimit": "1m"}}, False),
    ],
    ids=lambda v: str(v) if isinstance(v, bool) else None,
)
def test_container_quantities_compare_as_the_server_stores_them(
    desired: dict[str, Any], stored: dict[str, Any], same: bool
) -> None:
    assert matches(desired, stored) is same


@pytest.mark.parametrize(
    ("after", "is_changed"),
    [
        ({"metadata": {"name": "x", "resourceVersion": "2"}, "spec": {"a": 1}}, False),
        ({"metadata": {"name": "x"}, "spec": {"a": 1}, "status": {"ready": 1}}, False),
        ({"metadata": {"name": "x"}, "spec": {"a": 2}}, True),
        ({"metadata": {"name": "x", "labels": {"l": "v"}}, "spec": {"a": 1}}, True),
    ],
    ids=["resourceVersion", "status", "spec", "labels"],
)
def test_changed_ignores_status_and_bookkeeping(after: dict[str, Any], is_changed: bool) -> None:
    before = {"metadata": {"name": "x", "resourceVersion": "1"}, "spec": {"a": 1}}
    assert changed(before, after) is is_changed


# --- status ------------------------------------------------------------------


def ok(type_: str) -> Condition:
    return condition(type_, True, "Fine", "fine")


def test_ready_is_the_conjunction_and_names_the_first_failure() -> None:
    parts = [ok("MetadataResolved"), ok("SecretReady"), ok("CollectorAvailable")]
    assert ready_condition(parts, paused=False).true
    parts[1] = condition("SecretReady", False, "SecretNotFound", "Secret 'k' does not exist")
    ready = ready_condition(parts, paused=False)
    assert (ready.status, ready.reason) == ("False", "SecretNotFound")
    assert ready.message == "SecretReady: Secret 'k' does not exist"
    paused = [
        ok("MetadataResolved"),
        ok("SecretReady"),
        condition("CollectorAvailable", False, "Paused", ""),
    ]
    assert ready_condition(paused, paused=True).reason == "Paused"


def test_transition_time_moves_only_when_the_status_changes() -> None:
    first = status_body([ok("Ready")], None, 1, {}, T0)
    again = status_body([ok("Ready")], None, 2, first, T1)
    assert again["conditions"][0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert again["conditions"][0]["observedGeneration"] == 2
    flipped = status_body([condition("Ready", False, "X", "y")], None, 2, first, T1)
    assert flipped["conditions"][0]["lastTransitionTime"] == "2026-01-02T00:00:00Z"
    assert matches(status_body([ok("Ready")], None, 1, first, T1), first)


def test_transitions_are_status_or_reason_changes() -> None:
    previous = status_body([ok("A"), condition("B", False, "R1", "m")], None, 1, {}, T0)
    now = [ok("A"), condition("B", False, "R2", "m"), ok("C")]
    assert [c.type for c in transitions(previous, now)] == ["B", "C"]


@pytest.mark.parametrize(
    ("deployment", "paused", "status", "reason"),
    [
        (None, False, "False", "NotDeployed"),
        ({"spec": {}}, True, "False", "Paused"),
        (
            {"metadata": {"generation": 3}, "status": {"observedGeneration": 2}},
            False,
            "False",
            "RollingOut",
        ),
        # Just created: the Deployment controller has not written a condition yet.
        ({"status": {}}, False, "False", "Progressing"),
        (
            {
                "status": {
                    "conditions": [
                        {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"},
                        {"type": "Available", "status": "False"},
                    ]
                }
            },
            False,
            "False",
            "Progressing",
        ),
        # Was available, the rollout is complete, the pod is down: a fault.
        (
            {
                "status": {
                    "conditions": [
                        {
                            "type": "Progressing",
                            "status": "True",
                            "reason": "NewReplicaSetAvailable",
                        },
                        {"type": "Available", "status": "False"},
                    ]
                }
            },
            False,
            "False",
            "Unavailable",
        ),
        (
            {
                "status": {
                    "conditions": [
                        {
                            "type": "Progressing",
                            "status": "False",
                            "reason": "ProgressDeadlineExceeded",
                        }
                    ]
                }
            },
            False,
            "False",
            "Unavailable",
        ),
        (
            {
                "status": {
                    "availableReplicas": 1,
                    "conditions": [{"type": "Available", "status": "True"}],
                }
            },
            False,
            "True",
            "Available",
        ),
    ],
)
def test_collector_condition(deployment: Any, paused: bool, status: str, reason: str) -> None:
    c = collector_condition(deployment, paused)
    assert (c.status, c.reason) == (status, reason)


def test_collector_condition_passes_on_the_deployments_own_message() -> None:
    dep = {
        "status": {"conditions": [{"type": "ReplicaFailure", "status": "True", "message": "quota"}]}
    }
    assert collector_condition(dep, False).message == "quota"


# --- Secret ------------------------------------------------------------------

KALSHI = KeySpec("kalshi", "api_key", True, ("api_key", "private_key"), "env:K_ID,K_PEM")


def test_secret_ready_maps_fields_to_the_collectors_variables() -> None:
    check = check_secret([KALSHI], "keys", {"api_key", "private_key", "unrelated"})
    assert check.ready
    assert [(v.name, v.secret_key) for v in check.env] == [
        ("K_ID", "api_key"),
        ("K_PEM", "private_key"),
    ]


def test_plain_env_source_uses_the_ssmd_prefix_rule() -> None:
    spec = KeySpec("my-key", "api_key", True, ("token",), "env")
    assert [v.name for v in check_secret([spec], "s", {"token"}).env] == ["SSMD_MY_KEY_TOKEN"]


@pytest.mark.parametrize(
    ("secret_name", "keys", "reason"),
    [
        (None, None, "SecretNotSpecified"),
        ("keys", None, "SecretNotFound"),
        ("keys", {"api_key"}, "SecretMissingFields"),
    ],
)
def test_secret_problems(secret_name: str | None, keys: set[str] | None, reason: str) -> None:
    check = check_secret([KALSHI], secret_name, keys)
    assert (check.ready, check.reason) == (False, reason)


def test_optional_keys_are_passed_only_when_complete_and_no_keys_need_no_secret() -> None:
    optional = KeySpec("extra", "api_key", False, ("token",), "env")
    check = check_secret([KALSHI, optional], "keys", {"api_key", "private_key"})
    assert check.ready
    assert [v.secret_key for v in check.env] == ["api_key", "private_key"]
    assert check_secret([], None, None).reason == "NoKeysRequired"
    alone = check_secret([optional], None, None)
    assert (alone.ready, alone.reason, alone.env) == (True, "NoKeysRequired", ())
    assert not check_secret([KALSHI, optional], None, None).ready


def test_field_name_collision_between_keys_is_reported() -> None:
    other = KeySpec("other", "api_key", True, ("api_key",), "env")
    assert check_secret([KALSHI, other], "keys", {"api_key"}).reason == "FieldNameCollision"


# --- snapshot ----------------------------------------------------------------


def test_metadata_tree_prefixes_directories_and_refuses_duplicates() -> None:
    feeds = MetadataSource("a", "feeds")
    tree = snapshot.metadata_tree([(feeds, {"data": {"k.yaml": "x"}, "binaryData": {"b": "AAE="}})])
    assert tree == {"feeds/k.yaml": b"x", "feeds/b": b"\x00\x01"}
    with pytest.raises(MetadataInvalid) as err:
        snapshot.metadata_tree(
            [
                (feeds, {"data": {"k.yaml": "x"}}),
                (MetadataSource("b", "feeds"), {"data": {"k.yaml": "y"}}),
            ]
        )
    assert "ConfigMaps a and b" in str(err.value)


def test_snapshot_keys_round_trip_and_hash_tracks_content() -> None:
    assert snapshot.key_for("schemas/trade.capnp") == "schemas.trade.capnp"
    assert snapshot.path_for("schemas.trade.capnp") == "schemas/trade.capnp"
    assert snapshot.path_for("other.x") is None
    a = snapshot.Snapshot({"feeds/a.yaml": b"1", "feeds/b.yaml": b"2"})
    assert a.hash == snapshot.Snapshot({"feeds/b.yaml": b"2", "feeds/a.yaml": b"1"}).hash
    assert a.hash != snapshot.Snapshot({"feeds/a.yaml": b"1", "feeds/b.yaml": b"3"}).hash
    # Moving bytes between files is a change too.
    assert snapshot.Snapshot({"feeds/a": b"12"}).hash != snapshot.Snapshot({"feeds/a1": b"2"}).hash


# --- spec --------------------------------------------------------------------


def test_spec_defaults_match_the_crd() -> None:
    spec = parse_spec("kalshi-prod", {})
    assert spec.environment == "kalshi-prod"
    assert spec.config_maps == ("ssmd-feeds", "ssmd-schemas", "ssmd-environments")
    assert spec.image == "ghcr.io/ssmd/ssmd-collector:0.1.0"
    assert (spec.image_pull_policy, spec.log_format, spec.paused) == ("IfNotPresent", "json", False)
    assert not spec.storage.persistent
    assert spec.secret_name is None


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (
            {"storage": {"emptyDir": {}, "persistentVolumeClaim": {"claimName": "x"}}},
            "spec.storage",
        ),
        ({"metadata": {"configMaps": [{"name": "x", "directory": "other"}]}}, "directory"),
        ({"paused": "yes"}, "spec.paused"),
        ({"imagePullPolicy": "Sometimes"}, "spec.imagePullPolicy"),
        ({"storage": {"s3": {}}}, "spec.storage.s3.bucket"),
        ({"storage": {"s3": {"bucket": 5}}}, "spec.storage.s3.bucket"),
        ({"storage": {"s3": {"bucket": "b-1", "credentialsSecret": "k"}}}, "credentialsSecret"),
    ],
)
def test_invalid_spec_names_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecInvalid, match=field.replace(".", r"\.")):
        parse_spec("x", spec)


# --- CLI ---------------------------------------------------------------------


def test_namespaces_from_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCH_NAMESPACE", "ssmd")
    assert namespaces_from(parse_args([])) == ["ssmd"]
    assert namespaces_from(parse_args(["-n", "a", "--namespace", "b,c"])) == ["a", "b", "c"]
    assert namespaces_from(parse_args(["--all-namespaces"])) == []
    monkeypatch.delenv("WATCH_NAMESPACE")
    assert namespaces_from(parse_args([])) == []
    assert parse_args([]).liveness_port == 8081


# --- login -------------------------------------------------------------------


def test_default_login_reads_a_kubeconfig(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'https://k8s.example:6443'}}]\n"
        "users: [{name: u, user: {token: abc}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u, namespace: ssmd}}]\n"
    )
    monkeypatch.setenv("KUBECONFIG", str(config))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    info = default_login(logger=logging.getLogger("test"), settings=kopf.OperatorSettings())
    assert info.server.rstrip("/") == "https://k8s.example:6443"


def test_default_login_without_credentials_says_so(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(kopf.LoginError, match="no credentials"):
        default_login(logger=logging.getLogger("test"), settings=kopf.OperatorSettings())
