"""Smoke tests of the built images, run by ``make images-smoke`` (not by ``make test``).

``make images-smoke`` builds both images with podman (or docker) on a local stand-in
for the pinned base (docker/standin-base.sh), then runs this module:

- the collector, read-only and as uid 10001, against ``ssmd sim`` from the same
  image: ready (connected and subscribed), data written, exit 10 when the simulator
  closes the connection;
- the operator: ``--help`` read-only, and the real operator in its container against
  an emulated API server (kmock, on the host's loopback): liveness answers 200 with
  the CRD watched, an SsmdEnvironment gets its collector Deployment, /metrics counts
  the reconciles.

Containers use the host network, so everything stays on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "operator")]

from deadlines import wait_until, wait_until_async  # noqa: E402
from operator_harness import (  # noqa: E402
    DEPLOY,
    ENV,
    NAMESPACE,
    Cluster,
    emulated_cluster,
    environment,
)

from ssmd_collector.connectors.kalshi import signing  # noqa: E402
from ssmd_collector.exitcodes import ExitCode  # noqa: E402
from ssmd_operator.names import RUN_AS_USER  # noqa: E402

ENGINE = os.environ.get("SSMD_SMOKE_ENGINE") or shutil.which("podman") or shutil.which("docker")
TAG = os.environ.get("SSMD_SMOKE_TAG", "smoke")
COLLECTOR = f"localhost/ssmd-collector:{TAG}"
OPERATOR = f"localhost/ssmd-operator:{TAG}"

pytestmark = pytest.mark.timeout(300)


def engine() -> str:
    if ENGINE is None:
        pytest.skip("neither podman nor docker is installed: `make images-smoke` needs one")
    return ENGINE


def run_flags() -> list[str]:
    """Host network (loopback shared with the tests); podman: ulimits this host allows."""
    flags = ["--network", "host"]
    if Path(engine()).name == "podman":
        script = REPO / "docker" / "podman-ulimits.sh"
        flags += subprocess.run(
            ["sh", str(script)], capture_output=True, text=True, check=True
        ).stdout.split()
    return flags


def sh(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([engine(), *args], capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: exit {out.returncode}\n{out.stdout}{out.stderr}")
    return out


@pytest.fixture(scope="module", autouse=True)
def images_exist() -> None:
    for image in (COLLECTOR, OPERATOR):
        if sh("image", "inspect", image, check=False).returncode != 0:
            pytest.skip(f"{image} is not built: run `make images-smoke`")


@pytest.fixture
def containers() -> Iterator[list[str]]:
    """Names of containers a test started; removed afterwards (logs printed on failure)."""
    names: list[str] = []
    yield names
    for name in names:
        logs = sh("logs", name, check=False)
        print(f"--- {name}\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}")
        sh("rm", "--force", name, check=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - loopback
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def inspect(image: str) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(sh("image", "inspect", image).stdout)[0]["Config"]
    return config


@pytest.mark.parametrize(
    ("image", "args", "expect"),
    [
        (COLLECTOR, ["--help"], "--env"),
        (COLLECTOR, ["--entrypoint", "ssmd", COLLECTOR, "sim", "--help"], "--messages"),
        (OPERATOR, ["--help"], "--collector-uid"),
    ],
    ids=["connector", "sim", "operator"],
)
def test_entrypoints_answer_on_a_read_only_root_as_the_image_user(
    image: str, args: list[str], expect: str
) -> None:
    argv = ["run", "--rm", "--read-only", *run_flags()]
    argv += args if args[0] == "--entrypoint" else [image, *args]
    assert expect in sh(*argv).stdout
    config = inspect(image)
    assert config["User"] == f"{RUN_AS_USER}:{RUN_AS_USER}"


async def test_collector_records_the_simulator_and_exits_10_when_it_goes_away(
    tmp_path: Path, containers: list[str]
) -> None:
    sim_port, http_port = free_port(), free_port()
    exchanges = tmp_path / "exchanges"
    shutil.copytree(REPO / "exchanges", exchanges)
    feed = exchanges / "feeds" / "kalshi-sim.yaml"
    feed.write_text(feed.read_text().replace("127.0.0.1:8765", f"127.0.0.1:{sim_port}"))
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, RUN_AS_USER, RUN_AS_USER)
    run = uuid.uuid4().hex[:8]

    # Signed, as Kalshi requires: a throwaway Ed25519 key (the kind Kalshi issues).
    key = ed25519.Ed25519PrivateKey.generate()
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "public.pem").write_bytes(signing.public_pem(key))
    keys.chmod(0o755)
    sim = f"ssmd-smoke-sim-{run}"
    containers.append(sim)
    sh("run", "--detach", "--name", sim, "--read-only", *run_flags(), "--entrypoint", "ssmd",
       "--volume", f"{keys}:/keys:ro",
       COLLECTOR, "sim", "--host", "127.0.0.1", "--port", str(sim_port), "--rate", "100",
       "--messages", "600", "--ending", "close", "--public-key", "/keys/public.pem",
       "--api-key-id", "smoke-key")  # fmt: skip
    await wait_until(lambda: _listening(sim_port), "the simulator listening", 60)

    collector = f"ssmd-smoke-collector-{run}"
    containers.append(collector)
    sh("run", "--detach", "--name", collector, "--read-only", "--user",
       f"{RUN_AS_USER}:{RUN_AS_USER}", "--tmpfs", "/tmp", *run_flags(),  # noqa: S108
       "--volume", f"{exchanges}:/etc/ssmd/exchanges:ro",
       "--volume", f"{data}:/var/lib/ssmd/data",
       "--env", "SSMD_KALSHI_SIM_API_KEY=smoke-key",
       "--env", f"SSMD_KALSHI_SIM_PRIVATE_KEY={signing.private_pem(key).decode()}",
       COLLECTOR, "--env", "kalshi-sim", "--config-dir", "/etc/ssmd/exchanges",
       "--data-dir", "/var/lib/ssmd/data", "--port", str(http_port),
       "--http-host", "127.0.0.1", "--log-format", "json")  # fmt: skip

    ready = f"http://127.0.0.1:{http_port}/ready"
    await wait_until(
        lambda: http(ready)[0] == 200, "the collector ready (connected, subscribed)", 60
    )

    def lines() -> int:
        return sum(len(f.read_bytes().splitlines()) for f in data.glob("*/kalshi-sim.jsonl"))

    await wait_until(lambda: lines() >= 100, "100 archived lines", 60, seen=lines)
    status = sh("wait", collector, timeout=120).stdout.strip().splitlines()[-1]
    assert int(status) == ExitCode.DISCONNECTED, sh("logs", collector, check=False).stderr
    for path in data.rglob("*"):
        assert path.stat().st_uid == RUN_AS_USER, path
    first = json.loads(next(iter(data.glob("*/kalshi-sim.jsonl"))).read_text().splitlines()[0])
    assert first["feed"] == "kalshi-sim"


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def test_operator_runs_against_an_api_server_and_reports_liveness_and_metrics(
    kmock: Any, tmp_path: Path, containers: list[str]
) -> None:
    async with emulated_cluster(kmock) as cluster:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(_kubeconfig(cluster))
        kubeconfig.chmod(0o644)
        live_port, metrics_port = free_port(), free_port()
        name = f"ssmd-smoke-operator-{uuid.uuid4().hex[:8]}"
        containers.append(name)
        await asyncio.to_thread(
            sh, "run", "--detach", "--name", name, "--read-only", "--tmpfs", "/tmp",  # noqa: S108
           *run_flags(), "--volume", f"{kubeconfig}:/etc/ssmd/kubeconfig:ro",
           "--env", "KUBECONFIG=/etc/ssmd/kubeconfig", "--env", f"POD_ID={name}",
           OPERATOR, "--all-namespaces", "--liveness-host", "127.0.0.1",
           "--liveness-port", str(live_port), "--metrics-port", str(metrics_port),
           "--log-format", "json",
        )  # fmt: skip

        liveness = f"http://127.0.0.1:{live_port}/healthz"

        async def alive() -> Any:
            status, body = await asyncio.to_thread(http, liveness)
            return json.loads(body) if status == 200 else None

        probes = await wait_until_async(alive, "liveness 200", 90)
        assert probes["crd"] == "watched"

        await cluster.create(ENV, environment("kalshi-sim", "uid-smoke"))
        deployment = await wait_until_async(
            lambda: cluster.get(DEPLOY, "kalshi-sim-collector"), "the collector Deployment", 60
        )
        assert deployment["metadata"]["namespace"] == NAMESPACE

        async def reconciles() -> float:
            _, text = await asyncio.to_thread(http, f"http://127.0.0.1:{metrics_port}/metrics")
            found = [
                float(line.split()[-1])
                for line in text.splitlines()
                if line.startswith("ssmd_operator_reconciles_total ")
            ]
            return found[0] if found and found[0] >= 1 else 0.0

        await wait_until_async(reconciles, "reconciles counted on /metrics", 30)


def _kubeconfig(cluster: Cluster) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kmock", "cluster": {"server": cluster.url}}],
            "users": [{"name": "smoke", "user": {"token": "smoke"}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "smoke"}}],
            "current-context": "kmock",
        }
    )
