"""The collector process: metadata -> keys -> HTTP -> connect -> record -> exit code.

Every way out maps to one ``ExitCode`` and a log line saying why, and to a line in
the events file. Whatever the exit, lines already received are flushed and fsynced
first. The exchange is a plug-in chosen by the feed (``connectors``); nothing here
knows Kalshi.
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

from . import __version__
from .connectors import (
    AuthRejected,
    Connector,
    ConnectorOptions,
    CredentialsInvalid,
    Disconnected,
    Exchange,
    SubscribeRejected,
    exchange_for,
)
from .events import EventLog
from .exitcodes import ExitCode
from .health import HealthServer
from .keys import EnvKeyResolver, MissingKeys, env_var_names, resolve_keys
from .metadata import MetadataInvalid, Resolved, read_directory, resolve_environment
from .metrics import ErrorType, Stats, registry_for
from .runner import Runner
from .settings import Settings
from .storage import ArchiveConfigInvalid, open_archive
from .writer import JsonlWriter, WriteFailed

__all__ = ["ConfigError", "Plan", "Settings", "plan", "run"]

log = logging.getLogger("ssmd.collector")


class ConfigError(Exception):
    """Configuration the process cannot run with; the message says what to fix."""


@dataclass
class Plan:
    """What the metadata and environment resolve to before anything connects."""

    resolved: Resolved
    exchange: Exchange
    credentials: object | None
    data_dir: Path


def plan(settings: Settings, environ: Mapping[str, str], today: dt.date) -> Plan:
    """Validate everything offline; raise ``ConfigError`` naming what is wrong."""
    bad = settings.problems()
    if bad:
        raise ConfigError("; ".join(bad))
    try:
        files = read_directory(settings.config_dir)
        resolved = resolve_environment(files, settings.env, today)
    except MetadataInvalid as exc:
        raise ConfigError(f"metadata in {settings.config_dir}: {exc}") from None
    feed = resolved.feed
    if feed.type != "websocket":
        raise ConfigError(
            f"{feed.file}: type: expected websocket for ssmd-connector; found {feed.type!r}"
        )
    exchange = exchange_for(feed.exchange)
    assert exchange is not None  # resolve_environment refuses unknown exchanges
    try:
        keys = resolve_keys(resolved.environment.keys, EnvKeyResolver(environ))
        credentials = exchange.load_credentials(keys)
    except MissingKeys as exc:
        raise ConfigError(f"{resolved.environment.file}: keys: {exc}") from None
    except CredentialsInvalid as exc:
        raise ConfigError(
            f"{resolved.environment.file}: keys: {exc}{_variable_of(resolved, exc)}"
        ) from None
    data_dir = settings.data_dir or Path(resolved.environment.storage.path)
    return Plan(resolved, exchange, credentials, data_dir)


def _variable_of(resolved: Resolved, exc: CredentialsInvalid) -> str:
    """`` (variable NAME)`` for the field a key problem is about, so the user knows
    which variable to fix (never its value)."""
    for spec in resolved.environment.keys:
        if spec.name == exc.key and exc.field in spec.fields:
            names = env_var_names(spec.name, spec.fields, spec.source)
            return f" (variable {names[exc.field]})"
    return ""


def connector_options(settings: Settings) -> ConnectorOptions:
    return ConnectorOptions(
        silence_timeout=settings.silence_timeout,
        max_frame_bytes=settings.max_frame_bytes,
        subscribe_batch_size=settings.subscribe_batch_size,
        answer_timeout=settings.answer_timeout,
        snapshot_timeout=settings.snapshot_timeout,
        max_deaths=settings.max_deaths,
        death_window=settings.death_window,
    )


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
        "environment %s: feed %s %s (%s) at %s, schema %s:%s, channels %s, writing to %s",
        r.environment.name,
        feed,
        r.feed_version.version,
        p.exchange.name,
        r.feed_version.endpoint,
        r.schema.name,
        r.schema_version.version,
        ", ".join(sorted(r.environment.channels)),
        p.data_dir,
    )

    events = EventLog(p.data_dir, feed, clock_ns=clock_ns)
    connector = p.exchange.connector(
        r,
        p.credentials,
        connector_options(settings),
        events,
        ssl_context=ssl_context,
        clock_ns=clock_ns,
    )
    stats = Stats(feed=feed)
    server = HealthServer(
        stats,
        connector.metrics,
        registry_for(stats, connector.metrics, archive.collectors),
        settings.http_host,
        settings.port,
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
    events.record(
        "start",
        version=__version__,
        environment=r.environment.name,
        exchange=p.exchange.name,
        feed_version=r.feed_version.version,
        endpoint=r.feed_version.endpoint,
        schema=f"{r.schema.name}:{r.schema_version.version}",
        pid=os.getpid(),
    )
    archive.start()

    data = JsonlWriter(p.data_dir, feed)
    rejects = JsonlWriter(p.data_dir, feed, ".rejected.jsonl")
    runner = Runner(
        connector,
        data,
        rejects,
        stats,
        clock_ns=clock_ns,
        flush_interval=settings.flush_interval,
        max_buffer_bytes=settings.max_buffer_bytes,
    )
    work = asyncio.create_task(_record(connector, runner), name="record")
    stop_signal: list[str] = []

    def stop(name: str) -> None:
        if not stop_signal:
            log.info("%s received: flushing and stopping", name)
        stop_signal.append(name)
        work.cancel()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig.name)
    code, reason = ExitCode.DISCONNECTED, "unexpected error"
    try:
        try:
            code, reason = await work
        except asyncio.CancelledError:
            if not stop_signal:
                raise
            code, reason = ExitCode.CLEAN_STOP, f"{stop_signal[0]} received"
        if code is ExitCode.DISCONNECTED:
            events.record("disconnected", reason=reason)
        code = await _close(connector, (data, rejects), stats, code)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await server.stop()
        events.record("stop", exit_code=int(code), exit=code.name, reason=reason)
        with contextlib.suppress(WriteFailed):
            await asyncio.to_thread(events.close)
        await archive.stop()
    log.info(
        "exiting with %d (%s) after %d messages, %d lines written",
        code,
        code.name,
        stats.messages,
        stats.lines_written,
    )
    return code


async def _record(connector: Connector, runner: Runner) -> tuple[ExitCode, str]:
    """Connect and record until the stream ends: the exit code and why."""
    errors = connector.metrics.errors
    try:
        await connector.connect()
    except AuthRejected as exc:
        log.error("authentication rejected: %s", exc)
        return ExitCode.AUTH_REJECTED, str(exc)
    except SubscribeRejected as exc:
        log.error("subscription rejected: %s", exc)
        code = await _archive_what_was_read(connector, runner, ExitCode.SUBSCRIBE_REJECTED)
        return code, str(exc)
    except Disconnected as exc:
        errors[ErrorType.DISCONNECT] += 1
        log.error("disconnected: %s", exc)
        return await _archive_what_was_read(connector, runner, ExitCode.DISCONNECTED), str(exc)
    log.info("connected and subscribed; recording")
    try:
        await runner.run()
    except WriteFailed as exc:
        log.error("storage failed: %s", exc)
        return ExitCode.WRITE_FAILED, str(exc)
    except SubscribeRejected as exc:
        log.error("subscription failed: %s", exc)
        return ExitCode.SUBSCRIBE_REJECTED, str(exc)
    errors[ErrorType.DISCONNECT] += 1
    reason = connector.disconnect_reason or "stream ended"
    log.error("disconnected: %s", reason)
    return ExitCode.DISCONNECTED, reason


async def _archive_what_was_read(connector: Connector, runner: Runner, code: ExitCode) -> ExitCode:
    """Frames read while subscribing (answers, the error itself) are messages too.

    With the socket closed, ``batches()`` yields what was already read and ends,
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
    connector: Connector,
    writers: tuple[JsonlWriter, ...],
    stats: Stats,
    code: ExitCode,
) -> ExitCode:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(connector.close(), 5)
    for writer in writers:
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
