"""Sealing: a completed plain JSONL file becomes ``<name>.zst`` plus a manifest, atomically.

A day folder is complete once its UTC day (plus a grace period for lines still in
the write buffer at midnight) is over. Every plain file in it (``<feed>.jsonl``,
``<feed>.rejected.jsonl``, ``<feed>.events.jsonl``, ``<feed>.torn``) is sealed.

Crash safety, step by step (a crash at any point leaves the plain file or the
whole sealed file, never a partial one that looks whole):

1. compress into a hidden temporary ``.<name>.zst.tmp``, fsync it, and check it
   decompresses to the same SHA-256 as the plain bytes;
2. write the manifest through its own temporary and rename it into place;
3. rename the temporary to ``<name>.zst`` and fsync the folder: the commit point;
4. remove the plain file.

``recover`` (run before each pass) finishes or rolls back an interrupted seal:
temporaries are deleted, a manifest without its sealed file is deleted (step 3
never happened; the plain file is still there), and a plain file whose sealed
copy was committed is removed once its bytes are checked against the manifest.

The collector's writer holds an exclusive ``flock`` on a day file while it may
append to it; sealing takes the same lock (non-blocking) on every plain file of
the folder first, so it never seals a file that is still being written, and the
writer's torn-tail repair never runs on a folder being sealed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import zstandard

from ..writer import quarantine_torn_tail
from .manifest import MANIFEST_SUFFIX, LineDigest, Manifest

log = logging.getLogger(__name__)

SEALED_SUFFIX = ".zst"
PLAIN_SUFFIXES = (".jsonl", ".torn")
DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}\Z")
DEFAULT_GRACE_SECONDS = 60.0
"""Wait this long after UTC midnight: lines received at 23:59:59 may still be buffered."""
ZSTD_LEVEL = 3
_CHUNK = 1 << 20

Step = Callable[[str], None]
"""Called with "compressing" (after each chunk), "compressed", "manifest", "committed"
and "removed": a seam for tests that kill the process at a chosen point."""


class SealFailed(Exception):
    """A file could not be sealed; it was left as it was. The message names it."""


def manifest_path(sealed: Path) -> Path:
    return sealed.with_name(sealed.name + MANIFEST_SUFFIX)


def _tmp_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp")


def is_plain(path: Path, feed: str) -> bool:
    """A plain file of ``feed``: ``<feed>.jsonl``, ``<feed>.rejected.jsonl``, ``<feed>.torn``..."""
    return path.name.startswith(f"{feed}.") and path.name.endswith(PLAIN_SUFFIXES)


def completed_days(root: Path, now: float, grace: float = DEFAULT_GRACE_SECONDS) -> list[Path]:
    """Day folders under ``root`` whose UTC day ended more than ``grace`` seconds ago."""
    cutoff = dt.datetime.fromtimestamp(now - grace, dt.UTC).date()
    try:
        entries = sorted(root.iterdir())
    except FileNotFoundError:
        return []
    out = []
    for entry in entries:
        if not DAY_RE.match(entry.name) or not entry.is_dir():
            continue
        try:
            day = dt.date.fromisoformat(entry.name)
        except ValueError:
            continue
        if day < cutoff:
            out.append(entry)
    return out


def seal_day(
    folder: Path,
    feed: str,
    *,
    now: Callable[[], float] = time.time,
    step: Step | None = None,
    taken: Callable[[str], bool] = lambda _: False,
) -> list[Manifest]:
    """Seal every plain file of ``feed`` in a completed day folder; return the new manifests.

    Returns nothing (and touches nothing) while any plain file is locked by a writer.
    A torn last line (a crash mid-write) is first moved to ``<feed>.torn`` exactly as
    the writer does it, so every sealed file holds whole lines. ``taken`` says
    whether a sealed name was used before (uploaded, and gone from the disk).
    """
    with _locked(sorted(p for p in folder.iterdir() if is_plain(p, feed))) as plain:
        if plain is None:
            return []
        recover(folder, feed)
        for path in plain:
            if path.exists() and not _ends_in_newline(path):
                _quarantine_tail(path)
        # A repair may have created <feed>.torn; nothing else writes it while we hold
        # the data files' locks (the writer quarantines only under those).
        sealed = []
        for path in sorted(p for p in folder.iterdir() if is_plain(p, feed)):
            sealed.append(seal_file(path, now=now, step=step, taken=taken))
        return sealed


def seal_file(
    path: Path,
    *,
    now: Callable[[], float] = time.time,
    step: Step | None = None,
    taken: Callable[[str], bool] = lambda _: False,
) -> Manifest:
    """Compress ``path`` to a sealed file and manifest beside it, then remove ``path``.

    The caller holds the file's lock. Raises ``SealFailed`` (with nothing changed
    but a temporary that ``recover`` deletes) if any step before the commit fails.
    """
    report: Step = step or (lambda _: None)
    sealed = _free_name(path, taken)
    tmp = _tmp_path(sealed)
    digest = LineDigest()
    out_sha, out_md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    try:
        with path.open("rb") as src, tmp.open("wb") as dst:
            compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True)
            stream = compressor.compressobj()

            def emit(data: bytes) -> None:
                out_sha.update(data)
                out_md5.update(data)
                dst.write(data)

            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                emit(stream.compress(chunk))
                report("compressing")
            emit(stream.flush())
            dst.flush()
            os.fsync(dst.fileno())
        report("compressed")
        _check_roundtrip(tmp, digest.sha256, digest.bytes)
        manifest = Manifest(
            source=path.name,
            sealed=sealed.name,
            day=path.parent.name,
            lines=digest.lines,
            bytes=digest.bytes,
            sha256=digest.sha256,
            first_ts=digest.first_ts,
            last_ts=digest.last_ts,
            sealed_bytes=tmp.stat().st_size,
            sealed_sha256=out_sha.hexdigest(),
            sealed_md5=out_md5.hexdigest(),
            sealed_at=now(),
        )
        _write_atomically(manifest_path(sealed), manifest.to_json())
        report("manifest")
        os.rename(tmp, sealed)
        _fsync_dir(path.parent)
    except (OSError, zstandard.ZstdError, SealFailed) as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        with contextlib.suppress(OSError):
            manifest_path(sealed).unlink()
        if isinstance(exc, SealFailed):
            raise
        raise SealFailed(f"cannot seal {path}: {exc}") from exc
    report("committed")
    _remove(path)
    report("removed")
    log.info(
        "sealed %s: %d lines, %d -> %d bytes",
        sealed,
        manifest.lines,
        manifest.bytes,
        manifest.sealed_bytes,
    )
    return manifest


def recover(folder: Path, feed: str) -> None:
    """Finish or roll back ``feed``'s seals a crash interrupted in ``folder`` (module doc)."""
    for tmp in folder.glob(f".{feed}.*.tmp"):
        log.info("removing %s left by an interrupted seal", tmp)
        tmp.unlink(missing_ok=True)
    for manifest_file in folder.glob(f"{feed}.*{SEALED_SUFFIX}{MANIFEST_SUFFIX}"):
        sealed = manifest_file.with_name(manifest_file.name[: -len(MANIFEST_SUFFIX)])
        if not sealed.exists():
            log.info("removing %s: its seal was interrupted before the commit", manifest_file)
            manifest_file.unlink(missing_ok=True)
            continue
        manifest = read_manifest(sealed)
        plain = folder / manifest.source
        if plain.exists() and _same_bytes(plain, manifest):
            log.info("removing %s: sealed as %s before a restart", plain, sealed.name)
            _remove(plain)


def read_manifest(sealed: Path) -> Manifest:
    path = manifest_path(sealed)
    return Manifest.from_json(path.read_bytes(), str(path))


def sealed_files(folder: Path, feed: str) -> Iterator[Path]:
    """Committed sealed files of ``feed`` in a folder (each has its manifest beside it)."""
    for path in sorted(folder.glob(f"{feed}.*{SEALED_SUFFIX}")):
        if manifest_path(path).exists():
            yield path


def read_lines(sealed: Path) -> Iterator[bytes]:
    """The lines of a sealed file, decompressed (for readers and tests)."""
    with sealed.open("rb") as fh, zstandard.ZstdDecompressor().stream_reader(fh) as reader:
        pending = b""
        while chunk := reader.read(_CHUNK):
            pending += chunk
            *whole, pending = pending.split(b"\n")
            for line in whole:
                yield line + b"\n"
        if pending:
            yield pending


def _free_name(path: Path, taken: Callable[[str], bool]) -> Path:
    """``<name>.zst``, or ``<name>.<n>.zst`` when a file of that name was sealed before
    (lines written to a day after it was sealed, e.g. after a clock step): a sealed
    name is never reused, so an uploaded object is never overwritten."""
    candidate = path.with_name(path.name + SEALED_SUFFIX)
    n = 2
    while candidate.exists() or manifest_path(candidate).exists() or taken(candidate.name):
        candidate = path.with_name(f"{path.name}.{n}{SEALED_SUFFIX}")
        n += 1
    return candidate


def _check_roundtrip(sealed: Path, sha256: str, size: int) -> None:
    check = hashlib.sha256()
    total = 0
    with sealed.open("rb") as fh, zstandard.ZstdDecompressor().stream_reader(fh) as reader:
        while chunk := reader.read(_CHUNK):
            check.update(chunk)
            total += len(chunk)
    if check.hexdigest() != sha256 or total != size:
        raise SealFailed(
            f"{sealed} does not decompress to the plain file ({total} of {size} bytes, "
            "different SHA-256); the plain file is kept"
        )


def _same_bytes(plain: Path, manifest: Manifest) -> bool:
    if plain.stat().st_size != manifest.bytes:
        log.warning(
            "%s differs in size from its sealed copy %s: sealing it again as a new part",
            plain,
            manifest.sealed,
        )
        return False
    sha = hashlib.sha256()
    with plain.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            sha.update(chunk)
    return sha.hexdigest() == manifest.sha256


def _quarantine_tail(path: Path) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        if path.with_suffix(".torn") == path:
            # The quarantine itself, cut short by a crash: its bytes are fragments
            # anyway, so end the last one with a newline rather than lose it.
            os.pwrite(fd, b"\n", os.fstat(fd).st_size)
            os.fsync(fd)
        else:
            quarantine_torn_tail(fd, path, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def _ends_in_newline(path: Path) -> bool:
    with path.open("rb") as fh:
        if fh.seek(0, os.SEEK_END) == 0:
            return True
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = _tmp_path(path)
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(tmp, path)


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _locked(paths: list[Path]) -> Iterator[list[Path] | None]:
    """Hold ``flock`` on every path, or yield None if a writer holds any of them."""
    fds: list[int] = []
    try:
        for path in paths:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            fds.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    yield None
                    return
                raise
        yield paths
    finally:
        for fd in fds:
            os.close(fd)
