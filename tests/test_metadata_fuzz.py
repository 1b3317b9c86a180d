"""Fuzzing the metadata loader: whatever the files hold, the answer is a model or Problems.

Documents are random YAML-ish trees, mutations of the example files (dropped fields,
wrong types, random strings, unknown fields), random text and random bytes. For each,
``parse_tree``, ``validate_tree`` and ``resolve_environment`` must either succeed or
report ``Problem``s / raise ``MetadataInvalid``; any other exception is a bug. The
checks also hold the three functions to agreeing with one another.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ssmd_collector.connectors.kalshi.channels import PUBLIC as PUBLIC_CHANNELS
from ssmd_collector.metadata import (
    Catalog,
    MetadataInvalid,
    Problem,
    Resolved,
    parse_tree,
    read_directory,
    resolve_environment,
    validate_tree,
)

NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
EXCHANGES = Path(__file__).resolve().parents[1] / "exchanges"
EXAMPLE = read_directory(EXCHANGES)
YAML_FILES = sorted(p for p in EXAMPLE if p.endswith(".yaml"))
DAY = dt.date(2026, 1, 15)


def budget(examples: int) -> int:
    """``examples`` scaled by the active profile (tests/conftest.py): CI runs a quarter."""
    return max(10, examples * settings().max_examples // 100)


FUZZ = settings(
    max_examples=budget(200),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

FIELD_NAMES = [
    "name", "display_name", "type", "status", "versions", "version", "effective_from",
    "effective_to", "protocol", "transport", "message", "endpoint", "auth_method",
    "rate_limit_per_second", "format", "schema_file", "hash", "feed", "schema", "keys",
    "kalshi", "required", "fields", "source", "storage", "path", "subscriptions",
    "channels", "market_tickers",
]  # fmt: skip
TELLING_STRINGS = [
    "", " ", "kalshi", "kalshi-sim", "kalshi-prod", "trade", "trade:v1", "trade:v2", "v1",
    "websocket", "rest", "active", "draft", "disabled", "capnp", "trade.capnp", "local",
    "memory", "s3", "nats", "mqtt", "env", "env:", "env:A", "env:A,B", "vault/x",
    "sealed-secret/x", "ticker", "trade", "fill", "orderbook_delta", "wss://x/ws",
    "https://x", "2025-12-22", "2025-13-45", "2025-W52-1", "../x", "../../etc/passwd",
    "kalshi\n", "sha256:" + "0" * 64, "0x" + "f" * 60, "~", "yes", ".nan",
]  # fmt: skip

RAW_SCALARS = [
    "2025-13-45", "2025-02-30", "2025-12-22T10:00:00", "2025-12-22 10:00:00 +99:00",
    "2025-W52-1", '"20251222"', "!!timestamp soon", "!!bool maybe", "!!int x", "!!float y",
    "!!binary '@@'", "!!python/object/apply:os.system [id]", "!!set {a, b}", "!!omap [a: 1]",
    "1" * 5000, "0x" + "f" * 5000, ".nan", ".inf", "-.inf", "~", "null", "yes", "0o17",
    "1_000", "1:30", "[]", "{}", "&x [*x]", "*undefined", "'unterminated", "|", ">",
    '"\\x00"', '"kalshi\\n"', "[ticker, orderbook_delta]", "{type: s3, path: b}",
]  # fmt: skip

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**200, max_value=2**300)
    | st.floats()
    | st.dates()
    | st.text(max_size=12)
    | st.sampled_from(TELLING_STRINGS)
)
yamlish = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=16,
)


# --- the properties ----------------------------------------------------------------


def check(files: dict[str, bytes]) -> None:
    """Everything the loader promises, for any ``files``."""
    catalog, problems = parse_tree(files)
    assert all(isinstance(p, Problem) for p in problems)
    for p in problems:
        assert p.file in files
        text = str(p)
        assert text.startswith(p.file)
        assert "expected " in text
        assert "; found " in text

    # A metadata file is either in the catalog or has a problem: nothing vanishes.
    parsed = {m.file for kind in (catalog.feeds, catalog.schemas, catalog.environments)
              for m in kind.values()}  # fmt: skip
    with_problems = {p.file for p in problems}
    for path in files:
        kind, _, base = path.partition("/")
        if kind in ("feeds", "schemas", "environments") and base.endswith(".yaml"):
            assert (path in parsed) != (path in with_problems), path

    check_catalog(catalog)

    validated = validate_tree(files, DAY)
    assert all(isinstance(p, Problem) for p in validated)
    assert len(validated) == len(set(validated)), "validate_tree lists a problem twice"
    assert set(problems) <= set(validated)

    env_names = set(catalog.environments) | {
        p.removeprefix("environments/").removesuffix(".yaml")
        for p in files
        if p.startswith("environments/") and p.endswith(".yaml")
    }
    for env in sorted(env_names)[:4]:
        resolved = resolve_or_problems(files, env)
        if isinstance(resolved, MetadataInvalid):
            assert resolved.problems, f"{env}: MetadataInvalid without problems"
            assert all(isinstance(p, Problem) for p in resolved.problems)
            if f"environments/{env}.yaml" in files:
                # Resolution and whole-tree validation agree on what is wrong.
                assert set(resolved.problems) <= set(validated)
            continue
        assert resolved.environment.name == env
        if not resolved.environment.keys:  # channel rules are the exchange's, on resolution
            assert resolved.environment.channels <= PUBLIC_CHANNELS
        assert resolved.feed_version.effective_on(DAY)
        assert resolved.schema_version.status == "active"
        assert all(f in files for f in resolved.files)
        assert not [p for p in validated if p.file == resolved.environment.file]
    if not validated:
        assert {f"environments/{e}.yaml" for e in catalog.environments} == {
            p for p in files if p.startswith("environments/") and p.endswith(".yaml")
        }


def check_catalog(catalog: Catalog) -> None:
    """What a model that parsed cleanly guarantees to the collector and the operator."""
    for name, feed in catalog.feeds.items():
        assert feed.file == f"feeds/{name}.yaml"
        assert NAME.fullmatch(name)
        assert len({v.version for v in feed.versions}) == len(feed.versions)
        for v in feed.versions:
            assert v.effective_to is None or v.effective_to >= v.effective_from
            rate = v.rate_limit_per_second
            assert rate is None or 0 < rate < math.inf
    for name, schema in catalog.schemas.items():
        assert schema.file == f"schemas/{name}.yaml"
        assert "/" not in schema.schema_file
        assert not schema.schema_file.startswith(".")
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", v.hash) for v in schema.versions)
    for name, env in catalog.environments.items():
        assert env.file == f"environments/{name}.yaml"
        assert NAME.fullmatch(env.feed)
        assert NAME.fullmatch(env.schema_name)
        assert all(isinstance(k.name, str) and k.name.strip() for k in env.keys)
        assert env.subscriptions
        assert all(sub.channels for sub in env.subscriptions)
        assert env.transport == "memory"
        assert env.storage.type == "local"


def resolve_or_problems(files: dict[str, bytes], env: str) -> Resolved | MetadataInvalid:
    try:
        return resolve_environment(files, env, DAY)
    except MetadataInvalid as exc:
        return exc


def dump(doc: Any) -> bytes:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True).encode()


def node_paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a document a mutation can touch, as a key/index path."""
    if isinstance(doc, dict | list):
        items: Any = doc.items() if isinstance(doc, dict) else enumerate(doc)
        for key, value in items:
            yield (*prefix, key)
            yield from node_paths(value, (*prefix, key))


def parent_of(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        doc = doc[key]
    return doc


EXAMPLE_DOCS = {p: yaml.safe_load(EXAMPLE[p]) for p in YAML_FILES}
EXAMPLE_PATHS = {p: list(node_paths(doc)) for p, doc in EXAMPLE_DOCS.items()}


@st.composite
def mutated_example(draw: st.DrawFn) -> dict[str, bytes]:
    """The example tree with one to three random edits to its documents."""
    docs = copy.deepcopy(EXAMPLE_DOCS)
    for _ in range(draw(st.integers(1, 3))):
        file = draw(st.sampled_from(YAML_FILES))
        paths = list(node_paths(docs[file])) or EXAMPLE_PATHS[file]
        path = draw(st.sampled_from(paths))
        try:
            parent = parent_of(docs[file], path)
            key = path[-1]
            parent[key]  # the path may be stale after an earlier edit
        except (KeyError, IndexError, TypeError):
            continue
        edit = draw(st.sampled_from(["drop", "replace", "string", "unknown field"]))
        if edit == "drop":
            del parent[key]
        elif edit == "replace":
            parent[key] = draw(yamlish)
        elif edit == "string":
            parent[key] = draw(st.text(max_size=20) | st.sampled_from(TELLING_STRINGS))
        elif isinstance(parent[key], dict):
            parent[key][draw(st.text(min_size=1, max_size=8))] = draw(yamlish)
    return {**EXAMPLE, **{p: dump(doc) for p, doc in docs.items()}}


@st.composite
def example_with_a_raw_value(draw: st.DrawFn) -> dict[str, bytes]:
    """An example file with one value replaced by raw YAML text, e.g. ``2025-13-45``."""
    path = draw(st.sampled_from(YAML_FILES))
    lines = EXAMPLE[path].decode().splitlines()
    slots = [i for i, line in enumerate(lines) if ": " in line or line.lstrip().startswith("- ")]
    i = draw(st.sampled_from(slots))
    marker = ": " if ": " in lines[i] else "- "
    head = lines[i].split(marker, 1)[0]
    raw = draw(st.sampled_from(RAW_SCALARS) | st.text(max_size=15))
    lines[i] = f"{head}{marker}{raw}"
    return {**EXAMPLE, path: "\n".join(lines).encode()}


# --- the fuzzers -------------------------------------------------------------------


@FUZZ
@given(files=mutated_example())
def test_mutated_examples_give_a_model_or_problems(files: dict[str, bytes]) -> None:
    check(files)


@settings(FUZZ, max_examples=budget(150))
@given(
    path=st.sampled_from([*YAML_FILES, "feeds/new.yaml", "environments/new.yaml"]),
    doc=yamlish,
)
def test_arbitrary_documents_give_a_model_or_problems(path: str, doc: Any) -> None:
    check({**EXAMPLE, path: dump(doc)})


@FUZZ
@given(files=example_with_a_raw_value())
def test_raw_yaml_values_in_the_examples_give_a_model_or_problems(
    files: dict[str, bytes],
) -> None:
    check(files)


# Text and bytes only matter to the file they are in, so these trees hold just that
# file: the checks stay the same and each example parses one document, not six.


@settings(FUZZ, max_examples=budget(300))
@given(
    path=st.sampled_from(YAML_FILES),
    text=st.text(alphabet=st.sampled_from(list("ab:-[]{}&*!|>'\"#%@ \n\t,?0123456789.~"))),
)
def test_arbitrary_yaml_syntax_gives_problems(path: str, text: str) -> None:
    check({path: text.encode()})


@settings(FUZZ, max_examples=budget(300))
@given(path=st.sampled_from(YAML_FILES), raw=st.binary(max_size=200))
def test_arbitrary_bytes_give_problems(path: str, raw: bytes) -> None:
    check({path: raw})


@settings(FUZZ, max_examples=budget(100))
@given(
    path=st.sampled_from(YAML_FILES),
    at=st.integers(min_value=0),
    raw=st.binary(min_size=1, max_size=8),
)
def test_bytes_spliced_into_an_example_give_a_model_or_problems(
    path: str, at: int, raw: bytes
) -> None:
    original = EXAMPLE[path]
    at %= len(original)
    check({**EXAMPLE, path: original[:at] + raw + original[at + len(raw) :]})
