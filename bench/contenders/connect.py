"""The collector's connection, reproduced: same library, same options, same command.

The options mirror ``KalshiConnector.connect`` in collector/ssmd_collector/kalshi.py:
compression left at the library default (it offers permessage-deflate; the simulator
declines it), no keepalive pings of our own (``ping_interval=None``), ``max_size``
8 MiB, ``close_timeout`` 1 s, the same user agent and a logger pinned at INFO. Only
``create_connection`` differs: the collector plugs in its own connection class (how
it takes messages off the parser); the contenders use the library's own receive
path, or their own class where they say so.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import urlsplit

import websockets
from websockets.asyncio.client import ClientConnection

from bench.workload import API_KEY_ID, ContenderArgs, subscribe_command
from ssmd_collector.connectors.kalshi.signing import auth_headers, load_private_key

MAX_FRAME_BYTES = 8 << 20
"""ssmd-connector's default --max-frame-bytes."""

_WS_LOG = logging.getLogger("bench.websockets")
_WS_LOG.setLevel(logging.INFO)  # as the collector: never log the signed headers


def signed_headers(args: ContenderArgs) -> dict[str, str]:
    key = load_private_key(args.private_key.read_bytes())
    return auth_headers(API_KEY_ID, key, urlsplit(args.url).path)


async def connect_and_subscribe(
    args: ContenderArgs, create_connection: type[ClientConnection] | None = None
) -> ClientConnection:
    ws = await websockets.connect(
        args.url,
        additional_headers=signed_headers(args),
        create_connection=create_connection,
        ping_interval=None,
        ssl=None,
        open_timeout=10.0,
        max_size=MAX_FRAME_BYTES,
        close_timeout=1.0,
        user_agent_header="ssmd-connector",
        logger=_WS_LOG,
    )
    await ws.send(json.dumps(subscribe_command(args.markets)))
    return ws
