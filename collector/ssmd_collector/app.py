"""The collector process: metadata -> keys -> HTTP -> connect -> record -> exit code.

Every way out maps to one ``ExitCode`` and a log line saying why. Whatever the
exit, lines already received are flushed and fsynced first.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import signal
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .exitcodes import ExitCode
from .health import HealthServer
from .kalshi import AuthRejected, Credentials, Disconnected, KalshiConnector, SubscribeRejected
from .keys import EnvKeyResolver, MissingKeys, read_pem, resolve_keys
from .metadata import MetadataInvalid, Resolved, read_directory, resolve_environment
from .metrics import ErrorType, Stats, registry_for
from .runner import Runner
from .signing import KeyFormatError, load_private_key
from .storage import ArchiveConfigInvalid, open_archive
from .writer import JsonlWriter, WriteFailed

log = logging.getLogger("ssmd.collector")


class ConfigError(Exception):
    """Configuration the process cannot run with; the message says what to fix."""


@dataclass
class Settings:
    env: str
    config_dir: Path
    data_dir: Path | None = None
    http_host: str = "0.0.0.0"  # noqa: S104 - a pod's probes and scrapes come from outside
    port: int = 8080
    silence_timeout: float = 30.0
    flush_interval: float = 0.001
    subscribe_batch_size: int = 256
    max_frame_bytes: int = 8 << 20
    max_buffer_bytes: int = 32 << 20
    ca_file: Path | None = None


@dataclass
class Plan:
    """What the metadata and environment resolve to before anything connects."""

    resolved: Resolved
    credentials: Credentials | None
    data_dir: Path


def _check_numbers(settings: Settings) -> None:
    limits = [
        ("--subscribe-batch-size", settings.subscribe_batch_size, 1),
        ("--silence-timeout", settings.silence_timeout, 0.1),
        ("--max-frame-bytes", settings.max_frame_bytes, 1024),
        ("max_buffer_bytes", settings.max_buffer_bytes, 1024),
        ("--flush-interval", settings.flush_interval, 0),
    ]
    bad = [
        f"{flag} must be at least {low}, found {value}"
        for flag, value, low in limits
        if not value >= low
    ]
    if bad:
        raise ConfigError("; ".join(bad))


def plan(settings: Settings, environ: Mapping[str, str], today: dt.date) -> Plan:
    """Validate everything offline; raise ``ConfigError`` naming what is wrong."""
    _check_numbers(settings)
    try:
        files = read_directory(settings.config_dir)
        resolved = resolve_environment(files, settings.env, today)
    except MetadataInvalid as exc:
        raise ConfigError(f"metadata in {settings.config_dir}: {exc}") from None
    if resolved.feed.type != "websocket":
        raise ConfigError(
            f"{resolved.feed.file}: type: expected websocket for ssmd-connector; "
            f"found {resolved.feed.type!r}"
        )
    try:
        keys = resolve_keys(resolved.environment.keys, EnvKeyResolver(environ))
    except MissingKeys as exc:
        raise ConfigError(f"{resolved.environment.file}: keys: {exc}") from None
    credentials = None
    for name, fields in keys.items():
        if "api_key" in fields and "private_key" in fields:
            try:
                pem = read_pem(fields["private_key"])
                load_private_key(pem)
            except (MissingKeys, KeyFormatError) as exc:
                raise ConfigError(f"key '{name}' field private_key: {exc}") from None
            credentials = Credentials(fields["api_key"], pem)
            break
    data_dir = settings.data_dir or Path(resolved.environment.storage.path)
    return Plan(resolved, credentials, data_dir)


async def run(
    settings: Settings,
    *,
    environ: Mapping[str, str] | None = None,
    clock_ns: Callable[[], int] = time.time_ns,
    on_started: Callable[[HealthServer], None] | None = None,
) -> ExitCode:
    environ = os.environ if environ is None else environ
    today = dt.datetime.fromtimestamp(clock_ns() / 1e9, dt.UTC).date()
    try:
        p = plan(settings, environ, today)
        ssl_context = _ssl_context(settings.ca_file)
        # The archive (sealing, S3 uploads) runs beside the data path, in its own thread.
        archive = open_archive(
            p.resolved.environment.storage, p.data_dir, p.resolved.feed.name, environ
        )
    except (ConfigError, ArchiveConfigInvalid) as exc:
        log.error("configuration error: %s", exc)
        return ExitCode.CONFIG_ERROR
    r = p.resolved
    feed = r.feed.name
    log.info(
        "environment %s: feed %s %s at %s, schema %s:%s, channels %s, writing to %s",
        r.environment.name,
        feed,
        r.feed_version.version,
        r.feed_version.endpoint,
        r.schema.name,
        r.schema_version.version,
        ", ".join(sorted(r.environment.channels)),
        p.data_dir,
    )

    stats = Stats(feed=feed)
    server = HealthServer(
        stats, registry_for(stats, archive.collectors), settings.http_host, settings.port
    )
    try:
        await server.start()
    except OSError as exc:
        log.error(
            "configuration error: cannot serve HTTP on %s:%d: %s",
            settings.http_host,
            settings.port,
            exc.strerror,
        )
        return ExitCode.CONFIG_ERROR
    if on_started is not None:
        on_started(server)
    archive.start()

    data = JsonlWriter(p.data_dir, feed)
    rejects = JsonlWriter(p.data_dir, feed, ".rejected.jsonl")
    connector = KalshiConnector(
        r.feed_version.endpoint,
        r.environment.subscriptions,
        stats,
        credentials=p.credentials,
        ssl_context=ssl_context,
        batch_size=settings.subscribe_batch_size,
        silence_timeout=settings.silence_timeout,
        max_frame_bytes=settings.max_frame_bytes,
        clock_ns=clock_ns,
    )
    runner = Runner(
        connector,
        data,
        rejects,
        stats,
        clock_ns=clock_ns,
        flush_interval=settings.flush_interval,
        max_buffer_bytes=settings.max_buffer_bytes,
    )
    work = asyncio.create_task(_record(connector, runner, stats), name="record")
    stop_signal: list[str] = []

    def stop(name: str) -> None:
        if not stop_signal:
            log.info("%s received: flushing and stopping", name)
        stop_signal.append(name)
        work.cancel()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig.name)
    try:
        try:
            code = await work
        except asyncio.CancelledError:
            if not stop_signal:
                raise
            code = ExitCode.CLEAN_STOP
        code = await _close(connector, data, rejects, stats, code)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await server.stop()
        await archive.stop()
    log.info(
        "exiting with %d (%s) after %d messages, %d lines written",
        code,
        code.name,
        stats.messages,
        stats.lines_written,
    )
    return code


async def _record(connector: KalshiConnector, runner: Runner, stats: Stats) -> ExitCode:
    try:
        await connector.connect()
    except AuthRejected as exc:
        stats.errors[ErrorType.AUTH_REJECTED] += 1
        log.error("authentication rejected: %s", exc)
        return ExitCode.AUTH_REJECTED
    except SubscribeRejected as exc:
        log.error("subscription rejected: %s", exc)
        return await _archive_what_was_read(connector, runner, ExitCode.SUBSCRIBE_REJECTED)
    except Disconnected as exc:
        stats.errors[ErrorType.DISCONNECT] += 1
        log.error("disconnected: %s", exc)
        return await _archive_what_was_read(connector, runner, ExitCode.DISCONNECTED)
    log.info("connected and subscribed; recording")
    try:
        await runner.run()
    except WriteFailed as exc:
        log.error("storage failed: %s", exc)
        return ExitCode.WRITE_FAILED
    stats.errors[ErrorType.DISCONNECT] += 1
    log.error("disconnected: %s", connector.disconnect_reason or "stream ended")
    return ExitCode.DISCONNECTED


async def _archive_what_was_read(
    connector: KalshiConnector, runner: Runner, code: ExitCode
) -> ExitCode:
    """Frames read while subscribing (answers, the error itself) are messages too.

    With the socket closed, ``messages()`` yields what was already read and ends,
    so the normal data path archives them.
    """
    with contextlib.suppress(Exception):
        await asyncio.wait_for(connector.close(), 5)
    try:
        await runner.run()
    except WriteFailed as exc:
        log.error("storage failed: %s", exc)
        return ExitCode.WRITE_FAILED
    return code


async def _close(
    connector: KalshiConnector,
    data: JsonlWriter,
    rejects: JsonlWriter,
    stats: Stats,
    code: ExitCode,
) -> ExitCode:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(connector.close(), 5)
    stats.connected = stats.subscribed = False
    for writer in (data, rejects):
        try:
            await asyncio.to_thread(writer.close)
        except WriteFailed as exc:
            stats.errors[ErrorType.WRITE_FAILED] += 1
            log.error("storage failed on close: %s", exc)
            code = ExitCode.WRITE_FAILED
    return code


def _ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """System trust store, plus ``ca_file`` (e.g. an in-cluster simulator's CA)."""
    context = ssl.create_default_context()
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"--ca-file {ca_file}: {exc}") from None
    return context
