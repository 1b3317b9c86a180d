"""``ssmd archive book``: order books rebuilt from an archive match the simulator's own.

The archive is written from the simulator's market model line by line (as the collector
frames and writes lines), and the model's books are copied at chosen lines; the rebuild
at each of those lines' times must equal them, price for price. A lost frame makes the
book unknown (refused, with the line named) until the market's next snapshot.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from archive_tools_harness import BOOK_MARKETS, record_archive, record_twice, sim_archive
from deadlines import wait_until
from typer.testing import CliRunner

from ssmd_collector.archive.book import BookUnknown, rebuild
from ssmd_collector.archive.reader import open_archive
from ssmd_collector.cli import app
from ssmd_collector.health import HealthServer
from ssmd_collector.sim import SimSession
from ssmd_collector.sim.market import UNIT

MARKETS = BOOK_MARKETS[:3]


def as_decimals(book: dict[int, int]) -> dict[Decimal, Decimal]:
    return {Decimal(p) / UNIT: Decimal(q) for p, q in book.items()}


def test_the_book_matches_the_simulators_own_at_chosen_times(tmp_path: Path) -> None:
    written = sim_archive(tmp_path, frames=3000, markets=MARKETS, look_at={40, 900, 1777, 2999})
    archive = open_archive(tmp_path)
    assert len(written.books) == 4
    for ts, books in written.books.items():
        for market, (yes, no) in books.items():
            state = rebuild(archive, market, at=ts)
            assert state.known
            assert state.book.yes == as_decimals(yes), (ts, market)
            assert state.book.no == as_decimals(no), (ts, market)
    last_ts = max(written.books)
    market = MARKETS[1]
    result = CliRunner().invoke(
        app, ["archive", "book", str(tmp_path), "--market", market, "--at", last_ts, "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    yes, _ = written.books[last_ts][market]
    best = max(yes)
    assert [Decimal(v) for v in doc["best_yes_bid"]] == [Decimal(best) / UNIT, yes[best]]
    assert {Decimal(p): Decimal(q) for p, q in doc["yes_bids"]} == as_decimals(yes)


def test_top_of_book_over_time_follows_the_changes(tmp_path: Path) -> None:
    sim_archive(tmp_path, frames=600, markets=MARKETS, look_at=set())
    market = MARKETS[0]
    result = CliRunner().invoke(
        app, ["archive", "book", str(tmp_path), "--market", market, "--top"]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) > 5
    final = rebuild(open_archive(tmp_path), market)
    bid, ask = final.book.best()
    assert bid is not None
    assert ask is not None
    assert lines[-1].split("bid", 1)[1].split() == [str(bid[0]), "x", str(bid[1]), "ask",
                                                     str(ask[0]), "x", str(ask[1])]  # fmt: skip


def test_a_lost_frame_makes_the_book_unknown_until_a_fresh_snapshot(tmp_path: Path) -> None:
    market = MARKETS[0]
    written = sim_archive(
        tmp_path,
        frames=2000,
        markets=MARKETS,
        look_at={800, 1000, 1300},
        drop={900},
        snapshot_at={1200: market},
    )
    archive = open_archive(tmp_path)
    before, during, after = sorted(written.books)
    assert rebuild(archive, market, at=before).known
    # Line 901 is the frame after the lost one: seq 901 where 900 was due.
    gap = r"gap on sid 1 at .*kalshi-sim\.jsonl:901: expected seq 900, received 901"
    with pytest.raises(BookUnknown, match=gap):
        rebuild(archive, market, at=during)
    state = rebuild(archive, market, at=after)
    yes, no = written.books[after][market]
    assert (state.book.yes, state.book.no) == (as_decimals(yes), as_decimals(no))
    other = MARKETS[1]  # the same sid, no fresh snapshot: still unknown
    with pytest.raises(BookUnknown):
        rebuild(archive, other, at=after)
    result = CliRunner().invoke(
        app, ["archive", "book", str(tmp_path), "--market", other, "--at", after]
    )
    assert result.exit_code == 1
    assert "unknown: gap on sid 1" in result.output


async def test_the_book_is_unknown_between_two_recorded_sessions(
    tmp_path: Path, ed25519_keys: tuple[bytes, bytes]
) -> None:
    _, second = await record_twice(tmp_path, ed25519_keys)
    events = second.events()
    (ended, _) = [e["ts"] for e in events if e["event"] == "disconnected"]
    (_, reconnected) = [e["ts"] for e in events if e["event"] == "connected"]
    archive = open_archive(second.data_dir)
    market = BOOK_MARKETS[0]
    last_line = max(ts for ts in (json.loads(x)["ts"] for x in second.lines()) if ts < ended)
    assert rebuild(archive, market, at=last_line).known
    with pytest.raises(BookUnknown, match=r"the connection ended \(disconnected"):
        rebuild(archive, market, at=ended)
    with pytest.raises(BookUnknown):
        rebuild(archive, market, at=reconnected)  # connected, no snapshot yet
    final = rebuild(archive, market)  # the second session's snapshot makes it known
    assert final.known
    assert final.snapshots == 2


async def test_a_recorded_gap_is_crossed_only_by_the_recovery_snapshot(
    tmp_path: Path, ed25519_keys: tuple[bytes, bytes]
) -> None:
    """Over a real socket: the exchange skips two seqs on the order book sid, the
    collector asks for snapshots (get_snapshot); the book is unknown from the gap to
    the market's recovery snapshot, and known again from it on."""

    async def skip(health: HealthServer, session: SimSession) -> None:
        session.skip_seq(session.sid_of("orderbook_delta"), 2)
        await wait_until(
            lambda: health.connection.recoveries.get(("orderbook_delta", "completed")),
            "the collector to repair the books with get_snapshot",
        )

    run, _ = await record_archive(tmp_path, ed25519_keys, play=skip)
    events = run.events()
    (gap,) = [e for e in events if e["event"] == "gap"]
    (done,) = [e for e in events if e["event"] == "recovery_completed"]
    archive = open_archive(run.data_dir)
    for market in BOOK_MARKETS:
        with pytest.raises(BookUnknown, match=f"gap on sid {gap['sid']}"):
            rebuild(archive, market, at=gap["ts"])
        state = rebuild(archive, market, at=done["ts"])
        assert state.snapshots == 2  # the first one and the recovery's
        recovery = [
            json.loads(line)
            for line in run.lines()
            if '"type":"orderbook_snapshot"' in line and f'"{market}"' in line
        ][-1]
        assert recovery["data"].get("id")  # it answered a get_snapshot command
        assert state.since == recovery["ts"]
