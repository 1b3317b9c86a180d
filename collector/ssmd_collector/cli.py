"""Command-line entry points: ``ssmd-connector`` and the ``ssmd`` tool (validate, sim, demo)."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="ssmd: collect and archive live Kalshi market data.",
    no_args_is_help=True,
    add_completion=False,
)


def connector_main() -> None:
    """Console script ``ssmd-connector``."""
    raise SystemExit("not implemented yet")
