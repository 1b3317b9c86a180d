"""The archive: seal completed day files (zstd + manifest) and ship them to object storage.

The collector calls one thing, ``open_archive``, before it starts, and gets an
``Archive`` to start and stop around its run. Modules, in the order data flows:

- ``manifest.py``: what a sealed file holds (lines, bytes, SHA-256, first/last ``ts``);
- ``seal.py``: plain JSONL -> ``.zst`` + manifest, atomically, crash-recoverable;
- ``settings.py``: storage metadata + ``SSMD_S3_*`` overrides -> ``ArchiveSettings``;
- ``s3.py``: put a file to an S3-compatible store and verify what it holds;
- ``journal.py``: the local record of verified uploads (nothing is sent twice);
- ``uploader.py``: the loop in its own thread (seal, upload with back-off, prune);
- ``metrics.py``: upload lag, bytes, failures, gathered at scrape time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..metadata import Storage
from .settings import ArchiveConfigInvalid, ArchiveSettings, archive_settings

if TYPE_CHECKING:
    from .metrics import ArchiveCollector
    from .uploader import Archiver

log = logging.getLogger(__name__)

__all__ = ["Archive", "ArchiveConfigInvalid", "ArchiveSettings", "open_archive"]


class Archive:
    """The archive of one collector run; inert when the storage ships nowhere."""

    def __init__(self, archiver: Archiver | None) -> None:
        self.archiver = archiver

    @property
    def collectors(self) -> tuple[ArchiveCollector, ...]:
        """Metric collectors for the ``/metrics`` registry."""
        return (self.archiver.collector,) if self.archiver else ()

    def start(self) -> None:
        if self.archiver is not None:
            self.archiver.start()

    async def stop(self) -> None:
        """Stop after the current request, waiting at most a few seconds: an upload cut
        short is checked and, if need be, sent again by the next run."""
        if self.archiver is not None:
            await asyncio.to_thread(self.archiver.stop, 3.0)


def open_archive(storage: Storage, spool: Path, feed: str, environ: Mapping[str, str]) -> Archive:
    """The archive for this run; raises ``ArchiveConfigInvalid`` naming what is wrong.

    Nothing is sealed or uploaded unless an S3 bucket is configured (``storage.type:
    s3`` or ``SSMD_S3_BUCKET``): with ``type: local`` the files stay as they are.
    """
    settings = archive_settings(storage, spool, feed, environ)
    if settings.s3 is None:
        return Archive(None)
    # Imported here: boto3 costs ~0.3 s and ~20 MB, paid only by collectors that ship.
    from .s3 import S3Store
    from .uploader import Archiver

    store = S3Store(settings.s3, environ)
    log.info(
        "archive: sealing completed days in %s and uploading them to %s",
        spool,
        store.describe(settings.s3.key("<day>", "<file>")),
    )
    return Archive(Archiver(settings, store))
