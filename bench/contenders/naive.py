"""A naive recorder: what one writes first, to show what the collector's design saves.

Per message: ``json.loads`` the frame, wrap it as ``{"ts","feed","data"}`` with an ISO
timestamp, ``json.dumps`` the record (re-encoding the exchange's data) and write the
line to a buffered text file. The final flush and close are inside the window: the
collector's window also ends when its last line is handed to the OS.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json

from websockets.exceptions import ConnectionClosed

from bench.contenders.connect import connect_and_subscribe
from bench.contenders.window import ReceiveWindow, Report, emit
from bench.workload import FEED, ContenderArgs, parse_contender_args


async def record(args: ContenderArgs) -> Report:
    if args.out is None:
        raise SystemExit("--out is required")
    ws = await connect_and_subscribe(args)
    window = ReceiveWindow()
    frames = 0
    with args.out.open("w", encoding="utf-8") as out:
        try:
            while True:
                raw = await ws.recv()
                if not frames:
                    window.first()
                frames += 1
                record = {
                    "ts": dt.datetime.now(dt.UTC).isoformat(),
                    "feed": FEED,
                    "data": json.loads(raw),
                }
                out.write(json.dumps(record) + "\n")
        except ConnectionClosed:
            pass
    window.close()
    return window.report(frames)


def main() -> None:
    emit(asyncio.run(record(parse_contender_args(__doc__ or ""))))


if __name__ == "__main__":
    main()
