"""What the archive needs to run, from the environment's ``storage`` and the process env.

The metadata in git names the bucket; a Deployment may override each S3 field with
``SSMD_S3_BUCKET``, ``SSMD_S3_PREFIX``, ``SSMD_S3_ENDPOINT`` and ``SSMD_S3_REGION``
(the operator sets them from ``spec.storage.s3``, so one metadata tree can serve
clusters that ship to different buckets). Credentials never pass through here:
boto3 reads the standard AWS variables (``AWS_ACCESS_KEY_ID``...) itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..metadata import Storage
from ..metadata.parse import check_bucket, check_endpoint, check_prefix
from .seal import DEFAULT_GRACE_SECONDS

ENV_OVERRIDES = {
    "bucket": "SSMD_S3_BUCKET",
    "prefix": "SSMD_S3_PREFIX",
    "endpoint": "SSMD_S3_ENDPOINT",
    "region": "SSMD_S3_REGION",
}


class ArchiveConfigInvalid(ValueError):
    """The archive cannot run with these settings; the message names the source and field."""


@dataclass(frozen=True)
class S3Settings:
    bucket: str
    prefix: str = ""
    endpoint: str | None = None
    region: str | None = None

    def key(self, day: str, name: str) -> str:
        """Object key of a sealed file: ``<prefix>/<YYYY-MM-DD>/<name>``."""
        prefix = self.prefix.strip("/")
        return f"{prefix}/{day}/{name}" if prefix else f"{day}/{name}"


@dataclass(frozen=True)
class ArchiveSettings:
    spool: Path
    """The local directory the collector writes to (``storage.path`` or ``--data-dir``)."""
    feed: str
    s3: S3Settings | None
    """None: seal nothing, upload nothing (``storage.type: local`` without overrides)."""
    retention_seconds: float = 0.0
    """How long an uploaded file stays on local disk after its upload was verified."""
    grace_seconds: float = DEFAULT_GRACE_SECONDS
    interval_seconds: float = 30.0
    """Pause between passes (look for completed days, upload what is pending)."""
    retry_min_seconds: float = 1.0
    retry_max_seconds: float = 300.0


def archive_settings(
    storage: Storage, spool: Path, feed: str, environ: Mapping[str, str]
) -> ArchiveSettings:
    """Merge ``storage`` with the ``SSMD_S3_*`` overrides; raise ``ArchiveConfigInvalid``."""
    values: dict[str, str | None] = {
        "bucket": storage.bucket,
        "prefix": storage.prefix,
        "endpoint": storage.endpoint,
        "region": storage.region,
    }
    problems = []
    for field, var in ENV_OVERRIDES.items():
        raw = environ.get(var)
        if raw is None or raw == "":
            continue
        check = {"bucket": check_bucket, "prefix": check_prefix, "endpoint": check_endpoint}.get(
            field
        )
        expected = check(raw) if check else None
        if expected:
            problems.append(f"{var}: expected {expected}; found {raw!r}")
        values[field] = raw
    if problems:
        raise ArchiveConfigInvalid("; ".join(problems))
    bucket = values["bucket"]
    s3 = None
    if bucket:
        s3 = S3Settings(bucket, values["prefix"] or "", values["endpoint"], values["region"])
    retention = storage.local_retention_hours * 3600.0
    return ArchiveSettings(spool=spool, feed=feed, s3=s3, retention_seconds=retention)
