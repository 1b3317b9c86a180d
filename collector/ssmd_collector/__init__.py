"""ssmd collector: records every raw Kalshi WebSocket message to date-partitioned JSONL."""

__version__ = "0.1.0"
