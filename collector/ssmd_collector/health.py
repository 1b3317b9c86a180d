"""HTTP endpoints for Kubernetes and Prometheus: ``/health``, ``/ready``, ``/metrics``.

They only read plain attributes (the runner's ``Stats``, the connector's
``ConnectorMetrics``), so a scrape never waits on, or slows, the data path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from .connectors import ConnectorMetrics
from .metrics import Stats


class HealthServer:
    def __init__(
        self,
        stats: Stats,
        connection: ConnectorMetrics,
        registry: CollectorRegistry,
        host: str,
        port: int,
    ) -> None:
        self.stats = stats
        self.connection = connection
        self.registry = registry
        self.host = host
        self.port = port
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/ready", self._ready)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)

    async def start(self) -> None:
        """Bind the port; with port 0, ``self.port`` becomes the one the OS chose."""
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        for address in self._runner.addresses:
            self.port = int(address[1])
            break

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _health(self, _: web.Request) -> web.Response:
        # Alive as long as the event loop answers: the process exits on any fatal fault.
        return _json(200, {"status": "ok"})

    async def _ready(self, _: web.Request) -> web.Response:
        c = self.connection
        body = {
            "ready": c.ready,
            "connected": c.connected,
            "subscriptions_live": c.subscriptions_live,
            "subscriptions_wanted": c.subscriptions_wanted,
        }
        return _json(200 if c.ready else 503, body)

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )


def _json(status: int, body: Mapping[str, object]) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")
