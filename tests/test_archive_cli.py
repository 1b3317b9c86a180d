"""``ssmd archive replay`` as a process: the command line starts the server a client uses.

Real process, real socket: the replay listens on a free port, says where on stderr,
serves an unsigned client the archive's ``trade`` frames byte for byte, closes at the
archive's end, and stops cleanly on SIGINT. Also the ``--speed`` forms it accepts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sys
from pathlib import Path

import pytest
import typer
from archive_tools_harness import record_archive
from deadlines import within
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedOK

from ssmd_collector.archive.cli import parse_speed
from ssmd_collector.sim import Ending

SSMD = str(Path(sys.executable).parent / "ssmd")


@pytest.mark.parametrize(
    ("text", "speed"),
    [("recorded", 1.0), ("max", None), ("x10", 10.0), ("2.5", 2.5), ("X4", 4.0)],
)
def test_speed_forms(text: str, speed: float | None) -> None:
    assert parse_speed(text) == speed


@pytest.mark.parametrize("text", ["0", "x0", "-2", "fast", ""])
def test_speeds_refused_say_what_is_expected(text: str) -> None:
    with pytest.raises(typer.BadParameter, match="expected recorded, max or a multiple above 0"):
        parse_speed(text)


async def test_the_replay_command_serves_a_client_and_stops_on_sigint(
    tmp_path: Path, ed25519_keys: tuple[bytes, bytes]
) -> None:
    run, _ = await record_archive(tmp_path, ed25519_keys, messages=1500, ending=Ending.CLOSE)
    trades = [d for d in run.data() if d.startswith('{"type":"trade"')]
    assert trades
    child = await asyncio.create_subprocess_exec(
        SSMD, "archive", "replay", str(run.data_dir), "--port", "0", "--allow-unsigned",
        "--speed", "max", "--heartbeat", "0.2", "--subscribe-wait", "0.05",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert child.stderr is not None
    try:
        first = (await within(child.stderr.readline(), "the replay's address")).decode()
        url = re.search(r"at (ws://\S+)", first)
        assert url, first
        received: list[str] = []
        async with connect(url[1]) as ws:
            subscribe = {"id": 1, "cmd": "subscribe", "params": {"channels": ["trade"]}}
            await ws.send(json.dumps(subscribe))
            with contextlib.suppress(ConnectionClosedOK):
                while True:
                    received.append(str(await within(ws.recv(), "a frame")))
        assert json.loads(received[0])["type"] == "subscribed"
        assert received[1:] == trades
        child.send_signal(signal.SIGINT)
        assert await within(child.wait(), "the replay to stop") == 0
        rest = (await within(child.stderr.read(), "the replay's last words")).decode()
        assert "ssmd archive replay: stopped" in rest
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
