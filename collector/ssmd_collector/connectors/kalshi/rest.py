"""Kalshi's REST API for market discovery: paced, retried, signed when keys exist.

Kalshi meters REST with token buckets (KALSHI.md section 8): a GET costs 10 tokens and
the Basic tier refills 200 tokens/s, so Basic sustains 20 GET/s with 2 s of burst. A
recorder shares that budget with whatever else uses the key, so :class:`TokenBucket`
paces requests well below it by default (10 req/s, burst 10). A 429 carries no
``Retry-After``: the client backs off exponentially (``backoff`` doubling up to
``max_backoff``) on 429, 5xx and connection failures, ``max_attempts`` times in all,
then raises :class:`RestError` naming the URL and the last status. Other 4xx are not
retried: the request itself is wrong.

``GET /markets`` needs no signature, but Kalshi's limits speak of authenticated
requests; with credentials, every request carries the three KALSHI-ACCESS-* headers,
signing the path without its query (KALSHI.md section 2).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp

from .signing import Credentials, auth_headers, load_private_key

log = logging.getLogger("ssmd_collector.kalshi.rest")

RETRIED = frozenset({429, 500, 502, 503, 504})


class RestError(Exception):
    """A REST call that failed for good; the message names the URL and status."""

    def __init__(self, url: str, status: int | None, detail: str) -> None:
        self.url = url
        self.status = status
        what = f"HTTP {status}" if status is not None else "no answer"
        super().__init__(f"GET {url}: {what}: {detail}")


class TokenBucket:
    """``rate`` requests per second with bursts of ``capacity``, on an injected clock."""

    def __init__(
        self,
        rate: float,
        capacity: float,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self.capacity = capacity
        self._tokens = capacity
        self._now = monotonic
        self._sleep = sleep
        self._stamp = monotonic()

    def _refill(self) -> None:
        now = self._now()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def wait_time(self) -> float:
        """Seconds until a token is free (0 when one is)."""
        self._refill()
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate

    async def acquire(self) -> None:
        while (delay := self.wait_time()) > 0:
            await self._sleep(delay)
        self._tokens -= 1


@dataclass
class RestMetrics:
    requests: int = 0
    """Requests sent (retries included)."""
    responses: Tally[int] = field(default_factory=Tally)
    """Answers by HTTP status (0: no answer)."""


class KalshiRest:
    """GETs against a Kalshi REST base URL such as ``https://host/trade-api/v2``."""

    def __init__(
        self,
        base_url: str,
        *,
        credentials: Credentials | None = None,
        rate: float = 10.0,
        burst: float | None = None,
        max_attempts: int = 6,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        timeout: float = 30.0,
        ssl_context: Any = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.credentials = credentials
        self.bucket = TokenBucket(rate, burst if burst is not None else max(1.0, rate))
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.ssl_context = ssl_context
        self.metrics = RestMetrics()
        self._sleep = sleep
        self._key = None if credentials is None else load_private_key(credentials.private_key_pem)
        self._session: aiohttp.ClientSession | None = None

    async def get(self, path: str, params: Mapping[str, str | int]) -> tuple[bytes, Any]:
        """``GET <base><path>?<params>``: the body exactly as received, and its JSON."""
        query = urlencode(params)
        url = f"{self.base_url}{path}" + (f"?{query}" if query else "")
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        status: int | None = None
        detail = ""
        for attempt in range(self.max_attempts):
            if attempt:
                delay = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
                log.warning("GET %s: %s; retrying in %.2fs", url, detail, delay)
                await self._sleep(delay)
            await self.bucket.acquire()
            self.metrics.requests += 1
            try:
                async with self._session.get(
                    url, headers=self._headers(url), ssl=self._ssl(url)
                ) as response:
                    status = response.status
                    body = await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.metrics.responses[0] += 1
                status, detail = None, f"{type(exc).__name__}: {exc}"
                continue
            self.metrics.responses[status] += 1
            if status == 200:
                try:
                    return body, json.loads(body)
                except ValueError as exc:
                    raise RestError(url, status, f"the body is not JSON ({exc})") from None
            detail = body[:200].decode("utf-8", "replace")
            if status not in RETRIED:
                raise RestError(url, status, detail)
        raise RestError(url, status, f"{detail} (gave up after {self.max_attempts} attempts)")

    def _headers(self, url: str) -> dict[str, str] | None:
        if self.credentials is None or self._key is None:
            return None
        return auth_headers(self.credentials.api_key, self._key, urlsplit(url).path)

    def _ssl(self, url: str) -> Any:
        return self.ssl_context if url.startswith("https:") and self.ssl_context else True

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
