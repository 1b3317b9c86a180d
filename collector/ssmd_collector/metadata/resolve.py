"""Resolve an environment to the feed version and schema version it runs with on a day.

Resolution checks the environment's whole closure (its file, its feed, its schema and
the schema's definition file) and nothing else: a broken file for some other
environment must not stop this one from starting.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Mapping
from typing import TypeVar

from .errors import MetadataInvalid, Problem, describe
from .fields import NAME_EXPECTED, NAME_RE
from .model import Catalog, Environment, Feed, Resolved, Schema
from .parse import parse_tree

T = TypeVar("T")


def resolve_environment(files: Mapping[str, bytes], env: str, day: dt.date) -> Resolved:
    """Parse ``files`` and resolve ``env`` on ``day``, or raise ``MetadataInvalid``."""
    catalog, parse_problems = parse_tree(files)
    resolved, problems = _resolve(catalog, parse_problems, env, day)
    if resolved is None or problems:
        raise MetadataInvalid(problems)
    return resolved


def validate_tree(files: Mapping[str, bytes], day: dt.date) -> list[Problem]:
    """Every problem in a tree: each file's own, then each environment's resolution."""
    catalog, parse_problems = parse_tree(files)
    problems = list(parse_problems)
    if not any(re.fullmatch(r"environments/[^/]+\.yaml", p) for p in files):
        problems.append(Problem("environments/", "", "at least one <env>.yaml", "none"))
    for name in sorted(catalog.environments):
        for p in _resolve(catalog, parse_problems, name, day)[1]:
            if p not in problems:
                problems.append(p)
    return problems


def _resolve(
    catalog: Catalog, parse_problems: list[Problem], env_name: str, day: dt.date
) -> tuple[Resolved | None, list[Problem]]:
    env_file = f"environments/{env_name}.yaml"
    if not NAME_RE.match(env_name):
        return None, [
            Problem(env_file, "", f"an environment name that is {NAME_EXPECTED}", repr(env_name))
        ]
    own = _own(parse_problems, env_file)
    env = catalog.environments.get(env_name)
    if env is None:
        if own or env_file in catalog.files:
            return None, own
        known = ", ".join(sorted(catalog.environments)) or "none"
        return None, [
            Problem(
                env_file,
                "",
                "an environment file with this name",
                f"no such file (known environments: {known})",
            )
        ]

    problems: list[Problem] = []
    feed = _referenced(catalog.feeds, "feed", "feed", env.feed, env.file, parse_problems, problems)
    schema = _referenced(
        catalog.schemas, "schema", "schema", env.schema_name, env.file, parse_problems, problems
    )
    feed_version = schema_version = None
    if feed is not None:
        feed_version = feed.version_on(day)
        if feed_version is None:
            spans = ", ".join(
                f"{v.version} from {v.effective_from}"
                + (f" to {v.effective_to}" if v.effective_to else "")
                for v in feed.versions
            )
            problems.append(Problem(feed.file, "versions", f"a version effective on {day}", spans))
        elif feed.type == "websocket" and not feed_version.endpoint.startswith(("ws://", "wss://")):
            i = feed.versions.index(feed_version)
            problems.append(
                Problem(
                    feed.file,
                    f"versions[{i}].endpoint",
                    "a ws:// or wss:// URL",
                    repr(feed_version.endpoint),
                )
            )
        if feed.status == "disabled":
            problems.append(
                Problem(feed.file, "status", "active or deprecated to run a collector", "disabled")
            )
    if schema is not None:
        schema_version = schema.version(env.schema_version)
        if schema_version is None:
            known = ", ".join(v.version for v in schema.versions)
            problems.append(
                Problem(
                    env.file,
                    "schema",
                    f"a version of schema '{schema.name}' (one of {known})",
                    repr(env.schema_version),
                )
            )
        elif schema_version.status != "active":
            problems.append(
                Problem(
                    env.file,
                    "schema",
                    "a schema version whose status is active",
                    f"{schema.name}:{schema_version.version} is {schema_version.status}",
                )
            )
        else:
            _check_hash(catalog, schema, schema.versions.index(schema_version), problems)

    if feed is not None:
        _check_subscriptions(env, feed, problems)
    if feed is None or feed_version is None or schema is None or schema_version is None:
        return None, problems
    return Resolved(env, feed, feed_version, schema, schema_version, day), problems


def _check_subscriptions(env: Environment, feed: Feed, problems: list[Problem]) -> None:
    """The environment's subscriptions, by the rules of its feed's exchange."""
    # Imported here: the plug-ins use the metadata models, so a module-level import
    # would be circular.
    from ..connectors import EXCHANGES, exchange_for

    exchange = exchange_for(feed.exchange)
    if exchange is None:
        known = ", ".join(sorted(EXCHANGES))
        problems.append(Problem(feed.file, "exchange", f"one of {known}", repr(feed.exchange)))
        return
    for field, expected, found in exchange.check_subscriptions(
        env.subscriptions, has_keys=bool(env.keys)
    ):
        problems.append(Problem(env.file, field, expected, describe(found)))


def _own(parse_problems: list[Problem], path: str) -> list[Problem]:
    """The problems of ``<kind>/<name>.yaml``, or of a ``.yml`` file in its place."""
    twin = path.removesuffix(".yaml") + ".yml"
    return [p for p in parse_problems if p.file in (path, twin)]


def _referenced(
    found: dict[str, T],
    kind: str,
    field: str,
    name: str,
    env_file: str,
    parse_problems: list[Problem],
    problems: list[Problem],
) -> T | None:
    """Look up the feed or schema an environment names; if it is missing, report the
    referenced file's own problems (it exists but is broken) or that it does not exist."""
    item = found.get(name)
    if item is None:
        path = f"{kind}s/{name}.yaml"
        known = ", ".join(sorted(found)) or "none"
        problems.extend(
            _own(parse_problems, path)
            or [
                Problem(
                    env_file,
                    field,
                    f"an existing {kind} ({path})",
                    f"'{name}' (known {kind}s: {known})",
                )
            ]
        )
    return item


def _check_hash(catalog: Catalog, schema: Schema, index: int, problems: list[Problem]) -> None:
    path = f"schemas/{schema.schema_file}"
    content = catalog.files.get(path)
    field = f"versions[{index}].hash"
    if content is None:
        problems.append(
            Problem(schema.file, "schema_file", f"the file {path} to exist", "no such file")
        )
        return
    actual = "sha256:" + hashlib.sha256(content).hexdigest()
    if actual != schema.versions[index].hash:
        problems.append(
            Problem(
                schema.file, field, f"the sha256 of {path}: {actual}", schema.versions[index].hash
            )
        )
