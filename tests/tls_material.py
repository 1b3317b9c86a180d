"""TLS material for wss on loopback (a type of its own module: test files import it,
and ``conftest`` is not importable by name once e2e/ has a conftest too)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass


@dataclass(frozen=True)
class TLS:
    """A private CA and a server certificate for ``localhost`` and ``127.0.0.1``."""

    server_context: ssl.SSLContext
    """For the server side (``SimConfig.ssl``)."""
    client_context: ssl.SSLContext
    """Trusts only the private CA."""
    ca_pem: bytes
    """The CA certificate, for code that takes a CA file."""
    cert_chain_pem: bytes
    private_key_pem: bytes
    """The server's certificate chain and key, for code that takes files (``ssmd sim``)."""
