"""The archive's cost per message: sealing (zstd + manifest) and uploading to S3.

A day file of the benchmark's own stream (the simulator's frames, framed exactly as
the collector frames them) is sealed and then uploaded by the collector's archive
code (``Archiver``) to moto's S3 server on loopback, and the object is read back and
checked against the plain file. The work runs in this process's main thread pinned
to the receiver core, with moto in its own process on the sender core; CPU is that
thread's own (``time.thread_time``), so moto's side is not counted. Per message:
the CPU of sealing or uploading divided by the lines in the file, which sits next
to the collector's own CPU per message in the report.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import zstandard

from bench.processes import pinned, python_module
from bench.workload import FEED, Workload, subscribe_command
from ssmd_collector.framing import LineFramer, Timestamper
from ssmd_collector.sim.market import Feed
from ssmd_collector.sim.protocol import Commands
from ssmd_collector.storage.s3 import S3Store
from ssmd_collector.storage.settings import ArchiveSettings, S3Settings
from ssmd_collector.storage.uploader import Archiver
from ssmd_collector.writer import JsonlWriter

DAY_START_NS = 1_735_689_600 * 10**9  # 2025-01-01T00:00:00Z: a day long over
BUCKET = "ssmd-bench"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}


@dataclass
class ArchiveResult:
    messages: int
    plain_bytes: int
    sealed_bytes: int
    seal_wall_s: float
    seal_cpu_s: float
    upload_wall_s: float
    upload_cpu_s: float
    complete: bool
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.plain_bytes / max(self.sealed_bytes, 1)

    @property
    def seal_mb_per_s(self) -> float:
        """Plain MB sealed per second of wall time."""
        return self.plain_bytes / 1e6 / max(self.seal_wall_s, 1e-9)

    @property
    def upload_mb_per_s(self) -> float:
        """Sealed MB uploaded (and verified) per second of wall time."""
        return self.sealed_bytes / 1e6 / max(self.upload_wall_s, 1e-9)

    @property
    def seal_us_per_msg(self) -> float:
        return self.seal_cpu_s / max(self.messages, 1) * 1e6

    @property
    def upload_us_per_msg(self) -> float:
        return self.upload_cpu_s / max(self.messages, 1) * 1e6


def write_day(root: Path, workload: Workload) -> int:
    """The day file a collector would have written for ``workload``; returns its lines."""
    feed = Feed(seed=workload.seed, markets=workload.markets)
    answers = Commands(feed, authenticated=True).handle(
        json.dumps(subscribe_command(workload.markets))
    )
    framer, stamp = LineFramer(FEED), Timestamper()
    writer = JsonlWriter(root, FEED)
    ns, remaining, lines = DAY_START_NS, workload.messages, 0
    batch = [a.encode() for a in answers]
    while batch:
        out = []
        for raw in batch:
            ns += 50_000  # 20k msg/s of receive times
            day, ts = stamp(ns)
            out.append(framer.line(ts, raw))
        writer.write(day, out)
        lines += len(out)
        n = min(4096, remaining)
        remaining -= n
        batch = [f.encode() for f in feed.take(n)] if n else []
    writer.close()
    return lines


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def moto_server(core: int | None, log: Path) -> Iterator[str]:
    port = _free_port()
    argv = pinned(core, python_module("moto.server", "-H", "127.0.0.1", "-p", str(port)))
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        end = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"moto server did not start; see {log}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(30)


def measure_archive(
    workload: Workload, work: Path, receiver: int | None, sender: int | None
) -> ArchiveResult:
    spool = work / "spool"
    lines = write_day(spool, workload)
    plain = spool / "2025-01-01" / f"{FEED}.jsonl"
    plain_bytes = plain.stat().st_size
    plain_sha = hashlib.sha256(plain.read_bytes()).hexdigest()
    before = os.sched_getaffinity(0)
    with moto_server(sender, work / "moto.log") as url:
        boto3.client("s3", endpoint_url=url, region_name="us-east-1", **_keys()).create_bucket(
            Bucket=BUCKET
        )
        settings = ArchiveSettings(spool, FEED, S3Settings(BUCKET, "bench", url, "us-east-1"))
        archiver = Archiver(settings, S3Store(settings.s3, CREDENTIALS))  # type: ignore[arg-type]
        if receiver is not None:
            os.sched_setaffinity(0, {receiver})
        try:
            wall, cpu = time.perf_counter(), time.thread_time()
            archiver.seal_completed()
            seal_wall, seal_cpu = time.perf_counter() - wall, time.thread_time() - cpu
            wall, cpu = time.perf_counter(), time.thread_time()
            archiver.run_once()
            upload_wall, upload_cpu = time.perf_counter() - wall, time.thread_time() - cpu
        finally:
            os.sched_setaffinity(0, before)
        key = settings.s3.key("2025-01-01", f"{FEED}.jsonl.zst")  # type: ignore[union-attr]
        client = boto3.client("s3", endpoint_url=url, region_name="us-east-1", **_keys())
        blob = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    restored = zstandard.ZstdDecompressor().decompressobj().decompress(blob)
    problems = []
    if hashlib.sha256(restored).hexdigest() != plain_sha:
        problems.append("the uploaded object does not decompress to the day file")
    if plain.exists():
        problems.append("the plain file is still there after a verified upload")
    return ArchiveResult(
        messages=lines,
        plain_bytes=plain_bytes,
        sealed_bytes=len(blob),
        seal_wall_s=seal_wall,
        seal_cpu_s=seal_cpu,
        upload_wall_s=upload_wall,
        upload_cpu_s=upload_cpu,
        complete=not problems,
        note="; ".join(problems),
    )


def _keys() -> dict[str, str]:
    return {
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    }


def render(a: ArchiveResult, collector_us_per_msg: float | None) -> str:
    """Report lines: the archive's cost per message next to the collector's own."""
    beside = (
        f" (collector itself: {collector_us_per_msg:.2f} us/msg; archive adds "
        f"{(a.seal_us_per_msg + a.upload_us_per_msg) / collector_us_per_msg:.0%})"
        if collector_us_per_msg
        else ""
    )
    return (
        f"archive: {a.messages:,} lines, {a.plain_bytes / 1e6:.1f} MB -> "
        f"{a.sealed_bytes / 1e6:.1f} MB zstd ({a.ratio:.1f}:1)"
        + ("" if a.complete else f"; INCOMPLETE: {a.note}")
        + f"\n  seal   {a.seal_mb_per_s:7.1f} MB/s plain, {a.seal_us_per_msg:.2f} CPU us/msg"
        + f"\n  upload {a.upload_mb_per_s:7.1f} MB/s sealed to moto on loopback (+ verify), "
        f"{a.upload_us_per_msg:.2f} CPU us/msg"
        + f"\n  total  {a.seal_us_per_msg + a.upload_us_per_msg:.2f} CPU us/msg{beside}"
    )
