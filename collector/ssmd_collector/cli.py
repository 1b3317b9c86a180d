"""Command-line entry points: ``ssmd-connector`` and the ``ssmd`` tool.

``ssmd`` gathers the tools around the collector: ``validate`` a metadata tree,
run the Kalshi simulator (``sim``), run a ``demo`` (simulator + collector),
``connector`` (the same as ``ssmd-connector``), and read archives (``archive ...``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from .app import run
from .archive.cli import archive_app
from .exitcodes import ExitCode
from .logs import setup_logging
from .metadata import MetadataInvalid, read_directory, validate_tree
from .settings import DEFAULTS, SETTINGS, Settings
from .sim.cli import sim_command

app = typer.Typer(
    help="ssmd: collect and archive live Kalshi market data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
connector_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

EXIT_CODES_HELP = "Exit codes: " + ", ".join(f"{c.value} {c.name.lower()}" for c in ExitCode)

ConfigDir = Annotated[
    Path,
    typer.Option(
        "--config-dir",
        envvar="SSMD_CONFIG_DIR",
        help="Metadata tree with feeds/, schemas/, environments/.",
    ),
]
LogFormat = Annotated[
    str,
    typer.Option(
        "--log-format",
        envvar="SSMD_LOG_FORMAT",
        help="json, text, or auto (text on a terminal, else json).",
    ),
]
LogLevel = Annotated[str, typer.Option("--log-level", envvar="SSMD_LOG_LEVEL")]


def _opt(name: str) -> Any:
    """The option of setting ``name``: flag, variable and help from ``settings.SETTINGS``."""
    setting = SETTINGS[name]
    return typer.Option(setting.flag, envvar=setting.envvar, help=setting.help)


def connector_command(
    env: Annotated[
        str, typer.Option("--env", envvar="SSMD_ENV", help="Environment name in environments/.")
    ],
    config_dir: ConfigDir = DEFAULTS.config_dir,
    data_dir: Annotated[Path | None, _opt("data_dir")] = DEFAULTS.data_dir,
    port: Annotated[int, _opt("port")] = DEFAULTS.port,
    http_host: Annotated[str, _opt("http_host")] = DEFAULTS.http_host,
    silence_timeout: Annotated[float, _opt("silence_timeout")] = DEFAULTS.silence_timeout,
    flush_interval: Annotated[float, _opt("flush_interval")] = DEFAULTS.flush_interval,
    subscribe_batch_size: Annotated[
        int, _opt("subscribe_batch_size")
    ] = DEFAULTS.subscribe_batch_size,
    answer_timeout: Annotated[float, _opt("answer_timeout")] = DEFAULTS.answer_timeout,
    snapshot_timeout: Annotated[float, _opt("snapshot_timeout")] = DEFAULTS.snapshot_timeout,
    max_deaths: Annotated[int, _opt("max_deaths")] = DEFAULTS.max_deaths,
    death_window: Annotated[float, _opt("death_window")] = DEFAULTS.death_window,
    max_frame_bytes: Annotated[int, _opt("max_frame_bytes")] = DEFAULTS.max_frame_bytes,
    max_buffer_bytes: Annotated[int, _opt("max_buffer_bytes")] = DEFAULTS.max_buffer_bytes,
    discovery_interval: Annotated[float, _opt("discovery_interval")] = DEFAULTS.discovery_interval,
    rest_rate: Annotated[float, _opt("rest_rate")] = DEFAULTS.rest_rate,
    add_debounce: Annotated[float, _opt("add_debounce")] = DEFAULTS.add_debounce,
    removal_grace: Annotated[float, _opt("removal_grace")] = DEFAULTS.removal_grace,
    shard: Annotated[str, _opt("shard")] = DEFAULTS.shard,
    ca_file: Annotated[Path | None, _opt("ca_file")] = DEFAULTS.ca_file,
    log_format: LogFormat = "auto",
    log_level: LogLevel = "info",
) -> None:
    """Connect to the environment's feed and archive every raw message as JSONL."""
    setup_logging(log_format, log_level)
    settings = Settings(
        env=env,
        config_dir=config_dir,
        data_dir=data_dir,
        http_host=http_host,
        port=port,
        silence_timeout=silence_timeout,
        flush_interval=flush_interval,
        subscribe_batch_size=subscribe_batch_size,
        answer_timeout=answer_timeout,
        snapshot_timeout=snapshot_timeout,
        max_deaths=max_deaths,
        death_window=death_window,
        max_frame_bytes=max_frame_bytes,
        max_buffer_bytes=max_buffer_bytes,
        discovery_interval=discovery_interval,
        rest_rate=rest_rate,
        add_debounce=add_debounce,
        removal_grace=removal_grace,
        shard=shard,
        ca_file=ca_file,
    )
    raise typer.Exit(int(asyncio.run(run(settings))))


connector_command.__doc__ = f"{connector_command.__doc__}\n\n{EXIT_CODES_HELP}."
connector_app.command()(connector_command)
app.command("connector")(connector_command)


def connector_main() -> None:
    """Console script ``ssmd-connector``."""
    connector_app()


app.command("sim", help="Run the built-in Kalshi exchange simulator.")(sim_command)
app.add_typer(archive_app, name="archive")


@app.command()
def validate(
    config_dir: Annotated[Path, typer.Argument(help="Metadata tree to check.")] = Path("exchanges"),
    on: Annotated[
        str | None,
        typer.Option(
            "--on", help="Resolve versions on this date (YYYY-MM-DD); default today (UTC)."
        ),
    ] = None,
) -> None:
    """Check a whole metadata tree; list every problem and exit 1 if there are any."""
    day = dt.date.fromisoformat(on) if on else dt.datetime.now(dt.UTC).date()
    try:
        problems = validate_tree(read_directory(config_dir), day)
    except MetadataInvalid as exc:
        problems = list(exc.problems)
    if problems:
        typer.echo(f"{config_dir}: {len(problems)} problem(s):", err=True)
        for p in problems:
            typer.echo(f"  {p}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{config_dir}: OK ({day})")


@app.command()
def demo(
    config_dir: ConfigDir = Path("exchanges"),
    env: Annotated[str, typer.Option("--env")] = "kalshi-sim",
    data_dir: Annotated[Path, typer.Option("--data-dir")] = Path("data"),
    port: Annotated[int, typer.Option("--port", help="HTTP port of the collector.")] = 8080,
    rate: Annotated[float, typer.Option("--rate", help="Simulated messages per second.")] = 200,
    seed: Annotated[int, typer.Option("--seed")] = 1,
    log_format: LogFormat = "text",
) -> None:
    """Run the built-in Kalshi simulator and a collector recording it. Ctrl-C stops both."""
    from .demo import run_demo  # the simulator is only needed here

    setup_logging(log_format, "info")
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
    # The simulator's connection log (a line per REST call and connection) is noise here.
    logging.getLogger("ssmd_collector.sim.server.websockets").setLevel(logging.WARNING)
    code = asyncio.run(run_demo(config_dir, env, data_dir, port, rate, seed))
    raise typer.Exit(int(code))
