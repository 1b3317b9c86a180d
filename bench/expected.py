"""What a complete, in-order recording of a workload contains, replayed from the simulator.

The simulator is deterministic per seed: the same subscribe command gives the same
answers and then the same data frames, whatever the batching or pacing. Replaying its
model here (no socket) gives the exact expected stream, which is folded into counts
and one digest so that any archive can be checked without holding a list of frames:
equal digests mean every frame arrived exactly once, byte for byte, in sim order.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field

from bench.workload import Workload, subscribe_command
from ssmd_collector.sim.market import Feed
from ssmd_collector.sim.protocol import Commands

_BATCH = 4096


def frame_type(frame: bytes) -> str:
    """The ``type`` of a frame (its key order varies between answers and data)."""
    value = json.loads(frame).get("type")
    return str(value)


class StreamDigest:
    """Order-sensitive digest of a stream of frames (each frame's text plus a newline)."""

    def __init__(self) -> None:
        self._h = hashlib.blake2b(digest_size=16)

    def add(self, frame: bytes) -> None:
        self._h.update(frame)
        self._h.update(b"\n")

    def hexdigest(self) -> str:
        return self._h.hexdigest()


@dataclass(frozen=True)
class Expected:
    answers: int
    data: int
    per_type: dict[str, int]
    digest: str
    wire_bytes: int
    """Answers + data as WebSocket frames on the wire (server frames: unmasked headers)."""
    data_bytes: list[int] = field(default_factory=list, compare=False)
    """min, mean, max size of a data frame in bytes."""

    @property
    def frames(self) -> int:
        return self.answers + self.data


def _header_len(n: int) -> int:
    return 2 if n < 126 else 4 if n < 65_536 else 10


def replay(workload: Workload) -> Expected:
    feed = Feed(seed=workload.seed, markets=workload.markets)
    commands = Commands(feed, authenticated=True)
    answers = commands.handle(json.dumps(subscribe_command(workload.markets)))
    digest = StreamDigest()
    per_type: Counter[str] = Counter()
    wire = 0
    for answer in answers:
        raw = answer.encode()
        digest.add(raw)
        per_type[frame_type(raw)] += 1
        wire += _header_len(len(raw)) + len(raw)
    sizes_min, sizes_max, total = 1 << 30, 0, 0
    remaining = workload.messages
    while remaining:
        frames = feed.take(min(_BATCH, remaining))
        if not frames:
            raise RuntimeError("the subscription produced no data")
        remaining -= len(frames)
        for frame in frames:
            raw = frame.encode()
            n = len(raw)
            digest.add(raw)
            # Data frames start with {"type":"<type>": cheaper than parsing them all.
            per_type[frame[9 : frame.index('"', 9)]] += 1
            wire += _header_len(n) + n
            total += n
            sizes_min, sizes_max = min(sizes_min, n), max(sizes_max, n)
    return Expected(
        answers=len(answers),
        data=workload.messages,
        per_type=dict(per_type),
        digest=digest.hexdigest(),
        wire_bytes=wire,
        data_bytes=[sizes_min, round(total / workload.messages), sizes_max],
    )
