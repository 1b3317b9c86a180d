"""``ssmd sim``: run the simulated exchange as a process (demo, e2e fake exchange)."""

from __future__ import annotations

import asyncio
import signal
import ssl
from pathlib import Path
from typing import Annotated

import typer

from ssmd_collector.sim.protocol import SecondSubscribe
from ssmd_collector.sim.server import Ending, SimConfig, SimServer


def sim_command(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on; 0 picks a free one.")] = 8765,
    seed: Annotated[int, typer.Option(help="Seed of the deterministic market model.")] = 0,
    rate: Annotated[
        float, typer.Option(help="Data messages per second per connection; 0 = unthrottled.")
    ] = 50.0,
    messages: Annotated[
        int | None,
        typer.Option(help="Apply --ending after this many data messages per connection."),
    ] = None,
    ending: Annotated[
        Ending,
        typer.Option(
            help="After --messages: none (idle), close (code 1000), drop (TCP closed "
            "without a close frame), silent (no data or pings, TCP kept open).",
            case_sensitive=False,
        ),
    ] = Ending.NONE,
    heartbeat: Annotated[
        float, typer.Option(help="Seconds between 'heartbeat' pings; 0 disables them.")
    ] = 10.0,
    markets: Annotated[
        int,
        typer.Option(help="Number of simulated markets (streamed, and listed by REST)."),
    ] = 20,
    public_key: Annotated[
        Path | None,
        typer.Option(
            help="PEM public key (RSA or Ed25519): require handshakes signed by the matching "
            "private key. Required unless --allow-unsigned.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    api_key_id: Annotated[
        str | None, typer.Option(help="With --public-key: the only accepted KALSHI-ACCESS-KEY.")
    ] = None,
    allow_unsigned: Annotated[
        bool,
        typer.Option(
            "--allow-unsigned",
            help="Also accept unsigned handshakes (public channels only). Kalshi does not.",
        ),
    ] = False,
    timestamp_window: Annotated[
        float, typer.Option(help="Accepted KALSHI-ACCESS-TIMESTAMP skew in seconds.")
    ] = 60.0,
    second_subscribe: Annotated[
        SecondSubscribe,
        typer.Option(
            help="Answer to a second subscribe of a channel on one connection: ignore (no "
            "answer, as Kalshi today) or error (code 6).",
            case_sensitive=False,
        ),
    ] = SecondSubscribe.IGNORE,
    max_markets_per_subscription: Annotated[
        int | None, typer.Option(help="Error 26 above this many markets on one sid.")
    ] = None,
    max_commands_per_second: Annotated[
        float | None, typer.Option(help="Error 27 above this many commands per sid per second.")
    ] = None,
    extra_fields: Annotated[
        bool,
        typer.Option("--extra-fields", help="Add unknown fields to every data frame."),
    ] = False,
    overflow_bytes: Annotated[
        int | None,
        typer.Option(help="End data sids with error 25 once this many bytes wait unsent."),
    ] = None,
    life_interval: Annotated[
        float,
        typer.Option(
            help="Seconds between one market listed (announced 'created') and the oldest "
            "open one settled; 0 keeps the listing still."
        ),
    ] = 0.0,
    rest_throttle_every: Annotated[
        int | None, typer.Option(help="Answer every n-th REST request with HTTP 429.")
    ] = None,
    certfile: Annotated[
        Path | None,
        typer.Option(help="PEM certificate chain: serve wss:// (needs --keyfile).", exists=True),
    ] = None,
    keyfile: Annotated[
        Path | None, typer.Option(help="PEM private key of --certfile.", exists=True)
    ] = None,
) -> None:
    """Run the simulated Kalshi exchange until SIGINT or SIGTERM."""
    if (certfile is None) != (keyfile is None):
        raise typer.BadParameter("--certfile and --keyfile go together")
    if public_key is None and not allow_unsigned:
        raise typer.BadParameter(
            "give --public-key (signed connections, as on Kalshi) or --allow-unsigned"
        )
    context: ssl.SSLContext | None = None
    if certfile is not None and keyfile is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certfile, keyfile)
    config = SimConfig(
        host=host,
        port=port,
        ssl=context,
        public_key_pem=None if public_key is None else public_key.read_bytes(),
        api_key_id=api_key_id,
        allow_unsigned=allow_unsigned,
        timestamp_window=timestamp_window,
        second_subscribe=second_subscribe,
        max_markets_per_subscription=max_markets_per_subscription,
        max_commands_per_second=max_commands_per_second,
        extra_fields=extra_fields,
        overflow_bytes=overflow_bytes,
        seed=seed,
        rate=rate,
        messages=messages,
        ending=ending,
        heartbeat=heartbeat,
        markets=markets,
        life_interval=life_interval,
        rest_throttle_every=rest_throttle_every,
        # A long-running exchange must not keep every frame it ever sent.
        record=False,
    )
    asyncio.run(_serve(config))


async def _serve(config: SimConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with SimServer(config) as sim:
        typer.echo(f"ssmd sim: serving {sim.url}", err=True)
        await stop.wait()
    typer.echo("ssmd sim: stopped", err=True)
