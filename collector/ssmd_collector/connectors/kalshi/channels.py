"""Kalshi's WebSocket channels as of late 2026 (KALSHI.md section 5), and what each needs.

One place for the channel rules the metadata validation and the connector share.
"""

from __future__ import annotations

PUBLIC = frozenset({"ticker", "trade", "market_lifecycle_v2", "multivariate_market_lifecycle"})
"""Market data every authenticated connection may subscribe to."""

PRIVATE = frozenset(
    {
        "orderbook_delta",
        "fill",
        "market_positions",
        "user_orders",
        "order_group_updates",
        "communications",
        "cfbenchmarks_value",
        "cfbenchmarks_value_5hz",
        "pyth_value",
    }
)
"""Channels that need the key's own permissions (orderbook_delta included)."""

KNOWN = PUBLIC | PRIVATE

REMOVED = {
    "ticker_v2": "removed by Kalshi on 2026-02-12; use ticker",
    "multivariate": "removed by Kalshi in 2026; use multivariate_market_lifecycle",
}
"""Channels that Kalshi answers with error 8 today, with what to use instead."""

REQUIRES_TICKERS = frozenset({"orderbook_delta"})
"""Error 14 without market tickers."""

TAKES_TICKERS = frozenset({"orderbook_delta", "ticker", "trade", "fill", "market_positions"})
"""Channels a market filter applies to; the others always cover every market."""

ORDERBOOK = "orderbook_delta"

TERMINAL_ERRORS = frozenset({10, 17, 25})
"""Error codes that end a subscription (``sid``): 10 channel error, 25 buffer overflow
(KALSHI.md section 6), and 17 internal error, seen ending sids in practice."""

MARKET_LIMIT = 26
"""An ``add_markets`` would pass the per-subscription market limit."""

TOO_MANY_REQUESTS = 27
"""Commands on one subscription came too fast: back off and retry."""
