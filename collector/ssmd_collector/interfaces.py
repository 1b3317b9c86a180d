"""The collector's storage and secrets seams (the exchange's is ``connectors.protocol``).

Each has one implementation today (JSONL files, environment variables); the runner
only knows these protocols.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


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
