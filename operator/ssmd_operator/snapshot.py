"""Metadata ConfigMaps in, the collector's config snapshot out.

GitOps syncs ``exchanges/`` into one ConfigMap per directory (keys are file names).
The operator rebuilds the ``directory/file -> bytes`` tree the collector's loader
takes, and after resolving an environment keeps just the files it needs in a
snapshot. ConfigMap keys cannot contain ``/``, so a snapshot key is the path with
its first ``/`` turned into ``.`` (``feeds/kalshi.yaml`` -> ``feeds.kalshi.yaml``),
and the Deployment maps keys back to paths with volume ``items``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ssmd_collector.metadata import MetadataInvalid, Problem, Resolved

from .names import METADATA_DIRECTORIES
from .spec import MetadataSource


@dataclass(frozen=True)
class Snapshot:
    """The files one environment needs, keyed by path relative to the config directory."""

    files: Mapping[str, bytes]

    @property
    def hash(self) -> str:
        """Content hash over paths and bytes; it changes exactly when a needed file changes."""
        digest = hashlib.sha256()
        for path in sorted(self.files):
            content = self.files[path]
            digest.update(f"{path}\0{len(content)}\0".encode())
            digest.update(content)
        return "sha256:" + digest.hexdigest()

    @property
    def items(self) -> list[dict[str, str]]:
        """Volume ``items``: each ConfigMap key mounted at its metadata path."""
        return [{"key": key_for(p), "path": p} for p in sorted(self.files)]

    def config_map_data(self) -> tuple[dict[str, str], dict[str, str]]:
        """(``data``, ``binaryData``): UTF-8 files as text, anything else base64."""
        data: dict[str, str] = {}
        binary: dict[str, str] = {}
        for path in sorted(self.files):
            content = self.files[path]
            try:
                data[key_for(path)] = content.decode("utf-8")
            except UnicodeDecodeError:
                binary[key_for(path)] = base64.b64encode(content).decode("ascii")
        return data, binary


def key_for(path: str) -> str:
    """ConfigMap key of a metadata path (``schemas/trade.capnp`` -> ``schemas.trade.capnp``)."""
    return path.replace("/", ".", 1)


def path_for(key: str) -> str | None:
    """Inverse of ``key_for``; ``None`` for keys that name no metadata directory."""
    directory, dot, name = key.partition(".")
    if not dot or directory not in METADATA_DIRECTORIES or not name:
        return None
    return f"{directory}/{name}"


def config_map_files(config_map: Mapping[str, Any]) -> dict[str, bytes]:
    """Keys of a ConfigMap as bytes, from ``data`` (text) and ``binaryData`` (base64)."""
    files: dict[str, bytes] = {}
    for key, text in (config_map.get("data") or {}).items():
        files[str(key)] = str(text).encode("utf-8")
    for key, encoded in (config_map.get("binaryData") or {}).items():
        try:
            files[str(key)] = base64.b64decode(str(encoded), validate=True)
        except (binascii.Error, ValueError):
            continue  # the API server validates binaryData; a bad value is not ours to report
    return files


def metadata_tree(sources: Iterable[tuple[MetadataSource, Mapping[str, Any]]]) -> dict[str, bytes]:
    """The loader's input from (source, ConfigMap) pairs: each key becomes ``directory/key``.

    A path provided by two ConfigMaps is an error rather than a silent override:
    which copy wins would depend on list order.
    """
    tree: dict[str, bytes] = {}
    origin: dict[str, str] = {}
    problems: list[Problem] = []
    for source, config_map in sources:
        for key, content in config_map_files(config_map).items():
            path = f"{source.directory}/{key}"
            if path in origin:
                problems.append(
                    Problem(
                        path,
                        "",
                        "the file in exactly one metadata ConfigMap",
                        f"ConfigMaps {origin[path]} and {source.config_map}",
                    )
                )
                continue
            origin[path] = source.config_map
            tree[path] = content
    if problems:
        raise MetadataInvalid(problems)
    return tree


def take(resolved: Resolved, tree: Mapping[str, bytes]) -> Snapshot:
    """The snapshot of ``resolved``: only the files its environment depends on."""
    return Snapshot({path: tree[path] for path in resolved.files if path in tree})


def from_config_map(config_map: Mapping[str, Any]) -> Snapshot:
    """Read back a snapshot ConfigMap written by ``Snapshot.config_map_data``."""
    files: dict[str, bytes] = {}
    for key, content in config_map_files(config_map).items():
        path = path_for(key)
        if path is not None:
            files[path] = content
    return Snapshot(files)
