"""The sender's ceiling: a reader that does no WebSocket work at all, only counts bytes.

It performs the signed upgrade by hand, sends the same subscribe command, then reads
the socket (default buffer sizes, as every contender) into one reused buffer until
every byte the replay says the stream holds (answers and data, with their frame
headers) has arrived. Its own CPU per message is a small fraction of any real
receiver's, so the rate it sees is what the simulator can offer on its core, and
tells whether a contender was limited by itself or by the sender.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import struct
from pathlib import Path
from urllib.parse import urlsplit

from bench.contenders.connect import signed_headers
from bench.contenders.window import ReceiveWindow, Report, emit
from bench.workload import ContenderArgs, subscribe_command


def _masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame (RFC 6455: client-to-server frames are masked)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65_536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    key = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return header + mask + masked


def _handshake(sock: socket.socket, args: ContenderArgs) -> bytes:
    """Send the signed upgrade request; return bytes received after the 101 response."""
    url = urlsplit(args.url)
    lines = [
        f"GET {url.path} HTTP/1.1",
        f"Host: {url.netloc}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
        "Sec-WebSocket-Version: 13",
        "User-Agent: ssmd-bench-raw",
        *(f"{k}: {v}" for k, v in signed_headers(args).items()),
    ]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(65_536)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        response += chunk
    head, _, rest = response.partition(b"\r\n\r\n")
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise ConnectionError(f"handshake refused: {head.splitlines()[0]!r}")
    return rest


def receive(args: ContenderArgs, frames: int, wire_bytes: int) -> Report:
    url = urlsplit(args.url)
    window = ReceiveWindow()
    with socket.create_connection((url.hostname or "127.0.0.1", url.port or 80)) as sock:
        received = len(_handshake(sock, args))
        command = json.dumps(subscribe_command(args.markets)).encode()
        sock.sendall(_masked_frame(0x1, command))
        buf = bytearray(1 << 20)
        recv_into = sock.recv_into
        if received:
            window.first()
        while received < wire_bytes:
            n = recv_into(buf)
            if not n:
                break
            if not window.opened:
                window.first()
            received += n
        window.close()
        if received >= wire_bytes:
            sock.sendall(_masked_frame(0x8, struct.pack("!H", 1000)))
    error = "" if received >= wire_bytes else f"stream ended after {received} of {wire_bytes} B"
    seen = frames if not error else frames * received // wire_bytes
    return window.report(seen, error)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--private-key", type=Path, required=True)
    parser.add_argument("--markets", type=int, required=True)
    parser.add_argument("--frames", type=int, required=True, help="frames the stream holds")
    parser.add_argument("--wire-bytes", type=int, required=True, help="bytes the stream holds")
    ns = parser.parse_args()
    args = ContenderArgs(ns.url, ns.private_key, ns.markets, None)
    emit(receive(args, ns.frames, ns.wire_bytes))


if __name__ == "__main__":
    main()
