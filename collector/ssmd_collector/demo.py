"""``ssmd demo``: the built-in simulator and a collector in one process, for a first look.

Credential-free for the user, yet signed like production: the demo makes a throwaway
Ed25519 key pair, starts the simulator trusting its public half, and hands the private
half and key id to the collector through the variables the environment's ``api_key``
key is read from (only in the environment passed to the collector, never the process's).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ed25519

from .app import ConfigError, Settings, plan, run
from .connectors.kalshi import signing
from .exitcodes import ExitCode
from .health import HealthServer
from .keys import env_var_names
from .metadata import KeySpec
from .sim import SimConfig, SimServer

log = logging.getLogger("ssmd.demo")

DEMO_MARKETS = 200
"""Markets the demo's simulator lists (REST) and streams."""
DEMO_LIFE_INTERVAL = 10.0
"""Seconds between a market listed and one settled: the demo's universe lives."""

DEMO_KEY_ID = "ssmd-demo"
"""The KALSHI-ACCESS-KEY of the throwaway key pair (the only one the demo's sim accepts)."""


def _api_key(keys: tuple[KeySpec, ...]) -> KeySpec | None:
    """The first key with the fields the connector signs with, as ``app.plan`` picks it."""
    return next((k for k in keys if {"api_key", "private_key"} <= set(k.fields)), None)


async def run_demo(
    config_dir: Path, env: str, data_dir: Path, port: int, rate: float, seed: int
) -> ExitCode:
    settings = Settings(
        env=env, config_dir=config_dir, data_dir=data_dir, port=port, http_host="127.0.0.1"
    )
    try:
        p = plan(settings, {}, dt.datetime.now(dt.UTC).date())
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        return ExitCode.CONFIG_ERROR
    url = urlsplit(p.resolved.feed_version.endpoint)
    config = SimConfig(
        host=url.hostname or "127.0.0.1",
        port=url.port or 8765,
        path=url.path,
        rate=rate,
        seed=seed,
        markets=DEMO_MARKETS,
        life_interval=DEMO_LIFE_INTERVAL,
    )
    environ: dict[str, str] = {}
    spec = _api_key(p.resolved.environment.keys)
    if spec is None:
        log.warning(
            "environment %s declares no api_key key: the simulator accepts unsigned connections",
            env,
        )
        config.allow_unsigned = True
    else:
        key = ed25519.Ed25519PrivateKey.generate()
        names = env_var_names(spec.name, spec.fields, spec.source)
        environ = {
            names["api_key"]: DEMO_KEY_ID,
            names["private_key"]: signing.private_pem(key).decode(),
        }
        config.public_key_pem = signing.public_pem(key)
        config.api_key_id = DEMO_KEY_ID
    try:
        sim = await SimServer(config).__aenter__()
    except OSError as exc:
        log.error("cannot start the simulator on %s:%s: %s", config.host, config.port, exc.strerror)
        return ExitCode.CONFIG_ERROR
    log.info("simulator listening on %s", sim.url)
    reporter: asyncio.Task[None] | None = None

    def started(server: HealthServer) -> None:
        nonlocal reporter
        log.info("metrics at http://127.0.0.1:%d/metrics, data under %s/", server.port, data_dir)
        reporter = asyncio.create_task(_report(server, data_dir))

    try:
        return await run(settings, environ=environ, on_started=started)
    finally:
        if reporter is not None:
            reporter.cancel()
        await sim.__aexit__(None, None, None)


async def _report(server: HealthServer, data_dir: Path) -> None:
    """Print a line every few seconds so a person sees data arriving."""
    stats = server.stats
    with contextlib.suppress(asyncio.CancelledError):
        while True:
            await asyncio.sleep(5)
            day = dt.datetime.now(dt.UTC).date().isoformat()
            target = data_dir / day / f"{stats.feed}.jsonl"
            books = server.connection.markets.get("orderbook_delta")
            log.info(
                "%d messages received, %d lines (%d bytes) in %s%s",
                stats.messages,
                stats.lines_written,
                stats.bytes_written,
                target,
                "" if books is None else f"; order books of {books} markets",
            )
