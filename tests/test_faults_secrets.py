"""Secrets never leave the collector, and rejections never turn into retry storms.

Issue 6, collector half of "Security" and of "Handshake rejected (401) and subscribe
error answers". A recognisable key id and a real RSA key are given to a real
``ssmd-connector`` process at ``--log-level debug``; every byte it prints (stdout,
stderr, a crash traceback) and serves (``/metrics``, ``/ready``, ``/health``) is
searched for the key id, each base64 line of the PEM and the signature it sent.

Metadata loading (``yaml.safe_load`` only, fuzzed) is covered by test_metadata_fuzz.py
and path escapes by test_metadata.py; ``read_pem`` never echoing a value that is not a
path by test_keys.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import traceback
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from collector_harness import KEY_ENV, make_tree
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from deadlines import deadline
from faults_harness import Collector, archived, json_logs, leaks, pem_body_lines, spawn
from websockets.datastructures import Headers

from ssmd_collector import app
from ssmd_collector.connectors.kalshi import Credentials
from ssmd_collector.connectors.kalshi.signing import (
    KEY_HEADER,
    SIGNATURE_HEADER,
    KeyFormatError,
    load_private_key,
    load_public_key,
)
from ssmd_collector.exitcodes import ExitCode
from ssmd_collector.sim import Ending, SimConfig, SimServer

KEY_ID = "KEYID-RECOGNISABLE-1234"
UNREACHABLE = "ws://127.0.0.1:1/trade-api/ws/v2"
START_TIMEOUT = 30.0


def sim_config(**kw: Any) -> SimConfig:
    defaults: dict[str, Any] = {"port": 0, "rate": 0, "heartbeat": 0, "seed": 41}
    # The collector under test signs only when a key is configured: unsigned otherwise.
    # No skew check: these tests are not about it, and a slow signer must not fail them.
    defaults["allow_unsigned"] = "public_key_pem" not in kw
    defaults["timestamp_window"] = None
    return SimConfig(**(defaults | kw))


class RecordingSim(SimServer):
    """A simulator that also keeps the KALSHI-ACCESS-* headers of every handshake it
    checks, rejected ones included (``SimSession`` exists only for accepted ones), so
    the tests know the exact signature the collector sent."""

    def __init__(self, config: SimConfig) -> None:
        super().__init__(config)
        self.handshakes: list[dict[str, str]] = []

    def _signature_problem(self, headers: Headers, path: str) -> str | None:
        self.handshakes.append(dict(headers.raw_items()))
        return super()._signature_problem(headers, path)


def secrets_of(pem: bytes, sim: RecordingSim) -> list[str]:
    """What must never appear: the key id, the PEM's base64 lines, every signature sent."""
    signatures = [h[SIGNATURE_HEADER] for h in sim.handshakes if SIGNATURE_HEADER in h]
    assert signatures, "no signed handshake reached the simulator"
    return [KEY_ID, *pem_body_lines(pem), *signatures]


def assert_no_secrets(texts: dict[str, str], secrets: list[str]) -> None:
    for where, text in texts.items():
        assert leaks(text, secrets) == [], f"secret material in {where}"
        lowered = text.lower()
        assert KEY_HEADER.lower() not in lowered, f"request headers in {where}"
        assert SIGNATURE_HEADER.lower() not in lowered, f"request headers in {where}"


def signed_env(private_pem: bytes) -> dict[str, str]:
    """The PEM itself in the variable: the most exposed way to pass it."""
    return {"KALSHI_API_KEY": KEY_ID, "KALSHI_PRIVATE_KEY": private_pem.decode()}


def outputs(child: Collector) -> dict[str, str]:
    return {"stdout": child.stdout, "stderr": child.stderr}


# --- a signed run, at debug level, scraped -----------------------------------------------


async def test_a_signed_run_at_debug_level_never_shows_credentials(
    tmp_path: Path, rsa_keys: tuple[bytes, bytes], free_port: int
) -> None:
    """A signed collector at ``--log-level debug --log-format json`` records, is scraped
    (``/metrics``, ``/ready``, ``/health``) while connected, then loses the exchange
    (silence, exit 10). Neither its output nor any endpoint contains the key id, a line
    of the PEM, the signature or the KALSHI-ACCESS-* header names (websockets logs
    request headers at debug; its logger is pinned at INFO for exactly this)."""
    private_pem, public_pem = rsa_keys
    config = sim_config(
        messages=500, ending=Ending.SILENT, public_key_pem=public_pem, api_key_id=KEY_ID
    )
    served: dict[str, str] = {}
    sim = RecordingSim(config)  # typed as itself (SimServer.__aenter__ returns SimServer)
    async with sim:
        child = await spawn(
            make_tree(tmp_path, sim.url, **KEY_ENV),
            tmp_path / "logs/run",
            *("--log-level", "debug", "--silence-timeout", "1", "--port", str(free_port)),
            env=signed_env(private_pem),
        )
        session = await sim.wait_session(timeout=deadline(START_TIMEOUT))
        base = f"http://127.0.0.1:{free_port}"
        async with aiohttp.ClientSession() as http:
            for _ in range(500):  # bounded: 5 s
                async with http.get(f"{base}/metrics") as r:
                    served["/metrics"] = await r.text()
                if 'ssmd_lines_written_total{feed="kalshi-sim"} 503.0' in served["/metrics"]:
                    break
                await asyncio.sleep(0.01)
            for endpoint in ("/ready", "/health"):
                async with http.get(base + endpoint) as r:
                    served[endpoint] = await r.text()
        code = await child.wait(15)
    assert code == ExitCode.DISCONNECTED, child.stderr[-2000:]
    assert session.authenticated
    assert 'ssmd_lines_written_total{feed="kalshi-sim"} 503.0' in served["/metrics"]
    assert '"ready": true' in served["/ready"]
    assert archived(tmp_path / "data") == session.sent
    assert any(e["level"] == "debug" for e in json_logs(child.stderr)), "debug level not on"
    assert_no_secrets(outputs(child) | served, secrets_of(private_pem, sim))


# --- rejections: one attempt, a clear message, no secret -----------------------------------


async def test_auth_rejected_exits_12_after_one_handshake_without_leaking(
    tmp_path: Path, rsa_keys: tuple[bytes, bytes], other_rsa_keys: tuple[bytes, bytes]
) -> None:
    """A handshake the exchange refuses (HTTP 401: the signature is from another key)
    ends the process with exit 12 and a message saying what to check, after exactly
    one attempt (no retry storm against an exchange that rate-limits and may lock the
    key), and with no secret in its output, at debug level."""
    wrong_private = other_rsa_keys[0]
    config = sim_config(public_key_pem=rsa_keys[1], api_key_id=KEY_ID)
    sim = RecordingSim(config)  # typed as itself (SimServer.__aenter__ returns SimServer)
    async with sim:
        child = await spawn(
            make_tree(tmp_path, sim.url, **KEY_ENV),
            tmp_path / "logs/run",
            "--log-level",
            "debug",
            env=signed_env(wrong_private),
        )
        code = await child.wait(START_TIMEOUT)
    assert code == ExitCode.AUTH_REJECTED, child.stderr[-2000:]
    assert sim.rejected_handshakes == 1
    assert len(sim.handshakes) == 1
    assert sim.sessions == []
    errors = [str(e["msg"]) for e in json_logs(child.stderr) if e["level"] == "error"]
    assert any(
        m.startswith("authentication rejected: ")
        and "HTTP 401" in m
        and "check the API key id and that the private key matches" in m
        for m in errors
    ), errors
    assert_no_secrets(outputs(child), secrets_of(wrong_private, sim))


async def test_subscribe_error_exits_13_after_one_connection_without_leaking(
    tmp_path: Path, rsa_keys: tuple[bytes, bytes]
) -> None:
    """An error answer to a subscribe command (Kalshi code 24: cfbenchmarks_value without
    index_ids) ends the process with exit 13 and the exchange's code and text, after one
    connection and one handshake, archiving what it read before leaving, with no secret in its
    output. (The in-process version, with the archive checked, is in test_collector.py.)"""
    private_pem, public_pem = rsa_keys
    config = sim_config(public_key_pem=public_pem, api_key_id=KEY_ID)
    sim = RecordingSim(config)  # typed as itself (SimServer.__aenter__ returns SimServer)
    async with sim:
        tree = make_tree(
            tmp_path,
            sim.url,
            **KEY_ENV,
            subscriptions=[{"channels": ["ticker", "cfbenchmarks_value"]}],
        )
        child = await spawn(
            tree, tmp_path / "logs/run", "--log-level", "debug", env=signed_env(private_pem)
        )
        code = await child.wait(START_TIMEOUT)
    assert code == ExitCode.SUBSCRIBE_REJECTED, child.stderr[-2000:]
    assert len(sim.sessions) == 1
    assert len(sim.handshakes) == 1
    assert sim.rejected_handshakes == 0
    errors = [str(e["msg"]) for e in json_logs(child.stderr) if e["level"] == "error"]
    assert any(
        m.startswith("subscription rejected: ")
        and "refused by the exchange: code 24: Index IDs required" in m
        for m in errors
    ), errors
    assert_no_secrets(outputs(child), secrets_of(private_pem, sim))


# --- a crash trace ------------------------------------------------------------------------

_CRASHING_CONNECTOR = """
from ssmd_collector import runner

async def crash(self):
    raise RuntimeError("injected crash in the data path")

runner.Runner.run = crash
from ssmd_collector.cli import connector_main
connector_main()
"""


async def test_a_crash_after_the_signed_handshake_prints_no_credentials(
    tmp_path: Path, rsa_keys: tuple[bytes, bytes]
) -> None:
    """An unexpected exception right after the signed handshake (injected into the
    data path; the credentials, the signed headers and the key object are all live)
    crashes the real process with Python's traceback (exit 1). The trace must show the
    error and no key id, PEM line or signature: the CLI keeps typer's rich tracebacks
    (which print local variables) switched off, and nothing logs locals."""
    private_pem, public_pem = rsa_keys
    config = sim_config(public_key_pem=public_pem, api_key_id=KEY_ID)
    sim = RecordingSim(config)  # typed as itself (SimServer.__aenter__ returns SimServer)
    async with sim:
        child = await spawn(
            make_tree(tmp_path, sim.url, **KEY_ENV),
            tmp_path / "logs/run",
            "--log-level",
            "debug",
            env=signed_env(private_pem),
            program=(sys.executable, "-c", _CRASHING_CONNECTOR),
        )
        code = await child.wait(START_TIMEOUT)
    assert code == 1, child.stderr[-2000:]
    assert "Traceback (most recent call last)" in child.stderr
    assert "RuntimeError: injected crash in the data path" in child.stderr
    assert len(sim.sessions) == 1
    assert sim.sessions[0].authenticated
    assert_no_secrets(outputs(child), secrets_of(private_pem, sim))


# --- bad keys are refused without being echoed --------------------------------------------


def _encrypted(private_pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(private_pem, password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )


def _corrupt(private_pem: bytes) -> bytes:
    """The real key with one body line replaced: right shape, wrong content."""
    lines = private_pem.decode().splitlines(keepends=True)
    lines[3] = "S0VZTUFURVJJQUwtUkVDT0dOSVNBQkxFLUtFWU1BVEVSSUFMLVJFQ09HTklTQUJM\n"
    return "".join(lines).encode()


def _truncated(private_pem: bytes) -> bytes:
    lines = private_pem.decode().splitlines(keepends=True)
    return "".join(lines[:8]).encode()


def _bad_keys(private_pem: bytes, public_pem: bytes) -> dict[str, bytes]:
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return {
        "corrupt": _corrupt(private_pem),
        "truncated": _truncated(private_pem),
        "encrypted": _encrypted(private_pem),
        "ec_not_rsa": ec_pem,
        "public_as_private": public_pem,
    }


@pytest.mark.parametrize(
    "kind", ["corrupt", "truncated", "encrypted", "ec_not_rsa", "public_as_private"]
)
async def test_a_bad_private_key_is_a_config_error_that_does_not_echo_it(
    tmp_path: Path, rsa_keys: tuple[bytes, bytes], kind: str
) -> None:
    """A private key that is PEM-shaped but unusable (a corrupted line, cut short,
    passphrase-protected) stops the real process before it connects, with exit 11 and a
    message naming the key and field, and none of the key's lines in the output."""
    bad = _bad_keys(*rsa_keys)[kind]
    child = await spawn(
        make_tree(tmp_path, UNREACHABLE, **KEY_ENV),
        tmp_path / "logs/run",
        "--log-level",
        "debug",
        env={"KALSHI_API_KEY": KEY_ID, "KALSHI_PRIVATE_KEY": bad.decode()},
    )
    assert await child.wait(START_TIMEOUT) == ExitCode.CONFIG_ERROR, child.stderr[-2000:]
    assert "key 'kalshi' field private_key: " in child.stderr
    assert "(variable KALSHI_PRIVATE_KEY)" in child.stderr
    assert leaks(child.output, [KEY_ID, *pem_body_lines(bad)]) == []


def test_credentials_and_the_plan_never_show_key_material(
    tmp_path: Path, rsa_keys: tuple[bytes, bytes]
) -> None:
    """``Credentials`` (and the ``Plan`` holding them, as a traceback or a debugger
    would print it) show neither the key id nor the PEM, whichever way they are
    formatted."""
    private_pem = rsa_keys[0]
    secrets = [KEY_ID, *pem_body_lines(private_pem)]
    credentials = Credentials(KEY_ID, private_pem)
    tree = make_tree(tmp_path, UNREACHABLE, **KEY_ENV)
    plan = app.plan(
        app.Settings(env="test", config_dir=tree),
        signed_env(private_pem),
        dt.date(2026, 1, 5),
    )
    assert plan.credentials == credentials
    for text in (
        repr(credentials),
        str(credentials),
        f"{credentials}",
        f"{credentials!r}",
        repr([credentials]),
        repr({"c": credentials}),
        repr(plan),
    ):
        assert leaks(text, secrets) == [], text


def _all_text(exc: BaseException) -> str:
    """Everything a log handler or error reporter could print for ``exc``: message,
    repr, the formatted traceback, and the suppressed context's message as well."""
    parts = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    if exc.__context__ is not None:
        parts += [str(exc.__context__), repr(exc.__context__)]
    return "\n".join(parts)


@pytest.mark.parametrize(
    "kind", ["corrupt", "truncated", "encrypted", "ec_not_rsa", "public_as_private"]
)
def test_private_key_errors_never_echo_the_input(rsa_keys: tuple[bytes, bytes], kind: str) -> None:
    """``load_private_key`` refuses every unusable input with ``KeyFormatError``, whose
    message, repr and traceback (and the library error it replaced) contain no line
    of the input."""
    bad = _bad_keys(*rsa_keys)[kind]
    with pytest.raises(KeyFormatError) as info:
        load_private_key(bad)
    assert info.value.__cause__ is None
    assert leaks(_all_text(info.value), pem_body_lines(bad)) == [], _all_text(info.value)


@pytest.mark.parametrize("kind", ["truncated", "private_as_public"])
def test_public_key_errors_never_echo_the_input(rsa_keys: tuple[bytes, bytes], kind: str) -> None:
    """The simulator's ``load_public_key`` keeps the same promise for public keys (and
    for a private key passed where a public one belongs, which would be a leak)."""
    private_pem, public_pem = rsa_keys
    bad = {"truncated": _truncated(public_pem), "private_as_public": private_pem}[kind]
    with pytest.raises(KeyFormatError) as info:
        load_public_key(bad)
    assert leaks(_all_text(info.value), pem_body_lines(bad)) == [], _all_text(info.value)
