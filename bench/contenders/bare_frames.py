"""The floor of the library: websockets' own frame parser, each frame counted and dropped.

``recv()`` (the limit row) adds a message queue, a UTF-8 decode and an await per
message on top of parsing. The collector skips those by taking frames straight from
``process_event``; this row does the same and nothing else, so it is what any
recorder on websockets pays at least. Collector minus floor is the collector's own
cost per message (stamp, validate, frame, write). Informational: the issue's targets
are against the ``recv()`` loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.frames import Frame, Opcode

from bench.contenders.connect import connect_and_subscribe
from bench.contenders.window import ReceiveWindow, Report, emit
from bench.workload import ContenderArgs, parse_contender_args


class CountingConnection(ClientConnection):
    """Counts text frames as the parser yields them; everything else goes the usual way."""

    frames = 0
    window: ReceiveWindow

    def process_event(self, event: Any) -> None:
        if type(event) is Frame:
            if event.opcode is Opcode.TEXT:
                if not self.frames:
                    self.window = ReceiveWindow()
                    self.window.first()
                self.frames += 1
                return
            if event.opcode is Opcode.CLOSE and self.frames:
                self.window.close()
        super().process_event(event)


async def receive(args: ContenderArgs) -> Report:
    ws = await connect_and_subscribe(args, CountingConnection)
    assert isinstance(ws, CountingConnection)
    await ws.wait_closed()
    if not ws.frames:
        return ReceiveWindow().report(0)
    return ws.window.report(ws.frames)


def main() -> None:
    emit(asyncio.run(receive(parse_contender_args(__doc__ or ""))))


if __name__ == "__main__":
    main()
