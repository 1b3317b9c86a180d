"""Harness that runs the real ssmd operator (kopf) against the kmock API emulator over HTTP.

Test modules import helpers from here and wrap ``emulated_cluster`` and
``running_operator`` in fixtures. There is deliberately no conftest.py in
tests/operator: other tests do ``from conftest import ...``, and a second module
named ``conftest`` would shadow theirs.

kmock 0.8 facts these fixtures work around (see ARCHITECTURE.md, "Tests"):
every resource the operator touches is declared with verbs and subresources;
kopf runs cluster-wide (namespace listing hits a kmock path-parsing bug); objects
carry the uid/generation the operator reads, because kmock sets none; and the
tests create, patch and delete objects over HTTP so that watch events flow.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import kmock as kmock_lib
import kopf
from deadlines import deadline, wait_until_async

from ssmd_collector.metadata import read_directory
from ssmd_operator.handlers import OperatorConfig, build_registry, operator_settings
from ssmd_operator.names import DEFAULT_METADATA_CONFIGMAPS

REPO = Path(__file__).resolve().parents[2]
EXCHANGES = REPO / "exchanges"
NAMESPACE = "ssmd"
TODAY = dt.datetime(2026, 1, 15, 12, 0, tzinfo=dt.UTC)

# Recognisable values: any of them showing up outside the Secret is a leak.
API_KEY = "LEAKCHECK-api-key-7f3a9c"
PRIVATE_KEY = "-----BEGIN PRIVATE KEY-----\nLEAKCHECK-private-key-e41b\n-----END PRIVATE KEY-----\n"

RESOURCES: dict[str, dict[str, Any]] = {
    "ssmd.io/v1alpha1/ssmdenvironments": dict(
        kind="SsmdEnvironment", namespaced=True, subresources={"status"}
    ),
    "v1/configmaps": dict(kind="ConfigMap", namespaced=True),
    "v1/secrets": dict(kind="Secret", namespaced=True),
    "v1/events": dict(kind="Event", namespaced=True),
    "apps/v1/deployments": dict(kind="Deployment", namespaced=True, subresources={"status"}),
    # kopf's backbone: resolved at start even with scanning disabled.
    "v1/namespaces": dict(kind="Namespace", namespaced=False),
    "apiextensions.k8s.io/v1/customresourcedefinitions": dict(
        kind="CustomResourceDefinition", namespaced=False
    ),
}
VERBS = {"get", "list", "watch", "create", "patch", "delete"}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def path(api_version: str, plural: str, name: str | None = None, sub: str | None = None) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    out = f"{base}/namespaces/{NAMESPACE}/{plural}"
    return out + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")


ENV = ("ssmd.io/v1alpha1", "ssmdenvironments")
CM = ("v1", "configmaps")
SECRET = ("v1", "secrets")
DEPLOY = ("apps/v1", "deployments")
EVENTS = ("v1", "events")


def metadata_config_maps() -> list[dict[str, Any]]:
    """exchanges/ as the kustomization generates it: one ConfigMap per directory."""
    tree = read_directory(EXCHANGES)
    maps = []
    for name, directory in DEFAULT_METADATA_CONFIGMAPS:
        data = {
            p.split("/", 1)[1]: content.decode()
            for p, content in tree.items()
            if p.startswith(directory + "/")
        }
        maps.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": name,
                    "namespace": NAMESPACE,
                    "labels": {"ssmd.io/metadata": "true"},
                },
                "data": data,
            }
        )
    return maps


def environment(name: str, uid: str, generation: int = 1, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "ssmd.io/v1alpha1",
        "kind": "SsmdEnvironment",
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": uid, "generation": generation},
        "spec": spec,
    }


def keys_secret(name: str = "kalshi-keys", **data: str) -> dict[str, Any]:
    values = data or {"api_key": API_KEY, "private_key": PRIVATE_KEY}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "type": "Opaque",
        "data": {k: b64(v) for k, v in values.items()},
    }


@dataclass
class Cluster:
    """Create/patch/delete over HTTP (so the operator sees watch events) and wait for states."""

    emulator: Any
    session: aiohttp.ClientSession
    operator_errors: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return str(self.emulator.url).rstrip("/")

    async def _call(self, method: str, p: str, body: Any = None) -> Any:
        headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
        async with self.session.request(method, self.url + p, json=body, headers=headers) as r:
            if r.status == 404 and method == "GET":
                return None
            assert r.status < 400, f"{method} {p}: {r.status} {await r.text()}"
            return await r.json()

    async def create(self, resource: tuple[str, str], body: dict[str, Any]) -> Any:
        return await self._call("POST", path(*resource), body)

    async def get(self, resource: tuple[str, str], name: str) -> Any:
        return await self._call("GET", path(*resource, name))

    async def patch(
        self, resource: tuple[str, str], name: str, body: Any, sub: str | None = None
    ) -> Any:
        return await self._call("PATCH", path(*resource, name, sub), body)

    async def delete(self, resource: tuple[str, str], name: str) -> Any:
        return await self._call("DELETE", path(*resource, name))

    async def list(self, resource: tuple[str, str]) -> list[dict[str, Any]]:
        listed = await self._call("GET", path(*resource))
        return list(listed["items"])

    async def wait(
        self,
        probe: Callable[[], Any],
        what: str,
        timeout: float = 30.0,
    ) -> Any:
        """Poll ``probe`` (async) until it returns something truthy (scaled deadline)."""
        return await wait_until_async(probe, what, timeout)

    async def condition(self, env: str, type_: str) -> dict[str, Any] | None:
        obj = await self.get(ENV, env)
        for c in ((obj or {}).get("status") or {}).get("conditions") or []:
            if c["type"] == type_:
                return dict(c)
        return None

    async def wait_condition(
        self, env: str, type_: str, status: str, reason: str | None = None
    ) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            c = await self.condition(env, type_)
            ok = (
                c is not None
                and c["status"] == status
                and (reason is None or c["reason"] == reason)
            )
            return c if ok else None

        return dict(await self.wait(probe, f"{env} {type_}={status} {reason or ''}"))

    async def quiet(self, period: float = 0.5, timeout: float = 30.0) -> None:
        """Wait until the operator has made no request for ``period`` seconds."""
        timeout = deadline(timeout)
        end = time.monotonic() + timeout
        count = -1
        while time.monotonic() < end:
            now = len(list(self.emulator))
            if now == count:
                return
            count = now
            await asyncio.sleep(period)
        raise AssertionError(f"the operator kept making requests for {timeout} s")

    def writes(self) -> list[tuple[str, str]]:
        """Every write request the emulator has served so far (method, path)."""
        return [
            (str(r.method.value).upper(), r.url.path)
            for r in self.emulator
            if str(r.method.value).upper() in {"POST", "PATCH", "PUT", "DELETE"}
        ]

    async def make_available(self, env: str, deployment: str | None = None) -> None:
        """Stand in for the Deployment controller: the collector pod became ready
        (of ``deployment``, by default the unsharded ``<env>-collector``)."""
        await self.patch(
            DEPLOY,
            deployment or f"{env}-collector",
            {
                "status": {
                    "replicas": 1,
                    "availableReplicas": 1,
                    "readyReplicas": 1,
                    "conditions": [{"type": "Available", "status": "True"}],
                }
            },
            sub="status",
        )


class _ErrorCollector(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.ERROR)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        # Only the operator's own words: under load the emulator's aiohttp server logs
        # "Error handling request" for clients that hung up, which says nothing of us.
        if record.name.startswith(("ssmd", "kopf")):
            self.sink.append(record.getMessage())


@contextlib.asynccontextmanager
async def emulated_cluster(kmock: Any) -> AsyncIterator[Cluster]:
    """An emulated API server with the metadata ConfigMaps from exchanges/ applied."""
    for resource, info in RESOURCES.items():
        kmock.resources[resource] = kmock_lib.ResourceInfo(verbs=VERBS, **info)
    async with aiohttp.ClientSession() as session:
        c = Cluster(kmock, session)
        for cm in metadata_config_maps():
            await c.create(CM, cm)
        yield c


class OperatorThread:
    """The operator in its own thread and event loop, as ``kopf run`` would have it.

    kopf cancels every task created in its loop after it started when it stops;
    sharing pytest-asyncio's loop would cancel the fixture teardown itself.
    """

    def __init__(
        self,
        config: OperatorConfig,
        namespaces: list[str] | None = None,
        liveness_endpoint: str | None = None,
    ) -> None:
        self.config = config
        self.namespaces = namespaces or []
        self.liveness_endpoint = liveness_endpoint
        self.started = threading.Event()
        self.thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_flag: asyncio.Event | None = None

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop_flag = asyncio.Event()
        self.started.set()
        await kopf.operator(
            registry=build_registry(self.config),
            settings=operator_settings(),
            clusterwide=not self.namespaces,
            namespaces=self.namespaces,
            standalone=True,
            stop_flag=self.stop_flag,
            liveness_endpoint=self.liveness_endpoint,
        )

    def start(self) -> None:
        self.thread.start()
        if not self.started.wait(deadline(30)):
            raise AssertionError(f"the operator thread did not start within {deadline(30):g}s")

    async def stop(self) -> None:
        if self.loop is not None and self.stop_flag is not None:
            self.loop.call_soon_threadsafe(self.stop_flag.set)
        await asyncio.to_thread(self.thread.join, deadline(30))
        assert not self.thread.is_alive(), f"the operator did not stop within {deadline(30):g}s"


def operator_config(cluster: Cluster) -> OperatorConfig:
    return OperatorConfig(
        login=lambda **_: kopf.ConnectionInfo(server=cluster.url, insecure=True),
        resync_seconds=3600,  # the tests prove event-driven reconciliation
        retry_seconds=0.5,
        clock=lambda: TODAY,
    )


@contextlib.asynccontextmanager
async def running_operator(cluster: Cluster) -> AsyncIterator[Cluster]:
    """The real operator (kopf event loop and all handlers) running against ``cluster``."""
    config = operator_config(cluster)
    errors = _ErrorCollector(cluster.operator_errors)
    logging.getLogger().addHandler(errors)
    runner = OperatorThread(config)
    runner.start()
    try:
        yield cluster
    finally:
        await runner.stop()
        logging.getLogger().removeHandler(errors)


# --- Fault injection (test_operator_faults.py) --------------------------------------
# A reverse proxy between the operator and kmock. kmock applies a write even when a
# reaction of its own answers the request, so faults where the API server did *not*
# apply the request (a 503 from an overloaded server, a 409 from a racing writer)
# need a hop of their own. Only the ssmd-operator's own client (User-Agent
# "ssmd-operator", kube.py) is faulted by default; kopf's watches pass through.

OPERATOR_AGENT = "ssmd-operator"


@dataclass
class Fault:
    """Answer matching requests with ``status`` (not forwarded), or another ``action``.

    ``action``: "status" answers ``status`` without forwarding; "lost" forwards (the
    server applies it) and then answers ``status`` as if the answer was lost; "hang"
    answers nothing until the client gives up (or ``hang_seconds`` pass).
    ``before``: awaited before forwarding (to stage a race), with the action "forward".
    ``mutate``: with the action "mutate", rewrites the JSON body before forwarding, as a
    mutating admission webhook or the API server's defaulting would.
    ``times``: how many matching requests to fault; None: until removed.
    """

    method: str
    path: str  # a regular expression searched in the URL path
    status: int = 503
    action: str = "status"
    times: int | None = None
    agent: str | None = OPERATOR_AGENT
    hang_seconds: float = 5.0
    before: Callable[[], Any] | None = None
    mutate: Callable[[Any], Any] | None = None
    hits: int = 0

    def matches(self, method: str, url_path: str, agent: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.agent is not None and agent != self.agent:
            return False
        return method == self.method.upper() and re.search(self.path, url_path) is not None


@dataclass(frozen=True)
class Seen:
    """One request the proxy saw: when, what, from whom, and how it was answered."""

    at: float
    method: str
    path: str
    query: str
    agent: str
    body: str
    answer: str  # "forwarded", "lost", "hang" or the status code faulted


class FaultProxy:
    """An HTTP reverse proxy to ``upstream`` (kmock) that applies ``faults`` in order."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults: list[Fault] = []
        self.seen: list[Seen] = []
        self._released = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._runner: aiohttp.web.ServerRunner | None = None
        self.url = ""

    async def __aenter__(self) -> FaultProxy:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        server = aiohttp.web.Server(self._handle)
        self._runner = aiohttp.web.ServerRunner(server, shutdown_timeout=0.5)
        await self._runner.setup()
        site = aiohttp.web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._released.set()
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def add(self, *faults: Fault) -> None:
        self.faults.extend(faults)

    def clear(self) -> None:
        self.faults.clear()

    def requests(
        self, method: str | None = None, path: str = "", agent: str | None = OPERATOR_AGENT
    ) -> list[Seen]:
        """Requests seen so far, filtered by method, a path regex and the User-Agent."""
        return [
            s
            for s in self.seen
            if (method is None or s.method == method.upper())
            and re.search(path, s.path)
            and (agent is None or s.agent == agent)
        ]

    async def _handle(self, request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            return await self._serve(request)
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def _serve(self, request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        body = await request.read()
        agent = request.headers.get("User-Agent", "")
        method = request.method.upper()
        fault = next(
            (f for f in self.faults if f.matches(method, request.path, agent)),
            None,
        )
        if fault is not None:
            fault.hits += 1
        answer = "forwarded" if fault is None else fault.action
        if fault is not None and fault.action == "status":
            answer = str(fault.status)
        self.seen.append(
            Seen(
                time.monotonic(),
                method,
                request.path,
                request.query_string,
                agent,
                body.decode(errors="replace"),
                answer,
            )
        )
        if fault is not None and fault.action == "hang":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._released.wait(), fault.hang_seconds)
            return _status_response(504, "the test proxy hung this request")
        if fault is not None and fault.action == "status":
            return _status_response(fault.status, f"injected by the test proxy ({fault.status})")
        if fault is not None and fault.mutate is not None:
            body = json.dumps(fault.mutate(json.loads(body))).encode()
        if fault is not None and fault.before is not None:
            staged = fault.before()
            if isinstance(staged, Awaitable):
                await staged
        return await self._forward(request, body, lost=fault is not None and fault.action == "lost")

    async def _forward(
        self, request: aiohttp.web.BaseRequest, body: bytes, lost: bool
    ) -> aiohttp.web.StreamResponse:
        assert self._session is not None
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in {"content-type", "accept", "user-agent", "authorization"}
        }
        async with self._session.request(
            request.method,
            self.upstream + str(request.rel_url),
            data=body or None,
            headers=headers,
        ) as upstream:
            if lost:
                await upstream.read()  # applied by the server; the answer never arrives
                return _status_response(503, "injected by the test proxy after applying")
            response = aiohttp.web.StreamResponse(status=upstream.status, reason=upstream.reason)
            if "Content-Type" in upstream.headers:
                response.headers["Content-Type"] = upstream.headers["Content-Type"]
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            except ConnectionError:
                pass  # the client went away (a watch the operator closed)
            return response


def _status_response(status: int, message: str) -> aiohttp.web.Response:
    reasons = {
        403: "Forbidden",
        409: "AlreadyExists",
        422: "Invalid",
        500: "InternalError",
        503: "ServiceUnavailable",
    }
    return aiohttp.web.json_response(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": message,
            "reason": reasons.get(status, "Timeout"),
            "code": status,
        },
        status=status,
    )


def proxied_operator_config(cluster: Cluster, proxy: FaultProxy, **changes: Any) -> OperatorConfig:
    """``operator_config`` whose operator talks to the cluster through ``proxy``."""
    config = operator_config(cluster)
    config.login = lambda **_: kopf.ConnectionInfo(server=proxy.url, insecure=True)
    for key, value in changes.items():
        setattr(config, key, value)
    return config


@contextlib.asynccontextmanager
async def running(
    config: OperatorConfig,
    cluster: Cluster,
    namespaces: list[str] | None = None,
    liveness_endpoint: str | None = None,
) -> AsyncIterator[OperatorThread]:
    """An operator with this ``config`` (cluster-wide unless ``namespaces``); ERROR log
    lines go to ``cluster.operator_errors``."""
    errors = _ErrorCollector(cluster.operator_errors)
    logging.getLogger().addHandler(errors)
    runner = OperatorThread(config, namespaces, liveness_endpoint)
    runner.start()
    try:
        yield runner
    finally:
        await runner.stop()
        logging.getLogger().removeHandler(errors)
