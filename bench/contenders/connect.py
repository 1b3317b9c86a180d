"""The collector's connection, reproduced: same library, same options, same command.

The options mirror ``KalshiConnector.connect`` in collector/ssmd_collector/kalshi.py
(compression left at the library default, which offers permessage-deflate; the
simulator declines it, as Kalshi does not negotiate it either; default keepalive
pings; ``max_size`` 8 MiB; ``close_timeout`` 1 s). Only the collector's
``create_connection=_WatchedConnection`` (its liveness hook) is left out: that hook
is part of what the collector costs over the bare library.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import urlsplit

import websockets
from websockets.asyncio.client import ClientConnection

from bench.workload import API_KEY_ID, ContenderArgs, subscribe_command
from ssmd_collector.signing import auth_headers, load_private_key

MAX_FRAME_BYTES = 8 << 20
"""ssmd-connector's default --max-frame-bytes."""

_WS_LOG = logging.getLogger("bench.websockets")
_WS_LOG.setLevel(logging.INFO)  # as the collector: never log the signed headers


def signed_headers(args: ContenderArgs) -> dict[str, str]:
    key = load_private_key(args.private_key.read_bytes())
    return auth_headers(API_KEY_ID, key, urlsplit(args.url).path)


async def connect_and_subscribe(args: ContenderArgs) -> ClientConnection:
    ws = await websockets.connect(
        args.url,
        additional_headers=signed_headers(args),
        ssl=None,
        open_timeout=10.0,
        max_size=MAX_FRAME_BYTES,
        close_timeout=1.0,
        user_agent_header="ssmd-connector",
        logger=_WS_LOG,
    )
    await ws.send(json.dumps(subscribe_command(args.markets)))
    return ws
