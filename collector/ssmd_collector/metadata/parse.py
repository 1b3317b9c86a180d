"""Parse a metadata tree (relative path -> file bytes) into a ``Catalog``.

Pure: no file system access, so the collector (reading a directory) and the operator
(reading ConfigMaps) validate with exactly the same code. Each file is parsed on its
own; a broken file is reported and left out of the catalog, the rest still loads.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

import yaml

from .errors import Problem, describe
from .fields import NAME_EXPECTED, NAME_RE, Fields
from .model import (
    DEFAULT_CHANNELS,
    MARKET_STATUSES,
    MULTIVARIATE,
    Catalog,
    Environment,
    Feed,
    FeedVersion,
    KeySpec,
    MarketSelector,
    Schema,
    SchemaVersion,
    Storage,
    Subscription,
    derive_rest_endpoint,
)

FEED_TYPES = ("websocket", "rest", "multicast")
FEED_STATUSES = ("active", "deprecated", "disabled")
SCHEMA_FORMATS = ("capnp", "protobuf", "json_schema")
SCHEMA_STATUSES = ("draft", "active", "deprecated")
STORAGE_TYPES = ("local", "s3")
TRANSPORT_TYPES = ("memory",)
LATER_TRANSPORTS = ("nats", "mqtt")
HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}\Z")
SCHEMA_REF_RE = re.compile(r"^([^:\s]+):([^:\s]+)\Z")
FILE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z")
KINDS = ("feeds", "schemas", "environments")
# S3's rules for new buckets: 3-63 of a-z 0-9 . -, starting and ending alphanumeric.
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")
ENDPOINT_RE = re.compile(r"^https?://[^\s/?#]+(:[0-9]+)?/?\Z")
REST_ENDPOINT_RE = re.compile(r"^https?://[^\s/?#]+(/[^\s?#]*)?\Z")
SELECTOR_KEYS = ("status", "series", "events", "tickers", "multivariate")


def parse_tree(files: Mapping[str, bytes]) -> tuple[Catalog, list[Problem]]:
    """Parse every ``<kind>/<name>.yaml`` in ``files``; other files are kept as data.

    ``<kind>/<name>.yml`` is a problem rather than an alias: everything that refers
    to a file by name (resolution, ``Resolved.files``) means ``<name>.yaml``.
    """
    problems: list[Problem] = []
    catalog = Catalog(files=dict(files))
    for path in sorted(files):
        kind, _, base = path.partition("/")
        if kind not in KINDS or "/" in base or not base.endswith((".yaml", ".yml")):
            continue
        stem = base.rsplit(".", 1)[0]
        if base.endswith(".yml"):
            # Names resolve to <kind>/<name>.yaml; a .yml twin would shadow or be missed.
            problems.append(
                Problem(path, "", f"the extension .yaml ({kind}/{stem}.yaml)", "a .yml file")
            )
            continue
        doc = _load_yaml(path, files[path], problems)
        if doc is None:
            continue
        f = Fields(doc, path, problems)
        before = len(problems)
        if kind == "feeds":
            feed = _feed(f, stem)
            if feed and len(problems) == before:
                catalog.feeds[feed.name] = feed
        elif kind == "schemas":
            schema = _schema(f, stem)
            if schema and len(problems) == before:
                catalog.schemas[schema.name] = schema
        else:
            env = _environment(f, stem)
            if env and len(problems) == before:
                catalog.environments[env.name] = env
    return catalog, problems


class _Loader(yaml.SafeLoader):
    """``SafeLoader`` whose failures to build a value say where the value is.

    PyYAML's constructors leak plain exceptions for malformed scalars: an unquoted
    2025-13-45 or an over-long integer (ValueError), ``!!timestamp x``
    (AttributeError), ``!!bool x`` (KeyError). They are bad input, so they become
    ``ConstructorError`` with the line and column, like any other YAML error.
    """

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, AttributeError, KeyError, OverflowError) as exc:
            text = str(node.value) if isinstance(node, yaml.ScalarNode) else ""
            value = repr(text if len(text) <= 40 else text[:37] + "...") if text else "a value"
            kind = node.tag.rsplit(":", 1)[-1]
            detail = str(exc).splitlines()[0][:100] if str(exc) else type(exc).__name__
            raise yaml.constructor.ConstructorError(
                problem=f"{value} cannot be read as !!{kind} ({detail})",
                problem_mark=node.start_mark,
            ) from exc


def _load_yaml(path: str, raw: bytes, problems: list[Problem]) -> dict[str, Any] | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.append(Problem(path, "", "UTF-8 text", f"invalid byte at offset {exc.start}"))
        return None
    try:
        doc = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = exc.problem or type(exc).__name__
        if exc.context and reason.startswith("but "):  # "expected X" + "but found Y"
            reason = f"{exc.context}, {reason}"
        problems.append(Problem(path, "", "valid YAML", f"{reason}{at}"))
        return None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        reason = str(exc).splitlines()[0]
        problems.append(
            Problem(path, "", "valid YAML", f"{reason} at line {line}, column {column}")
        )
        return None
    except RecursionError:
        problems.append(Problem(path, "", "valid YAML", "nesting too deep to parse"))
        return None
    if doc is None:
        problems.append(Problem(path, "", "a YAML mapping at the top level", "an empty document"))
        return None
    if not isinstance(doc, dict):
        problems.append(Problem(path, "", "a YAML mapping at the top level", describe(doc)))
        return None
    return doc


def _name_matches_file(f: Fields, stem: str) -> str | None:
    name = f.name("name")
    if name is not None and name != stem:
        f.problem("name", f"'{stem}' (the file name without .yaml)", name)
        return None
    return name


def _feed(f: Fields, stem: str) -> Feed | None:
    name = _name_matches_file(f, stem)
    ftype = f.text("type", choices=FEED_TYPES)
    status = f.text("status", required=False, choices=FEED_STATUSES) or "active"
    versions = tuple(v for v in map(_feed_version, f.items("versions")) if v)
    _unique_versions(f, [v.version for v in versions])
    if name is None or ftype is None or not versions:
        return None
    display = f.text("display_name", required=False) or name
    exchange = f.text("exchange", required=False) or "kalshi"
    return Feed(name, display, ftype, status, versions, f.file, exchange)


def _feed_version(v: Fields) -> FeedVersion | None:
    version = v.text("version")
    start = v.date("effective_from")
    end = v.date("effective_to", required=False)
    endpoint = v.text("endpoint")
    transport, message = _protocol(v)
    auth = v.text("auth_method", required=False)
    rate = v.number("rate_limit_per_second")
    rest = v.text("rest_endpoint", required=False)
    if rest is not None and not REST_ENDPOINT_RE.match(rest):
        v.problem("rest_endpoint", "an http:// or https:// URL such as "
                  "https://api.elections.kalshi.com/trade-api/v2", rest)  # fmt: skip
        return None
    if start and end and end < start:
        v.problem("effective_to", f"a date on or after effective_from ({start})", str(end))
        return None
    if version is None or start is None or endpoint is None:
        return None
    rest = (rest or derive_rest_endpoint(endpoint)).rstrip("/")
    return FeedVersion(version, start, end, endpoint, transport, message, auth, rate, rest)


def _protocol(v: Fields) -> tuple[str, str]:
    """``protocol`` is either ``{transport, message}`` or a plain string like ``wss``."""
    raw = v.data.get("protocol")
    if raw is None:
        return "", ""
    if isinstance(raw, str):
        return raw, ""
    p = v.mapping("protocol")
    if p is None:
        return "", ""
    return p.text("transport", required=False) or "", p.text("message", required=False) or ""


def _schema(f: Fields, stem: str) -> Schema | None:
    name = _name_matches_file(f, stem)
    fmt = f.text("format", choices=SCHEMA_FORMATS)
    schema_file = f.text("schema_file")
    if schema_file is not None and not FILE_NAME_RE.match(schema_file):
        f.problem("schema_file", "a plain file name inside schemas/ (no '/' or '..')", schema_file)
        schema_file = None
    versions = tuple(v for v in map(_schema_version, f.items("versions")) if v)
    _unique_versions(f, [v.version for v in versions])
    if name is None or fmt is None or schema_file is None or not versions:
        return None
    return Schema(name, fmt, schema_file, versions, f.file)


def _schema_version(v: Fields) -> SchemaVersion | None:
    version = v.text("version")
    start = v.date("effective_from")
    status = v.text("status", choices=SCHEMA_STATUSES)
    digest = v.text("hash")
    if digest is not None and not HASH_RE.match(digest):
        v.problem("hash", "'sha256:' followed by 64 lowercase hex digits", digest)
        digest = None
    if version is None or start is None or status is None or digest is None:
        return None
    return SchemaVersion(version, start, status, digest)


def _unique_versions(f: Fields, names: list[str]) -> None:
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        f.problem("versions", "unique version names", ", ".join(dupes))


def _environment(f: Fields, stem: str) -> Environment | None:
    name = _name_matches_file(f, stem)
    feed = f.name("feed")
    schema_ref = f.text("schema")
    schema_name = schema_version = None
    if schema_ref is not None:
        m = SCHEMA_REF_RE.match(schema_ref)
        if m is None:
            f.problem("schema", "'<schema name>:<version>', e.g. 'trade:v1'", schema_ref)
        elif not NAME_RE.match(m.group(1)):
            f.problem("schema", f"a schema name that is {NAME_EXPECTED}", m.group(1))
        else:
            schema_name, schema_version = m.groups()
    keys = _keys(f)
    transport = _transport(f)
    storage = _storage(f)
    # Channel rules belong to the feed's exchange: checked on resolution (resolve.py).
    subscriptions = _subscriptions(f)
    if (
        name is None
        or feed is None
        or schema_name is None
        or schema_version is None
        or keys is None
        or transport is None
        or storage is None
        or subscriptions is None
    ):
        return None
    return Environment(
        name, feed, schema_name, schema_version, keys, transport, storage, subscriptions, f.file
    )


def _keys(f: Fields) -> tuple[KeySpec, ...] | None:
    keys = f.mapping("keys", required=False)
    if keys is None:
        return None if "keys" in f.data and f.data["keys"] is not None else ()
    specs: list[KeySpec] = []
    ok = True
    for key_name in keys.data:
        # YAML keys may be ints, booleans or null (`1:`, `yes:`, `~:`); the name
        # becomes part of an environment variable name, so it must be text.
        if not isinstance(key_name, str) or not key_name.strip():
            keys.problem(str(key_name), "a key name that is a non-empty string", key_name)
            ok = False
            continue
        k = keys.mapping(key_name)
        if k is None:
            ok = False
            continue
        spec = _key(k, key_name)
        ok = ok and spec is not None
        if spec:
            specs.append(spec)
    return tuple(specs) if ok else None


def _key(k: Fields, key_name: str) -> KeySpec | None:
    ktype = k.text("type", required=False) or "api_key"
    required = k.flag("required", True)
    fields = k.strings("fields")
    source = k.text("source")
    if fields is None or source is None:
        return None
    kind, _, variables = source.partition(":")
    if kind == "env" and variables:
        names = [n.strip() for n in variables.split(",")]
        if len(names) != len(fields) or not all(names):
            k.problem(
                "source",
                f"'env:' followed by {len(fields)} comma-separated variable name(s), "
                f"one per field ({', '.join(fields)})",
                source,
            )
            return None
    elif kind != "env" or variables:
        k.problem(
            "source",
            "'env' or 'env:VAR1,VAR2' (sources like sealed-secret/... and vault/... "
            "are not supported yet)",
            source,
        )
        return None
    return KeySpec(key_name, ktype, required, fields, source)


def _transport(f: Fields) -> str | None:
    t = f.mapping("transport", required=False)
    if t is None:
        return None if f.data.get("transport") is not None else "memory"
    ttype = t.text("type")
    if ttype in LATER_TRANSPORTS:
        t.problem("type", "memory (nats and mqtt transports are not supported yet)", ttype)
        return None
    if ttype is not None and ttype not in TRANSPORT_TYPES:
        t.problem("type", "one of " + ", ".join(TRANSPORT_TYPES), ttype)
        return None
    return ttype


def _storage(f: Fields) -> Storage | None:
    s = f.mapping("storage")
    if s is None:
        return None
    stype = s.text("type", choices=STORAGE_TYPES)
    path = s.text("path")
    if stype != "s3":
        return None if stype is None or path is None else Storage(stype, path)
    bucket = s.text("bucket")
    prefix = s.text("prefix", required=False) or ""
    endpoint = s.text("endpoint", required=False)
    region = s.text("region", required=False)
    retention = _retention(s)
    before = len(s.problems)
    for key, value, check in (
        ("bucket", bucket, check_bucket),
        ("prefix", prefix, check_prefix),
        ("endpoint", endpoint, check_endpoint),
    ):
        expected = check(value) if value else None
        if expected:
            s.problem(key, expected, value)
    if path is None or bucket is None or retention is None or len(s.problems) != before:
        return None
    return Storage(stype, path, bucket, prefix, endpoint, region, retention)


def _retention(s: Fields) -> float | None:
    raw = s.data.get("local_retention_hours", 0)
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 <= raw < 1e6:
        s.problem("local_retention_hours", "a number of hours from 0 to 999999", raw)
        return None
    return float(raw)


def check_bucket(value: str) -> str | None:
    """What a bucket name should be, or None if ``value`` is one."""
    if BUCKET_RE.match(value) and ".." not in value:
        return None
    return "an S3 bucket name (3-63 of a-z, 0-9, '.', '-'; starting and ending alphanumeric)"


def check_prefix(value: str) -> str | None:
    parts = value.strip("/").split("/")
    if value.startswith("/") or any(p in (".", "..") for p in parts) or "//" in value:
        return "a key prefix such as 'ssmd/prod' (no leading '/', no '.' or '..' parts)"
    return None


def check_endpoint(value: str) -> str | None:
    if ENDPOINT_RE.match(value):
        return None
    return "an http:// or https:// URL of an S3-compatible endpoint, e.g. https://minio:9000"


def _subscriptions(f: Fields) -> tuple[Subscription, ...] | None:
    if f.data.get("subscriptions") is None:
        return (Subscription(DEFAULT_CHANNELS),)
    subs: list[Subscription] = []
    ok = True
    for s in f.items("subscriptions"):
        channels = s.strings("channels")
        tickers = s.strings("market_tickers", required=False)
        selector = _selector(s)
        if channels is None or tickers is None or selector is False:
            ok = False
            continue
        subs.append(Subscription(channels, tickers, selector))
    return tuple(subs) if ok and subs else None


def _selector(s: Fields) -> MarketSelector | Literal[False] | None:
    """The ``markets`` selector of a subscription entry: None if absent, False if broken."""
    if s.data.get("markets") is None:
        return None
    m = s.mapping("markets")
    if m is None:
        return False
    before = len(m.problems)
    for key in m.data:
        if key not in SELECTOR_KEYS:
            m.problem(str(key), "only the keys " + ", ".join(SELECTOR_KEYS), key)
    status = m.text("status", required=False, choices=MARKET_STATUSES) or "open"
    mve = m.text("multivariate", required=False, choices=MULTIVARIATE) or "exclude"
    lists = [m.strings(key, required=False) for key in ("series", "events", "tickers")]
    series, events, tickers = (v or () for v in lists)
    if len(m.problems) != before:
        return False
    return MarketSelector(status, series, events, tickers, mve)
