"""Kalshi request signing over ``timestamp_ms + METHOD + path``, sent as the three
``KALSHI-ACCESS-*`` headers.

Kalshi accepts two key types and picks the algorithm from the registered public key:

- RSA: RSA-PSS with SHA-256, MGF1(SHA-256) and a 32-byte salt. Kalshi-generated RSA
  keys are PKCS#1 PEM (``BEGIN RSA PRIVATE KEY``); PKCS#8 (``BEGIN PRIVATE KEY``) works too.
- Ed25519 (the default in Kalshi's key UI): a plain Ed25519 signature of the same text.
  Ed25519 keys are PKCS#8 PEM, which also starts ``BEGIN PRIVATE KEY``.

So the type is told apart by parsing, never by the PEM header. Used by the connector to
sign its WebSocket upgrade and by the simulator to verify it.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

KEY_HEADER = "KALSHI-ACCESS-KEY"
TIMESTAMP_HEADER = "KALSHI-ACCESS-TIMESTAMP"
SIGNATURE_HEADER = "KALSHI-ACCESS-SIGNATURE"
WS_PATH = "/trade-api/ws/v2"

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
"""A key Kalshi can verify: RSA (signed with PSS) or Ed25519."""
PublicKey = rsa.RSAPublicKey | ed25519.Ed25519PublicKey

_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=hashes.SHA256.digest_size)


class KeyFormatError(ValueError):
    """The private or public key is not usable PEM; the message never includes key bytes."""


def _kind(key: object) -> str:
    """A reader's name for a key type Kalshi does not take (no key material in it)."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return f"EC key on curve {key.curve.name}"
    return type(key).__name__


def load_private_key(pem: bytes) -> PrivateKey:
    """Load an unencrypted RSA (PKCS#1 or PKCS#8) or Ed25519 (PKCS#8) private key."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        # cryptography's message can echo parts of the input; keep only its class name.
        raise KeyFormatError(f"not an unencrypted PEM private key ({type(exc).__name__})") from None
    if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise KeyFormatError(f"expected an RSA or Ed25519 private key, found {_kind(key)}")
    return key


def load_public_key(pem: bytes) -> PublicKey:
    """Load an RSA or Ed25519 public key (``BEGIN PUBLIC KEY``, SubjectPublicKeyInfo)."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise KeyFormatError(f"not a PEM public key ({type(exc).__name__})") from None
    if not isinstance(key, rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
        raise KeyFormatError(f"expected an RSA or Ed25519 public key, found {_kind(key)}")
    return key


def _message(timestamp_ms: int | str, method: str, path: str) -> bytes:
    # The path is signed without its query string (KALSHI.md section 2).
    return f"{timestamp_ms}{method}{path.split('?', 1)[0]}".encode()


def sign(key: PrivateKey, timestamp_ms: int, method: str, path: str) -> str:
    """Base64 signature of ``timestamp_ms + method + path`` with the key's own algorithm."""
    message = _message(timestamp_ms, method, path)
    if isinstance(key, rsa.RSAPrivateKey):
        raw = key.sign(message, _PSS, hashes.SHA256())
    else:
        raw = key.sign(message)
    return base64.b64encode(raw).decode()


def verify(key: PublicKey, timestamp_ms: str, method: str, path: str, signature: str) -> bool:
    """Whether ``signature`` (base64) signs ``timestamp_ms + method + path`` for ``key``."""
    message = _message(timestamp_ms, method, path)
    try:
        raw = base64.b64decode(signature, validate=True)
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(raw, message, _PSS, hashes.SHA256())
        else:
            key.verify(raw, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def public_pem(key: PrivateKey) -> bytes:
    """The SubjectPublicKeyInfo PEM of ``key``'s public half (what Kalshi registers)."""
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def private_pem(key: PrivateKey) -> bytes:
    """``key`` as unencrypted PKCS#8 PEM (the form Kalshi hands out for Ed25519)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def auth_headers(
    api_key: str, key: PrivateKey, path: str = WS_PATH, now: float | None = None
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
