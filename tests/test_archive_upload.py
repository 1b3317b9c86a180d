"""Uploads of sealed files to a real S3-compatible server (moto), through real faults.

The store runs in moto's server mode on loopback; a fault proxy in front of it
answers 500s, answers slowly, holds answers, or is not there at all. Each test
checks what matters: every line arrives in the bucket once, intact, and a local
file goes only after its upload was verified.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard
from deadlines import deadline, wait_until
from s3_harness import CREDENTIALS, REGION, FaultProxy, MotoS3, moto_s3

from ssmd_collector.storage.metrics import ArchiveCollector
from ssmd_collector.storage.s3 import S3Store
from ssmd_collector.storage.seal import read_manifest
from ssmd_collector.storage.settings import ArchiveSettings, S3Settings
from ssmd_collector.storage.uploader import Archiver
from ssmd_collector.writer import JsonlWriter

FEED = "kalshi"
DAY = "2026-11-27"
AFTER_DAY = dt.datetime(2026, 11, 28, 0, 2, tzinfo=dt.UTC).timestamp()
PREFIX = "ssmd/test"
DATA_KEY = f"{PREFIX}/{DAY}/kalshi.jsonl.zst"


@pytest.fixture(scope="module")
def s3() -> Iterator[MotoS3]:
    with moto_s3() as server:
        yield server


@pytest.fixture
def bucket(s3: MotoS3, request: pytest.FixtureRequest) -> str:
    name = request.node.name.lower().replace("_", "-")[:40].strip("-[]") + "-bkt"
    return s3.bucket("".join(c if c.isalnum() or c == "-" else "-" for c in name))


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def lines_for(n: int, day: str = DAY) -> list[bytes]:
    ts = [f"{day}T10:00:{i % 60:02d}.{i:06d}Z" for i in range(n)]
    return [
        f'{{"ts":"{t}","feed":"{FEED}","data":{{"n":{i}}}}}\n'.encode() for i, t in enumerate(ts)
    ]


def spool_with_day(root: Path, n: int = 2000) -> list[bytes]:
    lines = lines_for(n)
    for suffix, content in ((".jsonl", lines), (".rejected.jsonl", lines[:1])):
        w = JsonlWriter(root, FEED, suffix)
        w.write(DAY, content)
        w.close()
    return lines


def archiver(
    spool: Path,
    endpoint: str,
    bucket: str,
    clock: Clock,
    *,
    retention: float = 0,
    read_timeout: float = 10,
    **store: Any,
) -> Archiver:
    settings = ArchiveSettings(
        spool=spool,
        feed=FEED,
        s3=S3Settings(bucket, PREFIX, endpoint, REGION),
        retention_seconds=retention,
        interval_seconds=0.05,
        retry_min_seconds=0.05,
        retry_max_seconds=0.5,
    )
    assert settings.s3 is not None
    s3 = S3Store(settings.s3, CREDENTIALS, connect_timeout=1, read_timeout=read_timeout, **store)
    return Archiver(settings, s3, clock=clock)


def decompress(blob: bytes) -> list[bytes]:
    raw = zstandard.ZstdDecompressor().decompressobj().decompress(blob)
    return raw.splitlines(keepends=True)


def assert_shipped(s3: MotoS3, bucket: str, lines: list[bytes]) -> None:
    objects = s3.objects(bucket)
    assert sorted(objects) == [
        f"{PREFIX}/{DAY}/kalshi.jsonl.zst",
        f"{PREFIX}/{DAY}/kalshi.jsonl.zst.manifest.json",
        f"{PREFIX}/{DAY}/kalshi.rejected.jsonl.zst",
        f"{PREFIX}/{DAY}/kalshi.rejected.jsonl.zst.manifest.json",
    ]
    assert decompress(objects[DATA_KEY]) == lines
    manifest = json.loads(objects[DATA_KEY + ".manifest.json"])
    assert manifest["lines"] == len(lines)
    assert manifest["first_ts"] == f"{DAY}T10:00:00.000000Z"


def journal_keys(spool: Path) -> list[str]:
    path = spool / ".archive" / f"{FEED}.uploads.jsonl"
    if not path.exists():
        return []
    return sorted(json.loads(line)["key"] for line in path.read_text().splitlines())


def metric(collector: ArchiveCollector, name: str) -> float:
    for family in collector.collect():
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"no metric {name}")


async def test_sealed_files_are_uploaded_verified_then_removed(
    tmp_path: Path, s3: MotoS3, bucket: str
) -> None:
    lines = spool_with_day(tmp_path)
    async with FaultProxy(s3.url) as proxy:
        a = archiver(tmp_path, proxy.url, bucket, Clock(AFTER_DAY))
        await asyncio.to_thread(a.run_once)
        assert_shipped(s3, bucket, lines)
        assert not (tmp_path / DAY).exists(), "verified uploads are removed locally"
        assert journal_keys(tmp_path) == [DATA_KEY, f"{PREFIX}/{DAY}/kalshi.rejected.jsonl.zst"]
        assert metric(a.collector, "ssmd_uploaded_files_total") == 2
        assert metric(a.collector, "ssmd_uploaded_bytes_total") > 0
        assert metric(a.collector, "ssmd_upload_pending_files") == 0
        assert metric(a.collector, "ssmd_upload_lag_seconds") == 0
        assert metric(a.collector, "ssmd_sealed_files_total") == 2
        await asyncio.to_thread(a.run_once)
    assert proxy.puts("kalshi.jsonl.zst") == 2  # the data file and its manifest, once each


async def test_lines_after_an_upload_go_to_a_new_object_never_over_the_old_one(
    tmp_path: Path, s3: MotoS3, bucket: str
) -> None:
    lines = spool_with_day(tmp_path)
    async with FaultProxy(s3.url) as proxy:
        a = archiver(tmp_path, proxy.url, bucket, Clock(AFTER_DAY))
        await asyncio.to_thread(a.run_once)
        assert not (tmp_path / DAY).exists()
        # A line dated yesterday after the day was shipped (a clock step back).
        late = lines_for(1)
        w = JsonlWriter(tmp_path, FEED)
        w.write(DAY, late)
        w.close()
        await asyncio.to_thread(a.run_once)
    objects = s3.objects(bucket)
    assert decompress(objects[DATA_KEY]) == lines
    assert decompress(objects[f"{PREFIX}/{DAY}/kalshi.jsonl.2.zst"]) == late
    assert proxy.puts(DATA_KEY) == 2  # the first object and its manifest, once each


async def test_a_different_object_at_the_key_is_never_overwritten(
    tmp_path: Path, s3: MotoS3, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    spool_with_day(tmp_path)
    s3.client().put_object(Bucket=bucket, Key=DATA_KEY, Body=b"someone else's")
    async with FaultProxy(s3.url) as proxy:
        a = archiver(tmp_path, proxy.url, bucket, Clock(AFTER_DAY))
        a.start()
        try:
            await wait_until(
                lambda: a.stats.upload_failures >= 2, "refused uploads", seen=lambda: a.stats
            )
        finally:
            a.stop()
    assert s3.objects(bucket)[DATA_KEY] == b"someone else's"
    assert (tmp_path / DAY / "kalshi.jsonl.zst").exists()
    assert f"s3://{bucket}/{DATA_KEY} already holds a different object" in caplog.text


async def test_a_corrupted_copy_of_ours_is_replaced(
    tmp_path: Path, s3: MotoS3, bucket: str
) -> None:
    lines = spool_with_day(tmp_path)
    async with FaultProxy(s3.url) as proxy:
        a = archiver(tmp_path, proxy.url, bucket, Clock(AFTER_DAY))
        await asyncio.to_thread(a.seal_completed)
        sealed_sha = read_manifest(tmp_path / DAY / "kalshi.jsonl.zst").sealed_sha256
        s3.client().put_object(
            Bucket=bucket, Key=DATA_KEY, Body=b"garbled", Metadata={"sha256": sealed_sha}
        )
        await asyncio.to_thread(a.run_once)
    assert_shipped(s3, bucket, lines)


async def test_retention_keeps_uploaded_files_until_it_has_passed(
    tmp_path: Path, s3: MotoS3, bucket: str
) -> None:
    lines = spool_with_day(tmp_path)
    clock = Clock(AFTER_DAY)
    async with FaultProxy(s3.url) as proxy:
        a = archiver(tmp_path, proxy.url, bucket, clock, retention=3600)
        await asyncio.to_thread(a.run_once)
        assert_shipped(s3, bucket, lines)
        assert (tmp_path / DAY / "kalshi.jsonl.zst").exists()
        clock.now += 3599
        await asyncio.to_thread(a.run_once)
        assert (tmp_path / DAY / "kalshi.jsonl.zst").exists()
        clock.now += 2
        await asyncio.to_thread(a.run_once)
        assert not (tmp_path / DAY).exists()
    assert proxy.puts("kalshi.jsonl.zst") == 2


async def test_a_store_that_is_down_keeps_files_reports_lag_and_catches_up(
    tmp_path: Path, s3: MotoS3, bucket: str, free_port: int
) -> None:
    lines = spool_with_day(tmp_path)
    clock = Clock(AFTER_DAY)
    a = archiver(tmp_path, f"http://127.0.0.1:{free_port}", bucket, clock)
    a.start()
    try:
        await wait_until(
            lambda: a.stats.upload_failures >= 2,
            "failed uploads while nothing listens",
            seen=lambda: a.stats,
        )
        clock.now += 300
        assert metric(a.collector, "ssmd_upload_lag_seconds") == 300
        assert metric(a.collector, "ssmd_upload_pending_files") == 2
        assert metric(a.collector, "ssmd_upload_failures_total") >= 2
        assert (tmp_path / DAY / "kalshi.jsonl.zst").exists()
        assert journal_keys(tmp_path) == []
        async with FaultProxy(s3.url, port=free_port) as proxy:
            await wait_until(
                lambda: a.stats.uploaded_files == 2,
                "uploads once the store is up",
                seen=lambda: a.stats,
            )
    finally:
        a.stop()
    assert_shipped(s3, bucket, lines)
    assert proxy.puts("kalshi.jsonl.zst") == 2
    assert metric(a.collector, "ssmd_upload_lag_seconds") == 0


async def test_500s_are_retried_and_nothing_is_sent_twice(
    tmp_path: Path, s3: MotoS3, bucket: str
) -> None:
    lines = spool_with_day(tmp_path)
    async with FaultProxy(s3.url) as proxy:
        proxy.fail_next = 9  # more than boto3's own retries (3 attempts) absorb
        a = archiver(tmp_path, proxy.url, bucket, Clock(AFTER_DAY))
        a.start()
        try:
            await wait_until(
                lambda: a.stats.uploaded_files == 2, "uploads after the 500s", seen=lambda: a.stats
            )
        finally:
            a.stop()
    assert proxy.answered_500 == 9
    assert a.stats.upload_failures >= 1
    assert_shipped(s3, bucket, lines)
    assert proxy.puts("kalshi.jsonl.zst") == 2
    assert proxy.puts("kalshi.rejected.jsonl.zst") == 2


@pytest.mark.parametrize(("delay", "read_timeout"), [(0.2, 10.0), (2.0, 0.5)])
async def test_a_slow_store_gets_everything_in_the_end(
    tmp_path: Path, s3: MotoS3, bucket: str, delay: float, read_timeout: float
) -> None:
    lines = spool_with_day(tmp_path, 200)
    async with FaultProxy(s3.url) as proxy:
        proxy.delay = delay
        a = archiver(tmp_path, proxy.url, bucket, Clock(AFTER_DAY), read_timeout=read_timeout)
        a.start()
        try:
            if delay > read_timeout:
                await wait_until(
                    lambda: a.stats.upload_failures >= 1, "a timed-out upload", seen=lambda: a.stats
                )
                assert (tmp_path / DAY / "kalshi.jsonl.zst").exists()
                proxy.delay = 0
            await wait_until(
                lambda: a.stats.uploaded_files == 2,
                "uploads through a slow store",
                timeout=60,
                seen=lambda: a.stats,
            )
        finally:
            a.stop()
    assert_shipped(s3, bucket, lines)
    assert journal_keys(tmp_path) == [DATA_KEY, f"{PREFIX}/{DAY}/kalshi.rejected.jsonl.zst"]
    assert not (tmp_path / DAY).exists()


async def test_a_large_file_goes_up_in_parts_and_a_failed_part_aborts_and_retries(
    tmp_path: Path, s3: MotoS3, bucket: str
) -> None:
    # Random payloads barely compress: the sealed file spans three 5 MiB parts.
    lines = [
        b'{"ts":"%sT10:00:00.%06dZ","feed":"kalshi","data":"%s"}\n'
        % (DAY.encode(), i, base64.b64encode(os.urandom(600)))
        for i in range(20_000)
    ]
    w = JsonlWriter(tmp_path, FEED)
    w.write(DAY, lines)
    w.close()
    async with FaultProxy(s3.url) as proxy:
        # Part 2 fails more often than boto3 retries it within one pass.
        proxy.fail_where, proxy.fail_next = "partNumber=2", 6
        a = archiver(
            tmp_path,
            proxy.url,
            bucket,
            Clock(AFTER_DAY),
            multipart_above=6 << 20,
            part_bytes=5 << 20,
        )
        a.start()
        try:
            await wait_until(
                lambda: a.stats.uploaded_files == 1, "a multipart upload", seen=lambda: a.stats
            )
        finally:
            a.stop()
    assert a.stats.upload_failures >= 1
    aborted = [p for (m, p), n in proxy.forwarded.items() if m == "DELETE"]
    assert aborted, "the failed multipart upload was aborted"
    assert s3.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert decompress(s3.objects(bucket)[DATA_KEY]) == lines
    assert proxy.puts("partNumber=3") == 1, "parts of the successful upload went once"


CHILD = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from ssmd_collector.logs import setup_logging
    from ssmd_collector.metadata import Storage
    from ssmd_collector.storage import open_archive

    setup_logging("json", "debug")

    spool, endpoint, bucket = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    storage = Storage("s3", str(spool), bucket, "ssmd/test", endpoint, "us-east-1")
    archive = open_archive(storage, spool, "kalshi", os.environ)
    archive.start()
    time.sleep(3600)
    """
)


async def test_a_restart_mid_upload_sends_nothing_twice(
    tmp_path: Path, s3: MotoS3, bucket: str
) -> None:
    """Killed after the store took the PUT but before the answer: the next run finds
    the object whole (HEAD + checksum) and records it without sending it again."""
    lines = spool_with_day(tmp_path)
    env = {**os.environ, **CREDENTIALS}
    async with FaultProxy(s3.url) as proxy:
        proxy.hold_puts = True
        args = [sys.executable, "-c", CHILD, str(tmp_path), proxy.url, bucket]
        logs = [tmp_path / "first.log", tmp_path / "second.log"]
        with logs[0].open("wb") as err:
            first = subprocess.Popen(args, env=env, stderr=err)
        try:
            await wait_until(
                lambda: proxy.puts(".zst") >= 1 or first.poll() is not None,
                "a PUT that reached the store",
            )
            assert first.poll() is None, logs[0].read_text()
        finally:
            first.kill()
            first.wait(timeout=deadline(30))
        assert first.returncode == -signal.SIGKILL
        assert journal_keys(tmp_path) == []
        assert (tmp_path / DAY / "kalshi.jsonl.zst").exists(), "not removed: never verified"
        held = dict(proxy.forwarded)

        proxy.hold_puts = False
        proxy.release.set()
        with logs[1].open("wb") as err:
            second = subprocess.Popen(args, env=env, stderr=err)
        try:
            await wait_until(
                lambda: len(journal_keys(tmp_path)) == 2 and not (tmp_path / DAY).exists(),
                "the restarted archive to finish",
                seen=lambda: (journal_keys(tmp_path), proxy.forwarded),
            )
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=deadline(30))
    assert_shipped(s3, bucket, lines)
    # At debug level, nothing that signs a request was logged.
    logged = logs[0].read_bytes() + logs[1].read_bytes()
    assert b"found already uploaded s3://" in logged, logged[-2000:]
    for secret in (*CREDENTIALS.values(), "Signature=", "Authorization"):
        assert secret.encode() not in logged, secret
    # Every object was PUT exactly once, across both runs.
    puts = {p: n for (m, p), n in proxy.forwarded.items() if m == "PUT"}
    assert set(puts.values()) == {1}, (held, puts)
    assert len(puts) == 4
