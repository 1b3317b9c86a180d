"""Kalshi request signing: RSA-PSS (SHA-256, MGF1-SHA-256, 32-byte salt) over
``timestamp_ms + METHOD + path``, sent as the three ``KALSHI-ACCESS-*`` headers.

Used by the connector to sign its WebSocket upgrade and by the simulator to verify it.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

KEY_HEADER = "KALSHI-ACCESS-KEY"
TIMESTAMP_HEADER = "KALSHI-ACCESS-TIMESTAMP"
SIGNATURE_HEADER = "KALSHI-ACCESS-SIGNATURE"
WS_PATH = "/trade-api/ws/v2"

_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=hashes.SHA256.digest_size)


class KeyFormatError(ValueError):
    """The private or public key is not usable PEM; the message never includes key bytes."""


def load_private_key(pem: bytes) -> rsa.RSAPrivateKey:
    """Load a PKCS#8 (``BEGIN PRIVATE KEY``) or PKCS#1 (``BEGIN RSA PRIVATE KEY``) RSA key."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        # cryptography's message can echo parts of the input; keep only its class name.
        raise KeyFormatError(f"not an unencrypted PEM private key ({type(exc).__name__})") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyFormatError(f"expected an RSA private key, found {type(key).__name__}")
    return key


def load_public_key(pem: bytes) -> rsa.RSAPublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise KeyFormatError(f"not a PEM public key ({type(exc).__name__})") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyFormatError(f"expected an RSA public key, found {type(key).__name__}")
    return key


def sign(key: rsa.RSAPrivateKey, timestamp_ms: int, method: str, path: str) -> str:
    message = f"{timestamp_ms}{method}{path}".encode()
    return base64.b64encode(key.sign(message, _PSS, hashes.SHA256())).decode()


def verify(
    key: rsa.RSAPublicKey, timestamp_ms: str, method: str, path: str, signature: str
) -> bool:
    try:
        raw = base64.b64decode(signature, validate=True)
        key.verify(raw, f"{timestamp_ms}{method}{path}".encode(), _PSS, hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def auth_headers(
    api_key: str, key: rsa.RSAPrivateKey, path: str = WS_PATH, now: float | None = None
) -> dict[str, str]:
    """Fresh headers for one GET of ``path`` (sign on every connect: timestamps expire)."""
    ts = int((time.time() if now is None else now) * 1000)
    return {
        KEY_HEADER: api_key,
        TIMESTAMP_HEADER: str(ts),
        SIGNATURE_HEADER: sign(key, ts, "GET", path),
    }


@dataclass(frozen=True)
class Credentials:
    """A Kalshi API key id and its private key (PEM), as resolved from the environment."""

    api_key: str
    private_key_pem: bytes

    def __repr__(self) -> str:  # never let key material reach a log or traceback
        return "Credentials(api_key=<redacted>, private_key_pem=<redacted>)"
