"""The collector end to end against the built-in simulator: loopback sockets, files, HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from collector_harness import KEY_ENV, make_tree, record, scrape
from deadlines import wait_until
from tls_material import TLS

from ssmd_collector.exitcodes import ExitCode
from ssmd_collector.health import HealthServer
from ssmd_collector.sim import Ending, SimConfig, SimServer


def sim_config(**kw: Any) -> SimConfig:
    defaults: dict[str, Any] = {"port": 0, "rate": 0, "heartbeat": 0, "seed": 7}
    # The collector under test signs only when a key is configured: unsigned otherwise.
    # No skew check: these tests are not about it, and a slow signer must not fail them.
    defaults["allow_unsigned"] = "public_key_pem" not in kw
    defaults["timestamp_window"] = None
    return SimConfig(**(defaults | kw))


async def test_every_message_arrives_once_in_order_byte_faithful(tmp_path: Path) -> None:
    async with SimServer(sim_config(messages=2000, ending=Ending.CLOSE)) as sim:
        run = await record(make_tree(tmp_path, sim.url))
    sent = sim.sessions[0].sent
    assert run.code == ExitCode.DISCONNECTED
    assert len(sent) > 2000  # data plus one answer per subscribed channel
    assert run.data() == sent
    assert run.stats.messages == len(sent)
    assert run.lines(".rejected.jsonl") == []


@pytest.mark.parametrize("ending", [Ending.CLOSE, Ending.DROP, Ending.SILENT])
async def test_each_ending_flushes_and_exits_disconnected(
    tmp_path: Path, ending: Ending, caplog: pytest.LogCaptureFixture
) -> None:
    config = sim_config(messages=300, ending=ending, heartbeat=0.1)
    async with SimServer(config) as sim:
        # Silence must be detected within a bound: past record()'s deadline it fails.
        run = await record(make_tree(tmp_path, sim.url), silence_timeout=1.0)
    assert run.code == ExitCode.DISCONNECTED
    assert run.data() == sim.sessions[0].sent
    reason = {
        Ending.CLOSE: "closed by the exchange with code 1000",
        Ending.DROP: "connection lost without a close frame",
        Ending.SILENT: "no data or heartbeat from the exchange",
    }[ending]
    assert reason in caplog.text


async def test_heartbeats_alone_keep_a_quiet_connection_alive(tmp_path: Path) -> None:
    # No data after the answers, but pings every 0.1 s: a 0.5 s silence limit never trips.
    async with SimServer(sim_config(messages=0, ending=Ending.NONE, heartbeat=0.1)) as sim:
        task = asyncio.create_task(record(make_tree(tmp_path, sim.url), silence_timeout=0.5))
        await asyncio.sleep(2.0)
        assert not task.done()
    run = await task  # the server went away when the context exited
    assert run.code == ExitCode.DISCONNECTED


async def test_ready_goes_503_then_200_and_metrics_match(tmp_path: Path) -> None:
    scraped: dict[str, float] = {}

    async def scrape_when_written(server: HealthServer) -> None:
        stats = server.stats
        while stats.lines_written < 503:
            await asyncio.sleep(0.01)
        scraped.update(await scrape(server.port))

    async with SimServer(sim_config(messages=500, ending=Ending.SILENT)) as sim:
        run = await record(
            make_tree(tmp_path, sim.url),
            during=scrape_when_written,
            poll_ready=True,
            silence_timeout=1.0,
        )
    assert run.ready_seen[:2] == [503, 200]
    sent = len(sim.sessions[0].sent)
    assert sent == 503  # 500 data messages + 3 subscribe answers
    feed = '{feed="kalshi-sim"}'
    assert scraped["ssmd_messages_total" + feed] == sent
    assert scraped["ssmd_lines_written_total" + feed] == sent
    assert scraped["ssmd_bytes_written_total" + feed] == sum(len(line) + 1 for line in run.lines())
    assert scraped["ssmd_connected" + feed] == 1
    assert scraped["ssmd_ready" + feed] == 1
    assert scraped["ssmd_subscriptions" + feed] == 3
    assert scraped["ssmd_queue_depth" + feed] == 0
    assert "ssmd_last_message_timestamp" + feed in scraped
    # Latency is sampled on every 16th message; each sample lands in a bucket.
    assert scraped["ssmd_write_latency_seconds_count" + feed] == sent // 16
    assert scraped['ssmd_write_latency_seconds_bucket{feed="kalshi-sim",le="+Inf"}'] == sent // 16
    assert 0 < scraped["ssmd_write_latency_max_seconds" + feed] < 5
    assert run.connection.ready is False  # after the disconnect


async def test_signed_handshake_verifies(tmp_path: Path, rsa_keys: tuple[bytes, bytes]) -> None:
    private_pem, public_pem = rsa_keys
    key_file = tmp_path / "kalshi.pem"
    key_file.write_bytes(private_pem)
    config = sim_config(
        messages=50, ending=Ending.CLOSE, public_key_pem=public_pem, api_key_id="key-id-1"
    )
    async with SimServer(config) as sim:
        run = await record(
            make_tree(tmp_path, sim.url, **KEY_ENV),
            environ={"KALSHI_API_KEY": "key-id-1", "KALSHI_PRIVATE_KEY": str(key_file)},
        )
    assert run.code == ExitCode.DISCONNECTED
    assert sim.sessions[0].authenticated
    assert sim.rejected_handshakes == 0
    assert run.data() == sim.sessions[0].sent


async def test_wrong_key_is_auth_rejected_without_leaking_it(
    tmp_path: Path, rsa_keys: tuple[bytes, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other_pem = other.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    caplog.set_level(logging.DEBUG)
    async with SimServer(sim_config(public_key_pem=rsa_keys[1])) as sim:
        run = await record(
            make_tree(tmp_path, sim.url, **KEY_ENV),
            environ={"KALSHI_API_KEY": "key-id-1", "KALSHI_PRIVATE_KEY": other_pem},
        )
    assert run.code == ExitCode.AUTH_REJECTED
    assert sim.rejected_handshakes == 1
    assert "HTTP 401" in caplog.text
    body = other_pem.splitlines()[1]
    assert body not in caplog.text
    assert "key-id-1" not in caplog.text


async def test_subscribe_error_answer_stops_with_its_message(
    tmp_path: Path, rsa_keys: tuple[bytes, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    # Channels beyond the public ones pass validation only with keys, so sign.
    async with SimServer(sim_config(public_key_pem=rsa_keys[1])) as sim:
        tree = make_tree(
            tmp_path,
            sim.url,
            **KEY_ENV,
            subscriptions=[{"channels": ["ticker", "cfbenchmarks_value"]}],
        )
        run = await record(
            tree, environ={"KALSHI_API_KEY": "k", "KALSHI_PRIVATE_KEY": rsa_keys[0].decode()}
        )
    assert run.code == ExitCode.SUBSCRIBE_REJECTED
    assert "subscribe of ticker, cfbenchmarks_value refused by the exchange: code 24" in caplog.text
    # What was read before leaving is archived, the error answer included; the
    # simulator kept streaming ticker data we never read, hence a prefix.
    data = run.data()
    assert data == sim.sessions[0].sent[: len(data)]
    assert any('"type":"error"' in d and '"code":24' in d for d in data)


async def test_missing_keys_is_a_config_error_naming_variables(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with SimServer(sim_config()) as sim:
        run = await record(
            make_tree(tmp_path, sim.url, **KEY_ENV), environ={"KALSHI_API_KEY": "SECRET-ID-1234"}
        )
    assert run.code == ExitCode.CONFIG_ERROR
    assert "KALSHI_PRIVATE_KEY" in caplog.text
    assert "SECRET-ID-1234" not in caplog.text
    assert sim.sessions == []  # refused before connecting


async def test_bad_metadata_is_a_config_error_naming_file_and_field(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tree = make_tree(tmp_path, "ws://127.0.0.1:1/trade-api/ws/v2")
    (tree / "environments/test.yaml").write_text(
        "name: test\nfeed: kalshi-sim\nschema: trade:v9\nstorage: {type: local, path: x}\n"
    )
    run = await record(tree)
    assert run.code == ExitCode.CONFIG_ERROR
    assert "environments/test.yaml: schema: expected a version of schema 'trade'" in caplog.text


async def test_wss_with_a_private_ca(tmp_path: Path, tls: TLS) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(tls.ca_pem)
    config = sim_config(messages=100, ending=Ending.CLOSE, ssl=tls.server_context)
    async with SimServer(config) as sim:
        assert sim.url.startswith("wss://")
        run = await record(make_tree(tmp_path, sim.url), ca_file=ca_file)
    assert run.code == ExitCode.DISCONNECTED
    assert run.data() == sim.sessions[0].sent


async def test_malformed_and_binary_frames_are_kept_and_counted(tmp_path: Path) -> None:
    async def inject(server: HealthServer) -> None:
        session = await sim.wait_session()
        while not server.connection.ready:
            await asyncio.sleep(0.01)
        await session.send_raw("{not json")
        await session.send_raw(b"\x00\x01binary")
        await session.send_raw('{"type":"trade","sid":99,"seq":1,"msg":{}}')
        await session.send_raw('{"type":"trade","sid":99,"seq":5,"msg":{}}')

    async with SimServer(sim_config(messages=20, ending=Ending.SILENT)) as sim:
        run = await record(make_tree(tmp_path, sim.url), during=inject, silence_timeout=1.5)
    rejected = [json.loads(line) for line in run.lines(".rejected.jsonl")]
    assert [r["reason"] for r in rejected] == ["invalid_json", "binary_frame"]
    assert rejected[0]["raw"] == "{not json"
    assert run.stats.errors["invalid_json"] == 1
    assert run.stats.errors["binary_frame"] == 1
    assert run.connection.gaps["unknown"] == 1  # sid 99 jumped from 1 to 5
    # The process kept running after them: the later valid frames are archived.
    assert run.data()[-1] == '{"type":"trade","sid":99,"seq":5,"msg":{}}'


async def test_utc_midnight_rollover_splits_days_without_loss(tmp_path: Path) -> None:
    # An injected clock that reads just before 2026-01-01T00:00:00Z until the first 300
    # messages are written, then just after: the rollover happens mid-stream, at a point
    # the test chooses, however slow the machine.
    midnight_ns = 1_767_225_600 * 10**9
    after_midnight = False
    start = time.perf_counter_ns()

    def clock() -> int:
        elapsed = time.perf_counter_ns() - start
        if after_midnight:
            return midnight_ns + elapsed
        return midnight_ns - 10**9 + min(elapsed, 5 * 10**8)

    async def cross_midnight(server: HealthServer) -> None:
        nonlocal after_midnight
        session = await sim.wait_session()
        await wait_until(lambda: server.stats.lines_written >= 303, "300 messages written")
        after_midnight = True
        for i in range(50):
            await session.send_raw(f'{{"type":"ticker","sid":1,"msg":{{"n":{i}}}}}')

    config = sim_config(messages=300, rate=2000, ending=Ending.NONE, heartbeat=0)
    async with SimServer(config) as sim:
        # No heartbeat: once the injected frames are written, silence ends the run.
        run = await record(
            make_tree(tmp_path, sim.url), clock_ns=clock, during=cross_midnight, silence_timeout=1
        )
    before = (run.data_dir / "2025-12-31/kalshi-sim.jsonl").read_text().splitlines()
    after = (run.data_dir / "2026-01-01/kalshi-sim.jsonl").read_text().splitlines()
    assert len(before) == 303
    assert len(after) == 50
    assert all('"ts":"2025-12-31T23:59:59.' in line for line in before)
    assert all('"ts":"2026-01-01T00:00:' in line for line in after)
    assert run.data() == sim.sessions[0].sent
