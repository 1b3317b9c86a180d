"""Archive line framing: exact bytes of the data field, timestamps, quarantine records."""

from __future__ import annotations

import base64
import datetime as dt
import json

from ssmd_collector.framing import LineFramer, Timestamper


def ns(text: str, micros: int = 0) -> int:
    """Nanoseconds since the epoch for a UTC time, with sub-microsecond noise added."""
    seconds = int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp())
    return (seconds * 1_000_000 + micros) * 1000 + 999


def test_timestamp_is_utc_with_microseconds_and_z() -> None:
    stamp = Timestamper()
    assert stamp(ns("2025-12-22T10:30:00", 123456)) == (
        "2025-12-22",
        b"2025-12-22T10:30:00.123456Z",
    )
    assert stamp(ns("2025-12-22T10:30:00", 7)) == ("2025-12-22", b"2025-12-22T10:30:00.000007Z")


def test_timestamp_cache_follows_second_and_midnight() -> None:
    stamp = Timestamper()
    assert stamp(ns("2025-12-31T23:59:59", 999999))[1] == b"2025-12-31T23:59:59.999999Z"
    assert stamp(ns("2026-01-01T00:00:00", 0)) == ("2026-01-01", b"2026-01-01T00:00:00.000000Z")
    # Going back in time (clock step) is stamped correctly too.
    assert stamp(ns("2025-12-31T23:59:58", 1))[0] == "2025-12-31"


def test_line_keeps_data_byte_for_byte() -> None:
    raw = b'{"type":"ticker","sid":1,"msg":{"price":52,"yes_bid_dollars":"0.5200","x":1.10}}'
    line = LineFramer("kalshi").line(b"2025-12-22T10:30:00.123456Z", raw)
    assert line == (b'{"ts":"2025-12-22T10:30:00.123456Z","feed":"kalshi","data":' + raw + b"}\n")
    # 1.10 would become 1.1 through a parse/dump round trip; the raw bytes keep it.
    assert b'"x":1.10' in line
    assert json.loads(line)["data"] == json.loads(raw)


def test_line_keeps_non_ascii_bytes_as_received() -> None:
    raw = '{"title":"Élection — 2028 ✓","esc":"\\u00e9"}'.encode()
    line = LineFramer("kalshi").line(b"t", raw)
    assert line.endswith(b',"data":' + raw + b"}\n")
    assert json.loads(line)["data"]["title"] == "Élection — 2028 ✓"


def test_line_with_whitespace_newlines_stays_one_line() -> None:
    raw = b'{\n  "type": "trade",\r\n  "msg": {"text": "a\\nb"}\n}'
    line = LineFramer("kalshi").line(b"t", raw)
    assert line.count(b"\n") == 1
    assert line.endswith(b"}\n")
    assert json.loads(line)["data"] == json.loads(raw)


def test_feed_name_is_json_escaped() -> None:
    line = LineFramer('we"ird').line(b"t", b"1")
    assert json.loads(line)["feed"] == 'we"ird'


def test_rejected_text_and_binary_are_recoverable() -> None:
    framer = LineFramer("kalshi")
    text = json.loads(framer.rejected(b"t", "invalid_json", b"not {json\n", True, "bad"))
    assert text == {
        "ts": "t",
        "feed": "kalshi",
        "reason": "invalid_json",
        "error": "bad",
        "raw": "not {json\n",
    }
    blob = b"\x00\xff\x10"
    binary = framer.rejected(b"t", "binary_frame", blob, False)
    assert binary.count(b"\n") == 1
    assert base64.b64decode(json.loads(binary)["raw_base64"]) == blob
    # A text message with broken UTF-8 cannot be a JSON string: it is kept as base64 too.
    broken = json.loads(framer.rejected(b"t", "invalid_json", b'{"a":"\xff"}', True))
    assert base64.b64decode(broken["raw_base64"]) == b'{"a":"\xff"}'
