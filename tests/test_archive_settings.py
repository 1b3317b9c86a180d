"""The archive's settings: the environment's storage, overridden by SSMD_S3_* variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssmd_collector.metadata import Storage
from ssmd_collector.storage import open_archive
from ssmd_collector.storage.settings import ArchiveConfigInvalid, S3Settings, archive_settings

SPOOL = Path("/spool")
S3 = Storage("s3", "/spool", "market-data", "ssmd/prod", None, "eu-west-1", 2.0)
LOCAL = Storage("local", "/data")


@pytest.mark.parametrize(
    ("storage", "environ", "s3"),
    [
        (LOCAL, {}, None),
        (S3, {}, S3Settings("market-data", "ssmd/prod", None, "eu-west-1")),
        (
            S3,
            {"SSMD_S3_BUCKET": "other", "SSMD_S3_ENDPOINT": "http://minio:9000"},
            S3Settings("other", "ssmd/prod", "http://minio:9000", "eu-west-1"),
        ),
        # The operator can turn shipping on for an environment whose metadata says local.
        (
            LOCAL,
            {"SSMD_S3_BUCKET": "cluster-bucket", "SSMD_S3_PREFIX": "a/b"},
            S3Settings("cluster-bucket", "a/b"),
        ),
        # Empty variables (an unset optional in a Deployment) override nothing.
        (
            S3,
            {"SSMD_S3_BUCKET": "", "SSMD_S3_REGION": ""},
            S3Settings("market-data", "ssmd/prod", None, "eu-west-1"),
        ),
    ],
)
def test_settings_merge_metadata_and_overrides(
    storage: Storage, environ: dict[str, str], s3: S3Settings | None
) -> None:
    settings = archive_settings(storage, SPOOL, "kalshi", environ)
    assert settings.s3 == s3
    assert settings.retention_seconds == storage.local_retention_hours * 3600


def test_bad_overrides_are_named_with_what_was_expected() -> None:
    with pytest.raises(ArchiveConfigInvalid) as info:
        archive_settings(S3, SPOOL, "kalshi", {"SSMD_S3_BUCKET": "A", "SSMD_S3_ENDPOINT": "x"})
    assert str(info.value) == (
        "SSMD_S3_BUCKET: expected an S3 bucket name (3-63 of a-z, 0-9, '.', '-'; starting and "
        "ending alphanumeric); found 'A'; SSMD_S3_ENDPOINT: expected an http:// or https:// URL "
        "of an S3-compatible endpoint, e.g. https://minio:9000; found 'x'"
    )


@pytest.mark.parametrize(
    ("prefix", "key"),
    [("", "2026-11-27/kalshi.jsonl.zst"), ("a/b/", "a/b/2026-11-27/kalshi.jsonl.zst")],
)
def test_object_keys(prefix: str, key: str) -> None:
    assert S3Settings("b-1", prefix).key("2026-11-27", "kalshi.jsonl.zst") == key


def test_local_storage_archives_nothing() -> None:
    archive = open_archive(LOCAL, SPOOL, "kalshi", {})
    assert archive.archiver is None
    assert archive.collectors == ()
