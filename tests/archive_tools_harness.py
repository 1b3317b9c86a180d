"""Archives for the archive tools' tests, recorded for real: the simulator, the collector, files.

``record_archive`` runs the collector against a signed simulator and returns the
archive it wrote; ``sim_archive`` writes an archive straight from the simulator's
market model (no sockets) when a test needs the model's own state at chosen lines.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector_harness import KEY_ENV, Run, make_tree, record, when_live

from ssmd_collector.framing import LineFramer, Timestamper
from ssmd_collector.health import HealthServer
from ssmd_collector.sim import Ending, SimConfig, SimServer, SimSession
from ssmd_collector.sim.market import ORDERBOOK, Feed, Market, universe
from ssmd_collector.sim.protocol import Commands
from ssmd_collector.writer import JsonlWriter

FEED = "kalshi-sim"
BOOK_MARKETS = universe(20)[:6]
SUBSCRIPTIONS = [
    {"channels": ["ticker", "trade", "market_lifecycle_v2"]},
    {"channels": ["orderbook_delta"], "market_tickers": BOOK_MARKETS},
]


def environ(private_pem: bytes) -> dict[str, str]:
    return {"KALSHI_API_KEY": "key-1", "KALSHI_PRIVATE_KEY": private_pem.decode()}


def sim_config(public_pem: bytes, **kw: Any) -> SimConfig:
    settings: dict[str, Any] = {
        "port": 0,
        "rate": 0,
        "heartbeat": 0.2,
        "seed": 5,
        "public_key_pem": public_pem,
        "timestamp_window": None,
    }
    return SimConfig(**(settings | kw))


async def record_from(
    url: str,
    workdir: Path,
    keys: tuple[bytes, bytes],
    during: Callable[[HealthServer], Awaitable[None]] | None = None,
) -> Run:
    """Record the exchange at ``url`` into ``workdir/data`` until it ends the connection."""
    tree = make_tree(workdir, url, **KEY_ENV, subscriptions=SUBSCRIPTIONS)
    return await record(tree, environ=environ(keys[0]), during=during)


async def record_archive(
    workdir: Path,
    keys: tuple[bytes, bytes],
    *,
    play: Callable[[HealthServer, SimSession], Awaitable[None]] | None = None,
    **sim: Any,
) -> tuple[Run, SimSession]:
    """Record the simulator; with ``play``, act on the exchange side once every
    subscription is live, then close the connection."""
    async with SimServer(sim_config(keys[1], **sim)) as server:
        during = None if play is None else when_live(server, play)
        run = await record_from(server.url, workdir, keys, during)
    return run, server.sessions[0]


async def record_twice(
    workdir: Path, keys: tuple[bytes, bytes], messages: int = 1500
) -> tuple[Run, Run]:
    """Two collector runs into one archive (a restart): each ends when its simulator
    closes the connection after ``messages`` data messages."""
    tree = None
    runs = []
    for seed in (1, 2):
        config = sim_config(keys[1], seed=seed, messages=messages, ending=Ending.CLOSE)
        async with SimServer(config) as server:
            if tree is None:
                tree = make_tree(workdir, server.url, **KEY_ENV, subscriptions=SUBSCRIPTIONS)
            else:
                feed = tree / "feeds/kalshi-sim.yaml"
                text = feed.read_text()
                start = text.index("endpoint: ") + len("endpoint: ")
                old = text[start : text.index("\n", start)]
                feed.write_text(text.replace(old, server.url))
            runs.append(await record(tree, environ=environ(keys[0])))
    return runs[0], runs[1]


@dataclass
class Written:
    """An archive written from the market model: its folder, and the model's books
    (price units -> count) after the line at each chosen index, by the line's ``ts``."""

    root: Path
    lines: list[str]
    """The ``data`` of each line, in order."""
    books: dict[str, dict[str, tuple[dict[int, int], dict[int, int]]]]
    """ts -> market -> (yes book, no book), copied from the model right after that line."""


def sim_archive(
    root: Path,
    *,
    frames: int,
    markets: list[str],
    look_at: set[int],
    drop: Collection[int] = (),
    snapshot_at: dict[int, str] | None = None,
    seed: int = 7,
) -> Written:
    """Write ``frames`` order book frames of the simulator's model for ``markets`` as a
    collector would (``LineFramer``, ``JsonlWriter``), one line per 10 ms from
    2026-01-02T00:00:00Z. Lines whose index is in ``drop`` are left out (lost frames);
    ``snapshot_at`` sends a ``get_snapshot`` answer for a market after that index."""
    feed = Feed(seed=seed, markets=20)
    commands = Commands(feed, authenticated=True)
    subscribe = (
        '{"id":1,"cmd":"subscribe","params":{"channels":["orderbook_delta"],'
        f'"market_tickers":{list(markets)!r}}}}}'.replace("'", '"')
    )
    out = commands.handle(subscribe)
    sub = commands.subscriptions[1]
    assert sub.channel == ORDERBOOK
    stream: list[str] = list(out)
    stamps = Timestamper()
    framer = LineFramer(FEED)
    writer = JsonlWriter(root, FEED)
    start_ns = 1_767_312_000 * 10**9
    books: dict[str, dict[str, tuple[dict[int, int], dict[int, int]]]] = {}
    written: list[str] = []
    index = 0
    extra = dict(snapshot_at or {})
    try:
        while index < frames:
            batch = stream or feed.take(1)
            stream = []
            for frame in batch:
                day, ts = stamps(start_ns + index * 10_000_000)
                if index not in drop:
                    writer.write(day, [framer.line(ts, frame.encode())])
                    written.append(frame)
                if index in look_at:
                    books[ts.decode()] = {m: _copy(feed.market(m)) for m in markets}
                if index in extra:
                    stream.append(feed.get_snapshot(sub, extra.pop(index), 9))
                index += 1
    finally:
        writer.close()
    return Written(root, written, books)


def _copy(market: Market) -> tuple[dict[int, int], dict[int, int]]:
    return copy.deepcopy(market.yes_book), copy.deepcopy(market.no_book)
