"""Whole WebSocket messages, handed over in batches, straight from websockets' parser.

websockets' asyncio connection passes every data frame to ``recv_messages.put()``
and ends the stream with ``recv_messages.close()``; ``recv()`` then takes one
message per await, decodes it to ``str`` and we would encode it back to write it.
For a recorder that is the dominant per-message cost, so ``InboxConnection``
swaps that Assembler for an ``Inbox``: messages stay ``bytes`` as parsed, each
carries the time its TCP read arrived, and the consumer takes everything
available in one ``take()``. websockets still does the handshake, framing,
limits, ping/pong and closing.

Flow control is the Assembler's: above ``high`` buffered bytes, reading from
the socket pauses (TCP pushes back on the sender); below ``high // 4`` it resumes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode

Message = tuple[int, bool, bytes]
"""(receive time in ns since the epoch, is text, payload as received)."""

MAX_FRAGMENTS = 4096

# Module constants: attribute lookups on an Enum class are slow per frame.
_TEXT, _BINARY, _CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONT


class Inbox:
    def __init__(
        self, pause: Callable[[], Any], resume: Callable[[], Any], high: int = 16 << 20
    ) -> None:
        self.pause, self.resume = pause, resume
        self.high, self.low = high, high // 4
        self.read_ns = 0
        """Set by the connection on each TCP read; stamps the messages parsed from it."""
        self._items: list[Message] = []
        self._size = 0
        self.paused = False
        """True while reading is paused because the consumer is behind."""
        self._fragments: list[bytes] = []
        self._fragment_text = False
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False

    # -- called by websockets' Connection ---------------------------------------

    def put(self, frame: Frame) -> None:
        data = frame.data
        if type(data) is not bytes:
            data = bytes(data)
        opcode = frame.opcode
        if opcode is _CONT or not frame.fin:
            if opcode is not _CONT:
                self._fragments, self._fragment_text = [], opcode is _TEXT
            self._fragments.append(data)
            if len(self._fragments) > MAX_FRAGMENTS:
                raise ValueError(f"message split in more than {MAX_FRAGMENTS} fragments")
            if not frame.fin:
                return
            data, text = b"".join(self._fragments), self._fragment_text
            self._fragments = []
        else:
            text = opcode is _TEXT
        self._items.append((self.read_ns, text, data))
        self._size += len(data)
        if self._size > self.high and not self.paused:
            self.paused = True
            self.pause()
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    # -- called by the consumer -------------------------------------------------

    async def take(self) -> list[Message]:
        """Every message received so far (waits for one); ``[]`` once closed and drained."""
        while not self._items and not self.closed:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.take_nowait()

    def take_nowait(self) -> list[Message]:
        """Every message received so far, possibly none; resumes reading if paused."""
        items, self._items, self._size = self._items, [], 0
        if self.paused:
            self.paused = False
            self.resume()
        return items

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class InboxConnection(ClientConnection):
    """A ``ClientConnection`` whose messages arrive through an ``Inbox``.

    ``last_read`` (monotonic seconds) moves on every TCP read: with our own
    keepalive pings off, bytes from the exchange are data, its heartbeat pings or
    a close, so it is a liveness signal, except while the inbox has paused
    reading (``inbox.paused``): then unread bytes wait in the socket and prove
    nothing either way, and the clock restarts on resume.
    """

    inbox: Inbox

    def __init__(
        self,
        protocol: ClientProtocol,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
        inbox_bytes: int = 16 << 20,
        **kwargs: Any,
    ) -> None:
        super().__init__(protocol, **kwargs)
        self.clock_ns = clock_ns
        self.inbox_bytes = inbox_bytes
        self.last_read = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.inbox = Inbox(
            transport.pause_reading,  # type: ignore[attr-defined]
            self._resume_reading,
            self.inbox_bytes,
        )
        self.recv_messages = self.inbox  # type: ignore[assignment]
        self.last_read = time.monotonic()

    def process_event(self, event: Any) -> None:
        # Data frames go straight to the inbox (what ClientConnection and Connection
        # would do in two more calls per frame); the handshake response, pings,
        # pongs and close frames take websockets' own path.
        if self.response is not None and type(event) is Frame:
            opcode = event.opcode
            if opcode is _TEXT or opcode is _BINARY or opcode is _CONT:
                self.inbox.put(event)
                return
        super().process_event(event)

    def _resume_reading(self) -> None:
        # Silence is measured while we read: a pause of our own is not the exchange's.
        self.last_read = time.monotonic()
        self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.last_read = time.monotonic()
        self.inbox.read_ns = self.clock_ns()
        super().data_received(data)
