"""Invalid SsmdEnvironments are refused by the CRD, with messages that name the field.

What the API server does on create/update, offline: apply the schema's defaults,
validate against the openAPIV3Schema (jsonschema: types, enums, patterns, lengths,
required fields), then evaluate every ``x-kubernetes-validations`` CEL rule where
it sits (cel-python, the same CEL language and RE2 regular expressions). Each
refusal is printed the way ``kubectl apply`` shows it, ``<field path>: <message>``,
and each test checks that the path names the field and the message says what is
expected. Real API server admission (cost limits, CEL library differences across
Kubernetes versions) is left to the kind suite in e2e/.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

try:
    import celpy
except ImportError:  # the structural checks still run; the CEL ones skip
    celpy = None

REPO = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((REPO / "crds" / "ssmd.io_ssmdenvironments.yaml").read_text())
SCHEMA: dict[str, Any] = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
CEL_MISSING = (
    "cel-python (import name celpy) is not installed: add 'cel-python>=0.5' to the dev "
    "extra in pyproject.toml to evaluate the CRD's CEL rules offline"
)


# --- an offline admission: defaults, schema, CEL -------------------------------------


def with_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """Structural defaulting as the API server does it: absent fields get ``default``."""
    if isinstance(value, dict) and schema.get("type") == "object":
        out = dict(value)
        for key, sub in (schema.get("properties") or {}).items():
            if key not in out and "default" in sub:
                out[key] = copy.deepcopy(sub["default"])
            if key in out:
                out[key] = with_defaults(out[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in set(out) - set(schema.get("properties") or {}):
                out[key] = with_defaults(out[key], extra)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [with_defaults(v, schema["items"]) for v in value]
    return value


def field_path(parts: Iterator[Any] | list[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


def unknown_fields(value: Any, schema: dict[str, Any], at: tuple[Any, ...] = ()) -> list[str]:
    """kubectl's strict field validation (the default since 1.27): a field the schema does
    not list is refused by name instead of being pruned in silence."""
    out: list[str] = []
    if isinstance(value, dict) and schema.get("type") == "object":
        known = schema.get("properties") or {}
        open_map = isinstance(schema.get("additionalProperties"), dict)
        for key, sub in value.items():
            if key in known:
                out += unknown_fields(sub, known[key], (*at, key))
            elif open_map:
                out += unknown_fields(sub, schema["additionalProperties"], (*at, key))
            elif known and at != ("metadata",):
                out.append(f'{field_path([*at, key])}: unknown field "{field_path([*at, key])}"')
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            out += unknown_fields(item, schema["items"], (*at, i))
    return out


def schema_errors(cr: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(SCHEMA)
    return sorted(
        [f"{field_path(list(e.absolute_path))}: {e.message}" for e in validator.iter_errors(cr)]
        + unknown_fields(cr, SCHEMA)
    )


def rules(
    schema: dict[str, Any] = SCHEMA, path: tuple[Any, ...] = ()
) -> Iterator[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Every CEL rule with the path of the node it applies to ("[]" marks list items)."""
    for rule in schema.get("x-kubernetes-validations") or []:
        yield path, rule
    for key, sub in (schema.get("properties") or {}).items():
        yield from rules(sub, (*path, key))
    if isinstance(schema.get("items"), dict):
        yield from rules(schema["items"], (*path, "[]"))


def nodes(value: Any, path: tuple[Any, ...], at: tuple[Any, ...] = ()) -> Iterator[Any]:
    """The values at ``path`` in ``value`` (one per list item for "[]")."""
    if not path:
        yield at, value
        return
    head, rest = path[0], path[1:]
    if head == "[]" and isinstance(value, list):
        for i, item in enumerate(value):
            yield from nodes(item, rest, (*at, i))
    elif isinstance(value, dict) and head in value:
        yield from nodes(value[head], rest, (*at, head))


def cel_self(value: Any, path: tuple[Any, ...]) -> Any:
    """At the root, CEL sees only metadata.name and metadata.generateName."""
    if path == () and isinstance(value, dict):
        meta = value.get("metadata") or {}
        visible = {k: meta[k] for k in ("name", "generateName") if k in meta}
        return {**value, "metadata": visible}
    return value


def cel_errors(cr: dict[str, Any]) -> list[str]:
    if celpy is None:
        pytest.skip(CEL_MISSING)
    env = celpy.Environment()
    out = []
    for path, rule in rules():
        program = env.program(env.compile(rule["rule"]))
        for at, value in nodes(cr, path):
            result = program.evaluate({"self": celpy.json_to_cel(cel_self(value, path))})
            assert isinstance(result, celpy.celtypes.BoolType), f"{rule['rule']} -> {result!r}"
            if not bool(result):
                out.append(f"{field_path(list(at))}: Invalid value: {rule['message']}")
    return out


def admission_errors(cr: dict[str, Any]) -> list[str]:
    """What ``kubectl apply`` would print, one line per refused field ([] = accepted)."""
    defaulted = with_defaults(cr, SCHEMA)
    errors = schema_errors(defaulted)
    if errors or celpy is None:  # the API server runs CEL on schema-valid objects only
        return errors
    return cel_errors(defaulted)


def resource(name: str = "kalshi-prod", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "ssmd.io/v1alpha1",
        "kind": "SsmdEnvironment",
        "metadata": {"name": name, "namespace": "ssmd"},
        "spec": spec,
    }


# --- what is accepted -------------------------------------------------------------------


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_are_accepted(example: Path) -> None:
    assert admission_errors(yaml.safe_load(example.read_text())) == []


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"secretName": "kalshi-keys", "storage": {"persistentVolumeClaim": {"claimName": "d"}}},
        {"storage": {"emptyDir": {"sizeLimit": "1Gi"}}, "resources": {"limits": {"cpu": 1}}},
        {
            "storage": {
                "persistentVolumeClaim": {"claimName": "spool"},
                "s3": {
                    "bucket": "market-data",
                    "prefix": "ssmd/prod",
                    "endpoint": "https://minio.data:9000",
                    "region": "eu-west-1",
                    "credentialsSecret": {"name": "s3-keys", "accessKeyIdKey": "id"},
                },
            }
        },
        {"storage": {"emptyDir": {}, "s3": {"bucket": "market-data"}}},
        {"resources": {"requests": {"cpu": "+0.5", "ephemeral-storage": "1Gi"}}},
        {"environment": "a" * 63, "imagePullPolicy": "Always", "logFormat": "text"},
        {
            "metadata": {
                "configMaps": [
                    {"name": "all-in-one-a", "directory": "feeds"},
                    {"name": "all-in-one-b", "directory": "schemas"},
                    {"name": "extra-environments", "directory": "environments"},
                    {"name": "more-feeds", "directory": "feeds"},
                ]
            }
        },
    ],
)
def test_valid_specs_are_accepted(spec: dict[str, Any]) -> None:
    assert admission_errors(resource(**spec)) == []


# --- what is refused, and how it reads ------------------------------------------------

# (what the user wrote, the field path the refusal names, words the message must have)
SCHEMA_MISTAKES: list[tuple[dict[str, Any], str, list[str]]] = [
    ({"imagePullPolicy": "Sometimes"}, "spec.imagePullPolicy", ["Sometimes", "IfNotPresent"]),
    ({"logFormat": "xml"}, "spec.logFormat", ["xml", "json", "text"]),
    ({"paused": "yes"}, "spec.paused", ["yes", "boolean"]),
    ({"environment": "Kalshi_Prod"}, "spec.environment", ["Kalshi_Prod", "does not match"]),
    ({"environment": "a" * 64}, "spec.environment", ["too long"]),
    ({"secretName": "keys/prod"}, "spec.secretName", ["keys/prod", "does not match"]),
    ({"image": ""}, "spec.image", ["should be non-empty"]),
    ({"image": 5}, "spec.image", ["5", "string"]),
    (
        {"metadata": {"configMaps": [{"name": "x", "directory": "nope"}]}},
        "spec.metadata.configMaps[0].directory",
        ["nope", "feeds", "schemas", "environments"],
    ),
    (
        {"metadata": {"configMaps": [{"name": "x"}]}},
        "spec.metadata.configMaps[0]",
        ["'directory' is a required property"],
    ),
    ({"metadata": {"configMaps": []}}, "spec.metadata.configMaps", ["should be non-empty"]),
    (
        {"storage": {"persistentVolumeClaim": {}}},
        "spec.storage.persistentVolumeClaim",
        ["'claimName' is a required property"],
    ),
    (
        {"storage": {"emptyDir": {"sizeLimit": "lots"}}},
        "spec.storage.emptyDir.sizeLimit",
        ["lots", "does not match"],
    ),
    (
        {"storage": {"emptyDir": {}, "s3": {"prefix": "p"}}},
        "spec.storage.s3",
        ["'bucket' is a required property"],
    ),
    (
        {"storage": {"emptyDir": {}, "s3": {"bucket": "Market_Data"}}},
        "spec.storage.s3.bucket",
        ["Market_Data", "does not match"],
    ),
    (
        {"storage": {"emptyDir": {}, "s3": {"bucket": "b-1", "endpoint": "minio:9000"}}},
        "spec.storage.s3.endpoint",
        ["minio:9000", "does not match"],
    ),
    (
        {"storage": {"emptyDir": {}, "s3": {"bucket": "b-1", "credentialsSecret": {}}}},
        "spec.storage.s3.credentialsSecret",
        ["'name' is a required property"],
    ),
    (
        {"resources": {"limits": {"memory": "lots"}}},
        "spec.resources.limits.memory",
        ["lots", "does not match"],
    ),
    ({"resources": {"requests": {"cpu": True}}}, "spec.resources.requests.cpu", ["True"]),
    # What the API server would refuse only when the Deployment is written, caught at
    # `kubectl apply` instead: negative quantities and resource names it does not know.
    (
        {"resources": {"requests": {"memory": "-128Mi"}}},
        "spec.resources.requests.memory",
        ["-128Mi", "does not match"],
    ),
    ({"resources": {"limits": {"cpu": -1}}}, "spec.resources.limits.cpu", ["-1", "minimum"]),
    (
        {"storage": {"emptyDir": {"sizeLimit": "-1Gi"}}},
        "spec.storage.emptyDir.sizeLimit",
        ["-1Gi", "does not match"],
    ),
    (
        {"resources": {"requests": {"cpus": "1"}}},
        "spec.resources.requests.cpus",
        ['unknown field "spec.resources.requests.cpus"'],
    ),
    (
        {"resources": {"limits": {"nvidia.com/gpu": 1}}},
        "spec.resources.limits.nvidia.com/gpu",
        ["unknown field"],
    ),
]


@pytest.mark.parametrize(
    ("spec", "where", "words"), SCHEMA_MISTAKES, ids=[w for _, w, _ in SCHEMA_MISTAKES]
)
def test_schema_refuses_mistakes_naming_the_field(
    spec: dict[str, Any], where: str, words: list[str]
) -> None:
    errors = admission_errors(resource(**spec))
    named = [e for e in errors if e.startswith(f"{where}: ")]
    assert named, errors
    assert all(w in named[0] for w in words), named[0]


def test_a_resource_without_spec_is_refused() -> None:
    cr = resource()
    del cr["spec"]
    assert admission_errors(cr) == ["<root>: 'spec' is a required property"]


def test_typos_are_not_silently_kept() -> None:
    """No ``x-kubernetes-preserve-unknown-fields`` under spec: the API server prunes
    unknown fields, and kubectl's default strict field validation refuses them by name
    (``unknown field "spec.secretname"``). Every object in spec lists its properties."""

    def loose(schema: dict[str, Any], where: str) -> list[str]:
        found = [where] if schema.get("x-kubernetes-preserve-unknown-fields") else []
        maps = isinstance(schema.get("additionalProperties"), dict)  # requests, limits
        if schema.get("type") == "object" and not schema.get("properties") and not maps:
            found.append(where)
        for key, sub in (schema.get("properties") or {}).items():
            found += loose(sub, f"{where}.{key}" if where else key)
        if isinstance(schema.get("items"), dict):
            found += loose(schema["items"], f"{where}[]")
        return found

    spec = SCHEMA["properties"]["spec"]
    emptydir = spec["properties"]["storage"]["properties"]["emptyDir"]
    assert emptydir["properties"]  # emptyDir: {} is valid, yet its fields are known
    assert loose(spec, "spec") == []


# CEL rules: the node they sit on -> (accepted values, refused values, words in the message)
CEL_CASES: dict[tuple[Any, ...], tuple[list[Any], list[Any], list[str]]] = {
    (): (
        [resource("kalshi-prod"), resource("a" * 53), resource("x")],
        [resource("a" * 54), resource("kalshi.prod"), resource("-kalshi")],
        ["name", "DNS label", "53"],
    ),
    ("spec", "metadata", "configMaps"): (
        [
            [{"name": n, "directory": d} for n, d in (("f", "feeds"), ("s", "schemas"))]
            + [{"name": "e", "directory": "environments"}],
        ],
        [
            [{"name": "f", "directory": "feeds"}],
            [{"name": "f", "directory": "feeds"}, {"name": "s", "directory": "schemas"}],
        ],
        ["feeds", "schemas", "environments", "ConfigMap"],
    ),
    ("spec", "storage"): (
        [{"emptyDir": {}}, {"persistentVolumeClaim": {"claimName": "data"}}],
        [{}, {"emptyDir": {}, "persistentVolumeClaim": {"claimName": "data"}}],
        ["storage.emptyDir", "storage.persistentVolumeClaim", "exactly one"],
    ),
}


def test_every_cel_rule_has_a_human_message_and_test_cases() -> None:
    found = list(rules())
    assert found, "the CRD has CEL rules (the docs promise them)"
    for path, rule in found:
        assert set(rule) <= {"rule", "message"}, rule  # no fields newer than Kubernetes 1.25
        message = str(rule.get("message", ""))
        assert len(message.split()) >= 5, f"{field_path(list(path))}: no human message: {rule}"
        assert path in CEL_CASES, f"add accepted and refused cases for the rule at {path}"
        assert all(w in message for w in CEL_CASES[path][2]), message
    assert set(CEL_CASES) == {p for p, _ in found}


@pytest.mark.parametrize("path", list(CEL_CASES), ids=lambda p: field_path(list(p)))
def test_cel_rules_accept_and_refuse(path: tuple[Any, ...]) -> None:
    if celpy is None:
        pytest.skip(CEL_MISSING)
    env = celpy.Environment()
    accepted, refused, _ = CEL_CASES[path]
    for _, rule in [r for r in rules() if r[0] == path]:
        program = env.program(env.compile(rule["rule"]))
        for value, verdict in [(v, True) for v in accepted] + [(v, False) for v in refused]:
            result = program.evaluate({"self": celpy.json_to_cel(cel_self(value, path))})
            assert bool(result) is verdict, f"{rule['rule']} on {value!r}"


@pytest.mark.parametrize(
    ("cr", "line"),
    [
        (
            resource("a" * 54),
            "<root>: Invalid value: the name must be a DNS label of at most 53 characters",
        ),
        (
            resource(storage={}),
            "spec.storage: Invalid value: set exactly one of storage.emptyDir and "
            "storage.persistentVolumeClaim",
        ),
        (
            resource(storage={"emptyDir": {}, "persistentVolumeClaim": {"claimName": "d"}}),
            "spec.storage: Invalid value: set exactly one of",
        ),
        (
            resource(metadata={"configMaps": [{"name": "all", "directory": "feeds"}]}),
            "spec.metadata.configMaps: Invalid value: every directory (feeds, schemas, "
            "environments) needs a ConfigMap",
        ),
    ],
    ids=["long-name", "no-storage", "two-storages", "directory-missing"],
)
def test_cel_refusals_read_as_the_user_sees_them(cr: dict[str, Any], line: str) -> None:
    errors = cel_errors(with_defaults(cr, SCHEMA))
    assert any(e.startswith(line) for e in errors), errors


def test_defaults_satisfy_the_cel_rules() -> None:
    """``spec: {}`` gets storage emptyDir and the three metadata ConfigMaps by default."""
    defaulted = with_defaults(resource(), SCHEMA)
    assert defaulted["spec"]["storage"] == {"emptyDir": {}}
    assert len(defaulted["spec"]["metadata"]["configMaps"]) == 3
    assert cel_errors(defaulted) == []
