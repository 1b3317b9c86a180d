"""A real S3-compatible server (moto's server mode) and a fault-injecting HTTP proxy in front.

``MotoS3`` serves the S3 REST API on a loopback port from a thread. ``FaultProxy``
is a real HTTP server that forwards each request to it and can answer 500s,
answer late, or forward a PUT and then hold its answer (the store has the object
but the uploader never hears so), counting what reached the store.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import aiohttp
import boto3
from aiohttp import web
from moto.moto_server.threaded_moto_server import ThreadedMotoServer

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test-key-id", "AWS_SECRET_ACCESS_KEY": "test-secret"}
REGION = "us-east-1"
_HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "content-encoding", "date"}
_ERROR_500 = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
    b"<Message>injected by the test proxy</Message></Error>"
)


class MotoS3:
    def __init__(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def objects(self, bucket: str) -> dict[str, bytes]:
        c = self.client()
        listing = c.list_objects_v2(Bucket=bucket).get("Contents", [])
        return {o["Key"]: c.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listing}

    def stop(self) -> None:
        self._server.stop()


@contextlib.contextmanager
def moto_s3() -> Iterator[MotoS3]:
    server = MotoS3()
    try:
        yield server
    finally:
        server.stop()


class FaultProxy:
    def __init__(self, upstream: str, port: int = 0) -> None:
        self.upstream = upstream
        self.port = port
        self.fail_next = 0
        """Answer this many coming requests with a 500 (without forwarding them)."""
        self.fail_where = ""
        """Only requests whose path and query contain this count for ``fail_next``."""
        self.delay = 0.0
        """Seconds to wait before handling each request."""
        self.hold_puts = False
        """Forward PUTs to the store, then never answer them (until ``release``)."""
        self.release = asyncio.Event()
        self.forwarded: Counter[tuple[str, str]] = Counter()
        """(method, path and query) of requests the store answered, by count."""
        self.answered_500 = 0
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    def puts(self, path_part: str) -> int:
        """PUTs of object paths containing ``path_part`` that reached the store."""
        return sum(n for (m, p), n in self.forwarded.items() if m == "PUT" and path_part in p)

    async def __aenter__(self) -> FaultProxy:
        self._http = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_next > 0 and self.fail_where in request.path_qs:
            self.fail_next -= 1
            self.answered_500 += 1
            return web.Response(status=500, body=_ERROR_500, content_type="application/xml")
        assert self._http is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        async with self._http.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body
        ) as answer:
            payload = await answer.read()
            length = answer.headers.get("Content-Length", "0")
            status = answer.status
            out_headers = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_HEADERS}
        self.forwarded[(request.method, request.path_qs)] += 1
        if request.method == "PUT" and self.hold_puts:
            await self.release.wait()
        if request.method == "HEAD":
            # A HEAD answer's Content-Length is the object's size, not this (empty) body's.
            head = web.StreamResponse(status=status, headers=out_headers)
            head.content_length = int(length)
            await head.prepare(request)
            await head.write_eof()
            return head
        return web.Response(status=status, body=payload, headers=out_headers)
