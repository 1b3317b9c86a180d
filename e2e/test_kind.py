"""ssmd on a real cluster: the images, the operator and the collector, end to end on kind.

The tests run in file order and share one deployed stack (conftest.py): the images are
built and loaded, the operator runs from deploy/, the simulator verifies the
collector's signed handshakes, and one SsmdEnvironment is applied. Each test waits for
its own precondition, so a failure names the step that broke rather than cascading.
The last test deletes the SsmdEnvironment.

Names (labels, container, paths, annotation, child names, metric names, exit codes)
come from the code that defines them, so a rename there cannot leave this suite
asserting on a string nobody writes any more.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import stack
from cluster import (
    OWNER_REFERENCES_PLUGIN,
    CommandFailed,
    Kubectl,
    condition,
    container_status,
    minor_versions,
    pod_ready,
    run,
    tool,
    wait_until,
)

from ssmd_collector.exitcodes import ExitCode
from ssmd_collector.metadata import read_directory, resolve_environment
from ssmd_collector.metrics import LINES_WRITTEN, MESSAGES
from ssmd_operator.names import (
    ANNOTATION_SNAPSHOT_HASH,
    COLLECTOR_APP,
    CONTAINER_NAME,
    DATA_DIR,
    HTTP_PORT,
    LABEL_ENVIRONMENT,
    LABEL_NAME,
    RUN_AS_USER,
    config_map_name,
    deployment_name,
)
from ssmd_operator.snapshot import key_for

COLLECTOR_SELECTOR = f"{LABEL_NAME}={COLLECTOR_APP},{LABEL_ENVIRONMENT}={stack.ENVIRONMENT}"
SIM_SELECTOR = f"app.kubernetes.io/name={stack.SIM_NAME}"
DEPLOYMENT = deployment_name(stack.ENVIRONMENT)
SNAPSHOT = config_map_name(stack.ENVIRONMENT)

# Runs inside the collector container (python is the image's own interpreter): counts
# complete archive lines per day file and checks each is a well-formed record of the
# feed. A last line without its newline may be mid-write and is not counted.
COUNT_LINES = """
import glob, json, os, sys
feed = sys.argv[1]
out = {}
for path in sorted(glob.glob(os.path.join(sys.argv[2], "*", feed + ".jsonl"))):
    day = os.path.basename(os.path.dirname(path))
    with open(path, "rb") as f:
        complete = f.read().split(b"\\n")[:-1]
    types = set()
    for line in complete:
        record = json.loads(line)
        assert record["feed"] == feed, record["feed"]
        assert record["ts"].startswith(day), (record["ts"], day)
        types.add(record["data"].get("type"))
    out[day] = {"lines": len(complete), "types": sorted(t for t in types if t)}
print(json.dumps(out))
"""

SCRAPE = f"""
import urllib.request
print(urllib.request.urlopen("http://127.0.0.1:{HTTP_PORT}/metrics", timeout=5).read().decode())
"""


# -- helpers ---------------------------------------------------------------------------------


def collector_pods(k: Kubectl) -> list[dict[str, Any]]:
    """The SsmdEnvironment's collector pods that are not being deleted."""
    pods = k.items("pods", COLLECTOR_SELECTOR)
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def ready_collector(k: Kubectl, timeout: float = 240, other_than: str = "") -> dict[str, Any]:
    """Wait for exactly one live collector pod, Ready, optionally not named ``other_than``."""

    def probe() -> dict[str, Any] | None:
        pods = collector_pods(k)
        if len(pods) == 1 and pod_ready(pods[0]) and pods[0]["metadata"]["name"] != other_than:
            return pods[0]
        return None

    what = "one Ready collector pod" + (f" other than {other_than}" if other_than else "")
    return wait_until(what, probe, timeout=timeout, diagnose=k.diagnose)


def archive(k: Kubectl, pod: str) -> dict[str, dict[str, Any]]:
    """{day: {lines, types}} of the collector's archive, read through kubectl exec."""
    out = k.exec(pod, CONTAINER_NAME, "python", "-c", COUNT_LINES, stack.SIM_FEED, DATA_DIR)
    parsed: dict[str, dict[str, Any]] = json.loads(out)
    return parsed


def total_lines(k: Kubectl, pod: str) -> int:
    return sum(day["lines"] for day in archive(k, pod).values())


def metric(k: Kubectl, pod: str, name: str) -> float:
    """One counter of the collector's /metrics, for the simulator's feed."""
    text = k.exec(pod, CONTAINER_NAME, "python", "-c", SCRAPE)
    prefix = f'{name}_total{{feed="{stack.SIM_FEED}"}} '
    values = [float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix)]
    assert len(values) == 1, f"expected one {prefix.strip()} sample in /metrics:\n{text[:3000]}"
    return values[0]


def restarts(pod: Mapping[str, Any]) -> int:
    return int(container_status(pod, CONTAINER_NAME).get("restartCount", 0))


def days_since(start: dt.date) -> list[str]:
    """ISO days from ``start`` to today (UTC): a wait that crosses midnight sees both."""
    end = dt.datetime.now(dt.UTC).date()
    return [(start + dt.timedelta(days=n)).isoformat() for n in range((end - start).days + 1)]


def expected_resolution(namespace: str) -> tuple[str, str]:
    """(feed version, endpoint) the e2e environment resolves to today, by the collector's
    own loader over the same files the metadata overlay puts in the cluster."""
    with tempfile.TemporaryDirectory() as scratch:
        overlay = stack.metadata_overlay(Path(scratch) / "overlay", namespace)
        tree = Path(scratch) / "exchanges"
        shutil.copytree(stack.REPO / "exchanges", tree)
        shutil.copy(overlay / "kalshi-sim.yaml", tree / stack.SIM_FEED_FILE)
        shutil.copy(stack.ENVIRONMENT_FILE, tree / "environments")
        resolved = resolve_environment(
            read_directory(tree), stack.ENVIRONMENT, dt.datetime.now(dt.UTC).date()
        )
    return resolved.feed_version.version, resolved.feed_version.endpoint


# -- the images ------------------------------------------------------------------------------


def test_images_run_read_only_as_the_operators_uid(images: stack.Images) -> None:
    """Before any pod: each entrypoint answers --help on a read-only root fs, as uid 10001."""
    docker = tool("docker")
    assert docker
    readonly = [docker, "run", "--rm", "--read-only", "--network", "none"]
    for argv, expect in (
        ([*readonly, images.collector, "--help"], "--env"),
        ([*readonly, "--entrypoint", "ssmd", images.collector, "sim", "--help"], "--public-key"),
        ([*readonly, images.operator, "--help"], "--namespace"),
    ):
        assert expect in run(argv, timeout=120).stdout, argv
    for image in (images.collector, images.operator):
        inspected = json.loads(run([docker, "image", "inspect", image], timeout=60).stdout)[0]
        config = inspected["Config"]
        assert config["User"] == f"{RUN_AS_USER}:{RUN_AS_USER}", config["User"]
        assert config["Labels"].get("org.opencontainers.image.title"), config["Labels"]
        assert "PYTHONDONTWRITEBYTECODE=1" in config["Env"], config["Env"]


# -- the operator and the collector ----------------------------------------------------------


def test_environment_is_ready_with_the_resolved_feed_version(
    deployed: stack.Deployed, ready_environment: dict[str, Any]
) -> None:
    status = ready_environment["status"]
    generation = ready_environment["metadata"]["generation"]
    version, endpoint = expected_resolution(deployed.namespace)
    assert status["environment"] == stack.ENVIRONMENT
    assert status["feed"] == stack.SIM_FEED
    assert status["feedVersion"] == version
    assert status["endpoint"] == endpoint == stack.sim_endpoint(deployed.namespace)
    assert status["observedGeneration"] == generation
    for type_ in ("MetadataResolved", "SecretReady", "CollectorAvailable", "Ready"):
        c = condition(ready_environment, type_)
        assert c.get("status") == "True", c
        assert c.get("observedGeneration") == generation, c
    deployment = deployed.kubectl.get("deployment", DEPLOYMENT)
    assert deployment, f"no Deployment {DEPLOYMENT}"
    template = deployment["spec"]["template"]["metadata"]["annotations"]
    assert template[ANNOTATION_SNAPSHOT_HASH] == status["snapshotHash"]


def test_collector_pod_is_ready_on_a_read_only_root_as_non_root(
    deployed: stack.Deployed, ready_environment: dict[str, Any]
) -> None:
    """Ready means connected and subscribed: the signed handshake passed the simulator."""
    pod = ready_collector(deployed.kubectl)
    [container] = [c for c in pod["spec"]["containers"] if c["name"] == CONTAINER_NAME]
    assert container["image"] == deployed.images.collector
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    uid = deployed.kubectl.exec(pod["metadata"]["name"], CONTAINER_NAME, "id", "-u").strip()
    assert uid == str(RUN_AS_USER)


def test_kubectl_is_the_nodes_minor(deployed: stack.Deployed) -> None:
    """kubectl supports one minor of skew; the suite uses exactly the server's."""
    k = deployed.kubectl
    client, server = minor_versions(k.binary, k.kubeconfig, k.context)
    assert client == server, f"kubectl 1.{client} against API server 1.{server}"


def test_todays_jsonl_is_archived_and_metrics_count_it(
    deployed: stack.Deployed, ready_environment: dict[str, Any]
) -> None:
    k = deployed.kubectl
    pod = ready_collector(k)
    name = pod["metadata"]["name"]

    start = dt.datetime.now(dt.UTC).date()

    def enough_today() -> dict[str, Any] | None:
        # The day files of this test's days: at UTC midnight the collector moves to a
        # new file, and the lines before it stay in the previous day's.
        days = [d for day, d in archive(k, name).items() if day in days_since(start)]
        lines = sum(d["lines"] for d in days)
        types = set().union(*(d["types"] for d in days)) if days else set()
        return {"lines": lines, "types": types} if lines >= 50 else None

    day = wait_until(
        f"50 archived lines since {start} (UTC) in {DATA_DIR}", enough_today, timeout=120,
        diagnose=k.diagnose,
    )  # fmt: skip
    # Subscribe answers and data: what the collector asked for is what it archived.
    assert {"subscribed", "ticker"} <= set(day["types"]), day

    restarts_before = restarts(pod)
    lines_before = total_lines(k, name)
    counted = metric(k, name, LINES_WRITTEN)
    lines_after = total_lines(k, name)
    assert metric(k, name, MESSAGES) >= counted > 0
    pod_after = k.get("pod", name)
    assert pod_after
    if restarts_before == restarts(pod_after) == 0:
        # One container wrote the whole archive: its counter sits between two counts.
        assert lines_before <= counted <= lines_after, (lines_before, counted, lines_after)
    else:
        # An earlier container's lines are in the archive but not in this one's counter.
        assert counted <= lines_after, (counted, lines_after)


def test_simulator_outage_restarts_the_collector_until_it_returns(
    deployed: stack.Deployed, ready_environment: dict[str, Any]
) -> None:
    k = deployed.kubectl
    pod = ready_collector(k)
    name = pod["metadata"]["name"]
    restarts_before = restarts(pod)
    lines_before = total_lines(k, name)

    k("scale", f"deployment/{stack.SIM_NAME}", "--replicas=0")
    try:
        wait_until(
            "the simulator pods to be gone", lambda: not k.items("pods", SIM_SELECTOR),
            timeout=120, diagnose=k.diagnose,
        )  # fmt: skip

        def restarted() -> dict[str, Any] | None:
            now = k.get("pod", name)
            return now if now and restarts(now) > restarts_before else None

        after = wait_until(
            f"pod {name} to restart its collector", restarted, timeout=180, diagnose=k.diagnose
        )
        last = container_status(after, CONTAINER_NAME).get("lastState", {}).get("terminated", {})
        assert last.get("exitCode") == ExitCode.DISCONNECTED, last
        assert not pod_ready(after), "Ready with no exchange to be connected to"
    finally:
        k("scale", f"deployment/{stack.SIM_NAME}", "--replicas=1")
    k("rollout", "status", f"deployment/{stack.SIM_NAME}", "--timeout=180s", timeout=210)

    # CrashLoopBackOff doubles the delay per restart (10 s, 20 s, ...): allow a few.
    back = ready_collector(k, timeout=360)
    assert back["metadata"]["name"] == name, "a container restart, not a new pod"
    assert restarts(back) > restarts_before
    # Same pod, same emptyDir: the restarted collector appended to the archive.
    wait_until(
        "the archive to grow after the restart", lambda: total_lines(k, name) > lines_before,
        timeout=60, diagnose=k.diagnose,
    )  # fmt: skip


def test_metadata_configmap_edit_rolls_the_collector(
    deployed: stack.Deployed, ready_environment: dict[str, Any]
) -> None:
    k = deployed.kubectl
    old_pod = ready_collector(k)["metadata"]["name"]
    deployment = k.get("deployment", DEPLOYMENT)
    assert deployment
    old_hash = deployment["spec"]["template"]["metadata"]["annotations"][ANNOTATION_SNAPSHOT_HASH]

    environments = k.get("configmap", "ssmd-environments")
    assert environments
    file_name = stack.ENVIRONMENT_FILE.name
    edited = (
        environments["data"][file_name]
        + f"# edited by the e2e suite at {dt.datetime.now(dt.UTC)}\n"
    )
    k("patch", "configmap", "ssmd-environments", "--type=merge",
      "--patch", json.dumps({"data": {file_name: edited}}))  # fmt: skip

    def new_hash() -> str | None:
        d = k.get("deployment", DEPLOYMENT)
        h = (
            d["spec"]["template"]["metadata"]["annotations"][ANNOTATION_SNAPSHOT_HASH]
            if d
            else None
        )
        return h if h and h != old_hash else None

    rolled_to = wait_until(
        "the pod template's snapshot hash to change", new_hash, timeout=180, diagnose=k.diagnose
    )
    snapshot = k.get("configmap", SNAPSHOT)
    assert snapshot
    assert snapshot["data"][key_for(f"environments/{file_name}")] == edited
    new_pod = ready_collector(k, timeout=300, other_than=old_pod)
    assert new_pod["metadata"]["annotations"][ANNOTATION_SNAPSHOT_HASH] == rolled_to

    def status_caught_up() -> bool:
        obj = k.get("ssmdenvironment", stack.ENVIRONMENT)
        return bool(obj) and obj["status"].get("snapshotHash") == rolled_to  # type: ignore[index]

    wait_until("status.snapshotHash to follow", status_caught_up, timeout=120, diagnose=k.diagnose)


def test_children_pass_owner_references_permission_enforcement(
    deployed: stack.Deployed, ready_environment: dict[str, Any]
) -> None:
    """With the admission plugin OpenShift runs, the operator (whose Role has no
    finalizers permission) created both children: the stack being Ready proves it."""
    k = deployed.kubectl
    pods = k("get", "pods", "-n", "kube-system", "-l", "component=kube-apiserver", "-o", "json",
             namespaced=False).stdout  # fmt: skip
    command = " ".join(
        " ".join(c.get("command") or [])
        for p in json.loads(pods)["items"]
        for c in p["spec"]["containers"]
    )
    if OWNER_REFERENCES_PLUGIN not in command:
        pytest.skip(
            f"the API server of this (reused) cluster does not enable {OWNER_REFERENCES_PLUGIN}; "
            "a cluster created by the suite does (cluster.KIND_CONFIG)"
        )
    for kind, name in (("deployment", DEPLOYMENT), ("configmap", SNAPSHOT)):
        child = k.get(kind, name)
        assert child, f"no {kind} {name}"
        [ref] = child["metadata"]["ownerReferences"]
        assert ref["uid"] == ready_environment["metadata"]["uid"]
        assert not ref.get("blockOwnerDeletion"), ref


REFUSED = "kalshi-e2e-refused"


def test_a_spec_the_api_server_refuses_shows_in_status(
    deployed: stack.Deployed, ready_environment: dict[str, Any]
) -> None:
    """Requests above limits pass the CRD but not the Deployment's validation (422): the
    status says so with the server's message, and one Warning Event is posted."""
    k = deployed.kubectl
    refused = stack.environment(deployed.namespace, deployed.images)
    refused["metadata"]["name"] = REFUSED
    refused["spec"]["resources"] = {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}
    # What a schema can say is refused at apply time already, naming the field.
    negative = json.loads(json.dumps(refused))
    negative["spec"]["resources"] = {"requests": {"memory": "-1Mi"}}
    with pytest.raises(CommandFailed, match=r"spec\.resources\.requests\.memory"):
        k.apply([negative])
    k.apply([refused])
    try:

        def rejected() -> dict[str, Any] | None:
            obj = k.get("ssmdenvironment", REFUSED)
            c = condition(obj, "CollectorAvailable") if obj else {}
            return obj if c.get("reason") == "ApplyRejected" else None

        obj = wait_until("CollectorAvailable=False ApplyRejected", rejected, timeout=120,
                         diagnose=k.diagnose)  # fmt: skip
        c = condition(obj, "CollectorAvailable")
        assert c["status"] == "False"
        assert "HTTP 422" in c["message"], c["message"]
        assert "limit" in c["message"], c["message"]
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
        assert condition(obj, "Ready").get("reason") == "ApplyRejected"
        assert k.get("deployment", deployment_name(REFUSED)) is None

        def warned() -> bool:
            out = k("get", "events", "--field-selector",
                    f"involvedObject.name={REFUSED},reason=ApplyRejected,type=Warning",
                    "-o", "json").stdout  # fmt: skip
            return len(json.loads(out)["items"]) == 1

        wait_until("one Warning Event ApplyRejected", warned, timeout=60, diagnose=k.diagnose)
    finally:
        k("delete", "ssmdenvironment", REFUSED, "--ignore-not-found", "--wait=false", check=False)


def test_deleting_the_environment_removes_its_children(
    deployed: stack.Deployed, ready_environment: dict[str, Any]
) -> None:
    """Garbage collection through ownerReferences; the metadata it read stays."""
    k = deployed.kubectl
    assert k.get("deployment", DEPLOYMENT), "nothing to delete: the Deployment is missing"
    k("delete", "ssmdenvironment", stack.ENVIRONMENT, "--wait=true", "--timeout=120s", timeout=150)

    def children_gone() -> bool:
        return (
            k.get("deployment", DEPLOYMENT) is None
            and k.get("configmap", SNAPSHOT) is None
            and not k.items("pods", COLLECTOR_SELECTOR)
        )

    wait_until("the collector Deployment, snapshot and pods to be gone", children_gone,
               timeout=180, diagnose=k.diagnose)  # fmt: skip
    assert k.get("configmap", "ssmd-environments"), "metadata is not the environment's to delete"
    assert k.get("secret", stack.SECRET_NAME), "the Secret is the user's, not a child"
