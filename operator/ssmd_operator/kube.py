"""A small async Kubernetes API client: get, list, create, merge-patch, delete, on aiohttp.

Why not the official client: it is synchronous, and the operator already gets its
credentials from kopf's login (``kopf.ConnectionInfo``: in-cluster service
account, kubeconfig, or the test emulator). This client uses those same
credentials, so the operator and kopf always talk to the same API server. On a 401
it logs in again once (service-account tokens rotate) and retries.

All writes are JSON merge patches (``application/merge-patch+json``), the one
patch flavour whose meaning does not depend on the resource's Go structs, and the
one ``drift.matches`` models.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import kopf

Manifest = dict[str, Any]
Relogin = Callable[[], Awaitable[Any]]
MERGE_PATCH = "application/merge-patch+json"


class ApiError(Exception):
    """A non-2xx answer; ``status`` is the HTTP code, the message is the server's."""

    def __init__(self, status: int, method: str, path: str, message: str) -> None:
        self.status = status
        super().__init__(f"{method} {path}: HTTP {status}: {message}")


def resource_path(
    api_version: str,
    plural: str,
    namespace: str | None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """``/api/v1/namespaces/ns/configmaps/x`` and the like."""
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    parts = [base]
    if namespace is not None:
        parts.append(f"namespaces/{namespace}")
    parts.append(plural)
    if name is not None:
        parts.append(name)
    if subresource is not None:
        parts.append(subresource)
    return "/".join(parts)


class KubeApi:
    """One aiohttp session per set of credentials; created lazily inside the event loop.

    Every request is bounded by ``timeout`` seconds (connect, send, answer): a hung
    API server fails the reconcile pass, which is then retried with backoff,
    instead of holding the environment's pass forever.
    """

    def __init__(self, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._info: Any = None
        self._relogin: Relogin | None = None
        self._session: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    def use(self, info: kopf.ConnectionInfo, relogin: Relogin | None = None) -> None:
        """Adopt new credentials (from the login handler); the next request uses them."""
        self._info = info
        self._relogin = relogin
        self._closed = False
        old, self._session = self._session, None
        if old is not None:
            asyncio.get_running_loop().create_task(old.close())

    async def close(self) -> None:
        """Close for good (operator shutdown): a request still under way cannot reopen it."""
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get(self, path: str) -> Manifest | None:
        """The object at ``path``, or ``None`` if it does not exist."""
        try:
            return await self._request("GET", path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(self, path: str, label_selector: str | None = None) -> list[Manifest]:
        """The items of a collection, filtered by the server with ``label_selector``.

        One request, no paging: meant for small sets (one environment's collectors),
        not for listing a namespace. Items of a list carry no ``apiVersion`` or
        ``kind`` of their own; the caller knows them.
        """
        params = {"labelSelector": label_selector} if label_selector else None
        listed = await self._request("GET", path, params=params)
        items = listed.get("items") or []
        return [item for item in items if isinstance(item, dict)]

    async def create(self, path: str, body: Mapping[str, Any]) -> Manifest:
        return await self._request("POST", path, body)

    async def patch(self, path: str, body: Mapping[str, Any]) -> Manifest:
        return await self._request("PATCH", path, body, MERGE_PATCH)

    async def delete(self, path: str, options: Mapping[str, Any]) -> bool:
        """Delete with these ``DeleteOptions``; False if the object was already gone."""
        try:
            await self._request(
                "DELETE", path, {"apiVersion": "v1", "kind": "DeleteOptions", **options}
            )
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def _request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
    ) -> Manifest:
        for attempt in (1, 2):
            session, server = await self._connect()
            data = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": content_type, "Accept": "application/json"}
            async with session.request(
                method, server.rstrip("/") + path, data=data, headers=headers, params=params
            ) as response:
                text = await response.text()
                if response.status == 401 and attempt == 1 and self._relogin is not None:
                    self.use(await self._relogin(), self._relogin)
                    continue
                if response.status >= 400:
                    raise ApiError(response.status, method, path, _message(text))
                loaded = json.loads(text) if text else {}
                return loaded if isinstance(loaded, dict) else {}
        raise ApiError(401, method, path, "unauthorized after logging in again")

    async def _connect(self) -> tuple[aiohttp.ClientSession, str]:
        async with self._lock:
            if self._info is None:
                raise RuntimeError("no credentials yet: the kopf login handler has not run")
            if self._closed:
                raise RuntimeError("the API client is closed: the operator is stopping")
            if self._session is None:
                info = self._info
                self._session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(ssl=info.as_ssl_context()),
                    headers={**info.as_http_headers(), "User-Agent": "ssmd-operator"},
                    timeout=aiohttp.ClientTimeout(total=self.timeout),
                )
            return self._session, str(self._info.server)


def _message(text: str) -> str:
    """The ``message`` of a Kubernetes ``Status`` body, else the (shortened) text."""
    try:
        loaded = json.loads(text)
    except ValueError:
        return text[:300]
    if isinstance(loaded, dict) and isinstance(loaded.get("message"), str):
        return str(loaded["message"])[:300]
    return text[:300]
