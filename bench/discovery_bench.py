"""The whole market at start-up: 10,000 markets discovered over REST and subscribed, then
the cost of following their order books.

``ssmd sim`` (sender core) lists ``markets / 0.8`` markets, of which ``markets`` are
open and not multivariate (its listing keeps a few of every other status), and streams
at ``rate`` messages/s. ``ssmd-connector`` (receiver core) runs an environment whose
order books follow ``{status: open}`` plus ``market_lifecycle_v2``, with its default
REST pacing (10 requests/s) and batches (256 markets per command).

Measured from outside the collector:

- discovery: its duration and REST calls, from the events file's ``discovery`` line;
- subscribed: seconds from spawn until ``/ready`` answers 200 (discovery, connect, one
  ``subscribe`` and every ``add_markets`` confirmed), and the markets confirmed;
- steady state: over ``steady_s`` seconds after that, the collector's CPU share and
  the messages/s it archived, with every order book flowing.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench.collector_run import KEYS, free_port, scrape
from bench.processes import VENV_BIN, Child, pinned
from bench.sender import KeyPair
from bench.workload import API_KEY_ID

BATCH = 256
"""The collector's default markets per subscribe / add_markets command."""


@dataclass
class DiscoveryResult:
    markets: int
    listed: int
    discovery_s: float = 0.0
    rest_calls: int = 0
    ready_s: float = 0.0
    subscribed: int = 0
    commands: int = 0
    steady_s: float = 0.0
    steady_rate: float = 0.0
    steady_msgs_per_s: float = 0.0
    steady_cpu_share: float = 0.0
    peak_rss_mb: float = 0.0
    error: str = ""


def _get_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def _start_sim(keys: KeyPair, listed: int, rate: float, log: Path, core: int | None) -> Child:
    argv = [
        str(VENV_BIN / "ssmd"), "sim", "--host=127.0.0.1", "--port=0", f"--rate={rate:g}",
        "--heartbeat=10", f"--markets={listed}", f"--public-key={keys.public}",
        f"--api-key-id={API_KEY_ID}",
    ]  # fmt: skip
    with log.open("wb") as f:
        return Child(pinned(core, argv), stderr=f)


def _sim_url(child: Child, log: Path) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if "serving " in line:
                return line.split("serving ", 1)[1].strip()
        if child.poll() is not None:
            raise RuntimeError(f"ssmd sim exited: {log.read_text()[-2000:]}")
        time.sleep(0.02)
    raise RuntimeError(f"ssmd sim did not start: {log.read_text()[-2000:]}")


def _tree(work: Path, url: str) -> Path:
    tests = Path(__file__).resolve().parent.parent / "tests"
    if str(tests) not in sys.path:
        sys.path.insert(0, str(tests))
    make_tree = importlib.import_module("collector_harness").make_tree
    subscriptions = [
        {"channels": ["market_lifecycle_v2"]},
        {"channels": ["orderbook_delta"], "markets": {"status": "open"}},
    ]
    tree: Path = make_tree(work, url, keys=KEYS, subscriptions=subscriptions)
    return tree


def measure_discovery(
    keys: KeyPair,
    work: Path,
    *,
    markets: int = 10_000,
    rate: float = 20_000,
    steady_s: float = 10.0,
    receiver: int | None,
    sender: int | None,
) -> DiscoveryResult:
    listed = math.ceil(markets / 0.8)  # 80% of the simulator's listing is open
    result = DiscoveryResult(markets=markets, listed=listed, steady_rate=rate)
    work.mkdir(parents=True, exist_ok=True)
    sim_log = work / "sim.log"
    sim = _start_sim(keys, listed, rate, sim_log, sender)
    collector: Child | None = None
    try:
        url = _sim_url(sim, sim_log)
        tree = _tree(work, url)
        data = work / "archive"
        port = free_port()
        env = {**os.environ, "KALSHI_API_KEY": API_KEY_ID, "KALSHI_PRIVATE_KEY": str(keys.private)}
        argv = [
            str(VENV_BIN / "ssmd-connector"), "--env=test", f"--config-dir={tree}",
            f"--data-dir={data}", f"--port={port}", "--http-host=127.0.0.1", "--log-format=json",
        ]  # fmt: skip
        with (work / "ssmd-connector.log").open("wb") as log:
            started = time.perf_counter()
            collector = Child(pinned(receiver, argv), stderr=log, env=env)
        deadline = time.monotonic() + 300
        while _get_status(f"http://127.0.0.1:{port}/ready") != 200:
            if collector.poll() is not None or time.monotonic() > deadline:
                result.error = "the collector never became ready; see ssmd-connector.log"
                return result
            time.sleep(0.01)
        result.ready_s = time.perf_counter() - started
        events = [
            json.loads(line)
            for f in sorted(data.glob("*/kalshi-sim.events.jsonl"))
            for line in f.read_text().splitlines()
        ]
        discovery = next(e for e in events if e["event"] == "discovery")
        result.discovery_s = discovery["seconds"]
        result.rest_calls = discovery["requests"]
        book = next(
            e for e in events if e["event"] == "subscribed" and e["channel"] == "orderbook_delta"
        )
        result.subscribed = book["markets"]
        result.commands = math.ceil(result.subscribed / BATCH)
        before = scrape(port)
        cpu0, t0 = collector.cpu_seconds(), time.perf_counter()
        time.sleep(steady_s)
        after = scrape(port)
        cpu1, t1 = collector.cpu_seconds(), time.perf_counter()
        key = 'ssmd_messages_total{feed="kalshi-sim"}'
        result.steady_s = t1 - t0
        result.steady_msgs_per_s = (after[key] - before[key]) / (t1 - t0)
        result.steady_cpu_share = (cpu1 - cpu0) / (t1 - t0)
    finally:
        if collector is not None:
            result.peak_rss_mb = collector.stop().peak_rss_mb
        sim.stop()
    return result


def render(r: DiscoveryResult) -> str:
    if r.error:
        return f"discovery: {r.error}"
    return "\n".join(
        [
            f"## Discovery and subscription: {r.markets:,} markets ({r.listed:,} listed)",
            "",
            "| measure | value |",
            "|---|---|",
            f"| discovery (GET /markets, limit 1000) | {r.discovery_s:.2f} s, "
            f"{r.rest_calls} REST calls |",
            f"| spawn to ready (discovery + connect + subscribe) | {r.ready_s:.2f} s |",
            f"| order books subscribed | {r.subscribed:,} in {r.commands} commands "
            f"(1 subscribe + {r.commands - 1} add_markets of {BATCH}) |",
            f"| steady state, offered {r.steady_rate:,.0f} msg/s | "
            f"{r.steady_msgs_per_s:,.0f} msg/s archived, {r.steady_cpu_share:.0%} of a core |",
            f"| collector peak RSS | {r.peak_rss_mb:.0f} MB |",
        ]
    )
