"""The archive loop: seal completed days, ship sealed files, then let local copies go.

It runs in a thread of its own, so compression and network waits never hold up
the receive path (zstd and hashing release the GIL on large buffers). One pass:

1. seal every completed day folder (``seal.py``);
2. upload each sealed file not in the journal, oldest day first: HEAD (already
   there and whole? then just record it), PUT with checksums, verify, then the
   manifest the same way, then record both (``journal.py``);
3. remove local sealed files whose upload was verified more than
   ``retention_seconds`` ago (never one that is not in the journal).

A failed upload ends the pass; the next one starts after a back-off that doubles
from ``retry_min_seconds`` to ``retry_max_seconds``. Files stay on disk until
they are shipped, so a store that is down for a day costs disk, not data, and a
restart simply picks up where the last pass stopped.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .journal import Uploaded, UploadJournal
from .manifest import MANIFEST_SUFFIX, Manifest, ManifestInvalid
from .metrics import ArchiveCollector, ArchiveStats
from .s3 import Local, S3Store, UploadFailed
from .seal import SealFailed, completed_days, manifest_path, read_manifest, seal_day, sealed_files
from .settings import ArchiveSettings

log = logging.getLogger(__name__)


class Archiver:
    def __init__(
        self,
        settings: ArchiveSettings,
        store: S3Store,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if settings.s3 is None:
            raise ValueError("an Archiver needs S3 settings")
        self.settings = settings
        self.settings_s3 = settings.s3
        self.store = store
        self.clock = clock
        self.stats = ArchiveStats(settings.feed)
        self.collector = ArchiveCollector(self.stats, clock)
        self.journal = UploadJournal(settings.spool, settings.feed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- one pass -------------------------------------------------------------------

    def run_once(self) -> None:
        """Seal, upload and prune once; raises ``UploadFailed`` at the first failed upload."""
        self.seal_completed()
        # Counted before and after: a hung upload must show as lag while it hangs.
        self._count_pending()
        try:
            self.upload_pending()
        finally:
            self._count_pending()
        self.prune()

    def seal_completed(self) -> None:
        for folder in completed_days(
            self.settings.spool, self.clock(), self.settings.grace_seconds
        ):
            day = folder.name
            try:
                made = seal_day(
                    folder,
                    self.settings.feed,
                    now=self.clock,
                    taken=functools.partial(self._name_taken, day),
                )
            except (SealFailed, ManifestInvalid, OSError) as exc:
                self.stats.seal_failures += 1
                log.error("sealing %s failed (the plain files are kept): %s", folder, exc)
                continue
            self.stats.sealed_files += len(made)

    def upload_pending(self) -> None:
        for sealed, manifest in self._pending():
            if self._stop.is_set():
                return
            self._ship(self.store, sealed, manifest)

    def prune(self) -> None:
        """Delete local sealed files (and manifests) uploaded more than retention ago."""
        now = self.clock()
        for sealed, manifest in self._sealed():
            entry = self.journal.get(self.store.bucket, self._key(manifest))
            if entry is None or entry.sha256 != manifest.sealed_sha256:
                continue
            if now - entry.uploaded_at < self.settings.retention_seconds:
                continue
            sealed.unlink(missing_ok=True)
            manifest_path(sealed).unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # not empty: other feeds, or not sealed yet
                sealed.parent.rmdir()

    # --- the thread -----------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="ssmd-archive", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the loop to stop and wait up to ``timeout`` for the current request.

        An upload cut short by the process exiting is simply retried by the next
        process (pending files stay pending until verified).
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        failures = 0
        delay = 0.0
        s = self.settings
        while not self._stop.wait(delay):
            try:
                self.run_once()
            except UploadFailed as exc:
                failures += 1
                self.stats.upload_failures += 1
                backoff = min(s.retry_max_seconds, s.retry_min_seconds * 2 ** (failures - 1))
                delay = backoff * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not crypto
                log.warning(
                    "upload failed (%d in a row), retrying in %.1f s: %s", failures, delay, exc
                )
                continue
            except Exception:
                # A bug must not end the archive thread silently; the data stays on disk.
                log.exception("archive pass failed")
                delay = s.interval_seconds
                continue
            failures = 0
            delay = s.interval_seconds

    # --- helpers --------------------------------------------------------------------

    def _key(self, manifest: Manifest) -> str:
        return self.settings_s3.key(manifest.day, manifest.sealed)

    def _name_taken(self, day: str, name: str) -> bool:
        return self._uploaded(self.settings_s3.key(day, name))

    def _uploaded(self, key: str) -> bool:
        return self.journal.get(self.store.bucket, key) is not None

    def _sealed(self) -> list[tuple[Path, Manifest]]:
        out = []
        spool = self.settings.spool
        for folder in completed_days(spool, self.clock(), self.settings.grace_seconds):
            for sealed in sealed_files(folder, self.settings.feed):
                try:
                    out.append((sealed, read_manifest(sealed)))
                except (ManifestInvalid, OSError) as exc:
                    log.error("skipping %s: %s", sealed, exc)
        return out

    def _pending(self) -> list[tuple[Path, Manifest]]:
        return [
            (sealed, manifest)
            for sealed, manifest in self._sealed()
            if not self._uploaded(self._key(manifest))
        ]

    def _count_pending(self) -> None:
        pending = self._pending()
        self.stats.pending_files = len(pending)
        self.stats.oldest_pending_sealed_at = min((m.sealed_at for _, m in pending), default=None)

    def _ship(self, store: S3Store, sealed: Path, manifest: Manifest) -> None:
        key = self._key(manifest)
        data = Local(sealed, manifest.sealed_bytes, manifest.sealed_sha256, manifest.sealed_md5)
        meta = {"lines": str(manifest.lines), "plain-sha256": manifest.sha256}
        sent = self._put_verified(store, key, data, meta)
        if self._stop.is_set():
            return  # stopped during a request: the next run checks what the store holds
        side = manifest_path(sealed)
        raw = side.read_bytes()
        side_local = Local(
            side,
            len(raw),
            hashlib.sha256(raw).hexdigest(),
            hashlib.md5(raw, usedforsecurity=False).hexdigest(),
        )
        sent_manifest = self._put_verified(store, key + MANIFEST_SUFFIX, side_local, {})
        if self._stop.is_set():
            return
        self.journal.record(
            Uploaded(store.bucket, key, manifest.sealed_bytes, manifest.sealed_sha256, self.clock())
        )
        self.stats.uploaded_files += 1
        if sent:
            self.stats.uploaded_bytes += manifest.sealed_bytes
        if sent_manifest:
            self.stats.uploaded_bytes += len(raw)
        log.info(
            "%s %s (%d bytes, %d lines)",
            "uploaded" if sent else "found already uploaded",
            store.describe(key),
            manifest.sealed_bytes,
            manifest.lines,
        )

    def _put_verified(self, store: S3Store, key: str, local: Local, meta: dict[str, str]) -> bool:
        """Make the store hold ``local`` at ``key``; True if it had to be sent.

        A different object at ``key`` is overwritten only if it was meant to be this
        file (its ``sha256`` metadata says so: a corrupted copy of ours); anything
        else is someone else's and is never replaced.
        """
        remote = store.head(key)
        if remote is not None:
            if store.matches(key, remote, local):
                return False
            if remote.meant_sha256 != local.sha256:
                raise UploadFailed(
                    f"{store.describe(key)} already holds a different object; not "
                    f"overwriting it with {local.path} (two collectors on one bucket and "
                    "prefix?)"
                )
        store.put(key, local, meta)
        if self._stop.is_set():
            return True
        if not store.holds(key, local):
            raise UploadFailed(
                f"{store.describe(key)} does not match {local.path} after the upload "
                "(size or checksum differs); it will be sent again"
            )
        return True
