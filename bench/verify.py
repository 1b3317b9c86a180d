"""Completeness of an archive: every frame exactly once, byte for byte, in sim order.

Streams the file (memory stays flat whatever N is) and checks three things against
the replay in :mod:`bench.expected`:

- the line count is answers + data frames;
- the digest of the ``data`` texts in file order equals the replay's (nothing lost,
  duplicated, altered or reordered);
- independently, ``seq`` is contiguous from 1 on every sid and the counts per message
  type match, which says *what* went wrong when the digest does not match.

The collector splices the exchange's text verbatim, so its ``data`` is compared as
is. The naive recorder re-encodes with ``json.dumps``' default separators; its
``data`` is turned back into compact text by dropping the space after ``,`` and
``:``, which reproduces the simulator's text exactly (its strings never contain
", " or ": "; if they ever did, the digest would say so rather than pass).
"""

from __future__ import annotations

import enum
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.expected import Expected, StreamDigest

_ENVELOPE = re.compile(rb'\{"type":"([a-z_0-9]+)","sid":(\d+)(?:,"seq":(\d+))?')
"""Data frames start with type, sid and (when sequenced) seq; answers are parsed."""


class Layout(enum.Enum):
    SPLICED = "spliced"
    """ssmd-connector: ``{"ts":..,"feed":..,"data":<raw text>}``."""
    REENCODED = "reencoded"
    """The naive recorder: ``{"ts": .., "feed": .., "data": <json.dumps of the parse>}``."""

    @property
    def data_key(self) -> bytes:
        return b',"data":' if self is Layout.SPLICED else b', "data": '


@dataclass
class Verdict:
    lines: int = 0
    per_type: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.problems


def _lines(paths: Iterable[Path]) -> Iterator[bytes]:
    for path in paths:
        with path.open("rb") as f:
            yield from f


def _envelope(data: bytes) -> tuple[str, int | None, int | None]:
    m = _ENVELOPE.match(data)
    if m is not None:
        seq = m.group(3)
        return m.group(1).decode(), int(m.group(2)), None if seq is None else int(seq)
    msg = json.loads(data)
    return str(msg.get("type")), msg.get("sid"), msg.get("seq")


def verify(paths: Iterable[Path], expected: Expected, layout: Layout) -> Verdict:
    verdict = Verdict()
    digest = StreamDigest()
    types: Counter[str] = Counter()
    last_seq: dict[int | None, int] = {}
    key = layout.data_key
    gaps = malformed = 0
    for line in _lines(paths):
        verdict.lines += 1
        at = line.find(key)
        if at < 0 or not line.endswith(b"}\n"):
            malformed += 1
            continue
        data = line[at + len(key) : -2]
        if layout is Layout.REENCODED:
            data = data.replace(b", ", b",").replace(b": ", b":")
        digest.add(data)
        try:
            kind, sid, seq = _envelope(data)
        except ValueError:
            malformed += 1
            continue
        types[kind] += 1
        if seq is not None:
            if seq != last_seq.get(sid, 0) + 1:
                gaps += 1
            last_seq[sid] = seq
    verdict.per_type = dict(types)
    if verdict.lines != expected.frames:
        verdict.problems.append(f"{verdict.lines} lines, expected {expected.frames}")
    if malformed:
        verdict.problems.append(f"{malformed} malformed lines")
    if gaps:
        verdict.problems.append(f"{gaps} breaks in seq")
    if verdict.per_type != expected.per_type:
        verdict.problems.append(f"counts per type {verdict.per_type}, expected {expected.per_type}")
    if digest.hexdigest() != expected.digest:
        verdict.problems.append("frames differ from the simulator's stream (digest)")
    return verdict
