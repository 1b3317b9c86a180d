"""``ssmd archive export``: typed Parquet tables of an archive, for pandas, polars, DuckDB.

One file per table in the output folder, each written in row groups as the archive is
read (memory stays bounded whatever its size):

- ``trades``: one row per ``trade`` frame;
- ``ticker``: one row per ``ticker`` frame;
- ``orderbook_deltas``: one row per ``orderbook_delta`` frame;
- ``orderbook_snapshots``: one row per price level of an ``orderbook_snapshot``;
- ``lifecycle``: one row per ``market_lifecycle_v2``, ``multivariate_market_lifecycle``,
  ``event_lifecycle`` or ``event_fee_update`` frame.

Every row has ``received`` (the recorder's ``ts``, ``timestamp[us, UTC]``), ``sid`` and
``seq``. Prices are ``decimal128(12, 6)`` and counts ``decimal128(18, 2)``, exactly as
Kalshi's strings say (4-decimal prices today, 6 in REST; 2-decimal counts): a value
with more decimals than that is an error naming its line, never rounded. The
exchange's own times are ``timestamp[ms, UTC]`` (``ts_ms``, or ``ts`` in seconds where
``ts_ms`` is missing); lifecycle ``*_ts`` fields are ``timestamp[s, UTC]``. Each
lifecycle row also keeps its whole ``msg`` as JSON text, since its fields vary by event.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from .reader import (
    DATA,
    Archive,
    LineError,
    LineReader,
    Progress,
    feed_head,
    split_line,
    total_size,
)

PRICE = pa.decimal128(12, 6)
COUNT = pa.decimal128(18, 2)
RECEIVED = pa.timestamp("us", "UTC")
EXCHANGE_TIME = pa.timestamp("ms", "UTC")
SECONDS = pa.timestamp("s", "UTC")
_ROWS_PER_GROUP = 100_000

_COMMON = [("received", RECEIVED), ("sid", pa.int64()), ("seq", pa.int64())]

SCHEMAS: dict[str, pa.Schema] = {
    "trades": pa.schema(
        [
            *_COMMON,
            ("trade_id", pa.string()),
            ("market_ticker", pa.string()),
            ("yes_price", PRICE),
            ("no_price", PRICE),
            ("count", COUNT),
            ("taker_side", pa.string()),
            ("taker_outcome_side", pa.string()),
            ("taker_book_side", pa.string()),
            ("is_block_trade", pa.bool_()),
            ("exchange_time", EXCHANGE_TIME),
        ]
    ),
    "ticker": pa.schema(
        [
            *_COMMON,
            ("market_ticker", pa.string()),
            ("market_id", pa.string()),
            ("price", PRICE),
            ("yes_bid", PRICE),
            ("yes_ask", PRICE),
            ("yes_bid_size", COUNT),
            ("yes_ask_size", COUNT),
            ("last_trade_size", COUNT),
            ("volume", COUNT),
            ("open_interest", COUNT),
            ("dollar_volume", pa.int64()),
            ("dollar_open_interest", pa.int64()),
            ("exchange_time", EXCHANGE_TIME),
        ]
    ),
    "orderbook_deltas": pa.schema(
        [
            *_COMMON,
            ("market_ticker", pa.string()),
            ("market_id", pa.string()),
            ("side", pa.string()),
            ("price", PRICE),
            ("delta", COUNT),
            ("exchange_time", EXCHANGE_TIME),
        ]
    ),
    "orderbook_snapshots": pa.schema(
        [
            *_COMMON,
            ("command_id", pa.int64()),
            ("market_ticker", pa.string()),
            ("market_id", pa.string()),
            ("side", pa.string()),
            ("price", PRICE),
            ("count", COUNT),
        ]
    ),
    "lifecycle": pa.schema(
        [
            *_COMMON,
            ("type", pa.string()),
            ("event_type", pa.string()),
            ("market_ticker", pa.string()),
            ("event_ticker", pa.string()),
            ("result", pa.string()),
            ("settlement_value", PRICE),
            ("open_time", SECONDS),
            ("close_time", SECONDS),
            ("determination_time", SECONDS),
            ("settled_time", SECONDS),
            ("msg", pa.string()),
        ]
    ),
}

LIFECYCLE_TYPES = frozenset(
    {"market_lifecycle_v2", "multivariate_market_lifecycle", "event_lifecycle", "event_fee_update"}
)


class ExportError(Exception):
    """A value that cannot be stored as its column's type; names file, line and field."""


class _Envelope(msgspec.Struct):
    type: str = ""
    id: int | None = None
    sid: int | None = None
    seq: int | None = None
    msg: msgspec.Raw = msgspec.Raw()


class _Trade(msgspec.Struct):
    trade_id: str | None = None
    market_ticker: str | None = None
    yes_price_dollars: str | None = None
    no_price_dollars: str | None = None
    count_fp: str | None = None
    taker_side: str | None = None
    taker_outcome_side: str | None = None
    taker_book_side: str | None = None
    is_block_trade: bool | None = None
    ts: int | str | None = None
    ts_ms: int | None = None


class _Ticker(msgspec.Struct):
    market_ticker: str | None = None
    market_id: str | None = None
    price_dollars: str | None = None
    yes_bid_dollars: str | None = None
    yes_ask_dollars: str | None = None
    yes_bid_size_fp: str | None = None
    yes_ask_size_fp: str | None = None
    last_trade_size_fp: str | None = None
    volume_fp: str | None = None
    open_interest_fp: str | None = None
    dollar_volume: int | None = None
    dollar_open_interest: int | None = None
    ts: int | str | None = None
    ts_ms: int | None = None


class _Delta(msgspec.Struct):
    market_ticker: str | None = None
    market_id: str | None = None
    side: str | None = None
    price_dollars: str | None = None
    delta_fp: str | None = None
    ts: int | str | None = None
    ts_ms: int | None = None


class _Snapshot(msgspec.Struct):
    market_ticker: str | None = None
    market_id: str | None = None
    yes_dollars_fp: list[tuple[str, str]] | None = None
    no_dollars_fp: list[tuple[str, str]] | None = None


class _Lifecycle(msgspec.Struct):
    event_type: str | None = None
    market_ticker: str | None = None
    event_ticker: str | None = None
    result: str | None = None
    settlement_value: str | int | float | None = None
    open_ts: int | None = None
    close_ts: int | None = None
    determination_ts: int | None = None
    settled_ts: int | None = None
    additional_metadata: dict[str, Any] | None = None


_envelope = msgspec.json.Decoder(_Envelope).decode
_trade = msgspec.json.Decoder(_Trade).decode
_ticker = msgspec.json.Decoder(_Ticker).decode
_delta = msgspec.json.Decoder(_Delta).decode
_snapshot = msgspec.json.Decoder(_Snapshot).decode
_lifecycle = msgspec.json.Decoder(_Lifecycle).decode


def _ms(ts: int | str | None, ts_ms: int | None) -> int | None:
    """The exchange time in ms: ``ts_ms``, else an integer ``ts`` in seconds."""
    if ts_ms is not None:
        return ts_ms
    return ts * 1000 if isinstance(ts, int) else None


def _text(value: str | None) -> str | None:
    """A dollar or count string, or None for a missing or empty one (``"price_dollars":""``
    on an untraded market)."""
    return value if value else None


@dataclass
class _Table:
    """Rows of one table waiting to be written, column by column, with their provenance."""

    name: str
    path: Path
    schema: pa.Schema
    pending: list[tuple[Any, ...]] = field(default_factory=list)
    """Rows not yet written; turned into columns at once (``zip(*rows)``) at each flush."""
    where: list[str] = field(default_factory=list)
    writer: pq.ParquetWriter | None = None
    rows: int = 0

    def add(self, where: str, row: tuple[Any, ...]) -> None:
        self.pending.append(row)
        self.where.append(where)
        if len(self.pending) >= _ROWS_PER_GROUP:
            self.flush()

    def flush(self) -> None:
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, self.schema, compression="zstd")
        if not self.pending:
            return
        columns = zip(*self.pending, strict=True)
        arrays = [
            self._array(f.name, list(values), f.type)
            for f, values in zip(self.schema, columns, strict=True)
        ]
        self.writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))
        self.rows += len(self.pending)
        self.pending, self.where = [], []

    def _array(self, name: str, values: list[Any], kind: pa.DataType) -> pa.Array:
        if pa.types.is_decimal(kind) or kind == RECEIVED:
            try:
                return pa.array(values, pa.string()).cast(kind)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                self._blame(name, values, kind)
                raise
        return pa.array(values, kind)

    def _blame(self, name: str, values: list[Any], kind: pa.DataType) -> None:
        for where, value in zip(self.where, values, strict=True):
            try:
                pa.array([value], pa.string()).cast(kind)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise ExportError(
                    f"{where}: table {self.name}, field {name}: expected {kind} "
                    f"(no more decimals than that); found {value!r}"
                ) from None

    def close(self) -> None:
        self.flush()
        if self.writer is not None:
            self.writer.close()


@dataclass
class ExportResult:
    out: Path
    rows: dict[str, int]
    lines: int
    skipped: int
    """Lines that are not well-formed (``verify`` names them) or not market data."""
    plain_bytes: int


def export(
    archive: Archive, out: Path, *, progress: bool = True, say: Callable[[str], None] | None = None
) -> ExportResult:
    """Write every table of ``archive`` to ``out/<table>.parquet`` (module doc)."""
    out.mkdir(parents=True, exist_ok=True)
    tables = {name: _Table(name, out / f"{name}.parquet", s) for name, s in SCHEMAS.items()}
    files = archive.of(DATA)
    meter = Progress("export", total_size(files), enabled=progress)
    head = feed_head(archive.feed)
    lines = skipped = plain = 0
    try:
        for file in files:
            reader = LineReader(file, meter)
            for number, line in reader:
                lines += 1
                where = f"{file.path}:{number}"
                try:
                    # One decode checks the whole of data (msgspec checks skipped fields too).
                    ts, data = split_line(line, head, check_data=False)
                    env = _envelope(data)
                except (LineError, msgspec.ValidationError, msgspec.DecodeError):
                    skipped += 1
                    continue
                if not env.msg or not _row(tables, where, ts, env):
                    skipped += 1
            plain += reader.plain_bytes
    finally:
        for table in tables.values():
            table.close()
    return ExportResult(out, {n: t.rows for n, t in tables.items()}, lines, skipped, plain)


def _row(tables: dict[str, _Table], where: str, ts: str, env: _Envelope) -> bool:
    """Add the rows of one frame; False when it is not a frame of any table."""
    kind, msg = env.type, env.msg
    common = (ts, env.sid, env.seq)
    try:
        if kind == "orderbook_delta":
            d = _delta(msg)
            tables["orderbook_deltas"].add(
                where,
                (*common, d.market_ticker, d.market_id, d.side, _text(d.price_dollars),
                 _text(d.delta_fp), _ms(d.ts, d.ts_ms)),
            )  # fmt: skip
        elif kind == "ticker":
            t = _ticker(msg)
            tables["ticker"].add(
                where,
                (*common, t.market_ticker, t.market_id, _text(t.price_dollars),
                 _text(t.yes_bid_dollars), _text(t.yes_ask_dollars), _text(t.yes_bid_size_fp),
                 _text(t.yes_ask_size_fp), _text(t.last_trade_size_fp), _text(t.volume_fp),
                 _text(t.open_interest_fp), t.dollar_volume, t.dollar_open_interest,
                 _ms(t.ts, t.ts_ms)),
            )  # fmt: skip
        elif kind == "trade":
            r = _trade(msg)
            tables["trades"].add(
                where,
                (*common, r.trade_id, r.market_ticker, _text(r.yes_price_dollars),
                 _text(r.no_price_dollars), _text(r.count_fp), r.taker_side,
                 r.taker_outcome_side, r.taker_book_side, r.is_block_trade, _ms(r.ts, r.ts_ms)),
            )  # fmt: skip
        elif kind == "orderbook_snapshot":
            s = _snapshot(msg)
            for side, levels in (("yes", s.yes_dollars_fp), ("no", s.no_dollars_fp)):
                for price, count in levels or ():
                    tables["orderbook_snapshots"].add(
                        where,
                        (*common, env.id, s.market_ticker, s.market_id, side, price, count),
                    )
        elif kind in LIFECYCLE_TYPES:
            e = _lifecycle(msg)
            value = e.settlement_value
            if isinstance(value, int | float):
                # Before 2026-02-26 settlement_value was an integer number of cents.
                value = f"{value / 100:.4f}"
            tables["lifecycle"].add(
                where,
                (*common, kind, e.event_type, e.market_ticker, e.event_ticker, e.result,
                 _text(value), e.open_ts, e.close_ts, e.determination_ts, e.settled_ts,
                 bytes(msg).decode()),
            )  # fmt: skip
        else:
            return False
    except msgspec.ValidationError as exc:
        raise ExportError(f"{where}: {kind} frame: {exc}") from None
    return True


def summary(result: ExportResult) -> str:
    lines = [f"exported {result.lines:,} lines to {result.out}:"]
    for name, rows in result.rows.items():
        lines.append(f"  {name + '.parquet':<26} {rows:>10,} rows")
    if result.skipped:
        lines.append(f"  ({result.skipped:,} lines are no market data: answers, errors, others)")
    return "\n".join(lines)


__all__ = ["SCHEMAS", "ExportError", "ExportResult", "export", "summary"]
