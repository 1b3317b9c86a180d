"""Contender processes, each started pinned to its own core by bench/run.py.

Every contender connects to the simulator with the same signed handshake and the same
subscribe command, receives until the simulator closes the stream, and prints one JSON
line (:class:`bench.contenders.window.Report`) measured over its own receive window
(first frame to end of stream), so interpreter start-up and imports never count.

- ``bare_websockets``: the limit, the collector's library with the collector's options,
  counting frames;
- ``bare_frames``: the floor of that library, its frame parser alone (frames counted in
  ``process_event``, no queue, no ``recv()``), informational;
- ``bare_picows``: the same loop on picows (optional), to see whether the library is
  the wall;
- ``naive``: a straightforward recorder (json.loads, wrap, json.dumps, buffered write);
- ``raw_socket``: no WebSocket parsing at all, only bytes counted: the sender's ceiling.
"""
