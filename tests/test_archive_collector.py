"""The archive inside the real collector: it never holds up recording, and a restart
ships what the previous run left half-done without sending anything twice."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import zstandard
from collector_harness import Run, make_tree, record, scrape
from deadlines import wait_until
from s3_harness import CREDENTIALS, REGION, FaultProxy, moto_s3

from ssmd_collector.exitcodes import ExitCode
from ssmd_collector.health import HealthServer
from ssmd_collector.sim import Ending, SimConfig, SimServer
from ssmd_collector.writer import JsonlWriter

FEED = "kalshi-sim"
OLD_DAY = "2025-01-01"
OLD_LINES = [
    f'{{"ts":"{OLD_DAY}T12:00:00.{i:06d}Z","feed":"{FEED}","data":{{"n":{i}}}}}\n'.encode()
    for i in range(500)
]


async def run_collector(
    tmp_path: Path, proxy: FaultProxy, bucket: str, until: Any
) -> tuple[Run, list[str], dict[str, float]]:
    """Run the collector against a quiet simulator; inject frames once ``until()`` holds,
    then end the connection. Returns the run, the frames sent and a metrics scrape."""
    storage = {
        "type": "s3",
        "path": str(tmp_path / "data"),
        "bucket": bucket,
        "prefix": "ssmd",
        "endpoint": proxy.url,
        "region": REGION,
    }
    servers: list[HealthServer] = []

    async def keep(server: HealthServer) -> None:
        servers.append(server)

    config = SimConfig(
        port=0, rate=0, messages=0, ending=Ending.NONE, heartbeat=0.1, allow_unsigned=True
    )
    async with SimServer(config) as sim:
        shutil.rmtree(tmp_path / "exchanges", ignore_errors=True)
        tree = make_tree(tmp_path, sim.url, storage=storage)
        task = asyncio.create_task(record(tree, environ=CREDENTIALS, during=keep, timeout=60))
        session = await sim.wait_session(timeout=30)
        await wait_until(until, "the archive to reach the awaited state")
        for i in range(300):
            await session.send_raw(json.dumps({"type": "ticker", "sid": 1, "msg": {"i": i}}))
        await wait_until(
            lambda: servers and servers[0].stats.lines_written >= len(session.sent),
            "every frame written while the archive is busy",
        )
        metrics = await scrape(servers[0].port)
    run = await task
    return run, session.sent, metrics


async def test_recording_goes_on_while_an_upload_hangs_and_a_restart_ships_it_once(
    tmp_path: Path,
) -> None:
    writer = JsonlWriter(tmp_path / "data", FEED)
    writer.write(OLD_DAY, OLD_LINES)
    writer.close()
    with moto_s3() as s3:
        bucket = s3.bucket("collector-archive")
        async with FaultProxy(s3.url) as proxy:
            # The store takes the PUT but never answers: the archive thread hangs in it.
            proxy.hold_puts = True
            run, sent, metrics = await run_collector(
                tmp_path, proxy, bucket, lambda: proxy.puts(".zst") == 1
            )
            assert run.code == ExitCode.DISCONNECTED
            assert run.data() == sent, "every frame was recorded while the upload hung"
            assert metrics[f'ssmd_upload_pending_files{{feed="{FEED}"}}'] == 1
            assert metrics[f'ssmd_upload_lag_seconds{{feed="{FEED}"}}'] >= 0
            assert metrics[f'ssmd_uploaded_files_total{{feed="{FEED}"}}'] == 0
            assert (tmp_path / "data" / OLD_DAY / f"{FEED}.jsonl.zst").exists()

            proxy.hold_puts = False
            proxy.release.set()
            journal = tmp_path / "data" / ".archive" / f"{FEED}.uploads.jsonl"
            run, _, metrics = await run_collector(
                tmp_path,
                proxy,
                bucket,
                lambda: journal.exists() and not (tmp_path / "data" / OLD_DAY).exists(),
            )
            assert metrics[f'ssmd_uploaded_files_total{{feed="{FEED}"}}'] == 1
            assert metrics[f'ssmd_upload_pending_files{{feed="{FEED}"}}'] == 0
            assert metrics[f'ssmd_upload_lag_seconds{{feed="{FEED}"}}'] == 0
        objects = s3.objects(bucket)
    key = f"ssmd/{OLD_DAY}/{FEED}.jsonl.zst"
    assert sorted(objects) == [key, key + ".manifest.json"]
    puts = {p: n for (m, p), n in proxy.forwarded.items() if m == "PUT"}
    assert list(puts.values()) == [1, 1], puts
    raw = zstandard.ZstdDecompressor().decompressobj().decompress(objects[key])
    assert raw == b"".join(OLD_LINES)
