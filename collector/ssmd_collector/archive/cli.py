"""``ssmd archive ...``: the tools that read an archive (verify, replay, book, export).

Each takes the archive's folder (``<path>`` of the storage, or one day folder in it)
and ``--feed`` when it holds several feeds. Exit codes: 0 done, 1 the archive fails
the check (corruption; gaps with ``--fail-on-gaps``; a book unknown at the time
asked; a value that cannot be exported), 2 the command cannot run (no such archive,
bad option).
"""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
from pathlib import Path
from typing import Annotated

import typer

from ..sim.server import Ending, SimConfig, SimServer
from .reader import Archive, ArchiveError, open_archive, parse_time

archive_app = typer.Typer(
    help="Read an archive: verify it, replay it, rebuild order books, export it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Root = Annotated[Path, typer.Argument(help="Archive folder (<path>/<YYYY-MM-DD>/...) or one day.")]
Feed = Annotated[
    str | None, typer.Option("--feed", help="Feed to read when the archive holds several.")
]
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress lines on stderr.")]


def _open(root: Path, feed: str | None) -> Archive:
    try:
        return open_archive(root, feed)
    except ArchiveError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _time(text: str | None, flag: str) -> str | None:
    if text is None:
        return None
    try:
        return parse_time(text)
    except ArchiveError as exc:
        raise typer.BadParameter(str(exc), param_hint=flag) from None


@archive_app.command()
def verify(
    root: Root,
    feed: Feed = None,
    output: Annotated[
        str, typer.Option("--format", help="table (for people) or json (for programs).")
    ] = "table",
    fail_on_gaps: Annotated[
        bool, typer.Option("--fail-on-gaps", help="Exit 1 on sequence gaps too.")
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Check every line, per-sid sequences and coverage; exit 1 on corruption."""
    from .verify import as_json, render
    from .verify import verify as run_verify

    if output not in ("table", "json"):
        raise typer.BadParameter(f"expected table or json; found {output!r}", param_hint="--format")
    report = run_verify(_open(root, feed), progress=not quiet)
    typer.echo(as_json(report) if output == "json" else render(report))
    if not report.ok or (fail_on_gaps and report.gaps):
        raise typer.Exit(1)


def parse_speed(text: str) -> float | None:
    """``recorded`` (1), ``max`` (as fast as the client reads), or a multiple: ``10``, ``x10``."""
    value = text.strip().lower()
    if value == "recorded":
        return 1.0
    if value == "max":
        return None
    try:
        speed = float(value.removeprefix("x"))
    except ValueError:
        speed = 0.0
    if speed <= 0:
        raise typer.BadParameter(
            f"expected recorded, max or a multiple above 0 (e.g. x10); found {text!r}",
            param_hint="--speed",
        )
    return speed


@archive_app.command()
def replay(
    root: Root,
    feed: Feed = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on; 0 picks a free one.")] = 8765,
    speed: Annotated[
        str, typer.Option(help="recorded, max (as fast as the client reads), or a multiple: x10.")
    ] = "recorded",
    start: Annotated[
        str | None, typer.Option(help="Replay from this time (ISO 8601, UTC if no zone).")
    ] = None,
    end: Annotated[str | None, typer.Option(help="Replay up to (not including) this time.")] = None,
    session: Annotated[
        int | None,
        typer.Option(help="Replay only recorded session N (1-based; see verify's sessions)."),
    ] = None,
    subscribe_wait: Annotated[
        float,
        typer.Option(
            help="Seconds the replay waits, where the recorder subscribed a channel, for the "
            "client to subscribe it too."
        ),
    ] = 2.0,
    ending: Annotated[
        Ending,
        typer.Option(
            help="At the archive's end: close (code 1000), drop, silent, or none (stay idle).",
            case_sensitive=False,
        ),
    ] = Ending.CLOSE,
    heartbeat: Annotated[float, typer.Option(help="Seconds between 'heartbeat' pings.")] = 10.0,
    public_key: Annotated[
        Path | None,
        typer.Option(
            help="PEM public key: require handshakes signed by its private half.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    allow_unsigned: Annotated[
        bool,
        typer.Option("--allow-unsigned", help="Accept unsigned handshakes (public channels)."),
    ] = False,
    certfile: Annotated[
        Path | None, typer.Option(help="PEM certificate chain: serve wss:// (with --keyfile).")
    ] = None,
    keyfile: Annotated[Path | None, typer.Option(help="PEM private key of --certfile.")] = None,
) -> None:
    """Serve the archive over Kalshi's WebSocket protocol until SIGINT or SIGTERM."""
    from .replay import session_range, source_factory

    if public_key is None and not allow_unsigned:
        raise typer.BadParameter("give --public-key (signed, as on Kalshi) or --allow-unsigned")
    if (certfile is None) != (keyfile is None):
        raise typer.BadParameter("--certfile and --keyfile go together")
    context: ssl.SSLContext | None = None
    if certfile is not None and keyfile is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certfile, keyfile)
    archive = _open(root, feed)
    window = (_time(start, "--start"), _time(end, "--end"))
    if session is not None:
        if start or end:
            raise typer.BadParameter("--session replaces --start and --end; give one or the other")
        try:
            window = session_range(archive, session)
        except ArchiveError as exc:
            raise typer.BadParameter(str(exc), param_hint="--session") from None
    source = source_factory(
        archive,
        speed=parse_speed(speed),
        subscribe_wait=subscribe_wait,
        start=window[0],
        end=window[1],
    )
    config = SimConfig(
        host=host,
        port=port,
        ssl=context,
        public_key_pem=None if public_key is None else public_key.read_bytes(),
        allow_unsigned=allow_unsigned,
        rate=0,  # the archive's own times pace it
        heartbeat=heartbeat,
        ending=ending,
        source=source,
        record=False,
    )
    asyncio.run(_serve(config, f"{root} ({archive.feed}, {len(archive.files)} files)"))


async def _serve(config: SimConfig, what: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with SimServer(config) as server:
        typer.echo(f"ssmd archive replay: serving {what} at {server.url}", err=True)
        await stop.wait()
    typer.echo("ssmd archive replay: stopped", err=True)


@archive_app.command()
def book(
    root: Root,
    market: Annotated[str, typer.Option("--market", help="Market ticker.")],
    feed: Feed = None,
    at: Annotated[
        str | None, typer.Option("--at", help="The book at this time (default: at the end).")
    ] = None,
    top: Annotated[
        bool, typer.Option("--top", help="Print the top of book each time it changes.")
    ] = False,
    depth: Annotated[int, typer.Option(help="Levels per side to print.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print the book as JSON.")] = False,
    quiet: Quiet = False,
) -> None:
    """Rebuild a market's order book from snapshots and deltas (refusing to cross gaps)."""
    from .book import BookUnknown, TopPrinter, rebuild, render

    archive = _open(root, feed)
    printer = TopPrinter(typer.echo) if top else None
    try:
        state = rebuild(
            archive, market, at=_time(at, "--at"), on_change=printer, progress=not quiet
        )
    except BookUnknown as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if state.snapshots == 0:
        typer.echo(f"error: no order book snapshot of {market} in {root}", err=True)
        raise typer.Exit(1)
    if top:
        return
    if as_json:
        doc = {"at": state.ts, "known": state.known, **state.book.to_json()}
        typer.echo(json.dumps(doc, indent=1))
    else:
        typer.echo(render(state, depth))


@archive_app.command()
def export(
    root: Root,
    out: Annotated[Path, typer.Option("--out", help="Folder for the <table>.parquet files.")],
    feed: Feed = None,
    output: Annotated[str, typer.Option("--format", help="Only parquet for now.")] = "parquet",
    quiet: Quiet = False,
) -> None:
    """Write typed Parquet tables (trades, ticker, order book, lifecycle)."""
    from .export import ExportError, summary
    from .export import export as run_export

    if output != "parquet":
        raise typer.BadParameter(f"expected parquet; found {output!r}", param_hint="--format")
    try:
        result = run_export(_open(root, feed), out, progress=not quiet)
    except ExportError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(summary(result))
