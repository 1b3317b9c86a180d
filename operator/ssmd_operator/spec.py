"""The ``SsmdEnvironment`` spec as typed data, with the same defaults as the CRD.

The API server applies the CRD's defaults and validation before the operator sees
an object; parsing here repeats the defaults so that objects from older CRD
versions (or the test emulator, which does no defaulting) behave the same.
Anything still malformed raises ``SpecInvalid`` with the field named.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .names import DEFAULT_IMAGE, DEFAULT_METADATA_CONFIGMAPS, METADATA_DIRECTORIES

PULL_POLICIES = ("Always", "IfNotPresent", "Never")
LOG_FORMATS = ("json", "text")
DEFAULT_RESOURCES: Mapping[str, Mapping[str, str]] = {
    "requests": {"cpu": "50m", "memory": "128Mi"},
    "limits": {"memory": "512Mi"},
}


class SpecInvalid(ValueError):
    """The spec cannot be acted on; the message names the field (``spec.storage``...)."""


@dataclass(frozen=True)
class MetadataSource:
    """One ConfigMap whose keys are the files of one metadata directory."""

    config_map: str
    directory: str


@dataclass(frozen=True)
class S3Spec:
    """Where sealed files are shipped (``spec.storage.s3``), and the Secret with the keys."""

    bucket: str
    prefix: str | None = None
    endpoint: str | None = None
    region: str | None = None
    secret_name: str | None = None
    """None: the collector finds credentials itself (e.g. IRSA web identity)."""
    access_key_id_key: str = "AWS_ACCESS_KEY_ID"
    secret_access_key_key: str = "AWS_SECRET_ACCESS_KEY"  # noqa: S105 - a key name, not a value


@dataclass(frozen=True)
class Storage:
    """Where the collector writes: a pod-lifetime emptyDir, or an existing claim; and
    optionally the bucket its sealed files go to."""

    claim_name: str | None = None
    size_limit: str | None = None
    s3: S3Spec | None = None

    @property
    def persistent(self) -> bool:
        return self.claim_name is not None


@dataclass(frozen=True)
class EnvironmentSpec:
    environment: str
    metadata: tuple[MetadataSource, ...]
    secret_name: str | None
    image: str
    image_pull_policy: str
    storage: Storage
    resources: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: DEFAULT_RESOURCES)
    log_format: str = "json"
    paused: bool = False
    shards: int = 1
    """Collectors splitting the markets (``--shard I/N``); 1: one unsharded collector."""

    @property
    def config_maps(self) -> tuple[str, ...]:
        return tuple(s.config_map for s in self.metadata)


def parse_spec(cr_name: str, spec: Mapping[str, Any]) -> EnvironmentSpec:
    """Typed spec of the SsmdEnvironment ``cr_name``; ``environment`` defaults to that name."""
    environment = _text(spec, "environment") or cr_name
    return EnvironmentSpec(
        environment=environment,
        metadata=_metadata(spec.get("metadata")),
        secret_name=_text(spec, "secretName"),
        image=_text(spec, "image") or DEFAULT_IMAGE,
        image_pull_policy=_choice(spec, "imagePullPolicy", PULL_POLICIES, "IfNotPresent"),
        storage=_storage(spec.get("storage")),
        resources=_resources(spec.get("resources")),
        log_format=_choice(spec, "logFormat", LOG_FORMATS, "json"),
        paused=_flag(spec, "paused"),
        shards=_shards(spec.get("shards", 1)),
    )


MAX_SHARDS = 64


def _shards(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SHARDS:
        raise SpecInvalid(
            f"spec.shards: expected an integer from 1 to {MAX_SHARDS}; found {value!r}"
        )
    return value


def _text(spec: Mapping[str, Any], key: str, where: str = "spec") -> str | None:
    value = spec.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise SpecInvalid(f"{where}.{key}: expected a string; found {value!r}")
    return value


def _choice(spec: Mapping[str, Any], key: str, choices: tuple[str, ...], default: str) -> str:
    value = _text(spec, key) or default
    if value not in choices:
        raise SpecInvalid(f"spec.{key}: expected one of {', '.join(choices)}; found {value!r}")
    return value


def _flag(spec: Mapping[str, Any], key: str) -> bool:
    value = spec.get(key, False)
    if not isinstance(value, bool):
        raise SpecInvalid(f"spec.{key}: expected true or false; found {value!r}")
    return value


def _metadata(raw: object) -> tuple[MetadataSource, ...]:
    if raw is None:
        return tuple(MetadataSource(n, d) for n, d in DEFAULT_METADATA_CONFIGMAPS)
    items = raw.get("configMaps") if isinstance(raw, Mapping) else None
    if items is None:
        return tuple(MetadataSource(n, d) for n, d in DEFAULT_METADATA_CONFIGMAPS)
    if not isinstance(items, list) or not items:
        raise SpecInvalid(f"spec.metadata.configMaps: expected a non-empty list; found {items!r}")
    sources: list[MetadataSource] = []
    for i, item in enumerate(items):
        where = f"spec.metadata.configMaps[{i}]"
        if not isinstance(item, Mapping):
            raise SpecInvalid(f"{where}: expected {{name, directory}}; found {item!r}")
        name = _text(item, "name", where)
        directory = _text(item, "directory", where)
        if name is None:
            raise SpecInvalid(f"{where}.name: expected a ConfigMap name; found nothing")
        if directory not in METADATA_DIRECTORIES:
            raise SpecInvalid(
                f"{where}.directory: expected one of {', '.join(METADATA_DIRECTORIES)}; "
                f"found {directory!r}"
            )
        sources.append(MetadataSource(name, directory))
    return tuple(sources)


def _storage(raw: object) -> Storage:
    if raw is None:
        return Storage()
    if not isinstance(raw, Mapping):
        raise SpecInvalid(f"spec.storage: expected a mapping; found {raw!r}")
    empty_dir = raw.get("emptyDir")
    claim = raw.get("persistentVolumeClaim")
    s3 = _s3(raw.get("s3"))
    if empty_dir is not None and claim is not None:
        raise SpecInvalid("spec.storage: expected exactly one of emptyDir, persistentVolumeClaim")
    if isinstance(claim, Mapping):
        name = _text(claim, "claimName", "spec.storage.persistentVolumeClaim")
        if name is None:
            raise SpecInvalid("spec.storage.persistentVolumeClaim.claimName: expected a claim name")
        return Storage(claim_name=name, s3=s3)
    if isinstance(empty_dir, Mapping) and empty_dir.get("sizeLimit") is not None:
        return Storage(size_limit=str(empty_dir["sizeLimit"]), s3=s3)
    return Storage(s3=s3)


def _s3(raw: object) -> S3Spec | None:
    where = "spec.storage.s3"
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise SpecInvalid(f"{where}: expected {{bucket, prefix?, endpoint?, ...}}; found {raw!r}")
    bucket = _text(raw, "bucket", where)
    if bucket is None:
        raise SpecInvalid(f"{where}.bucket: expected a bucket name; found nothing")
    secret = raw.get("credentialsSecret")
    if secret is not None and not isinstance(secret, Mapping):
        raise SpecInvalid(f"{where}.credentialsSecret: expected {{name, ...}}; found {secret!r}")
    secret = secret or {}
    in_secret = f"{where}.credentialsSecret"
    return S3Spec(
        bucket=bucket,
        prefix=_text(raw, "prefix", where),
        endpoint=_text(raw, "endpoint", where),
        region=_text(raw, "region", where),
        secret_name=_text(secret, "name", in_secret),
        access_key_id_key=_text(secret, "accessKeyIdKey", in_secret) or "AWS_ACCESS_KEY_ID",
        secret_access_key_key=(
            _text(secret, "secretAccessKeyKey", in_secret) or "AWS_SECRET_ACCESS_KEY"
        ),
    )


def _resources(raw: object) -> Mapping[str, Mapping[str, str]]:
    if raw is None:
        return DEFAULT_RESOURCES
    if not isinstance(raw, Mapping):
        raise SpecInvalid(f"spec.resources: expected {{requests, limits}}; found {raw!r}")
    out: dict[str, dict[str, str]] = {}
    for part in ("requests", "limits"):
        values = raw.get(part)
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise SpecInvalid(f"spec.resources.{part}: expected a mapping; found {values!r}")
        out[part] = {str(k): str(v) for k, v in values.items()}
    return out
