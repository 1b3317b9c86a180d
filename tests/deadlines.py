"""One deadline scale for every wait in the test suite.

Tests never assert on elapsed time: they wait for a condition and give up only
after a deadline. Shared machines are sometimes ten times slower than usual, so
every deadline is a generous base multiplied by one setting,
``SSMD_TEST_DEADLINE_SCALE`` (default 1). A passing wait returns as soon as its
condition holds, so a large deadline costs nothing on a fast machine; it only
decides how long a real failure takes to report.

A timeout says what was awaited and what was seen instead, so a failure on a
slow machine reads differently from a product bug.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

ENV_VAR = "SSMD_TEST_DEADLINE_SCALE"


def _scale() -> float:
    raw = os.environ.get(ENV_VAR, "1")
    try:
        value = float(raw)
    except ValueError:
        raise RuntimeError(f"{ENV_VAR} must be a number, found {raw!r}") from None
    if value <= 0:
        raise RuntimeError(f"{ENV_VAR} must be above 0, found {raw!r}")
    return value


SCALE = _scale()


def deadline(seconds: float) -> float:
    """``seconds`` stretched by the suite's deadline scale."""
    return seconds * SCALE


async def wait_until(
    predicate: Callable[[], Any],
    what: str,
    timeout: float = 30.0,
    *,
    seen: Callable[[], object] | None = None,
    interval: float = 0.02,
) -> Any:
    """Poll ``predicate`` until it returns something truthy, and return that.

    Fails after ``deadline(timeout)`` seconds naming ``what`` was awaited and, when
    ``seen`` is given, what it reports at that moment.
    """
    limit = deadline(timeout)
    end = time.monotonic() + limit
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(_timed_out(what, limit, seen))
        await asyncio.sleep(interval)


async def wait_until_async(
    probe: Callable[[], Awaitable[T]],
    what: str,
    timeout: float = 30.0,
    *,
    interval: float = 0.05,
) -> T:
    """Like :func:`wait_until` for an async probe; the last value is what was seen."""
    limit = deadline(timeout)
    end = time.monotonic() + limit
    last: T | None = None
    while True:
        last = await probe()
        if last:
            return last
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {limit:g}s waiting for {what}; seen: {last!r}")
        await asyncio.sleep(interval)


async def within(awaitable: Awaitable[T], what: str, timeout: float = 30.0) -> T:
    """Await ``awaitable`` under a scaled deadline; a timeout names ``what``."""
    limit = deadline(timeout)
    try:
        async with asyncio.timeout(limit):
            return await awaitable
    except TimeoutError:
        raise AssertionError(f"timed out after {limit:g}s waiting for {what}") from None


def _timed_out(what: str, limit: float, seen: Callable[[], object] | None) -> str:
    message = f"timed out after {limit:g}s waiting for {what}"
    if seen is not None:
        message += f"; seen instead: {seen()!r}"
    return message
