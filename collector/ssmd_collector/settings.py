"""The collector's settings: every default and its validation, in one place.

The CLI (``cli.py``) builds its options from :data:`FIELDS` (flag, environment
variable, default, help), the app validates with :meth:`Settings.problems`, and the
components read the values. Change a default here and everything follows.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path


@dataclass(frozen=True)
class Setting:
    flag: str
    envvar: str
    help: str
    minimum: float | None = None


SETTINGS: dict[str, Setting] = {
    "data_dir": Setting(
        "--data-dir", "SSMD_DATA_DIR", "Where to write; overrides the environment's storage.path."
    ),
    "port": Setting("--port", "SSMD_HTTP_PORT", "Port for /health, /ready, /metrics.", 0),
    "http_host": Setting("--http-host", "SSMD_HTTP_HOST", "HTTP bind address."),
    "silence_timeout": Setting(
        "--silence-timeout",
        "SSMD_SILENCE_TIMEOUT",
        "Seconds without data or heartbeat before the connection counts as dead.",
        0.1,
    ),
    "flush_interval": Setting(
        "--flush-interval",
        "SSMD_FLUSH_INTERVAL",
        "Seconds to gather a batch before handing it to the OS.",
        0,
    ),
    "subscribe_batch_size": Setting(
        "--subscribe-batch-size",
        "SSMD_SUBSCRIBE_BATCH_SIZE",
        "Market tickers per subscribe or add_markets command.",
        1,
    ),
    "answer_timeout": Setting(
        "--answer-timeout",
        "SSMD_ANSWER_TIMEOUT",
        "Seconds to wait for the exchange to answer a subscription command.",
        0.1,
    ),
    "snapshot_timeout": Setting(
        "--snapshot-timeout",
        "SSMD_SNAPSHOT_TIMEOUT",
        "Seconds for the fresh order book snapshots after a gap; then resubscribe.",
        0.1,
    ),
    "max_deaths": Setting(
        "--max-deaths",
        "SSMD_MAX_DEATHS",
        "Subscriptions the exchange may end within --death-window before the run stops (13).",
        0,
    ),
    "death_window": Setting(
        "--death-window",
        "SSMD_DEATH_WINDOW",
        "Seconds over which subscription deaths are counted.",
        1,
    ),
    "max_frame_bytes": Setting(
        "--max-frame-bytes", "SSMD_MAX_FRAME_BYTES", "Largest WebSocket message accepted.", 1024
    ),
    "max_buffer_bytes": Setting(
        "--max-buffer-bytes",
        "SSMD_MAX_BUFFER_BYTES",
        "Bytes received and not yet written before reading pauses.",
        1024,
    ),
    "discovery_interval": Setting(
        "--discovery-interval",
        "SSMD_DISCOVERY_INTERVAL",
        "Seconds between market re-discoveries (GET /markets) that repair drift.",
        1,
    ),
    "rest_rate": Setting(
        "--rest-rate",
        "SSMD_REST_RATE",
        "REST requests per second at most (Kalshi Basic allows 20 GETs/s).",
        0.1,
    ),
    "add_debounce": Setting(
        "--add-debounce",
        "SSMD_ADD_DEBOUNCE",
        "Seconds new markets announced by lifecycle are gathered before one REST lookup.",
        0,
    ),
    "removal_grace": Setting(
        "--removal-grace",
        "SSMD_REMOVAL_GRACE",
        "Seconds a determined or settled market keeps its subscription before it is removed.",
        0,
    ),
    "shard": Setting(
        "--shard",
        "SSMD_SHARD",
        "I/N: record shard I (0-based) of N; markets split by a hash of their event ticker.",
    ),
    "ca_file": Setting(
        "--ca-file", "SSMD_CA_FILE", "Extra CA bundle to trust for wss:// (e.g. a simulator's)."
    ),
}


@dataclass
class Settings:
    env: str
    config_dir: Path = Path("exchanges")
    data_dir: Path | None = None
    http_host: str = "0.0.0.0"  # noqa: S104 - a pod's probes and scrapes come from outside
    port: int = 8080
    silence_timeout: float = 30.0
    """Three missed Kalshi heartbeats (every 10 s)."""
    flush_interval: float = 0.001
    subscribe_batch_size: int = 256
    """ssmd's long-standing batch: Kalshi publishes no per-command limit."""
    answer_timeout: float = 10.0
    snapshot_timeout: float = 10.0
    max_deaths: int = 5
    death_window: float = 300.0
    max_frame_bytes: int = 8 << 20
    max_buffer_bytes: int = 32 << 20
    discovery_interval: float = 600.0
    rest_rate: float = 10.0
    """Half of what Kalshi's Basic tier sustains (20 GETs/s): room for other users."""
    add_debounce: float = 1.0
    removal_grace: float = 60.0
    shard: str = "0/1"
    ca_file: Path | None = None

    @property
    def shard_parts(self) -> tuple[int, int] | None:
        """(I, N) of ``--shard I/N``, or None when it is not of that form."""
        index, sep, count = self.shard.partition("/")
        if not (sep and index.isdigit() and count.isdigit()):
            return None
        i, n = int(index), int(count)
        return (i, n) if 0 <= i < n else None

    def problems(self) -> list[str]:
        """Every value out of range, naming its flag."""
        out = []
        for f in fields(self):
            setting = SETTINGS.get(f.name)
            value = getattr(self, f.name)
            if setting is None or setting.minimum is None:
                continue
            if not value >= setting.minimum:
                out.append(f"{setting.flag} must be at least {setting.minimum:g}, found {value}")
        if self.shard_parts is None:
            out.append(f"--shard must be I/N with 0 <= I < N (e.g. 0/1, 2/4), found {self.shard!r}")
        if not 0 <= self.port <= 65535:
            out.append(f"--port must be 0-65535, found {self.port}")
        return out


DEFAULTS = Settings(env="")
"""Defaults for the CLI's options."""
