"""Does the Secret hold every field the environment's keys need? Names only, never values.

The Secret named by ``spec.secretName`` holds one data key per key field, named
after the field (``api_key``, ``private_key``). The operator only ever sees the
Secret's *key names* (its index keeps nothing else), so no value can reach a log,
a status, an Event or a ConfigMap from here. The container gets each field as the
environment variable the collector reads, via ``secretKeyRef``; the variable
names come from ``ssmd_collector.keys.env_var_names``, the collector's own rule.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from ssmd_collector.keys import env_var_names
from ssmd_collector.metadata import KeySpec


@dataclass(frozen=True)
class SecretEnvVar:
    """One container variable filled from one Secret key."""

    name: str
    secret_key: str


@dataclass(frozen=True)
class SecretCheck:
    ready: bool
    reason: str
    message: str
    env: tuple[SecretEnvVar, ...] = ()


def check_secret(
    keys: Sequence[KeySpec], secret_name: str | None, secret_keys: Collection[str] | None
) -> SecretCheck:
    """Check ``secret_keys`` (the Secret's data key names, ``None`` if it does not exist).

    Required keys need every field; an optional key is passed on only when all of its
    fields are present (the collector skips optional keys it cannot fully read). An
    environment whose keys are all optional needs no Secret.
    """
    if not keys:
        return SecretCheck(True, "NoKeysRequired", "the environment needs no credentials")
    owners: dict[str, str] = {}
    for spec in keys:
        for f in spec.fields:
            if f in owners and owners[f] != spec.name:
                return SecretCheck(
                    False,
                    "FieldNameCollision",
                    f"keys '{owners[f]}' and '{spec.name}' both have a field '{f}'; one Secret "
                    "holds fields by name, so rename one field in the metadata",
                )
            owners[f] = spec.name
    if secret_name is None and not any(spec.required for spec in keys):
        # As in the collector: an optional key that is not there is simply left out.
        return SecretCheck(
            True,
            "NoKeysRequired",
            "the environment's keys are all optional and spec.secretName is not set: "
            "the collector runs without them",
        )
    needed = ", ".join(f"{k.name} ({', '.join(k.fields)})" for k in keys)
    if secret_name is None:
        return SecretCheck(
            False,
            "SecretNotSpecified",
            f"the environment needs keys {needed}: set spec.secretName to a Secret "
            "with one data key per field",
        )
    if secret_keys is None:
        return SecretCheck(
            False,
            "SecretNotFound",
            f"Secret '{secret_name}' does not exist; it must hold the fields of keys {needed}",
        )
    present = set(secret_keys)
    env: list[SecretEnvVar] = []
    missing: list[str] = []
    for spec in keys:
        names = env_var_names(spec.name, spec.fields, spec.source)
        absent = [f for f in spec.fields if f not in present]
        if absent and spec.required:
            missing.extend(absent)
        elif not absent:
            env.extend(SecretEnvVar(names[f], f) for f in spec.fields)
    if missing:
        return SecretCheck(
            False,
            "SecretMissingFields",
            f"Secret '{secret_name}' lacks data key(s) {', '.join(missing)}",
        )
    fields = ", ".join(v.secret_key for v in env) or "no fields (all keys optional)"
    return SecretCheck(True, "SecretReady", f"Secret '{secret_name}' provides {fields}", tuple(env))
