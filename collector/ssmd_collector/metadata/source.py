"""Read a metadata directory into the ``relative path -> bytes`` form the parser takes."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import MetadataInvalid, Problem
from .parse import KINDS

MAX_FILE_BYTES = 1 << 20


def read_directory(root: Path) -> dict[str, bytes]:
    """Read ``feeds/``, ``schemas/`` and ``environments/`` (one level, regular files).

    Symbolic links that leave ``root`` are refused, so a name in the metadata can
    never make the collector read outside its config directory.
    """
    if not root.is_dir():
        raise MetadataInvalid(
            [
                Problem(
                    str(root),
                    "",
                    "a metadata directory with feeds/, schemas/ and environments/",
                    "no such directory",
                )
            ]
        )
    base = root.resolve()
    files: dict[str, bytes] = {}
    problems: list[Problem] = []
    for kind in KINDS:
        folder = root / kind
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            rel = f"{kind}/{path.name}"
            # ConfigMap volumes are symlink farms (..data/...), so links are allowed
            # as long as they stay inside the root.
            if path.name.startswith("."):
                continue
            if not path.is_file():
                # Subdirectories are not metadata, but a link that leads nowhere is a
                # mistake: without a problem, the user would only see "no such feed".
                if path.is_symlink() and not path.exists():
                    problems.append(
                        Problem(
                            rel,
                            "",
                            "a file, or a link to one",
                            f"a broken or looping link to {os.readlink(path)}",
                        )
                    )
                continue
            real = path.resolve()
            if not real.is_relative_to(base):
                problems.append(
                    Problem(rel, "", "a file inside the metadata directory", f"a link to {real}")
                )
                continue
            if real.stat().st_size > MAX_FILE_BYTES:
                problems.append(
                    Problem(
                        rel, "", f"at most {MAX_FILE_BYTES} bytes", f"{real.stat().st_size} bytes"
                    )
                )
                continue
            try:
                files[rel] = real.read_bytes()
            except OSError as exc:  # e.g. a Secret/ConfigMap mounted with mode 0000
                problems.append(Problem(rel, "", "a readable file", exc.strerror or str(exc)))
    if problems:
        raise MetadataInvalid(problems)
    return files
