"""The GitOps metadata loader: parsing, version resolution, references and the reader.

Most tests start from the example ``exchanges/`` tree (read from disk once per test),
change one thing and assert the exact problem a user would see.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import textwrap
from pathlib import Path

import pytest

from ssmd_collector.metadata import (
    DEFAULT_CHANNELS,
    KeySpec,
    MetadataInvalid,
    Problem,
    Storage,
    Subscription,
    parse_tree,
    read_directory,
    resolve_environment,
    validate_tree,
)
from ssmd_collector.metadata.source import MAX_FILE_BYTES

EXCHANGES = Path(__file__).resolve().parents[1] / "exchanges"
DAY = dt.date(2026, 1, 15)
EXAMPLE_FILES = {
    "environments/kalshi-prod.yaml",
    "environments/kalshi-sim.yaml",
    "feeds/kalshi.yaml",
    "feeds/kalshi-sim.yaml",
    "schemas/trade.yaml",
    "schemas/trade.capnp",
}
EXAMPLE_HASH = "sha256:0387f06636c96371140156f81fba1ea7e5df1414a20741ee599197c85476d6f0"
PUBLIC = "market_lifecycle_v2, multivariate_market_lifecycle, ticker, trade"


@pytest.fixture
def tree() -> dict[str, bytes]:
    return read_directory(EXCHANGES)


def edited(files: dict[str, bytes], path: str, old: str, new: str) -> dict[str, bytes]:
    """A copy of ``files`` with ``old`` replaced by ``new`` (exactly once) in ``path``."""
    text = files[path].decode()
    assert text.count(old) == 1, f"{old!r} should occur once in {path}"
    return {**files, path: text.replace(old, new).encode()}


def with_file(files: dict[str, bytes], path: str, text: str) -> dict[str, bytes]:
    return {**files, path: textwrap.dedent(text).encode()}


def resolve_problems(files: dict[str, bytes], env: str = "kalshi-prod") -> list[str]:
    with pytest.raises(MetadataInvalid) as info:
        resolve_environment(files, env, DAY)
    assert info.value.problems, "MetadataInvalid must carry at least one problem"
    return [str(p) for p in info.value.problems]


def validate(files: dict[str, bytes]) -> list[str]:
    return [str(p) for p in validate_tree(files, DAY)]


# --- the example tree --------------------------------------------------------------


def test_example_tree_validates_without_problems(tree: dict[str, bytes]) -> None:
    assert set(tree) == EXAMPLE_FILES
    assert validate_tree(tree, DAY) == []


def test_example_schema_hash_is_the_sha256_of_the_capnp_file(tree: dict[str, bytes]) -> None:
    digest = hashlib.sha256(tree["schemas/trade.capnp"]).hexdigest()
    assert f"sha256:{digest}" == EXAMPLE_HASH


def test_kalshi_prod_resolves_to_the_production_endpoint(tree: dict[str, bytes]) -> None:
    resolved = resolve_environment(tree, "kalshi-prod", DAY)

    assert resolved.day == DAY
    assert resolved.feed.name == "kalshi"
    assert resolved.feed.type == "websocket"
    assert resolved.feed_version.version == "v1"
    assert resolved.feed_version.endpoint == "wss://api.elections.kalshi.com/trade-api/ws/v2"
    assert resolved.feed_version.effective_from == dt.date(2025, 12, 22)
    assert resolved.feed_version.effective_to is None
    assert (resolved.feed_version.transport, resolved.feed_version.message_format) == (
        "wss",
        "json",
    )
    assert resolved.feed_version.rate_limit_per_second == 10.0
    assert resolved.schema.name == "trade"
    assert resolved.schema_version.version == "v1"
    assert resolved.schema_version.status == "active"
    assert resolved.schema_version.hash == EXAMPLE_HASH
    env = resolved.environment
    assert env.keys == (
        KeySpec(
            "kalshi",
            "api_key",
            True,
            ("api_key", "private_key"),
            "env:KALSHI_API_KEY,KALSHI_PRIVATE_KEY",
        ),
    )
    assert env.transport == "memory"
    assert env.storage == Storage("local", "/var/lib/ssmd/data")
    assert env.subscriptions == (Subscription(("ticker", "trade", "market_lifecycle_v2")),)
    assert resolved.files == (
        "environments/kalshi-prod.yaml",
        "feeds/kalshi.yaml",
        "schemas/trade.yaml",
        "schemas/trade.capnp",
    )


def test_kalshi_sim_resolves_to_the_local_simulator_with_an_optional_key(
    tree: dict[str, bytes],
) -> None:
    resolved = resolve_environment(tree, "kalshi-sim", DAY)

    assert resolved.feed.name == "kalshi-sim"
    assert resolved.feed_version.endpoint == "ws://127.0.0.1:8765/trade-api/ws/v2"
    assert resolved.schema_version.version == "v1"
    # `ssmd demo` fills it with a throwaway key pair; without it the collector is unsigned.
    assert resolved.environment.keys == (
        KeySpec("kalshi-sim", "api_key", False, ("api_key", "private_key"), "env"),
    )
    assert resolved.environment.storage == Storage("local", "./data")
    assert resolved.files == (
        "environments/kalshi-sim.yaml",
        "feeds/kalshi-sim.yaml",
        "schemas/trade.yaml",
        "schemas/trade.capnp",
    )


def test_example_is_effective_from_its_first_day_and_not_before(tree: dict[str, bytes]) -> None:
    assert resolve_environment(tree, "kalshi-prod", dt.date(2025, 12, 22)).feed_version.version
    with pytest.raises(MetadataInvalid) as info:
        resolve_environment(tree, "kalshi-prod", dt.date(2025, 12, 21))
    assert [str(p) for p in info.value.problems] == [
        "feeds/kalshi.yaml: versions: expected a version effective on 2025-12-21; "
        "found v1 from 2025-12-22"
    ]


# --- Problem and MetadataInvalid ------------------------------------------------------


def test_problem_reads_file_field_expected_found() -> None:
    assert str(Problem("feeds/a.yaml", "versions[0].endpoint", "a URL", "'x'")) == (
        "feeds/a.yaml: versions[0].endpoint: expected a URL; found 'x'"
    )
    assert str(Problem("feeds/a.yaml", "", "valid YAML", "junk")) == (
        "feeds/a.yaml: expected valid YAML; found junk"
    )


def test_metadata_invalid_lists_every_problem() -> None:
    problems = [Problem("a.yaml", "x", "1", "2"), Problem("b.yaml", "y", "3", "4")]
    exc = MetadataInvalid(problems)
    assert exc.problems == tuple(problems)
    assert str(exc) == (
        "2 metadata problem(s):\n"
        "  - a.yaml: x: expected 1; found 2\n"
        "  - b.yaml: y: expected 3; found 4"
    )


def test_long_found_values_are_shortened(tree: dict[str, bytes]) -> None:
    files = edited(tree, "feeds/kalshi.yaml", "type: websocket", "type: " + "w" * 500)
    (problem,) = validate_tree(files, DAY)
    assert problem.field == "type"
    assert problem.found == "'" + "w" * 76 + "..."


# --- names -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("feeds/kalshi.yaml", "kalshi"),
        ("schemas/trade.yaml", "trade"),
        ("environments/kalshi-prod.yaml", "kalshi-prod"),
    ],
)
def test_name_must_equal_the_file_name(tree: dict[str, bytes], path: str, name: str) -> None:
    files = edited(tree, path, f"name: {name}\n", "name: other\n")
    assert f"{path}: name: expected '{name}' (the file name without .yaml); found 'other'" in (
        validate(files)
    )


def test_name_must_be_a_dns_label(tree: dict[str, bytes]) -> None:
    files = edited(tree, "feeds/kalshi.yaml", "name: kalshi\n", "name: Kalshi_Exchange\n")
    # kalshi-prod can no longer find its feed; resolution repeats the feed file's own
    # problem for it, and validate_tree lists it once.
    assert validate(files) == [
        "feeds/kalshi.yaml: name: expected a lowercase DNS label (a-z, 0-9, '-', at most "
        "63 characters); found 'Kalshi_Exchange'"
    ]


# --- feed version resolution -------------------------------------------------------

VERSIONED_FEED = """\
    name: kalshi
    type: websocket
    versions:
      - version: v2
        effective_from: 2025-07-01
        endpoint: wss://v2.example/ws
      - version: v1
        effective_from: "2025-01-01"
        effective_to: "2025-06-30"
        endpoint: wss://v1.example/ws
      - version: v3
        effective_from: "2026-03-01"
        endpoint: wss://v3.example/ws
"""


@pytest.mark.parametrize(
    ("day", "version"),
    [
        (dt.date(2025, 1, 1), "v1"),
        (dt.date(2025, 6, 30), "v1"),
        (dt.date(2025, 7, 1), "v2"),
        (dt.date(2026, 2, 28), "v2"),
        (dt.date(2026, 3, 1), "v3"),
        (dt.date(2040, 1, 1), "v3"),
    ],
)
def test_feed_version_is_the_latest_started_on_the_day(
    tree: dict[str, bytes], day: dt.date, version: str
) -> None:
    files = with_file(tree, "feeds/kalshi.yaml", VERSIONED_FEED)
    resolved = resolve_environment(files, "kalshi-prod", day)
    assert resolved.feed_version.version == version
    assert resolved.feed_version.endpoint == f"wss://{version}.example/ws"


def test_day_before_the_first_version_lists_every_span(tree: dict[str, bytes]) -> None:
    files = with_file(tree, "feeds/kalshi.yaml", VERSIONED_FEED)
    with pytest.raises(MetadataInvalid) as info:
        resolve_environment(files, "kalshi-prod", dt.date(2024, 12, 31))
    assert [str(p) for p in info.value.problems] == [
        "feeds/kalshi.yaml: versions: expected a version effective on 2024-12-31; found "
        "v2 from 2025-07-01, v1 from 2025-01-01 to 2025-06-30, v3 from 2026-03-01"
    ]


def test_a_gap_between_versions_is_a_problem(tree: dict[str, bytes]) -> None:
    files = with_file(
        tree,
        "feeds/kalshi.yaml",
        """\
        name: kalshi
        type: websocket
        versions:
          - {version: v1, effective_from: 2025-01-01, effective_to: 2025-06-30,
             endpoint: "wss://v1.example/ws"}
          - {version: v2, effective_from: 2025-08-01, endpoint: "wss://v2.example/ws"}
        """,
    )
    assert resolve_environment(files, "kalshi-prod", dt.date(2025, 6, 30)).feed_version.version
    with pytest.raises(MetadataInvalid) as info:
        resolve_environment(files, "kalshi-prod", dt.date(2025, 7, 15))
    assert [str(p) for p in info.value.problems] == [
        "feeds/kalshi.yaml: versions: expected a version effective on 2025-07-15; found "
        "v1 from 2025-01-01 to 2025-06-30, v2 from 2025-08-01"
    ]


def test_an_ended_newer_version_falls_back_to_an_older_open_one(tree: dict[str, bytes]) -> None:
    # Same rule as the original ssmd (Feed::get_version_for_date): the latest
    # effective_from among the versions whose effective_to, if any, is not yet past.
    files = with_file(
        tree,
        "feeds/kalshi.yaml",
        """\
        name: kalshi
        type: websocket
        versions:
          - {version: v1, effective_from: 2025-01-01, endpoint: "wss://v1.example/ws"}
          - {version: v2, effective_from: 2025-06-01, effective_to: 2025-06-30,
             endpoint: "wss://v2.example/ws"}
        """,
    )
    assert resolve_environment(files, "kalshi-prod", dt.date(2025, 6, 15)).feed_version.version == (
        "v2"
    )
    assert resolve_environment(files, "kalshi-prod", dt.date(2025, 7, 15)).feed_version.version == (
        "v1"
    )


def test_a_version_may_last_a_single_day(tree: dict[str, bytes]) -> None:
    files = edited(
        tree,
        "feeds/kalshi.yaml",
        'effective_from: "2025-12-22"',
        "effective_from: 2025-12-22\n    effective_to: 2025-12-22",
    )
    assert resolve_environment(files, "kalshi-prod", dt.date(2025, 12, 22)).feed_version
    with pytest.raises(MetadataInvalid):
        resolve_environment(files, "kalshi-prod", dt.date(2025, 12, 23))


def test_quoted_and_unquoted_dates_mean_the_same_day(tree: dict[str, bytes]) -> None:
    unquoted = edited(
        tree, "feeds/kalshi.yaml", 'effective_from: "2025-12-22"', "effective_from: 2025-12-22"
    )
    quoted = resolve_environment(tree, "kalshi-prod", DAY).feed_version
    assert resolve_environment(unquoted, "kalshi-prod", DAY).feed_version == quoted
    assert quoted.effective_from == dt.date(2025, 12, 22)


def test_effective_to_before_effective_from_is_refused(tree: dict[str, bytes]) -> None:
    files = edited(
        tree,
        "feeds/kalshi.yaml",
        'effective_from: "2025-12-22"',
        'effective_from: "2025-12-22"\n    effective_to: "2025-12-21"',
    )
    assert validate(files) == [
        "feeds/kalshi.yaml: versions[0].effective_to: expected a date on or after "
        "effective_from (2025-12-22); found '2025-12-21'"
    ]


@pytest.mark.parametrize(
    ("written", "found"),
    [
        ('"2025/12/22"', "'2025/12/22'"),
        ('"22-12-2025"', "'22-12-2025'"),
        ('"2025-12-32"', "'2025-12-32'"),
        ('"2025-02-29"', "'2025-02-29'"),
        ('"20251222"', "'20251222'"),
        ('"2025-W52-1"', "'2025-W52-1'"),
        ('"2025-12-22 "', "'2025-12-22 '"),
        ("20251222", "int 20251222"),
        ("2025-12-22T10:00:00", "datetime datetime.datetime(2025, 12, 22, 10, 0)"),
        ("", "nothing (field missing or null)"),
    ],
)
def test_effective_from_must_be_a_calendar_date(
    tree: dict[str, bytes], written: str, found: str
) -> None:
    files = edited(
        tree, "feeds/kalshi.yaml", 'effective_from: "2025-12-22"', f"effective_from: {written}"
    )
    assert (
        "feeds/kalshi.yaml: versions[0].effective_from: expected a date in the form "
        f"YYYY-MM-DD; found {found}"
    ) in validate(files)


def test_version_names_must_be_unique(tree: dict[str, bytes]) -> None:
    files = with_file(
        tree,
        "feeds/kalshi.yaml",
        """\
        name: kalshi
        type: websocket
        versions:
          - {version: v1, effective_from: 2025-01-01, endpoint: "wss://a.example/ws"}
          - {version: v1, effective_from: 2025-06-01, endpoint: "wss://b.example/ws"}
        """,
    )
    assert validate(files) == [
        "feeds/kalshi.yaml: versions: expected unique version names; found 'v1'"
    ]


def test_websocket_feed_needs_a_ws_endpoint(tree: dict[str, bytes]) -> None:
    files = edited(
        tree,
        "feeds/kalshi.yaml",
        "endpoint: wss://api.elections.kalshi.com/trade-api/ws/v2",
        "endpoint: https://api.elections.kalshi.com/trade-api/v2",
    )
    assert resolve_problems(files) == [
        "feeds/kalshi.yaml: versions[0].endpoint: expected a ws:// or wss:// URL; "
        "found 'https://api.elections.kalshi.com/trade-api/v2'"
    ]


def test_a_disabled_feed_does_not_run(tree: dict[str, bytes]) -> None:
    files = edited(tree, "feeds/kalshi.yaml", "status: active", "status: disabled")
    assert resolve_problems(files) == [
        "feeds/kalshi.yaml: status: expected active or deprecated to run a collector; "
        "found disabled"
    ]


def test_a_feed_names_its_exchange_kalshi_by_default(tree: dict[str, bytes]) -> None:
    assert resolve_environment(tree, "kalshi-prod", DAY).feed.exchange == "kalshi"
    files = edited(tree, "feeds/kalshi.yaml", "status: active", "status: active\nexchange: nyse")
    assert resolve_problems(files) == [
        "feeds/kalshi.yaml: exchange: expected one of kalshi; found 'nyse'"
    ]


def test_a_deprecated_feed_still_runs(tree: dict[str, bytes]) -> None:
    files = edited(tree, "feeds/kalshi.yaml", "status: active", "status: deprecated")
    assert resolve_environment(files, "kalshi-prod", DAY).feed.status == "deprecated"


def test_protocol_may_be_a_plain_string(tree: dict[str, bytes]) -> None:
    files = edited(
        tree,
        "feeds/kalshi.yaml",
        "protocol:\n      transport: wss\n      message: json",
        "protocol: wss",
    )
    version = resolve_environment(files, "kalshi-prod", DAY).feed_version
    assert (version.transport, version.message_format) == ("wss", "")


@pytest.mark.parametrize(
    ("written", "found"),
    [
        ("0", "int 0"),
        ("-1", "int -1"),
        (".nan", "float nan"),
        (".inf", "float inf"),
        ("0x" + "f" * 400, "int <a 1600-bit integer>"),
        ("true", "bool True"),
        ('"10"', "'10'"),
    ],
)
def test_rate_limit_must_be_a_positive_finite_number(
    tree: dict[str, bytes], written: str, found: str
) -> None:
    files = edited(
        tree, "feeds/kalshi.yaml", "rate_limit_per_second: 10", f"rate_limit_per_second: {written}"
    )
    assert validate(files) == [
        "feeds/kalshi.yaml: versions[0].rate_limit_per_second: expected a positive number; "
        f"found {found}"
    ]


def test_rate_limit_may_be_fractional(tree: dict[str, bytes]) -> None:
    files = edited(
        tree, "feeds/kalshi.yaml", "rate_limit_per_second: 10", "rate_limit_per_second: 2.5"
    )
    assert resolve_environment(files, "kalshi-prod", DAY).feed_version.rate_limit_per_second == 2.5


def test_found_values_stay_brief_whatever_the_document_holds(tree: dict[str, bytes]) -> None:
    # Nine levels of ten aliases: a naive repr would build 10**10 elements.
    bomb = "l0: &l0 [a, a, a, a, a, a, a, a, a, a]\n" + "".join(
        f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]\n" for i in range(1, 10)
    )
    files = {
        **tree,
        "feeds/kalshi-sim.yaml": (bomb + "name: *l9\n").encode(),
        "feeds/kalshi.yaml": b"name: &me [*me]\n",
        "schemas/trade.yaml": b"name: 0x" + b"f" * 5000 + b"\n",
    }
    found = {p.file: p.found for p in validate_tree(files, DAY) if p.field == "name"}
    assert found == {
        "feeds/kalshi-sim.yaml": "list [[[[...], [...], [...], [...], [...], [...], ...], [[...], "
        "[...], [...], [......",
        "feeds/kalshi.yaml": "list [[[[...]]]]",
        "schemas/trade.yaml": "int <a 20000-bit integer>",
    }


# --- environment references --------------------------------------------------------


def test_environment_with_a_missing_feed(tree: dict[str, bytes]) -> None:
    files = edited(tree, "environments/kalshi-prod.yaml", "feed: kalshi\n", "feed: nope\n")
    assert resolve_problems(files) == [
        "environments/kalshi-prod.yaml: feed: expected an existing feed (feeds/nope.yaml); "
        "found 'nope' (known feeds: kalshi, kalshi-sim)"
    ]


def test_environment_with_a_missing_schema(tree: dict[str, bytes]) -> None:
    files = edited(tree, "environments/kalshi-prod.yaml", "schema: trade:v1", "schema: quote:v1")
    assert resolve_problems(files) == [
        "environments/kalshi-prod.yaml: schema: expected an existing schema "
        "(schemas/quote.yaml); found 'quote' (known schemas: trade)"
    ]


def test_environment_with_a_missing_schema_version(tree: dict[str, bytes]) -> None:
    files = edited(tree, "environments/kalshi-prod.yaml", "schema: trade:v1", "schema: trade:v9")
    assert resolve_problems(files) == [
        "environments/kalshi-prod.yaml: schema: expected a version of schema 'trade' "
        "(one of v1); found 'v9'"
    ]


@pytest.mark.parametrize("status", ["draft", "deprecated"])
def test_environment_needs_an_active_schema_version(tree: dict[str, bytes], status: str) -> None:
    files = edited(tree, "schemas/trade.yaml", "status: active", f"status: {status}")
    assert resolve_problems(files) == [
        "environments/kalshi-prod.yaml: schema: expected a schema version whose status is "
        f"active; found trade:v1 is {status}"
    ]


def test_schema_status_must_be_known(tree: dict[str, bytes]) -> None:
    files = edited(tree, "schemas/trade.yaml", "status: active", "status: live")
    assert validate(files) == [
        "schemas/trade.yaml: versions[0].status: expected one of draft, active, deprecated; "
        "found 'live'"
    ]


def test_schema_hash_mismatch_shows_the_actual_sha256(tree: dict[str, bytes]) -> None:
    changed = tree["schemas/trade.capnp"] + b"# edited without updating the hash\n"
    files = {**tree, "schemas/trade.capnp": changed}
    actual = "sha256:" + hashlib.sha256(changed).hexdigest()
    assert resolve_problems(files) == [
        "schemas/trade.yaml: versions[0].hash: expected the sha256 of schemas/trade.capnp: "
        f"{actual}; found {EXAMPLE_HASH}"
    ]


def test_schema_hash_must_look_like_a_sha256(tree: dict[str, bytes]) -> None:
    files = edited(tree, "schemas/trade.yaml", EXAMPLE_HASH, "md5:abc")
    assert validate(files) == [
        "schemas/trade.yaml: versions[0].hash: expected 'sha256:' followed by 64 lowercase "
        "hex digits; found 'md5:abc'"
    ]


def test_missing_schema_file(tree: dict[str, bytes]) -> None:
    files = {p: b for p, b in tree.items() if p != "schemas/trade.capnp"}
    assert resolve_problems(files) == [
        "schemas/trade.yaml: schema_file: expected the file schemas/trade.capnp to exist; "
        "found no such file"
    ]


def test_schema_reference_needs_a_version(tree: dict[str, bytes]) -> None:
    files = edited(tree, "environments/kalshi-prod.yaml", "schema: trade:v1", "schema: trade")
    assert resolve_problems(files) == [
        "environments/kalshi-prod.yaml: schema: expected '<schema name>:<version>', "
        "e.g. 'trade:v1'; found 'trade'"
    ]


def test_a_broken_feed_is_reported_with_its_own_problems(tree: dict[str, bytes]) -> None:
    files = edited(tree, "feeds/kalshi.yaml", "type: websocket", "type: carrier-pigeon")
    assert resolve_problems(files) == [
        "feeds/kalshi.yaml: type: expected one of websocket, rest, multicast; "
        "found 'carrier-pigeon'"
    ]


def test_unknown_environment_lists_the_known_ones(tree: dict[str, bytes]) -> None:
    assert resolve_problems(tree, "kalshi-dev") == [
        "environments/kalshi-dev.yaml: expected an environment file with this name; "
        "found no such file (known environments: kalshi-prod, kalshi-sim)"
    ]


# --- unknown fields ----------------------------------------------------------------


def test_unknown_fields_are_tolerated_everywhere(tree: dict[str, bytes]) -> None:
    extra = "x-future: {nested: [1, 2], flag: true}"
    files = edited(tree, "feeds/kalshi.yaml", "name: kalshi\n", f"name: kalshi\n{extra}\n")
    files = edited(
        files, "feeds/kalshi.yaml", "  - version: v1\n", f"  - version: v1\n    {extra}\n"
    )
    files = edited(
        files,
        "feeds/kalshi.yaml",
        "      message: json\n",
        "      message: json\n      compression: none\n",
    )
    files = edited(
        files,
        "feeds/kalshi.yaml",
        "rate_limit_per_second: 10\n",
        "rate_limit_per_second: 10\ncalendar: {timezone: UTC}\n"
        "capture_locations: [{site: home, type: cloud}]\n",
    )
    files = edited(files, "schemas/trade.yaml", "format: capnp\n", f"format: capnp\n{extra}\n")
    files = edited(
        files,
        "schemas/trade.yaml",
        "    status: active\n",
        "    status: active\n    compatible_with: []\n    breaking_changes: []\n",
    )
    env = "environments/kalshi-prod.yaml"
    files = edited(
        files,
        env,
        "feed: kalshi\n",
        f"feed: kalshi\n{extra}\nschedule: always\ncache: {{type: memory}}\n",
    )
    files = edited(files, env, "    required: true\n", "    required: true\n    rotate: yearly\n")
    files = edited(files, env, "  type: memory\n", "  type: memory\n  buffer: 1024\n")
    files = edited(
        files,
        env,
        "  path: /var/lib/ssmd/data\n",
        "  path: /var/lib/ssmd/data\n  retention_days: 30\n",
    )
    files = edited(
        files,
        env,
        "  - channels: [ticker, trade, market_lifecycle_v2]\n",
        "  - channels: [ticker, trade, market_lifecycle_v2]\n    note: all markets\n",
    )

    assert validate(files) == []
    assert resolve_environment(files, "kalshi-prod", DAY) == resolve_environment(
        tree, "kalshi-prod", DAY
    )


# --- subscriptions -----------------------------------------------------------------

SIM = "environments/kalshi-sim.yaml"
PROD = "environments/kalshi-prod.yaml"


def sim_with(tree: dict[str, bytes], subscriptions: str) -> dict[str, bytes]:
    return {**tree, SIM: tree[SIM] + textwrap.dedent(subscriptions).encode()}


def test_subscriptions_default_to_the_public_all_market_channels(tree: dict[str, bytes]) -> None:
    env = resolve_environment(tree, "kalshi-sim", DAY).environment
    assert DEFAULT_CHANNELS == ("ticker", "trade", "market_lifecycle_v2")
    assert env.subscriptions == (Subscription(DEFAULT_CHANNELS),)
    assert env.channels == frozenset(DEFAULT_CHANNELS)


def test_explicit_subscriptions_with_market_tickers(tree: dict[str, bytes]) -> None:
    files = sim_with(
        tree,
        """\
        subscriptions:
          - channels: [ticker]
            market_tickers: [KXBTC-25DEC31, KXETH-25DEC31]
          - channels: [trade]
        """,
    )
    env = resolve_environment(files, "kalshi-sim", DAY).environment
    assert env.subscriptions == (
        Subscription(("ticker",), ("KXBTC-25DEC31", "KXETH-25DEC31")),
        Subscription(("trade",)),
    )
    assert env.channels == frozenset({"ticker", "trade"})


SIM_KEYS = """\
keys:
  kalshi-sim:
    type: api_key
    description: a throwaway key id and Ed25519 private key (PEM) made by `ssmd demo`
    required: false
    fields:
      - api_key
      - private_key
    source: env
"""


def test_private_channels_need_keys(tree: dict[str, bytes]) -> None:
    files = sim_with(
        edited(tree, SIM, SIM_KEYS, ""),
        "subscriptions:\n  - channels: [trade, fill, orderbook_delta]\n"
        "    market_tickers: [KXBTC]\n",
    )
    assert resolve_problems(files, "kalshi-sim") == [
        f"{SIM}: subscriptions[0].channels: expected only public channels ({PUBLIC}) when "
        "the environment has no keys; found list ['fill', 'orderbook_delta']"
    ]


def test_private_channels_are_allowed_with_keys(tree: dict[str, bytes]) -> None:
    files = edited(
        tree,
        PROD,
        "  - channels: [ticker, trade, market_lifecycle_v2]\n",
        "  - channels: [orderbook_delta, fill]\n    market_tickers: [KXBTC]\n",
    )
    env = resolve_environment(files, "kalshi-prod", DAY).environment
    assert env.subscriptions == (Subscription(("orderbook_delta", "fill"), ("KXBTC",)),)


def test_orderbook_delta_needs_market_tickers(tree: dict[str, bytes]) -> None:
    files = edited(
        tree,
        PROD,
        "  - channels: [ticker, trade, market_lifecycle_v2]\n",
        "  - channels: [ticker]\n  - channels: [orderbook_delta]\n",
    )
    assert resolve_problems(files) == [
        f"{PROD}: subscriptions[1].market_tickers: expected market tickers for "
        "orderbook_delta; found nothing (field missing or null)"
    ]


@pytest.mark.parametrize(
    ("subscriptions", "problem"),
    [
        ("subscriptions: []", "subscriptions: expected a non-empty list; found list []"),
        (
            "subscriptions: {channels: [ticker]}",
            "subscriptions: expected a non-empty list; found dict {'channels': ['ticker']}",
        ),
        ("subscriptions: [ticker]", "subscriptions[0]: expected a mapping; found 'ticker'"),
        (
            "subscriptions: [{channels: []}]",
            "subscriptions[0].channels: expected a non-empty list of strings; found list []",
        ),
        (
            "subscriptions: [{channels: [ticker, 7]}]",
            "subscriptions[0].channels: expected a list of non-empty strings; found int 7",
        ),
        (
            "subscriptions: [{channels: [ticker], market_tickers: KXBTC}]",
            "subscriptions[0].market_tickers: expected a non-empty list of strings; found 'KXBTC'",
        ),
    ],
)
def test_malformed_subscriptions(tree: dict[str, bytes], subscriptions: str, problem: str) -> None:
    files = sim_with(tree, subscriptions + "\n")
    assert validate(files) == [f"{SIM}: {problem}"]


# --- keys --------------------------------------------------------------------------


def prod_source(tree: dict[str, bytes], source: str) -> dict[str, bytes]:
    return edited(tree, PROD, "source: env:KALSHI_API_KEY,KALSHI_PRIVATE_KEY", f"source: {source}")


def test_plain_env_source_is_accepted(tree: dict[str, bytes]) -> None:
    env = resolve_environment(prod_source(tree, "env"), "kalshi-prod", DAY).environment
    assert env.keys[0].source == "env"


@pytest.mark.parametrize("source", ["env:ONLY_ONE", "env:A,B,C", "env:A,", "env:,B"])
def test_env_source_needs_one_variable_per_field(tree: dict[str, bytes], source: str) -> None:
    assert validate(prod_source(tree, source)) == [
        f"{PROD}: keys.kalshi.source: expected 'env:' followed by 2 comma-separated "
        f"variable name(s), one per field (api_key, private_key); found '{source}'"
    ]


@pytest.mark.parametrize(
    "source", ["sealed-secret/ssmd/kalshi", "vault/secret/data/kalshi", "vault:kalshi", "ENV"]
)
def test_other_key_sources_are_unsupported(tree: dict[str, bytes], source: str) -> None:
    assert validate(prod_source(tree, source)) == [
        f"{PROD}: keys.kalshi.source: expected 'env' or 'env:VAR1,VAR2' (sources like "
        f"sealed-secret/... and vault/... are not supported yet); found '{source}'"
    ]


def test_key_required_defaults_to_true_and_type_to_api_key(tree: dict[str, bytes]) -> None:
    files = edited(tree, PROD, "    type: api_key\n", "")
    files = edited(files, PROD, "    required: true\n", "")
    (key,) = resolve_environment(files, "kalshi-prod", DAY).environment.keys
    assert (key.type, key.required) == ("api_key", True)


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        (
            "    required: true\n",
            "    required: yes please\n",
            "keys.kalshi.required: expected true or false; found 'yes please'",
        ),
        (
            "    fields:\n      - api_key\n      - private_key\n",
            "",
            "keys.kalshi.fields: expected a non-empty list of strings; "
            "found nothing (field missing or null)",
        ),
        (
            "    source: env:KALSHI_API_KEY,KALSHI_PRIVATE_KEY\n",
            "",
            "keys.kalshi.source: expected a non-empty string; "
            "found nothing (field missing or null)",
        ),
    ],
)
def test_malformed_key(tree: dict[str, bytes], old: str, new: str, problem: str) -> None:
    assert validate(edited(tree, PROD, old, new)) == [f"{PROD}: {problem}"]


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("1", "keys.1: expected a key name that is a non-empty string; found int 1"),
        ("yes", "keys.True: expected a key name that is a non-empty string; found bool True"),
        (
            "~",
            "keys.None: expected a key name that is a non-empty string; "
            "found nothing (field missing or null)",
        ),
        ('""', "keys.: expected a key name that is a non-empty string; found ''"),
    ],
)
def test_key_names_must_be_text(tree: dict[str, bytes], name: str, problem: str) -> None:
    files = edited(tree, PROD, "\n  kalshi:\n", f"\n  {name}:\n")
    assert validate(files) == [f"{PROD}: {problem}"]


def test_keys_must_be_a_mapping(tree: dict[str, bytes]) -> None:
    files = sim_with(tree, "keys: [kalshi]\n")
    assert validate(files) == [f"{SIM}: keys: expected a mapping; found list ['kalshi']"]


# --- storage and transport ---------------------------------------------------------


S3_STORAGE = "  type: s3\n  path: /var/lib/ssmd/spool\n  bucket: market-data\n"


def test_s3_storage_parses_with_defaults_and_every_field(tree: dict[str, bytes]) -> None:
    files = edited(tree, PROD, "  type: local\n  path: /var/lib/ssmd/data\n", S3_STORAGE)
    assert validate(files) == []
    storage = resolve_environment(files, "kalshi-prod", DAY).environment.storage
    assert storage == Storage("s3", "/var/lib/ssmd/spool", "market-data")
    full = S3_STORAGE + (
        "  prefix: ssmd/prod\n  endpoint: https://minio.data:9000\n  region: eu-west-1\n"
        "  local_retention_hours: 48\n"
    )
    files = edited(tree, PROD, "  type: local\n  path: /var/lib/ssmd/data\n", full)
    storage = resolve_environment(files, "kalshi-prod", DAY).environment.storage
    assert storage == Storage(
        "s3",
        "/var/lib/ssmd/spool",
        "market-data",
        "ssmd/prod",
        "https://minio.data:9000",
        "eu-west-1",
        48.0,
    )


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        (
            "  bucket: Market_Data\n",
            "storage.bucket: expected an S3 bucket name (3-63 of a-z, 0-9, '.', '-'; starting "
            "and ending alphanumeric); found 'Market_Data'",
        ),
        (
            "  prefix: /abs\n",
            "storage.prefix: expected a key prefix such as 'ssmd/prod' (no leading '/', no '.' "
            "or '..' parts); found '/abs'",
        ),
        (
            "  prefix: a/../b\n",
            "storage.prefix: expected a key prefix such as 'ssmd/prod' (no leading '/', no '.' "
            "or '..' parts); found 'a/../b'",
        ),
        (
            "  endpoint: minio:9000\n",
            "storage.endpoint: expected an http:// or https:// URL of an S3-compatible endpoint, "
            "e.g. https://minio:9000; found 'minio:9000'",
        ),
        (
            "  local_retention_hours: -1\n",
            "storage.local_retention_hours: expected a number of hours from 0 to 999999; found "
            "int -1",
        ),
        (
            "  local_retention_hours: forever\n",
            "storage.local_retention_hours: expected a number of hours from 0 to 999999; found "
            "'forever'",
        ),
        ("  region: 5\n", "storage.region: expected a non-empty string; found int 5"),
    ],
)
def test_s3_storage_problems_name_the_field(
    tree: dict[str, bytes], extra: str, problem: str
) -> None:
    storage = S3_STORAGE.replace("  bucket: market-data\n", "") if "bucket" in extra else S3_STORAGE
    files = edited(tree, PROD, "  type: local\n  path: /var/lib/ssmd/data\n", storage + extra)
    assert validate(files) == [f"{PROD}: {problem}"]


def test_s3_storage_needs_a_bucket_and_a_path(tree: dict[str, bytes]) -> None:
    files = edited(tree, PROD, "  type: local\n  path: /var/lib/ssmd/data\n", "  type: s3\n")
    assert validate(files) == [
        f"{PROD}: storage.path: expected a non-empty string; found nothing (field missing or null)",
        f"{PROD}: storage.bucket: expected a non-empty string; found nothing (field missing or "
        "null)",
    ]


def test_unknown_storage_type(tree: dict[str, bytes]) -> None:
    files = edited(tree, PROD, "  type: local\n", "  type: ftp\n")
    assert validate(files) == [f"{PROD}: storage.type: expected one of local, s3; found 'ftp'"]


def test_storage_is_required(tree: dict[str, bytes]) -> None:
    files = edited(tree, PROD, "storage:\n  type: local\n  path: /var/lib/ssmd/data\n", "")
    assert validate(files) == [
        f"{PROD}: storage: expected a mapping; found nothing (field missing or null)"
    ]


def test_local_storage_needs_a_path(tree: dict[str, bytes]) -> None:
    files = edited(tree, PROD, "  path: /var/lib/ssmd/data\n", "")
    assert validate(files) == [
        f"{PROD}: storage.path: expected a non-empty string; found nothing (field missing or null)"
    ]


@pytest.mark.parametrize("transport", ["nats", "mqtt"])
def test_nats_and_mqtt_transports_are_not_supported_yet(
    tree: dict[str, bytes], transport: str
) -> None:
    files = edited(tree, PROD, "  type: memory\n", f"  type: {transport}\n")
    assert validate(files) == [
        f"{PROD}: transport.type: expected memory (nats and mqtt transports are not "
        f"supported yet); found '{transport}'"
    ]


def test_transport_defaults_to_memory(tree: dict[str, bytes]) -> None:
    files = edited(tree, SIM, "transport:\n  type: memory\n", "")
    assert resolve_environment(files, "kalshi-sim", DAY).environment.transport == "memory"


def test_transport_must_be_a_mapping(tree: dict[str, bytes]) -> None:
    files = edited(tree, SIM, "transport:\n  type: memory\n", "transport: memory\n")
    assert validate(files) == [f"{SIM}: transport: expected a mapping; found 'memory'"]


# --- documents that are not metadata -----------------------------------------------


def test_yaml_syntax_errors_give_line_and_column(tree: dict[str, bytes]) -> None:
    files = {**tree, "feeds/kalshi.yaml": b"name: kalshi\ntype: websocket\n  bad: indent\n"}
    assert validate(files) == [
        "feeds/kalshi.yaml: expected valid YAML; found mapping values are not allowed here "
        "at line 3, column 6"
    ]


def test_unclosed_flow_sequence_is_reported_where_the_file_ends(tree: dict[str, bytes]) -> None:
    files = {**tree, "feeds/kalshi.yaml": b"name: kalshi\nversions: [\n"}
    assert validate(files) == [
        "feeds/kalshi.yaml: expected valid YAML; found expected the node content, but found "
        "'<stream end>' at line 3, column 1"
    ]


@pytest.mark.parametrize(
    ("content", "found"),
    [
        (
            b"name: kalshi-sim\nstarted: 2025-13-45\n",
            "'2025-13-45' cannot be read as !!timestamp (month must be in 1..12) "
            "at line 2, column 10",
        ),
        (
            b"versions:\n  - limit: " + b"9" * 5000 + b"\n",
            "'9999999999999999999999999999999999999...' cannot be read as !!int (Exceeds the "
            "limit (4300 digits) for integer string conversion: value has 5000 digits; "
            "use sys.set_in) "
            "at line 2, column 12",
        ),
        (b"ok: !!bool maybe\n", "'maybe' cannot be read as !!bool ('maybe') at line 1, column 5"),
        (
            b"ok: !!timestamp someday\n",
            "'someday' cannot be read as !!timestamp ('NoneType' object has no attribute "
            "'groupdict') at line 1, column 5",
        ),
        (
            b"ok: !!float fast\n",
            "'fast' cannot be read as !!float (could not convert string to float: 'fast') "
            "at line 1, column 5",
        ),
        (
            b"ok: !!python/object/apply:os.system [true]\n",
            "could not determine a constructor for the tag "
            "'tag:yaml.org,2002:python/object/apply:os.system' at line 1, column 5",
        ),
        (
            b"name: kalshi-sim\ntype: \x07websocket\n",
            "unacceptable character #x0007: special characters are not allowed at line 2, column 7",
        ),
        # Balanced and far past any recursion limit: only the depth can stop it
        # (an unterminated one may reach the end of stream first, depending on the stack).
        (b"[" * 20000 + b"]" * 20000, "nesting too deep to parse"),
        (
            b"name: a\n---\nname: b\n",
            "expected a single document in the stream, but found another document "
            "at line 2, column 1",
        ),
    ],
)
def test_values_yaml_cannot_read_are_problems_with_a_position(
    tree: dict[str, bytes], content: bytes, found: str
) -> None:
    files = {**tree, "feeds/kalshi-sim.yaml": content}
    assert validate(files) == [f"feeds/kalshi-sim.yaml: expected valid YAML; found {found}"]


@pytest.mark.parametrize(
    ("content", "found"),
    [
        (
            b"- name: kalshi\n- type: websocket\n",
            "list [{'name': 'kalshi'}, {'type': 'websocket'}]",
        ),
        (b"just some text\n", "'just some text'"),
        (b"42\n", "int 42"),
        (b"", "an empty document"),
        (b"# just a comment\n", "an empty document"),
    ],
)
def test_documents_must_be_mappings(tree: dict[str, bytes], content: bytes, found: str) -> None:
    files = {**tree, "feeds/kalshi-sim.yaml": content}
    assert validate(files) == [
        f"feeds/kalshi-sim.yaml: expected a YAML mapping at the top level; found {found}"
    ]


def test_non_utf8_bytes_are_reported_with_their_offset(tree: dict[str, bytes]) -> None:
    files = {**tree, "feeds/kalshi-sim.yaml": b"name: kalshi-sim\n\xff\xfe"}
    assert validate(files) == [
        "feeds/kalshi-sim.yaml: expected UTF-8 text; found invalid byte at offset 17"
    ]


# --- isolation and whole-tree validation -------------------------------------------


def test_a_broken_unrelated_environment_does_not_stop_a_good_one(tree: dict[str, bytes]) -> None:
    files = {**tree, SIM: b"name: kalshi-sim\nfeed: [\n"}
    assert resolve_environment(files, "kalshi-prod", DAY).environment.name == "kalshi-prod"
    assert resolve_problems(files, "kalshi-sim") == [
        f"{SIM}: expected valid YAML; found expected the node content, but found '<stream end>' "
        "at line 3, column 1"
    ]
    assert validate(files) == resolve_problems(files, "kalshi-sim")


def test_a_broken_unrelated_feed_does_not_stop_a_good_environment(tree: dict[str, bytes]) -> None:
    files = edited(tree, "feeds/kalshi-sim.yaml", "type: websocket", "type: fax")
    assert resolve_environment(files, "kalshi-prod", DAY).feed.name == "kalshi"
    assert validate(files) == [
        "feeds/kalshi-sim.yaml: type: expected one of websocket, rest, multicast; found 'fax'"
    ]


def test_validate_tree_lists_every_problem_of_a_broken_file_in_one_run(
    tree: dict[str, bytes],
) -> None:
    files = with_file(
        tree,
        "environments/kalshi-dev.yaml",
        """\
        name: kalshi-devel
        feed: Kalshi
        schema: trade
        keys:
          kalshi: {fields: [api_key], source: vault/kalshi}
        transport: {type: nats}
        storage: {type: s3, path: bucket}
        subscriptions:
          - channels: []
        """,
    )
    dev = "environments/kalshi-dev.yaml"
    assert validate(files) == [
        f"{dev}: name: expected 'kalshi-dev' (the file name without .yaml); found 'kalshi-devel'",
        f"{dev}: feed: expected a lowercase DNS label (a-z, 0-9, '-', at most 63 characters); "
        "found 'Kalshi'",
        f"{dev}: schema: expected '<schema name>:<version>', e.g. 'trade:v1'; found 'trade'",
        f"{dev}: keys.kalshi.source: expected 'env' or 'env:VAR1,VAR2' (sources like "
        "sealed-secret/... and vault/... are not supported yet); found 'vault/kalshi'",
        f"{dev}: transport.type: expected memory (nats and mqtt transports are not supported "
        "yet); found 'nats'",
        f"{dev}: storage.bucket: expected a non-empty string; found nothing (field missing or "
        "null)",
        f"{dev}: subscriptions[0].channels: expected a non-empty list of strings; found list []",
    ]
    # The good environments are unaffected.
    assert resolve_environment(files, "kalshi-prod", DAY)
    assert resolve_environment(files, "kalshi-sim", DAY)


def test_validate_tree_reports_resolution_problems_of_every_environment(
    tree: dict[str, bytes],
) -> None:
    files = edited(tree, "schemas/trade.yaml", "status: active", "status: draft")
    assert validate(files) == [
        f"{env}: schema: expected a schema version whose status is active; found trade:v1 is draft"
        for env in (PROD, SIM)
    ]


def test_a_shared_broken_feed_is_listed_once(tree: dict[str, bytes]) -> None:
    files = edited(tree, SIM, "feed: kalshi-sim\n", "feed: kalshi\n")
    files = edited(files, "feeds/kalshi.yaml", "type: websocket", "type: fax")
    assert validate(files) == [
        "feeds/kalshi.yaml: type: expected one of websocket, rest, multicast; found 'fax'"
    ]


def test_validate_tree_needs_an_environment(tree: dict[str, bytes]) -> None:
    files = {p: b for p, b in tree.items() if not p.startswith("environments/")}
    assert validate(files) == ["environments/: expected at least one <env>.yaml; found none"]


def test_a_yml_twin_cannot_shadow_the_yaml_file(tree: dict[str, bytes]) -> None:
    twin = tree["feeds/kalshi.yaml"].replace(b"api.elections.kalshi.com", b"evil.example")
    files = {**tree, "feeds/kalshi.yml": twin}
    resolved = resolve_environment(files, "kalshi-prod", DAY)
    assert resolved.feed_version.endpoint == "wss://api.elections.kalshi.com/trade-api/ws/v2"
    assert validate(files) == [
        "feeds/kalshi.yml: expected the extension .yaml (feeds/kalshi.yaml); found a .yml file"
    ]


def test_a_yml_file_is_named_when_resolving_what_it_should_define(
    tree: dict[str, bytes],
) -> None:
    files = {
        **tree,
        "environments/kalshi-dev.yml": tree[PROD].replace(b"kalshi-prod", b"kalshi-dev"),
    }
    assert resolve_problems(files, "kalshi-dev") == [
        "environments/kalshi-dev.yml: expected the extension .yaml "
        "(environments/kalshi-dev.yaml); found a .yml file"
    ]
    files = edited(tree, PROD, "feed: kalshi\n", "feed: kalshi-dev\n")
    files = {**files, "feeds/kalshi-dev.yml": tree["feeds/kalshi.yaml"]}
    assert resolve_problems(files) == [
        "feeds/kalshi-dev.yml: expected the extension .yaml (feeds/kalshi-dev.yaml); "
        "found a .yml file"
    ]


def test_validate_tree_needs_an_environment_yaml_not_just_any_file(
    tree: dict[str, bytes],
) -> None:
    files = {p: b for p, b in tree.items() if not p.startswith("environments/")}
    files["environments/README.md"] = b"# one file per environment\n"
    assert validate(files) == ["environments/: expected at least one <env>.yaml; found none"]


def test_files_outside_the_three_folders_are_data_not_metadata(tree: dict[str, bytes]) -> None:
    files = {
        **tree,
        "README.md": b"not yaml: [",
        "feeds/notes.txt": b"not yaml: [",
        "feeds/old/kalshi.yaml": b"not yaml: [",
        "other/x.yaml": b"not yaml: [",
    }
    catalog, problems = parse_tree(files)
    assert problems == []
    assert sorted(catalog.feeds) == ["kalshi", "kalshi-sim"]
    assert catalog.files["README.md"] == b"not yaml: ["


# --- names that would leave the config directory -----------------------------------


@pytest.mark.parametrize("env", ["../x", "kalshi-prod/../kalshi-sim", "/etc/passwd", ""])
def test_environment_names_that_are_paths_are_refused(tree: dict[str, bytes], env: str) -> None:
    assert resolve_problems(tree, env) == [
        f"environments/{env}.yaml: expected an environment name that is a lowercase DNS "
        f"label (a-z, 0-9, '-', at most 63 characters); found {env!r}"
    ]


@pytest.mark.parametrize(
    "schema_file", ["../../etc/passwd", "/etc/passwd", "sub/trade.capnp", "..", ".trade.capnp"]
)
def test_schema_file_must_be_a_plain_name_inside_schemas(
    tree: dict[str, bytes], schema_file: str
) -> None:
    files = edited(
        tree, "schemas/trade.yaml", "schema_file: trade.capnp", f"schema_file: '{schema_file}'"
    )
    assert validate(files) == [
        "schemas/trade.yaml: schema_file: expected a plain file name inside schemas/ "
        f"(no '/' or '..'); found '{schema_file}'"
    ]


def test_feed_reference_that_is_a_path_is_refused(tree: dict[str, bytes]) -> None:
    files = edited(tree, PROD, "feed: kalshi\n", "feed: ../feeds/kalshi\n")
    assert validate(files) == [
        f"{PROD}: feed: expected a lowercase DNS label (a-z, 0-9, '-', at most 63 "
        "characters); found '../feeds/kalshi'"
    ]


def test_schema_reference_that_is_a_path_is_refused(tree: dict[str, bytes]) -> None:
    files = edited(tree, PROD, "schema: trade:v1", "schema: ../../etc/passwd:v1")
    assert validate(files) == [
        f"{PROD}: schema: expected a schema name that is a lowercase DNS label (a-z, 0-9, '-', "
        "at most 63 characters); found '../../etc/passwd'"
    ]


@pytest.mark.parametrize("env", ["kalshi-prod\n", "kalshi-prod\n../x"])
def test_a_trailing_newline_does_not_make_a_name(tree: dict[str, bytes], env: str) -> None:
    assert resolve_problems(tree, env) == [
        f"environments/{env}.yaml: expected an environment name that is a lowercase DNS "
        f"label (a-z, 0-9, '-', at most 63 characters); found {env!r}"
    ]


def test_names_with_a_trailing_newline_are_refused_in_files(tree: dict[str, bytes]) -> None:
    files = edited(tree, PROD, "feed: kalshi\n", 'feed: "kalshi\\n"\n')
    files = {**files, "environments/dev\n.yaml": b'name: "dev\\n"\n'}
    problems = validate(files)
    assert (
        f"{PROD}: feed: expected a lowercase DNS label (a-z, 0-9, '-', at most 63 "
        "characters); found 'kalshi\\n'"
    ) in problems
    assert (
        "environments/dev\n.yaml: name: expected a lowercase DNS label (a-z, 0-9, '-', at most "
        "63 characters); found 'dev\\n'"
    ) in problems


# --- read_directory: real files --------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A copy of the example tree in a fresh directory."""
    root = tmp_path / "exchanges"
    shutil.copytree(EXCHANGES, root)
    return root


def test_read_directory_reads_the_three_folders(root: Path) -> None:
    (root / "README.md").write_text("# notes\n")
    (root / "deploy").mkdir()
    (root / "deploy" / "x.yaml").write_text("kind: Pod\n")
    (root / "feeds" / "archive").mkdir()
    (root / "feeds" / "archive" / "old.yaml").write_text("name: old\n")

    files = read_directory(root)

    assert set(files) == EXAMPLE_FILES
    assert files["schemas/trade.capnp"] == (EXCHANGES / "schemas" / "trade.capnp").read_bytes()
    assert resolve_environment(files, "kalshi-prod", DAY).feed.name == "kalshi"


def test_read_directory_ignores_dotfiles(root: Path) -> None:
    (root / "feeds" / ".kalshi.yaml.swp").write_bytes(b"\x00\xff binary editor state")
    (root / "environments" / ".hidden.yaml").write_text("name: [broken\n")

    files = read_directory(root)

    assert set(files) == EXAMPLE_FILES
    assert validate_tree(files, DAY) == []


def test_read_directory_tolerates_missing_folders(tmp_path: Path) -> None:
    (tmp_path / "feeds").mkdir()
    (tmp_path / "feeds" / "kalshi.yaml").write_bytes(
        (EXCHANGES / "feeds" / "kalshi.yaml").read_bytes()
    )
    assert set(read_directory(tmp_path)) == {"feeds/kalshi.yaml"}


def test_missing_root_directory_is_a_clear_problem(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(MetadataInvalid) as info:
        read_directory(missing)
    assert [str(p) for p in info.value.problems] == [
        f"{missing}: expected a metadata directory with feeds/, schemas/ and environments/; "
        "found no such directory"
    ]


def test_a_symlink_leaving_the_root_is_refused(root: Path, tmp_path: Path) -> None:
    secret = tmp_path / "outside" / "secret.yaml"
    secret.parent.mkdir()
    secret.write_text("password: hunter2\n")
    (root / "feeds" / "evil.yaml").symlink_to(secret)

    with pytest.raises(MetadataInvalid) as info:
        read_directory(root)

    assert [str(p) for p in info.value.problems] == [
        f"feeds/evil.yaml: expected a file inside the metadata directory; found a link to {secret}"
    ]
    assert "hunter2" not in str(info.value)


def test_a_folder_symlink_leaving_the_root_is_refused(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside-schemas"
    shutil.move(root / "schemas", outside)
    (root / "schemas").symlink_to(outside, target_is_directory=True)

    with pytest.raises(MetadataInvalid) as info:
        read_directory(root)

    assert sorted(p.file for p in info.value.problems) == [
        "schemas/trade.capnp",
        "schemas/trade.yaml",
    ]


def test_a_relative_symlink_inside_the_root_is_followed(root: Path) -> None:
    shared = root / "shared"
    shared.mkdir()
    (root / "feeds" / "kalshi.yaml").rename(shared / "kalshi.yaml")
    (root / "feeds" / "kalshi.yaml").symlink_to(Path("..") / "shared" / "kalshi.yaml")

    files = read_directory(root)

    assert files["feeds/kalshi.yaml"] == (EXCHANGES / "feeds" / "kalshi.yaml").read_bytes()
    assert "shared/kalshi.yaml" not in files


def test_broken_and_looping_links_are_problems(root: Path, tmp_path: Path) -> None:
    (root / "feeds" / "kalshi.yaml").unlink()
    (root / "feeds" / "kalshi.yaml").symlink_to("../shared/kalshi.yaml")
    (root / "environments" / "a.yaml").symlink_to("b.yaml")
    (root / "environments" / "b.yaml").symlink_to("a.yaml")

    with pytest.raises(MetadataInvalid) as info:
        read_directory(root)

    assert [str(p) for p in info.value.problems] == [
        "feeds/kalshi.yaml: expected a file, or a link to one; found a broken or looping "
        "link to ../shared/kalshi.yaml",
        "environments/a.yaml: expected a file, or a link to one; found a broken or looping "
        "link to b.yaml",
        "environments/b.yaml: expected a file, or a link to one; found a broken or looping "
        "link to a.yaml",
    ]


def test_linked_subdirectories_are_ignored_like_real_ones(root: Path) -> None:
    (root / "old-feeds").mkdir()
    (root / "feeds" / "archive").symlink_to("../old-feeds", target_is_directory=True)
    assert set(read_directory(root)) == EXAMPLE_FILES


def configmap_volume(mount: Path, contents: dict[str, bytes]) -> None:
    """Lay out ``contents`` the way the kubelet projects a ConfigMap volume.

    Real files live in a timestamped ``..<ts>`` directory, ``..data`` links to it, and
    each key is a top-level link through ``..data`` (atomic updates swap ``..data``).
    """
    mount.mkdir(parents=True, exist_ok=True)
    stamp = mount / "..2026_01_15_10_00_00.123456789"
    for rel, data in contents.items():
        target = stamp / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    (mount / "..data").symlink_to(stamp.name, target_is_directory=True)
    for top in sorted({rel.split("/")[0] for rel in contents}):
        (mount / top).symlink_to(Path("..data") / top)


def test_a_configmap_volume_per_folder_loads(tmp_path: Path, tree: dict[str, bytes]) -> None:
    root = tmp_path / "config"
    for kind in ("feeds", "schemas", "environments"):
        prefix = kind + "/"
        configmap_volume(
            root / kind,
            {p.removeprefix(prefix): b for p, b in tree.items() if p.startswith(prefix)},
        )
    assert (root / "feeds" / "kalshi.yaml").is_symlink()

    files = read_directory(root)

    assert files == tree
    assert validate_tree(files, DAY) == []


def test_one_configmap_volume_with_item_paths_loads(tmp_path: Path, tree: dict[str, bytes]) -> None:
    root = tmp_path / "config"
    configmap_volume(root, tree)
    assert (root / "feeds").is_symlink()

    files = read_directory(root)

    assert files == tree
    assert resolve_environment(files, "kalshi-sim", DAY).environment.name == "kalshi-sim"


def test_a_mounted_root_that_is_itself_a_link_loads(tmp_path: Path, root: Path) -> None:
    link = tmp_path / "current"
    link.symlink_to(root, target_is_directory=True)
    assert set(read_directory(link)) == EXAMPLE_FILES


def test_oversized_files_are_refused(root: Path) -> None:
    (root / "schemas" / "huge.capnp").write_bytes(b"#" * (MAX_FILE_BYTES + 1))
    (root / "schemas" / "limit.capnp").write_bytes(b"#" * MAX_FILE_BYTES)

    with pytest.raises(MetadataInvalid) as info:
        read_directory(root)

    assert [str(p) for p in info.value.problems] == [
        f"schemas/huge.capnp: expected at most {MAX_FILE_BYTES} bytes; "
        f"found {MAX_FILE_BYTES + 1} bytes"
    ]


def test_read_directory_lists_all_its_problems_at_once(root: Path, tmp_path: Path) -> None:
    (root / "feeds" / "big.yaml").write_bytes(b"#" * (MAX_FILE_BYTES + 1))
    (root / "environments" / "passwd.yaml").symlink_to("/etc/passwd")

    with pytest.raises(MetadataInvalid) as info:
        read_directory(root)

    assert [p.file for p in info.value.problems] == ["feeds/big.yaml", "environments/passwd.yaml"]


def test_the_collector_and_a_dict_tree_see_the_same_metadata(root: Path) -> None:
    # What the operator builds from ConfigMaps is a plain dict; it must validate the same.
    files = read_directory(root)
    from_dict = {p: (root / p).read_bytes() for p in files}
    assert validate_tree(from_dict, DAY) == validate_tree(files, DAY) == []
