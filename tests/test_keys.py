"""Credentials from environment variables: naming, resolution, and never leaking values."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

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
