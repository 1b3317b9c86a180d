"""The collector's framework seams: where the exchange, storage and secrets plug in.

Each has one implementation today (Kalshi WebSocket, JSONL files, environment
variables); the runner only knows these protocols.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol


class Connector(Protocol):
    """A live connection to one exchange feed, yielding raw messages as received.

    Messages come in batches (everything that arrived since the last ask) so the
    data path pays one await per batch, not per message.
    """

    async def connect(self) -> None:
        """Open the connection and subscribe; raise on rejection."""

    def batches(self) -> AsyncIterator[list[tuple[int, bool, bytes]]]:
        """Lists of (receive ns, is text, payload) in arrival order; ends when the
        connection is lost."""
        ...

    def pending(self) -> list[tuple[int, bool, bytes]]:
        """Messages read but not yet handed over, without waiting (drained on a stop)."""
        ...

    def check(self, payload: bytes) -> str | None:
        """Validate a text message (and do protocol bookkeeping); the problem or None."""
        ...

    async def close(self) -> None: ...


class Writer(Protocol):
    """Durable storage for framed lines, partitioned by UTC day."""

    def write(self, day: str, lines: Sequence[bytes]) -> int:
        """Append whole lines for ``day`` (YYYY-MM-DD); return bytes written."""
        ...

    def close(self) -> None:
        """Flush and fsync everything; idempotent."""


class KeyResolver(Protocol):
    """Turns a key ``source`` from the metadata into field values."""

    def resolve(self, key_name: str, fields: Sequence[str], source: str) -> dict[str, str]: ...
