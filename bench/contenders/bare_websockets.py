"""The limit: the collector's WebSocket library receiving every frame and only counting it.

Nothing a recorder does (parse, stamp, frame, write) happens here, so its CPU per
message is the floor any recorder on this library pays; the collector's cost is
reported as a multiple of it.
"""

from __future__ import annotations

import asyncio

from websockets.exceptions import ConnectionClosed

from bench.contenders.connect import connect_and_subscribe
from bench.contenders.window import ReceiveWindow, Report, emit
from bench.workload import ContenderArgs, parse_contender_args


async def receive(args: ContenderArgs) -> Report:
    ws = await connect_and_subscribe(args)
    window = ReceiveWindow()
    recv = ws.recv
    frames = 0
    try:
        await recv()
        window.first()
        frames = 1
        while True:
            await recv()
            frames += 1
    except ConnectionClosed:
        pass
    window.close()
    return window.report(frames)


def main() -> None:
    emit(asyncio.run(receive(parse_contender_args(__doc__ or ""))))


if __name__ == "__main__":
    main()
