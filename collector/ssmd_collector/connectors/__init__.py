"""Exchange plug-ins and the registry that picks one by the feed's ``exchange`` field.

Adding an exchange means one subpackage implementing
:class:`~.protocol.Exchange` and one line in ``EXCHANGES``.
"""

from __future__ import annotations

from .kalshi import KALSHI
from .protocol import (
    AuthRejected,
    Connector,
    ConnectorError,
    ConnectorMetrics,
    ConnectorOptions,
    CredentialsInvalid,
    Delivery,
    Disconnected,
    EventSink,
    Exchange,
    Rejection,
    SubscribeRejected,
)

DEFAULT_EXCHANGE = "kalshi"
"""Feeds written before the ``exchange`` field existed are Kalshi feeds."""

EXCHANGES: dict[str, Exchange] = {KALSHI.name: KALSHI}


def exchange_for(name: str | None) -> Exchange | None:
    """The plug-in for a feed's ``exchange`` value (default Kalshi), or None if unknown."""
    return EXCHANGES.get(name or DEFAULT_EXCHANGE)


__all__ = [
    "DEFAULT_EXCHANGE",
    "EXCHANGES",
    "AuthRejected",
    "Connector",
    "ConnectorError",
    "ConnectorMetrics",
    "ConnectorOptions",
    "CredentialsInvalid",
    "Delivery",
    "Disconnected",
    "EventSink",
    "Exchange",
    "Rejection",
    "SubscribeRejected",
    "exchange_for",
]
