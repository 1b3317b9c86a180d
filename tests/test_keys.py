"""Credentials: environment variables (naming, resolution, never leaking values) and
request signing with the two key types Kalshi takes (RSA in PKCS#1 or PKCS#8, Ed25519)."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa

from ssmd_collector.connectors.kalshi import signing
from ssmd_collector.keys import (
    EnvKeyResolver,
    MissingKeys,
    env_var_names,
    read_pem,
    resolve_keys,
)
from ssmd_collector.metadata import KeySpec, read_directory, resolve_environment

EXCHANGES = Path(__file__).resolve().parents[1] / "exchanges"
SECRET = "SECRET-VALUE-1234"
WS = signing.WS_PATH
PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEAq7BFUpkGp3+LQmlQ\n"
    "-----END PRIVATE KEY-----\n"
)

KALSHI = KeySpec(
    "kalshi", "api_key", True, ("api_key", "private_key"), "env:KALSHI_API_KEY,KALSHI_PRIVATE_KEY"
)
BACKUP = KeySpec("backup-feed", "token", True, ("token",), "env")
OPTIONAL = KeySpec("extra", "api_key", False, ("id", "secret"), "env")


# --- naming ------------------------------------------------------------------------


def test_listed_variables_map_to_fields_in_order() -> None:
    assert env_var_names("kalshi", ["api_key", "private_key"], "env:KALSHI_API_KEY,KALSHI_PK") == {
        "api_key": "KALSHI_API_KEY",
        "private_key": "KALSHI_PK",
    }


def test_listed_variables_may_have_spaces_around_them() -> None:
    assert env_var_names("k", ["a", "b"], "env: A_VAR , B_VAR") == {"a": "A_VAR", "b": "B_VAR"}


@pytest.mark.parametrize(
    ("key", "field", "variable"),
    [
        ("kalshi", "api_key", "SSMD_KALSHI_API_KEY"),
        ("kalshi-prod", "private-key", "SSMD_KALSHI_PROD_PRIVATE_KEY"),
        ("kalshi", "private.key", "SSMD_KALSHI_PRIVATE_KEY"),
        ("Kalshi", "apiKey", "SSMD_KALSHI_APIKEY"),
    ],
)
def test_plain_env_names_are_ssmd_key_field_upper_cased(
    key: str, field: str, variable: str
) -> None:
    assert env_var_names(key, [field], "env") == {field: variable}


@pytest.mark.parametrize("source", ["sealed-secret/ssmd/kalshi", "vault/secret/kalshi", "file"])
def test_other_sources_are_refused_by_name(source: str) -> None:
    with pytest.raises(ValueError, match="key 'kalshi': unsupported source") as info:
        env_var_names("kalshi", ["api_key"], source)
    assert repr(source) in str(info.value)


def test_listed_variables_must_match_the_fields_one_to_one() -> None:
    with pytest.raises(ValueError, match="zip"):
        env_var_names("kalshi", ["api_key", "private_key"], "env:ONLY_ONE")


def test_names_for_the_example_environment() -> None:
    resolved = resolve_environment(read_directory(EXCHANGES), "kalshi-prod", dt.date(2026, 1, 15))
    (spec,) = resolved.environment.keys
    assert spec == KALSHI
    assert env_var_names(spec.name, spec.fields, spec.source) == {
        "api_key": "KALSHI_API_KEY",
        "private_key": "KALSHI_PRIVATE_KEY",
    }


# --- resolving ---------------------------------------------------------------------


def test_resolver_reads_an_explicit_environ() -> None:
    resolver = EnvKeyResolver({"KALSHI_API_KEY": "id-1", "KALSHI_PRIVATE_KEY": PEM, "OTHER": "x"})
    assert resolver.resolve(KALSHI.name, KALSHI.fields, KALSHI.source) == {
        "api_key": "id-1",
        "private_key": PEM,
    }


def test_resolver_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSMD_BACKUP_FEED_TOKEN", "tok")
    assert EnvKeyResolver().resolve(BACKUP.name, BACKUP.fields, BACKUP.source) == {"token": "tok"}


def test_an_empty_variable_counts_as_missing() -> None:
    resolver = EnvKeyResolver({"KALSHI_API_KEY": "", "KALSHI_PRIVATE_KEY": SECRET})
    with pytest.raises(MissingKeys) as info:
        resolver.resolve(KALSHI.name, KALSHI.fields, KALSHI.source)
    assert str(info.value) == (
        "key 'kalshi' needs environment variable(s) KALSHI_API_KEY "
        "(fields api_key, private_key; source env:KALSHI_API_KEY,KALSHI_PRIVATE_KEY)"
    )


def test_resolve_keys_returns_every_key_by_name() -> None:
    environ = {"KALSHI_API_KEY": "id-1", "KALSHI_PRIVATE_KEY": PEM, "SSMD_BACKUP_FEED_TOKEN": "t"}
    assert resolve_keys([KALSHI, BACKUP], EnvKeyResolver(environ)) == {
        "kalshi": {"api_key": "id-1", "private_key": PEM},
        "backup-feed": {"token": "t"},
    }


def test_all_missing_required_keys_are_named_in_one_error_without_values() -> None:
    environ = {"KALSHI_API_KEY": SECRET, "SSMD_EXTRA_ID": SECRET, "UNRELATED": SECRET}

    with pytest.raises(MissingKeys) as info:
        resolve_keys([KALSHI, BACKUP, OPTIONAL], EnvKeyResolver(environ))

    message = str(info.value)
    assert message == (
        "key 'kalshi' needs environment variable(s) KALSHI_PRIVATE_KEY "
        "(fields api_key, private_key; source env:KALSHI_API_KEY,KALSHI_PRIVATE_KEY); "
        "key 'backup-feed' needs environment variable(s) SSMD_BACKUP_FEED_TOKEN "
        "(fields token; source env)"
    )
    assert SECRET not in message
    assert SECRET not in repr(info.value)
    assert info.value.__cause__ is None
    assert info.value.__context__ is None


def test_missing_optional_keys_are_left_out() -> None:
    environ = {"KALSHI_API_KEY": "id-1", "KALSHI_PRIVATE_KEY": PEM}
    assert resolve_keys([KALSHI, OPTIONAL], EnvKeyResolver(environ)) == {
        "kalshi": {"api_key": "id-1", "private_key": PEM}
    }


def test_a_half_present_optional_key_is_left_out_entirely() -> None:
    environ = {"SSMD_EXTRA_ID": "id-only"}
    assert resolve_keys([OPTIONAL], EnvKeyResolver(environ)) == {}


def test_a_present_optional_key_is_used() -> None:
    environ = {"SSMD_EXTRA_ID": "i", "SSMD_EXTRA_SECRET": "s"}
    assert resolve_keys([OPTIONAL], EnvKeyResolver(environ)) == {
        "extra": {"id": "i", "secret": "s"}
    }


def test_no_keys_resolve_to_nothing() -> None:
    assert resolve_keys([], EnvKeyResolver({})) == {}


# --- private keys ------------------------------------------------------------------


def test_read_pem_accepts_pem_text() -> None:
    assert read_pem(PEM) == PEM.encode()


def test_read_pem_reads_a_mounted_file(tmp_path: Path) -> None:
    key_file = tmp_path / "private_key.pem"
    key_file.write_text(PEM)
    assert read_pem(str(key_file)) == PEM.encode()
    # Secrets often end up with a trailing newline in the variable.
    assert read_pem(f"{key_file}\n") == PEM.encode()


def test_read_pem_names_an_unreadable_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(MissingKeys) as info:
        read_pem(str(missing))
    assert str(info.value) == (
        f"private key is neither PEM text nor a readable file: {missing} "
        "(No such file or directory)"
    )


def test_read_pem_refuses_a_directory(tmp_path: Path) -> None:
    with pytest.raises(MissingKeys) as info:
        read_pem(str(tmp_path))
    assert str(info.value) == (
        f"private key is neither PEM text nor a readable file: {tmp_path} (Is a directory)"
    )


@pytest.mark.parametrize(
    "value",
    [
        # The PEM base64-encoded once more, as some secret stores hand it out.
        "LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0tCk1JSUJWUUlCQURBTkJna3Foa2lHOXcwQkFRRUZBQVND",
        # The key body without its header lines.
        "MIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEAq7BFUpkGp3+LQmlQ" + SECRET,
        SECRET,
        "x" * 5000,  # longer than any file name: ENAMETOOLONG
        "key\x00material",
    ],
)
def test_read_pem_never_echoes_a_value_that_is_not_a_path(value: str) -> None:
    with pytest.raises(MissingKeys) as info:
        read_pem(value)
    message = str(info.value)
    assert message.startswith(
        "private key is neither PEM text nor a readable file: <value not shown> ("
    )
    assert value not in message
    assert value[:20] not in message


# --- signing: RSA (PKCS#1 and PKCS#8) and Ed25519 ----------------------------------


def _pkcs1(rsa_pkcs8: bytes) -> bytes:
    """The same RSA key as Kalshi hands it out: PKCS#1, ``BEGIN RSA PRIVATE KEY``."""
    key = serialization.load_pem_private_key(rsa_pkcs8, password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


@pytest.fixture(params=["rsa-pkcs8", "rsa-pkcs1", "ed25519"])
def key_pair(
    request: pytest.FixtureRequest,
    rsa_keys: tuple[bytes, bytes],
    ed25519_keys: tuple[bytes, bytes],
) -> tuple[bytes, bytes]:
    """(private PEM, public PEM) in each form Kalshi keys come in."""
    if request.param == "rsa-pkcs8":
        return rsa_keys
    if request.param == "rsa-pkcs1":
        return _pkcs1(rsa_keys[0]), rsa_keys[1]
    return ed25519_keys


def test_pem_headers_are_the_ones_kalshi_hands_out(
    rsa_keys: tuple[bytes, bytes], ed25519_keys: tuple[bytes, bytes]
) -> None:
    # Both PKCS#8 forms start alike: the type can only be told by parsing.
    assert _pkcs1(rsa_keys[0]).startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert rsa_keys[0].startswith(b"-----BEGIN PRIVATE KEY-----")
    assert ed25519_keys[0].startswith(b"-----BEGIN PRIVATE KEY-----")
    assert isinstance(signing.load_private_key(rsa_keys[0]), rsa.RSAPrivateKey)
    assert isinstance(signing.load_private_key(_pkcs1(rsa_keys[0])), rsa.RSAPrivateKey)
    assert isinstance(signing.load_private_key(ed25519_keys[0]), ed25519.Ed25519PrivateKey)


def test_headers_sign_timestamp_get_and_path_and_verify(key_pair: tuple[bytes, bytes]) -> None:
    private, public = signing.load_private_key(key_pair[0]), signing.load_public_key(key_pair[1])
    headers = signing.auth_headers("key-1", private, now=1703123456.789)
    assert headers[signing.KEY_HEADER] == "key-1"
    assert headers[signing.TIMESTAMP_HEADER] == "1703123456789"
    signature = headers[signing.SIGNATURE_HEADER]
    assert signing.verify(public, "1703123456789", "GET", "/trade-api/ws/v2", signature)
    # The query string is not signed; anything else that differs breaks the signature.
    assert signing.verify(public, "1703123456789", "GET", "/trade-api/ws/v2?x=1", signature)
    assert not signing.verify(public, "1703123456788", "GET", "/trade-api/ws/v2", signature)
    assert not signing.verify(public, "1703123456789", "POST", "/trade-api/ws/v2", signature)
    assert not signing.verify(public, "1703123456789", "GET", "/trade-api/v2", signature)
    assert not signing.verify(public, "1703123456789", "GET", "/trade-api/ws/v2", "not base64!")


def test_each_algorithm_is_the_documented_one(
    rsa_keys: tuple[bytes, bytes], ed25519_keys: tuple[bytes, bytes]
) -> None:
    """Verified with cryptography directly, not through ``signing.verify``."""
    message = b"1703123456789GET/trade-api/ws/v2"
    rsa_sig = base64.b64decode(
        signing.sign(signing.load_private_key(rsa_keys[0]), 1703123456789, "GET", WS)
    )
    rsa_public = serialization.load_pem_public_key(rsa_keys[1])
    assert isinstance(rsa_public, rsa.RSAPublicKey)
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    rsa_public.verify(rsa_sig, message, pss, hashes.SHA256())  # raises if not PSS/SHA-256/32
    ed_sig = base64.b64decode(
        signing.sign(signing.load_private_key(ed25519_keys[0]), 1703123456789, "GET", WS)
    )
    assert len(ed_sig) == 64
    ed_public = serialization.load_pem_public_key(ed25519_keys[1])
    assert isinstance(ed_public, ed25519.Ed25519PublicKey)
    ed_public.verify(ed_sig, message)


def test_a_signature_of_one_key_type_does_not_verify_with_the_other(
    rsa_keys: tuple[bytes, bytes], ed25519_keys: tuple[bytes, bytes]
) -> None:
    ed_headers = signing.auth_headers("k", signing.load_private_key(ed25519_keys[0]))
    rsa_headers = signing.auth_headers("k", signing.load_private_key(rsa_keys[0]))
    ts_ed, ts_rsa = ed_headers[signing.TIMESTAMP_HEADER], rsa_headers[signing.TIMESTAMP_HEADER]
    rsa_public = signing.load_public_key(rsa_keys[1])
    ed_public = signing.load_public_key(ed25519_keys[1])
    assert not signing.verify(rsa_public, ts_ed, "GET", WS, ed_headers[signing.SIGNATURE_HEADER])
    assert not signing.verify(ed_public, ts_rsa, "GET", WS, rsa_headers[signing.SIGNATURE_HEADER])


def test_public_pem_and_private_pem_round_trip(key_pair: tuple[bytes, bytes]) -> None:
    key = signing.load_private_key(key_pair[0])
    assert signing.public_pem(key) == key_pair[1]
    assert signing.load_private_key(signing.private_pem(key)).public_key() == key.public_key()


def _ec_private() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _ed448_private() -> bytes:
    return ed448.Ed448PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _ec_public() -> bytes:
    return (
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


@pytest.mark.parametrize(
    ("load", "make", "message"),
    [
        (
            signing.load_private_key,
            _ec_private,
            "expected an RSA or Ed25519 private key, found EC key on curve secp256r1",
        ),
        (
            signing.load_private_key,
            _ed448_private,
            "expected an RSA or Ed25519 private key, found Ed448PrivateKey",
        ),
        (
            signing.load_public_key,
            _ec_public,
            "expected an RSA or Ed25519 public key, found EC key on curve secp384r1",
        ),
    ],
    ids=["ec-private", "ed448-private", "ec-public"],
)
def test_other_key_types_are_refused_by_kind_never_by_bytes(
    load: Callable[[bytes], object], make: Callable[[], bytes], message: str
) -> None:
    pem = make()
    with pytest.raises(signing.KeyFormatError) as info:
        load(pem)
    assert str(info.value) == message
    body = b"".join(pem.splitlines()[1:-1]).decode()
    assert body[:16] not in str(info.value)


def test_garbage_and_encrypted_keys_are_refused_without_echoing_them(
    rsa_keys: tuple[bytes, bytes],
) -> None:
    key = signing.load_private_key(rsa_keys[0])
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    for pem in (encrypted, PEM.encode(), SECRET.encode()):
        with pytest.raises(signing.KeyFormatError) as info:
            signing.load_private_key(pem)
        assert str(info.value).startswith("not an unencrypted PEM private key (")
        assert SECRET not in str(info.value)
        assert "MIIB" not in str(info.value)
