"""The object store client: put a sealed file, and prove the store holds exactly it.

boto3, because it is AWS's own SDK (maintained in step with S3's API), speaks to
every S3-compatible store through ``endpoint_url``, reads credentials from the
standard chain (``AWS_*`` variables, profiles, IRSA web identity) and is the
client moto, our test server, is written against. Its calls block, which suits
the archive: uploads run in a thread of their own, away from the event loop.
(obstore would add GCS and Azure, but is younger and its async API would share
the receive loop; aiobotocore pins exact botocore versions, which fights the
rest of the dependency tree.)

Integrity, end to end:
- the request carries ``Content-MD5`` and ``x-amz-checksum-sha256`` of the body,
  which S3 checks before it stores anything;
- files over 64 MiB go up in 32 MiB parts, each with its ``Content-MD5``;
- after the put, the object is read back with HEAD: its size must match, and its
  SHA-256 checksum (when the store reports one) or else its ETag (the MD5 of a
  single-part upload, or the MD5 of the parts' MD5s) must match what was sealed.
  A store that reports neither gets a full read-back (GET, hashed as it streams).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import botocore.config
import botocore.exceptions

from .settings import S3Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

# At DEBUG, botocore logs every request with its Authorization header (the access key
# id and the signature) and urllib3 every URL: pinned at INFO, so --log-level debug
# can never print credentials (as kalshi.py does for websockets).
for _name in ("botocore", "boto3", "s3transfer", "urllib3"):
    logging.getLogger(_name).setLevel(logging.INFO)

_MD5_ETAG = re.compile(r'^"?([0-9a-f]{32})"?\Z')
_MULTIPART_ETAG = re.compile(r'^"?([0-9a-f]{32})-([0-9]+)"?\Z')
MULTIPART_ABOVE = 64 << 20
"""Files larger than this go up in parts: one PUT is limited to 5 GiB, and a failed part
is cheaper to resend than a whole day."""
PART_BYTES = 32 << 20
"""Part size (S3: 5 MiB to 5 GiB, at most 10,000 parts: 320 GB files at this size)."""


class UploadFailed(Exception):
    """The store did not take the file, or does not hold what was sent; retried later."""


@dataclass(frozen=True)
class Local:
    """What a sealed file is, as the upload and its check need it."""

    path: Path
    size: int
    sha256: str
    md5: str


@dataclass(frozen=True)
class Remote:
    size: int
    etag: str
    sha256_b64: str | None
    meant_sha256: str | None
    """The ``sha256`` metadata the uploader set: the SHA-256 of the file it meant to send."""


class S3Store:
    """One bucket of an S3-compatible store."""

    def __init__(
        self,
        settings: S3Settings,
        environ: Mapping[str, str],
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        attempts: int = 3,
        multipart_above: int = MULTIPART_ABOVE,
        part_bytes: int = PART_BYTES,
    ) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self.multipart_above = multipart_above
        self.part_bytes = part_bytes
        config = botocore.config.Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"mode": "standard", "max_attempts": attempts},
            # We send our own checksums; no streaming trailer checksums that some
            # S3-compatible stores do not understand.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._client: S3Client = _session(environ).client(
            "s3", endpoint_url=settings.endpoint, region_name=settings.region, config=config
        )

    def describe(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def head(self, key: str) -> Remote | None:
        """The object at ``key``, or None if there is none."""
        try:
            answer = self._client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except botocore.exceptions.ClientError as exc:
            if _status(exc) == 404:
                return None
            raise UploadFailed(f"cannot check {self.describe(key)}: {_reason(exc)}") from None
        except botocore.exceptions.BotoCoreError as exc:
            raise UploadFailed(f"cannot check {self.describe(key)}: {exc}") from None
        return Remote(
            answer["ContentLength"],
            answer.get("ETag", ""),
            answer.get("ChecksumSHA256"),
            answer.get("Metadata", {}).get("sha256"),
        )

    def put(self, key: str, local: Local, metadata: Mapping[str, str]) -> None:
        """Upload ``local``; its SHA-256 goes into the object's ``sha256`` metadata."""
        metadata = {**metadata, "sha256": local.sha256}
        try:
            if local.size > self.multipart_above:
                self._put_parts(key, local, metadata)
                return
            with local.path.open("rb") as body:
                self._client.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=body,
                    ContentLength=local.size,
                    ContentMD5=_b64(local.md5),
                    ChecksumSHA256=_b64(local.sha256),
                    Metadata=dict(metadata),
                )
        except botocore.exceptions.ClientError as exc:
            raise UploadFailed(f"cannot upload {self.describe(key)}: {_reason(exc)}") from None
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise UploadFailed(f"cannot upload {self.describe(key)}: {exc}") from None

    def _put_parts(self, key: str, local: Local, metadata: Mapping[str, str]) -> None:
        """A multipart upload; each part carries its Content-MD5, which S3 checks.

        On any failure the upload is aborted so its parts do not linger (a process
        killed mid-way leaves them: a bucket lifecycle rule
        ``AbortIncompleteMultipartUpload`` cleans those up).
        """
        upload_id = self._client.create_multipart_upload(
            Bucket=self.bucket, Key=key, Metadata=dict(metadata)
        )["UploadId"]
        try:
            parts = []
            with local.path.open("rb") as fh:
                for number, chunk in enumerate(iter(lambda: fh.read(self.part_bytes), b""), 1):
                    digest = hashlib.md5(chunk, usedforsecurity=False).digest()
                    answer = self._client.upload_part(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                        ContentMD5=base64.b64encode(digest).decode("ascii"),
                    )
                    parts.append({"ETag": answer["ETag"], "PartNumber": number})
            self._client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
            )
        except BaseException:
            with contextlib.suppress(Exception):
                self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise

    def holds(self, key: str, local: Local) -> bool:
        """True if the object at ``key`` is byte for byte ``local`` (see the module doc)."""
        remote = self.head(key)
        return remote is not None and self.matches(key, remote, local)

    def matches(self, key: str, remote: Remote, local: Local) -> bool:
        if remote.size != local.size:
            return False
        if remote.sha256_b64 and "-" not in remote.sha256_b64:
            return remote.sha256_b64 == _b64(local.sha256)
        m = _MD5_ETAG.match(remote.etag)
        if m:
            return m.group(1) == local.md5
        m = _MULTIPART_ETAG.match(remote.etag)
        if m and int(m.group(2)) == -(-local.size // self.part_bytes):
            return m.group(1) == _multipart_md5(local.path, self.part_bytes)
        return self._read_back_sha256(key) == local.sha256

    def _read_back_sha256(self, key: str) -> str:
        sha = hashlib.sha256()
        try:
            body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"]
            for chunk in body.iter_chunks(1 << 20):
                sha.update(chunk)
        except botocore.exceptions.ClientError as exc:
            raise UploadFailed(f"cannot read back {self.describe(key)}: {_reason(exc)}") from None
        except botocore.exceptions.BotoCoreError as exc:
            raise UploadFailed(f"cannot read back {self.describe(key)}: {exc}") from None
        return sha.hexdigest()


def _multipart_md5(path: Path, part_bytes: int) -> str:
    """S3's ETag of a multipart upload: MD5 of the parts' MD5s (without the ``-N``)."""
    digests = b""
    with path.open("rb") as fh:
        while chunk := fh.read(part_bytes):
            digests += hashlib.md5(chunk, usedforsecurity=False).digest()
    return hashlib.md5(digests, usedforsecurity=False).hexdigest()


def _session(environ: Mapping[str, str]) -> boto3.session.Session:
    """Keys from ``environ`` when both are there; otherwise boto3's own chain."""
    key_id = environ.get("AWS_ACCESS_KEY_ID")
    secret = environ.get("AWS_SECRET_ACCESS_KEY")
    if key_id and secret:
        return boto3.session.Session(
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            aws_session_token=environ.get("AWS_SESSION_TOKEN") or None,
        )
    return boto3.session.Session()


def _b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")


def _status(exc: botocore.exceptions.ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _reason(exc: botocore.exceptions.ClientError) -> str:
    """Code, message and HTTP status: what the store said, never the request's signature."""
    error = exc.response.get("Error", {})
    code = error.get("Code", "?")
    message = error.get("Message", "")
    return f"{code} (HTTP {_status(exc)}){': ' + message if message else ''}"
