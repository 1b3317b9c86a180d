"""The sender: ``ssmd sim`` in its own process, pinned to the sender core, signing required.

The simulator streams the same frames to every connection (one Feed per connection,
same seed), so one simulator process serves all contenders of a round one after the
other. It requires signed handshakes (``--public-key``, ``--api-key-id``), which is
what lets it serve the private ``orderbook_delta`` channel.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bench.processes import VENV_BIN, Child, Exit, pinned
from bench.workload import API_KEY_ID, Workload


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path


def make_keys(directory: Path) -> KeyPair:
    """A fresh RSA key pair for this run (never a real Kalshi key)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = directory / "bench-private.pem"
    public = directory / "bench-public.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    private.chmod(0o600)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return KeyPair(private, public)


class Simulator:
    """``with Simulator(...) as sim:`` runs ``ssmd sim`` and exposes ``sim.url``."""

    def __init__(
        self,
        workload: Workload,
        keys: KeyPair,
        log: Path,
        *,
        rate: float = 0,
        core: int | None = None,
    ) -> None:
        self.workload = workload
        self.keys = keys
        self.log = log
        self.rate = rate
        self.core = core
        self.url = ""
        self.exit: Exit | None = None
        self._child: Child | None = None

    def __enter__(self) -> Simulator:
        w = self.workload
        argv = [
            str(VENV_BIN / "ssmd"),
            "sim",
            "--host=127.0.0.1",
            "--port=0",
            f"--seed={w.seed}",
            f"--rate={self.rate:g}",
            f"--messages={w.messages}",
            "--ending=close",
            "--heartbeat=0",
            f"--markets={w.markets}",
            f"--public-key={self.keys.public}",
            f"--api-key-id={API_KEY_ID}",
        ]
        with self.log.open("wb") as log:
            self._child = child = Child(pinned(self.core, argv), stderr=log)
        deadline = time.monotonic() + 30
        while not self.url:
            for line in self.log.read_text(errors="replace").splitlines():
                if "serving " in line:
                    self.url = line.split("serving ", 1)[1].strip()
            if child.poll() is not None:
                raise RuntimeError(f"ssmd sim exited: {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                child.stop()
                raise RuntimeError(f"ssmd sim did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.02)
        if self.core is not None and os.sched_getaffinity(child.pid) != {self.core}:
            child.stop()
            raise RuntimeError(f"ssmd sim is not pinned to CPU {self.core}")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._child is not None:
            self.exit = self._child.stop()
