"""What every contender receives: one signed connection, one subscribe command, N frames.

All contenders (and the collector, through its metadata) send exactly the same
subscribe command, so the simulator, which is deterministic per seed, streams them
byte-identical frames: the same answers first, then the same data in the same order.
That is what makes their costs comparable and their archives checkable.

One command only (markets <= the collector's subscribe batch size of 256): with
several commands the data of the first subscription would interleave with the
answers to the next ones depending on timing, and the stream would not be
reproducible.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssmd_collector.sim import universe

SEED = 7
CHANNELS = ("ticker", "trade", "orderbook_delta")
"""Mixed public and private (signed) channels: frames of ~247-477 bytes, mean ~329."""
API_KEY_ID = "bench-key"
FEED = "kalshi-sim"
"""The feed name of the simulator in exchanges/: the collector's archive is <feed>.jsonl."""
MAX_MARKETS = 256


@dataclass(frozen=True)
class Workload:
    """One stream: ``messages`` data frames (answers not counted) over ``markets`` markets."""

    messages: int
    markets: int = 100
    seed: int = SEED

    def __post_init__(self) -> None:
        if not 1 <= self.markets <= MAX_MARKETS:
            raise ValueError(f"markets must be 1..{MAX_MARKETS} (one subscribe command)")


def subscription(markets: int) -> dict[str, Any]:
    """The environment's ``subscriptions`` entry the collector turns into the command."""
    return {"channels": list(CHANNELS), "market_tickers": universe(markets)}


def subscribe_command(markets: int) -> dict[str, Any]:
    """The command exactly as ssmd-connector sends it (first command, id 1)."""
    return {"id": 1, "cmd": "subscribe", "params": subscription(markets)}


@dataclass(frozen=True)
class ContenderArgs:
    """Command line shared by the contender processes (see bench/contenders)."""

    url: str
    private_key: Path
    markets: int
    out: Path | None


def parse_contender_args(description: str) -> ContenderArgs:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--url", required=True)
    parser.add_argument("--private-key", type=Path, required=True)
    parser.add_argument("--markets", type=int, required=True)
    parser.add_argument("--out", type=Path, default=None, help="archive file (recorders)")
    ns = parser.parse_args()
    return ContenderArgs(ns.url, ns.private_key, ns.markets, ns.out)
