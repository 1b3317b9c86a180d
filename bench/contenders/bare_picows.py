"""The limit on a faster library: picows (Cython) receiving every frame, decoding it, counting.

Issue 5 asks, if the WebSocket library itself is the wall, to measure a faster client
in the same harness. This is the same loop as ``bare_websockets`` (same signed
handshake, same subscribe command), except that picows hands frames to a callback
instead of queueing them for ``recv()``. Each payload is decoded to ``str`` as
websockets' ``recv()`` does, so the two rows compare like for like. picows is
optional: the benchmark skips this row when it is not installed.
"""

from __future__ import annotations

import asyncio
import json

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from bench.contenders.connect import MAX_FRAME_BYTES, signed_headers
from bench.contenders.window import ReceiveWindow, Report, emit
from bench.workload import ContenderArgs, parse_contender_args, subscribe_command


class CountingListener(WSListener):
    def __init__(self, command: bytes) -> None:
        super().__init__()
        self.command = command
        self.window = ReceiveWindow()
        self.frames = 0
        self.error = ""

    def on_ws_connected(self, transport: WSTransport) -> None:
        transport.send(WSMsgType.TEXT, self.command)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind == WSMsgType.TEXT:
            frame.get_payload_as_utf8_text()
            if not self.frames:
                self.window.first()
            self.frames += 1
            if not frame.fin:  # the simulator never fragments; say so if that changes
                self.error = "fragmented message: this loop counts frames, not messages"
        elif kind == WSMsgType.CLOSE:
            self.window.close()
            transport.send_close(frame.get_close_code())
            transport.disconnect()


async def receive(args: ContenderArgs) -> Report:
    command = json.dumps(subscribe_command(args.markets)).encode()
    transport, listener = await ws_connect(
        lambda: CountingListener(command),
        args.url,
        extra_headers=signed_headers(args),
        max_frame_size=MAX_FRAME_BYTES,
        websocket_handshake_timeout=10,
    )
    await transport.wait_disconnected()
    assert isinstance(listener, CountingListener)
    return listener.window.report(listener.frames, listener.error)


def main() -> None:
    emit(asyncio.run(receive(parse_contender_args(__doc__ or ""))))


if __name__ == "__main__":
    main()
