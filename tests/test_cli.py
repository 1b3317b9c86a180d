"""The installed console scripts as a user runs them: real processes, signals, exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from collector_harness import EXAMPLES, LINE, make_tree
from deadlines import deadline, wait_until, within

from ssmd_collector.demo import DEMO_MARKETS
from ssmd_collector.exitcodes import ExitCode
from ssmd_collector.sim import Ending, SimConfig, SimServer
from ssmd_collector.sim.listing import Listing

BIN = Path(sys.executable).parent


def ssmd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BIN / "ssmd", *args], capture_output=True, text=True, timeout=deadline(60)
    )


def test_validate_accepts_the_examples() -> None:
    result = ssmd("validate", str(EXAMPLES))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_validate_lists_every_problem_and_fails(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, "ws://127.0.0.1:1/trade-api/ws/v2")
    (tree / "environments/test.yaml").write_text(
        "name: other\nfeed: kalshi-sim\nschema: trade:v1\nstorage: {type: s3}\n"
    )
    (tree / "schemas/trade.capnp").write_text("changed\n")
    result = ssmd("validate", str(tree), "--on", "2026-01-05")
    assert result.returncode == 1
    err = result.stderr
    assert "environments/test.yaml: name: expected 'test'" in err
    assert "environments/test.yaml: storage.bucket: expected a non-empty string" in err
    assert "schemas/trade.yaml: versions[0].hash: expected the sha256 of schemas/trade.capnp" in err


def test_connector_help_documents_exit_codes() -> None:
    result = subprocess.run(
        [BIN / "ssmd-connector", "--help"], capture_output=True, text=True, timeout=deadline(60)
    )
    assert result.returncode == 0
    for code in ExitCode:
        assert f"{code.value} {code.name.lower()}" in " ".join(result.stdout.split())


async def test_sigterm_mid_stream_exits_0_with_only_whole_lines(tmp_path: Path) -> None:
    async with SimServer(
        SimConfig(port=0, rate=0, heartbeat=0, ending=Ending.NONE, allow_unsigned=True)
    ) as sim:
        tree = make_tree(tmp_path, sim.url)
        proc = await asyncio.create_subprocess_exec(
            BIN / "ssmd-connector",
            "--env",
            "test",
            "--config-dir",
            str(tree),
            "--port",
            "0",
            "--log-format",
            "json",
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        data_files = tmp_path / "data"

        def written() -> list[Path]:
            files = list(data_files.glob("*/kalshi-sim.jsonl"))
            return files if files and files[0].stat().st_size > 200_000 else []

        files = await wait_until(written, "200 kB recorded")
        proc.send_signal(signal.SIGTERM)
        _, stderr = await within(proc.communicate(), "the collector to stop on SIGTERM")
        sent = list(sim.sessions[0].sent)
    assert proc.returncode == ExitCode.CLEAN_STOP, stderr.decode()[-2000:]
    content = files[0].read_text()
    assert content.endswith("\n")
    data = []
    for line in content.splitlines():
        m = LINE.match(line)
        assert m, line[:200]
        data.append(m.group(3))
    assert len(data) > 500
    assert data == sent[: len(data)]  # in order, none lost before the stop, none twice
    logs = [json.loads(line) for line in stderr.decode().splitlines()]
    assert {"ts", "level", "logger", "msg"} <= set(logs[0])
    assert any("SIGTERM received" in entry["msg"] for entry in logs)


async def test_demo_signs_with_a_throwaway_key_and_records(tmp_path: Path, free_port: int) -> None:
    """``ssmd demo`` needs no credentials, yet its simulator requires signed handshakes:
    data arriving proves the collector signed with the demo's own key pair."""
    tree = make_tree(tmp_path, f"ws://127.0.0.1:{free_port}/trade-api/ws/v2")
    data_dir = tmp_path / "demo-data"
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("KALSHI_", "SSMD_"))}
    proc = await asyncio.create_subprocess_exec(
        BIN / "ssmd", "demo", "--config-dir", str(tree), "--env", "kalshi-sim",
        "--data-dir", str(data_dir), "--port", "0", "--rate", "500",
        stderr=asyncio.subprocess.PIPE, env={**environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:

        def recorded() -> list[str]:
            files = list(data_dir.glob("*/kalshi-sim.jsonl"))
            return files[0].read_text().splitlines() if files else []

        def books() -> set[str]:
            frames = [json.loads(m.group(3)) for m in map(LINE.match, recorded()) if m]
            return {f["msg"]["market_ticker"] for f in frames
                    if f["type"] == "orderbook_snapshot"}  # fmt: skip

        # The order books of every open market the demo simulator's REST lists.
        listed = Listing(DEMO_MARKETS)
        expected = {m.ticker for m in listed if m.status == "active" and not m.multivariate}
        await wait_until(lambda: books() == expected, "the demo to record every order book")
        proc.send_signal(signal.SIGINT)
        _, stderr = await within(proc.communicate(), "the demo to stop")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == ExitCode.CLEAN_STOP, stderr.decode()[-2000:]
    log = stderr.decode()
    assert "unsigned" not in log
    assert "rejected handshake" not in log
    assert "BEGIN PRIVATE KEY" not in log
    types = {json.loads(m.group(3))["type"] for m in map(LINE.match, recorded()) if m}
    assert {"subscribed", "orderbook_snapshot"} <= types
