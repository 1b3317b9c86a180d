"""``ssmd archive replay``: an archive served over Kalshi's protocol by the sim's server.

Recorded by ssmd-connector, a replay gives back the same ``data`` byte for byte (plain
or sealed archive); a plain client's channel and market filters, ``list_subscriptions``
and pings work; pacing follows the recorded times times the speed (injected clock).
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
from archive_tools_harness import FEED, record_archive, record_from, record_twice, sim_config
from collector_harness import Run
from deadlines import deadline, within
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedOK

from ssmd_collector.archive.reader import open_archive
from ssmd_collector.archive.replay import Archived, ArchiveSource, session_range, source_factory
from ssmd_collector.connectors.kalshi import signing
from ssmd_collector.exitcodes import ExitCode
from ssmd_collector.sim import Ending, SimServer
from ssmd_collector.sim.market import Stream
from ssmd_collector.storage.seal import seal_day

ANSWERS = {"subscribed", "ok", "unsubscribed"}


def split(data: list[str]) -> tuple[list[str], list[str]]:
    """(answers to the recorder's commands, everything else), each in archive order."""
    answers, frames = [], []
    for text in data:
        doc = json.loads(text)
        is_answer = doc.get("type") in ANSWERS or (doc.get("type") == "error" and "id" in doc)
        (answers if is_answer else frames).append(text)
    return answers, frames


def replay_server(root: Path, public_pem: bytes, **source: Any) -> SimServer:
    settings: dict[str, Any] = {"speed": None, "subscribe_wait": deadline(30)} | source
    factory = source_factory(open_archive(root), **settings)
    return SimServer(sim_config(public_pem, source=factory, ending=Ending.CLOSE))


@pytest.mark.parametrize("layout", ["plain", "sealed", "no events file"])
async def test_recording_a_replay_gives_back_the_same_data(
    tmp_path: Path, ed25519_keys: tuple[bytes, bytes], layout: str
) -> None:
    first, _ = await record_archive(
        tmp_path / "first", ed25519_keys, messages=3000, ending=Ending.CLOSE
    )
    original = first.data()
    if layout == "sealed":
        for folder in first.data_dir.iterdir():
            seal_day(folder, FEED, now=lambda: time.time() + 3 * 86_400)
    if layout == "no events file":  # the sids then come from the archived answers
        for events in first.data_dir.glob(f"*/{FEED}.events.jsonl"):
            events.unlink()
    async with replay_server(first.data_dir, ed25519_keys[1]) as replay:
        second: Run = await record_from(replay.url, tmp_path / "second", ed25519_keys)
    assert second.code == ExitCode.DISCONNECTED  # the replay closed at the archive's end
    answers, frames = split(original)
    replayed_answers, replayed_frames = split(second.data())
    assert len(frames) == 3000  # the sim's data messages
    assert replayed_frames == frames  # every frame, byte for byte, in order
    assert replayed_answers == answers  # the archived sids on the same answers
    events = [e["event"] for e in second.events()]
    assert "gap" not in events
    assert "duplicate" not in events


async def test_a_client_filters_by_channel_and_market_lists_and_pings(
    tmp_path: Path, ed25519_keys: tuple[bytes, bytes]
) -> None:
    first, _ = await record_archive(tmp_path, ed25519_keys, messages=3000, ending=Ending.CLOSE)
    archived = [json.loads(d) for d in first.data()]
    trade_sid = next(
        d["msg"]["sid"] for d in archived if d.get("msg", {}) and d["type"] == "subscribed"
        and d["msg"]["channel"] == "trade"
    )  # fmt: skip
    market = next(d["msg"]["market_ticker"] for d in archived if d["type"] == "trade")
    wanted = [
        text
        for text, d in zip(first.data(), archived, strict=True)
        if d["type"] in ("trade", "ticker") and d["msg"]["market_ticker"] == market
    ]
    key = signing.load_private_key(ed25519_keys[0])
    # This client never subscribes the archive's other channels: the replay waits only
    # briefly where the recorder subscribed them.
    async with (
        replay_server(first.data_dir, ed25519_keys[1], subscribe_wait=0.05) as replay,
        connect(replay.url, additional_headers=signing.auth_headers("key-1", key)) as ws,
    ):
        subscribe = {"channels": ["trade", "ticker"], "market_tickers": [market]}
        await ws.send(json.dumps({"id": 1, "cmd": "subscribe", "params": subscribe}))
        await ws.send(json.dumps({"id": 2, "cmd": "list_subscriptions"}))
        await within(await ws.ping(), "a pong from the replay")
        received: list[str] = []
        with contextlib.suppress(ConnectionClosedOK):
            while True:
                received.append(str(await within(ws.recv(), "a frame")))
    assert ws.close_code == 1000  # the replay closed at the archive's end
    answers = [json.loads(r) for r in received if '"id":' in r[:8]]
    subscribed = {
        a["msg"]["channel"]: a["msg"]["sid"] for a in answers if a["type"] == "subscribed"
    }
    assert subscribed["trade"] == trade_sid
    listed = next(a for a in answers if a["id"] == 2)
    assert sorted(s["channel"] for s in listed["msg"]) == ["ticker", "trade"]
    frames = [r for r in received if '"id":' not in r[:8]]
    assert len(wanted) > 10
    assert frames == wanted


def archived(seconds: list[float]) -> list[Archived]:
    frames = [Archived(0, "", None, None, "", "trade", 4)]  # the recorder's subscribed answer
    for i, s in enumerate(seconds):
        text = f'{{"type":"trade","sid":4,"seq":{i + 1},"msg":{{}}}}'
        frames.append(Archived(int(s * 1e9), "", "trade", "M", text))
    return frames


@pytest.mark.parametrize(
    ("speed", "due"),
    [(1.0, [0, 1, 1, 3]), (2.0, [0, 0.5, 0.5, 1.5]), (None, [0, 0, 0, 0])],
    ids=["recorded", "x2", "max"],
)
def test_frames_are_due_at_their_recorded_times_over_the_speed(
    speed: float | None, due: list[float]
) -> None:
    now = [100.0]
    source = ArchiveSource(
        iter(archived([10, 11, 11, 13])), {"trade": 4}, speed=speed, clock=lambda: now[0]
    )
    assert source.new_sid("trade", 1) == 4  # the archive's sid for the channel
    assert source.new_sid("ticker", 5) == 5
    source.attach(Stream(4, "trade"), ["M"])
    sent_at: list[float] = []
    while not source.exhausted:
        frames = source.take(10)
        sent_at.extend([now[0] - 100.0] * len(frames))
        now[0] += source.delay()
    assert sent_at == due


async def test_one_recorded_session_of_several_replays_alone(
    tmp_path: Path, ed25519_keys: tuple[bytes, bytes]
) -> None:
    _, second = await record_twice(tmp_path / "first", ed25519_keys)
    archive = open_archive(second.data_dir)
    start, end = session_range(archive, 2)
    assert end is None
    stamps = [json.loads(line)["ts"] for line in second.lines()]
    later = [data for ts, data in zip(stamps, second.data(), strict=True) if ts >= start]
    _, frames = split(later)
    assert 0 < len(frames) < len(split(second.data())[1])
    async with replay_server(second.data_dir, ed25519_keys[1], start=start, end=end) as replay:
        again = await record_from(replay.url, tmp_path / "again", ed25519_keys)
    assert split(again.data())[1] == frames
    assert not [e for e in again.events() if e["event"] in ("duplicate", "gap")]


def frame(ns: int, channel: str, market: str | None, text: str) -> Archived:
    return Archived(ns, "", channel, market, text)


def test_market_filters_follow_add_and_delete_markets() -> None:
    frames = [frame(i, "trade", "AB"[i % 2], f"t{i}") for i in range(8)]
    source = ArchiveSource(iter(frames), {}, speed=None)
    stream = Stream(1, "trade")
    source.attach(stream, ["A"])
    assert source.take(2) == ["t0", "t2"]
    source.add_markets(stream, ["B"])
    assert source.take(2) == ["t3", "t4"]
    source.remove_markets(stream, ["A"])
    assert source.take(10) == ["t5", "t7"]
    assert source.exhausted


def test_the_replay_waits_where_the_recorder_subscribed_until_the_client_does() -> None:
    now = [0.0]
    frames = [
        Archived(0, "", None, None, "", "trade", 1),
        frame(1, "trade", "A", "t1"),
        Archived(2, "", None, None, "", "ticker", 2),
        frame(3, "trade", "A", "t3"),
        frame(4, "ticker", "A", "k4"),
        Archived(5, "", None, None, "", "orderbook_delta", 3),
        frame(6, "trade", "A", "t6"),
    ]
    source = ArchiveSource(iter(frames), {}, speed=None, subscribe_wait=2.0, clock=lambda: now[0])
    source.attach(Stream(1, "trade"), None)
    assert source.take(10) == ["t1"]  # parked where the recorder subscribed ticker
    assert source.delay() > 0
    now[0] += 1.0
    assert source.take(10) == []  # still within the wait
    source.attach(Stream(2, "ticker"), None)  # the client subscribes ticker too
    assert source.take(10) == ["t3", "k4"]  # parked again, at orderbook_delta
    now[0] += 2.5  # the client never subscribes it: the replay goes on
    assert source.take(10) == ["t6"]
    assert source.exhausted
