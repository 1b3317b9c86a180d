"""Shared test fixtures: TLS for wss on loopback, RSA and Ed25519 key pairs, a free port."""

from __future__ import annotations

import os
import socket
import ssl

import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import settings
from tls_material import TLS

# Fuzz budgets: hypothesis' default of 100 examples is the reference the fuzz tests scale
# from (test_metadata_fuzz.budget). CI runs a quarter of it so the suite stays quick;
# SSMD_HYPOTHESIS_PROFILE=thorough runs ten times as many for a deliberate fuzzing session.
settings.register_profile("dev", max_examples=100)
settings.register_profile("ci", max_examples=25)
settings.register_profile("thorough", max_examples=1000)
settings.load_profile(
    os.environ.get("SSMD_HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev")
)


@pytest.fixture(scope="session")
def tls() -> TLS:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client)
    return TLS(
        server_context=server,
        client_context=client,
        ca_pem=ca.cert_pem.bytes(),
        cert_chain_pem=b"".join(blob.bytes() for blob in cert.cert_chain_pems),
        private_key_pem=cert.private_key_pem.bytes(),
    )


def _key_pair() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


@pytest.fixture(scope="session")
def rsa_keys() -> tuple[bytes, bytes]:
    """(private PKCS#8 PEM, public PEM) of one 2048-bit key, generated once per session."""
    return _key_pair()


@pytest.fixture(scope="session")
def other_rsa_keys() -> tuple[bytes, bytes]:
    """A second, unrelated key pair: signatures from it must be rejected."""
    return _key_pair()


@pytest.fixture(scope="session")
def ed25519_keys() -> tuple[bytes, bytes]:
    """(private PKCS#8 PEM, public PEM) of one Ed25519 key: the kind Kalshi issues by default."""
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (prefer port=0 where possible)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
