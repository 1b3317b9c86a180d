"""The data path: connector frames -> bounded buffer -> writer thread.

Receiving and writing overlap: the event loop stamps, validates and frames each
message into an in-memory buffer; a flusher hands the buffer to a worker thread
that appends it to disk. The flusher wakes when the buffer becomes non-empty,
lingers ``flush_interval`` to gather a batch, and writes; an idle collector
therefore costs nothing and a busy one writes a few large batches per second's
worth of milliseconds.

The buffer is bounded in bytes (received + being written). When it is full the
receive loop stops reading, so the socket's buffers fill and TCP pushes back on
the exchange: memory stays bounded and nothing is dropped by us. (If the
exchange then gives up on us, that is a disconnect, and we exit.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .connectors import Connector, Delivery, Rejection
from .framing import LineFramer, Timestamper
from .interfaces import Writer
from .metrics import LATENCY_SAMPLE_EVERY, ErrorType, Stats
from .writer import WriteFailed

log = logging.getLogger(__name__)

_LOG_EVERY_REJECT = 1000  # after the first few, log one rejected frame in this many


@dataclass
class _Segment:
    writer: Writer
    day: str
    lines: list[bytes]
    received: list[int] = field(default_factory=list)
    """Receive times (clock ns) of the sampled lines (see LATENCY_SAMPLE_EVERY)."""


class Runner:
    def __init__(
        self,
        connector: Connector,
        data: Writer,
        rejects: Writer,
        stats: Stats,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
        flush_interval: float = 0.001,
        max_buffer_bytes: int = 32 << 20,
    ) -> None:
        self.connector = connector
        self.data = data
        self.rejects = rejects
        self.stats = stats
        self.clock_ns = clock_ns
        self.flush_interval = flush_interval
        self.max_buffer_bytes = max_buffer_bytes
        self.framer = LineFramer(stats.feed)
        self._stamp = Timestamper()
        self._last_stamp: tuple[int, str, bytes] = (-1, "", b"")
        self._segments: list[_Segment] = []
        self._buffered_lines = 0
        self._buffered_bytes = 0
        self._flight_lines = 0
        self._flight_bytes = 0
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._closing = False
        self._failure: WriteFailed | None = None
        self._receiver: asyncio.Task[Any] | None = None
        stats.queue = self.queue

    def queue(self) -> tuple[int, int]:
        """(lines, bytes) received and not yet handed to the OS."""
        return (
            self._buffered_lines + self._flight_lines,
            self._buffered_bytes + self._flight_bytes,
        )

    async def run(self) -> None:
        """Record until the stream ends; then flush. Raises ``WriteFailed`` if storage fails.

        Cancelling ``run`` (a stop signal) still flushes everything received.
        """
        self._receiver = asyncio.current_task()
        flusher = asyncio.create_task(self._flush_loop(), name="flusher")
        try:
            await self._receive()
        except asyncio.CancelledError:
            if self._failure is None:
                # A stop: what was already read off the socket is archived too.
                self._add(self.connector.pending())
                raise
        finally:
            self._closing = True
            self._wake.set()
            # Never cancel the flusher: a batch may be in the writer thread, and a
            # second writer racing it could interleave lines. Let it finish and drain.
            with contextlib.suppress(WriteFailed):
                await asyncio.shield(flusher)
        if self._failure is not None:
            raise self._failure

    async def _receive(self) -> None:
        async for batch in self.connector.batches():
            self._add(batch)
            if self._buffered_bytes + self._flight_bytes >= self.max_buffer_bytes:
                await self._wait_for_room()

    def _add(self, batch: list[Delivery]) -> None:
        """Stamp and frame a batch into the buffer, each message as its verdict says (no
        await: the flusher cannot swap the buffer out from under it)."""
        stamp = self._stamp
        frame = self.framer.line
        stats = self.stats
        data = self.data
        last_ns, day, ts = self._last_stamp
        segments = self._segments
        seg = segments[-1] if segments and segments[-1].writer is data else None
        count = stats.messages
        added_lines = added_bytes = 0
        was_empty = not self._buffered_lines
        for ns, payload, rejection in batch:
            count += 1
            if ns != last_ns:  # messages from one TCP read share a stamp
                last_ns = ns
                day, ts = stamp(ns)
            if rejection is not None:
                stats.messages = count
                self._reject(day, ts, payload, rejection)
                seg = None
                continue
            if seg is None or seg.day != day:
                seg = _Segment(data, day, [])
                segments.append(seg)
            line = frame(ts, payload)
            seg.lines.append(line)
            added_lines += 1
            added_bytes += len(line)
            if not count % LATENCY_SAMPLE_EVERY:
                seg.received.append(ns)
        self._last_stamp = (last_ns, day, ts)
        stats.messages = count
        if batch:
            stats.last_message_ns = last_ns
        self._buffered_lines += added_lines
        self._buffered_bytes += added_bytes
        if was_empty and self._buffered_lines:
            self._wake.set()

    def _reject(self, day: str, ts: bytes, raw: bytes, rejection: Rejection) -> None:
        """Keep a message that is not JSON in ``<feed>.rejected.jsonl`` and count it."""
        reason, error = rejection
        text = reason != ErrorType.BINARY_FRAME
        self.stats.errors[reason] += 1
        n = self.stats.errors[reason]
        if n <= 10 or n % _LOG_EVERY_REJECT == 0:
            log.warning(
                "kept a rejected message (%s, %d bytes) in the rejected file: %s (%d so far)",
                reason,
                len(raw),
                error,
                n,
            )
        line = self.framer.rejected(ts, reason, raw, text, error)
        self._segments.append(_Segment(self.rejects, day, [line]))
        self._buffered_lines += 1
        self._buffered_bytes += len(line)
        self._wake.set()

    async def _wait_for_room(self) -> None:
        self._room.clear()
        self._wake.set()
        log.warning(
            "write buffer full (%d bytes): pausing reads until storage catches up",
            self.max_buffer_bytes,
        )
        await self._room.wait()

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.flush_interval and not self._closing:
                await asyncio.sleep(self.flush_interval)
            if self._segments:
                await self._flush()
            if self._closing and not self._segments:
                return

    async def _flush(self) -> None:
        batch, self._segments = self._segments, []
        self._flight_lines, self._flight_bytes = self._buffered_lines, self._buffered_bytes
        self._buffered_lines = self._buffered_bytes = 0
        try:
            try:
                await asyncio.to_thread(self._write, batch)
            except WriteFailed:
                raise
            except Exception as exc:
                # Anything else from a writer (a bug, MemoryError) must end the run
                # too: a dead flusher would leave the receiver waiting for room forever.
                log.exception("writer failed unexpectedly")
                raise WriteFailed(f"writer error: {exc!r}") from exc
        except WriteFailed as exc:
            self.stats.errors[ErrorType.WRITE_FAILED] += 1
            self._failure = exc
            if self._receiver is not None and not self._closing:
                self._receiver.cancel()
            raise
        finally:
            self._flight_lines = self._flight_bytes = 0
            self._room.set()

    def _write(self, batch: list[_Segment]) -> None:
        """Runs in the worker thread; segments in arrival order, one writer at a time."""
        started = time.perf_counter()
        for seg in batch:
            n = seg.writer.write(seg.day, seg.lines)
            if seg.writer is self.data:
                self.stats.bytes_written += n
                self.stats.lines_written += len(seg.lines)
                if seg.received:
                    # The receive clock, read again: consistent even when a test injects it.
                    done = self.clock_ns()
                    self.stats.latency.observe_many([max(0, done - t) / 1e9 for t in seg.received])
        self.stats.last_flush_seconds = time.perf_counter() - started
