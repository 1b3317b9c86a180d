"""Credentials from environment variables, per the ``keys`` section of an environment.

Sources: ``env:VAR1,VAR2`` names one variable per field, in order; plain ``env``
means ``SSMD_<KEY>_<FIELD>`` (upper-cased, ``-`` and ``.`` become ``_``). The operator
uses ``env_var_names`` too, so the Deployment it renders sets exactly what this reads.

Values never appear in errors: only variable names do.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from .metadata import KeySpec

_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


class MissingKeys(Exception):
    """Required credentials are absent; the message lists variable names only."""


def env_var_names(key_name: str, fields: Sequence[str], source: str) -> dict[str, str]:
    """Map each field to the environment variable it is read from."""
    kind, _, listed = source.partition(":")
    if kind != "env":
        raise ValueError(f"key '{key_name}': unsupported source {source!r}")
    if listed:
        return dict(zip(fields, (v.strip() for v in listed.split(",")), strict=True))
    prefix = _UNSAFE.sub("_", f"SSMD_{key_name}").upper()
    return {f: f"{prefix}_{_UNSAFE.sub('_', f).upper()}" for f in fields}


class EnvKeyResolver:
    """Resolves key fields from a process environment (``os.environ`` by default)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ

    def resolve(self, key_name: str, fields: Sequence[str], source: str) -> dict[str, str]:
        names = env_var_names(key_name, fields, source)
        values = {f: self.environ.get(var, "") for f, var in names.items()}
        missing = [names[f] for f, v in values.items() if not v]
        if missing:
            raise MissingKeys(
                f"key '{key_name}' needs environment variable(s) {', '.join(missing)} "
                f"(fields {', '.join(fields)}; source {source})"
            )
        return values


def resolve_keys(specs: Sequence[KeySpec], resolver: EnvKeyResolver) -> dict[str, dict[str, str]]:
    """Resolve every key; optional keys that are absent are left out; all misses in one error."""
    resolved: dict[str, dict[str, str]] = {}
    errors: list[str] = []
    for spec in specs:
        try:
            resolved[spec.name] = resolver.resolve(spec.name, spec.fields, spec.source)
        except MissingKeys as exc:
            if spec.required:
                errors.append(str(exc))
    if errors:
        raise MissingKeys("; ".join(errors))
    return resolved


def read_pem(value: str) -> bytes:
    """A private key variable holds PEM text, or the path of a PEM file (mounted Secret)."""
    if "-----BEGIN" in value:
        return value.encode()
    path = Path(value.strip())
    try:
        return path.read_bytes()
    except (OSError, ValueError) as exc:  # ValueError: an embedded NUL
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        # Name the path only when it is clearly one: a value that is not (base64 of a
        # PEM, key material without its header) is a secret and must not be logged.
        shown = str(path) if str(path).startswith(("/", "./", "../")) else "<value not shown>"
        raise MissingKeys(
            f"private key is neither PEM text nor a readable file: {shown} ({reason})"
        ) from None
