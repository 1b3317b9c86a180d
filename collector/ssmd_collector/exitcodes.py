"""Process exit codes of ``ssmd-connector``, defined once.

Kubernetes restarts the collector whatever the code; the codes tell a human (and
the operator's status) why it stopped. They avoid 1 and 2, which Python and typer
use for uncaught exceptions and usage errors.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    CLEAN_STOP = 0
    """SIGTERM or SIGINT: everything received was flushed and fsynced."""
    DISCONNECTED = 10
    """The exchange closed the connection, TCP dropped, or it went silent."""
    CONFIG_ERROR = 11
    """Invalid metadata, missing keys, or bad flags: fix configuration, do not retry."""
    AUTH_REJECTED = 12
    """The exchange rejected the signed handshake (HTTP 401/403)."""
    SUBSCRIBE_REJECTED = 13
    """The exchange answered a subscribe command with an error."""
    WRITE_FAILED = 14
    """Storage could not be written (disk full, permissions, file size limit)."""
