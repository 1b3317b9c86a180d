"""Shared helpers for collector tests: a metadata tree pointed at a simulator, a run, the output."""

from __future__ import annotations

import asyncio
import io
import json
import re
import shutil
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from deadlines import deadline, wait_until

from ssmd_collector.app import Settings, run
from ssmd_collector.connectors import ConnectorMetrics
from ssmd_collector.exitcodes import ExitCode
from ssmd_collector.health import HealthServer
from ssmd_collector.metrics import Stats
from ssmd_collector.sim import SimConfig, SimServer, SimSession

EXAMPLES = Path(__file__).resolve().parent.parent / "exchanges"
SIM_ENDPOINT = "ws://127.0.0.1:8765/trade-api/ws/v2"
KEY_ENV = {
    "keys": {
        "kalshi": {
            "type": "api_key",
            "fields": ["api_key", "private_key"],
            "source": "env:KALSHI_API_KEY,KALSHI_PRIVATE_KEY",
        }
    }
}
"""The ``keys`` of a ``make_tree`` environment that signs: KALSHI_API_KEY, KALSHI_PRIVATE_KEY."""
LINE = re.compile(
    r'^\{"ts":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z)","feed":"([^"]+)","data":(.*)\}$'
)


def signed_sim(public_pem: bytes, **kw: Any) -> SimServer:
    """A simulator that requires handshakes signed by ``public_pem``'s private half (no
    skew check: these tests are not about clock skew), streaming at 2000 msg/s."""
    settings: dict[str, Any] = {
        "port": 0,
        "rate": 2000,
        "heartbeat": 0.2,
        "public_key_pem": public_pem,
        "timestamp_window": None,
    }
    return SimServer(SimConfig(**(settings | kw)))


def environ(private_pem: bytes) -> dict[str, str]:
    """The variables of ``KEY_ENV`` for key id ``key-1`` and this private key."""
    return {"KALSHI_API_KEY": "key-1", "KALSHI_PRIVATE_KEY": private_pem.decode()}


def make_tree(root: Path, endpoint: str, **env: Any) -> Path:
    """The example metadata with the simulator feed at ``endpoint`` and env ``test``."""
    tree = root / "exchanges"
    shutil.copytree(EXAMPLES, tree)
    feed = tree / "feeds/kalshi-sim.yaml"
    feed.write_text(feed.read_text().replace(SIM_ENDPOINT, endpoint))
    doc = {
        "name": "test",
        "feed": "kalshi-sim",
        "schema": "trade:v1",
        "storage": {"type": "local", "path": str(root / "data")},
        **env,
    }
    (tree / "environments/test.yaml").write_text(yaml.safe_dump(doc))
    return tree


@dataclass
class Run:
    code: ExitCode
    stats: Stats
    connection: ConnectorMetrics
    data_dir: Path
    ready_seen: list[int] = field(default_factory=list)

    def lines(self, suffix: str = ".jsonl") -> list[str]:
        return [
            line
            for f in sorted(self.data_dir.glob(f"*/kalshi-sim{suffix}"))
            for line in f.read_text().splitlines()
        ]

    def data(self) -> list[str]:
        """The raw ``data`` text of every archived line, in file order."""
        out = []
        for line in self.lines():
            m = LINE.match(line)
            assert m, f"malformed archive line: {line[:120]!r}"
            out.append(m.group(3))
        return out

    def events(self) -> list[dict[str, Any]]:
        """The events file's lines, parsed, in file order."""
        return [
            json.loads(line)
            for f in sorted(self.data_dir.glob("*/kalshi-sim.events.jsonl"))
            for line in f.read_text().splitlines()
        ]


async def record(
    tree: Path,
    *,
    environ: Mapping[str, str] | None = None,
    during: Callable[[HealthServer], Any] | None = None,
    poll_ready: bool = False,
    clock_ns: Callable[[], int] | None = None,
    timeout: float = 30,
    **overrides: Any,
) -> Run:
    """Run the collector in this process (port 0) until it exits by itself, failing
    after ``deadline(timeout)`` seconds."""
    settings = Settings(env="test", config_dir=tree, http_host="127.0.0.1", port=0, **overrides)
    holder: dict[str, Any] = {}
    ready_seen: list[int] = []
    tasks: list[asyncio.Task[Any]] = []

    def started(server: HealthServer) -> None:
        holder["stats"] = server.stats
        holder["connection"] = server.connection
        if poll_ready:
            tasks.append(asyncio.create_task(_poll_ready(server.port, ready_seen)))
        if during is not None:
            tasks.append(asyncio.create_task(during(server)))

    main = asyncio.create_task(
        run(
            settings,
            environ=environ or {},
            on_started=started,
            **({"clock_ns": clock_ns} if clock_ns else {}),
        )
    )
    timeout = deadline(timeout)
    done, _ = await asyncio.wait({main}, timeout=timeout)
    if not done:
        stacks = io.StringIO()
        for task in asyncio.all_tasks():
            task.print_stack(limit=12, file=stacks)
        main.cancel()
        raise AssertionError(f"collector still running after {timeout}s:\n{stacks.getvalue()}")
    code = main.result()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    stats = holder.get("stats") or Stats(feed="none")
    connection = holder.get("connection") or ConnectorMetrics()
    return Run(code, stats, connection, tree.parent / "data", ready_seen)


def when_live(
    sim: SimServer, play: Callable[[HealthServer, SimSession], Awaitable[None]]
) -> Callable[[HealthServer], Awaitable[None]]:
    """A ``record(during=...)`` hook: once every subscription is live, ``play`` acts on
    the exchange side of the newest connection; then the exchange closes it, so the run
    ends (exit 10) unless it ended by itself before."""

    async def during(server: HealthServer) -> None:
        await wait_until(lambda: server.connection.ready, "every subscription live")
        session = sim.sessions[-1]
        try:
            await play(server, session)
        finally:
            await session.close()

    return during


async def _poll_ready(port: int, seen: list[int]) -> None:
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(f"http://127.0.0.1:{port}/ready") as r:
                    if not seen or seen[-1] != r.status:
                        seen.append(r.status)
            except aiohttp.ClientError:
                return
            await asyncio.sleep(0.005)


async def scrape(port: int) -> dict[str, float]:
    """``/metrics`` as {'name{labels}': value}."""
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as r:
        assert r.status == 200
        text = await r.text()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values
