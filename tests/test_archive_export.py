"""``ssmd archive export --format parquet``: typed tables that round-trip counts and values.

An archive the collector recorded from the simulator is exported, then read back with
pyarrow and with DuckDB: every frame is a row (every level for snapshots), prices are
exact decimals, times are UTC timestamps. A value with more decimals than its column
holds is refused with its file, line and field, never rounded.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from archive_tools_harness import FEED, record_archive
from typer.testing import CliRunner

from ssmd_collector.archive.export import ExportError, export
from ssmd_collector.archive.reader import open_archive
from ssmd_collector.cli import app
from ssmd_collector.framing import LineFramer, Timestamper
from ssmd_collector.sim import Ending
from ssmd_collector.storage.seal import seal_day
from ssmd_collector.writer import JsonlWriter

LIFECYCLE = {"market_lifecycle_v2", "event_lifecycle", "event_fee_update"}


def utc(ts: str) -> dt.datetime:
    return dt.datetime.fromisoformat(ts)


@pytest.mark.parametrize("sealed", [False, True], ids=["plain", "sealed"])
async def test_export_round_trips_counts_and_values(
    tmp_path: Path, ed25519_keys: tuple[bytes, bytes], sealed: bool
) -> None:
    run, _ = await record_archive(tmp_path, ed25519_keys, messages=3000, ending=Ending.CLOSE)
    lines = [json.loads(line) for line in run.lines()]
    frames = [(line["ts"], line["data"]) for line in lines]
    if sealed:
        for folder in run.data_dir.iterdir():
            seal_day(folder, FEED, now=lambda: time.time() + 3 * 86_400)
    out = tmp_path / "parquet"
    result = CliRunner().invoke(
        app, ["archive", "export", str(run.data_dir), "--out", str(out), "--quiet"]
    )
    assert result.exit_code == 0, result.output

    kinds = Counter(d["type"] for _, d in frames)
    levels = sum(
        len(d["msg"].get("yes_dollars_fp", [])) + len(d["msg"].get("no_dollars_fp", []))
        for _, d in frames
        if d["type"] == "orderbook_snapshot"
    )
    tables = {name: pq.read_table(out / f"{name}.parquet") for name in (
        "trades", "ticker", "orderbook_deltas", "orderbook_snapshots", "lifecycle")}  # fmt: skip
    assert tables["trades"].num_rows == kinds["trade"] > 0
    assert tables["ticker"].num_rows == kinds["ticker"] > 0
    assert tables["orderbook_deltas"].num_rows == kinds["orderbook_delta"] > 0
    assert tables["orderbook_snapshots"].num_rows == levels > 0
    assert tables["lifecycle"].num_rows == sum(kinds[k] for k in LIFECYCLE) > 0

    trades = [(ts, d) for ts, d in frames if d["type"] == "trade"]
    for row, (ts, d) in zip(tables["trades"].to_pylist(), trades, strict=True):
        m = d["msg"]
        assert row["received"] == utc(ts)
        assert (row["sid"], row["seq"]) == (d["sid"], d["seq"])
        assert row["trade_id"] == m["trade_id"]
        assert row["yes_price"] == Decimal(m["yes_price_dollars"])
        assert row["no_price"] == Decimal(m["no_price_dollars"])
        assert row["count"] == Decimal(m["count_fp"])
        assert row["taker_book_side"] == m["taker_book_side"]
        assert row["is_block_trade"] is m["is_block_trade"]
        assert row["exchange_time"] == dt.datetime.fromtimestamp(m["ts_ms"] / 1000, dt.UTC)
    deltas = [d["msg"] for _, d in frames if d["type"] == "orderbook_delta"]
    for row, m in zip(tables["orderbook_deltas"].to_pylist(), deltas, strict=True):
        assert (row["market_ticker"], row["side"]) == (m["market_ticker"], m["side"])
        assert (row["price"], row["delta"]) == (Decimal(m["price_dollars"]), Decimal(m["delta_fp"]))
    tickers = [d["msg"] for _, d in frames if d["type"] == "ticker"]
    for row, m in zip(tables["ticker"].to_pylist(), tickers, strict=True):
        assert row["yes_bid"] == Decimal(m["yes_bid_dollars"])
        assert row["dollar_volume"] == m["dollar_volume"]

    # A second engine reads the same files with the same types and sums.
    db = duckdb.connect()
    count, total, kind = db.execute(
        f"SELECT count(*), sum(count), typeof(any_value(yes_price)) "
        f"FROM read_parquet('{out / 'trades.parquet'}')"
    ).fetchone()
    assert count == kinds["trade"]
    assert total == sum(Decimal(d["msg"]["count_fp"]) for _, d in trades)
    assert kind == "DECIMAL(12,6)"
    (first,) = db.execute(
        f"SELECT min(received) FROM read_parquet('{out / 'ticker.parquet'}')"
    ).fetchone()
    assert first == min(utc(ts) for ts, d in frames if d["type"] == "ticker")


def test_a_value_with_too_many_decimals_is_refused_with_its_line(tmp_path: Path) -> None:
    stamps, framer = Timestamper(), LineFramer(FEED)
    writer = JsonlWriter(tmp_path, FEED)
    day, ts = stamps(1_767_312_000 * 10**9)
    good = (
        '{"type":"orderbook_delta","sid":1,"seq":1,"msg":{"market_ticker":"M-1",'
        '"price_dollars":"0.4800","delta_fp":"5.00","side":"yes"}}'
    )
    bad = good.replace('"seq":1', '"seq":2').replace('"0.4800"', '"0.48000001"')
    writer.write(day, [framer.line(ts, good.encode()), framer.line(ts, bad.encode())])
    writer.close()
    with pytest.raises(
        ExportError, match=r"kalshi-sim\.jsonl:2: table orderbook_deltas, field price"
    ):
        export(open_archive(tmp_path), tmp_path / "out", progress=False)
