"""Status of an SsmdEnvironment: conditions per the Kubernetes API conventions.

Four condition types, always all present so tools can rely on them:

- ``MetadataResolved``: the environment resolved from the metadata ConfigMaps with
  the collector's own loader (False: the problems, file and field named).
- ``SecretReady``: the Secret holds every field the environment's keys need.
- ``CollectorAvailable``: the Deployment has an available (``/ready``) pod.
- ``Ready``: all three; its reason is the first one that is not.

``lastTransitionTime`` changes only when a condition's status changes, so writing
the same observations twice yields the same status and no write.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

METADATA_RESOLVED = "MetadataResolved"
SECRET_READY = "SecretReady"  # noqa: S105 - a condition type
COLLECTOR_AVAILABLE = "CollectorAvailable"
READY = "Ready"
PROGRESSING = "Progressing"
PAUSED = "Paused"
EXPECTED_REASONS = frozenset({"NotDeployed", PAUSED, "RollingOut", PROGRESSING})
"""Not-True reasons that are steps on the way, not faults: their Events are Normal."""
_ROLLING = frozenset({"NewReplicaSetCreated", "FoundNewReplicaSet", "ReplicaSetUpdated"})
"""The Deployment controller's Progressing reasons while a rollout is under way (once
it completed the reason is NewReplicaSetAvailable; past the deadline the status is
False, ProgressDeadlineExceeded)."""
APPLY_REJECTED = "ApplyRejected"
"""CollectorAvailable's reason when the API server refused a child write (reconcile.py)."""
CONDITION_TYPES = (METADATA_RESOLVED, SECRET_READY, COLLECTOR_AVAILABLE, READY)
MAX_MESSAGE = 2000


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True", "False" or "Unknown"
    reason: str
    message: str

    @property
    def true(self) -> bool:
        return self.status == "True"


def condition(type_: str, ok: bool, reason: str, message: str) -> Condition:
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 3] + "..."
    return Condition(type_, "True" if ok else "False", reason, message)


@dataclass(frozen=True)
class Running:
    """What the collector runs with (the current resolution, or the last good snapshot)."""

    environment: str
    feed: str
    feed_version: str
    endpoint: str
    schema: str
    snapshot_hash: str


def collector_condition(deployment: Mapping[str, Any] | None, paused: bool) -> Condition:
    """CollectorAvailable from the Deployment the operator owns."""
    if deployment is None:
        return condition(
            COLLECTOR_AVAILABLE,
            False,
            "NotDeployed",
            "no collector Deployment yet: it is created once metadata resolves and the "
            "Secret is ready",
        )
    if paused:
        return condition(
            COLLECTOR_AVAILABLE, False, "Paused", "spec.paused is true: scaled to zero replicas"
        )
    status = deployment.get("status") or {}
    generation = (deployment.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and observed is not None and observed < generation:
        return condition(
            COLLECTOR_AVAILABLE,
            False,
            "RollingOut",
            f"the Deployment controller has not yet observed generation {generation}",
        )
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    available = conditions.get("Available", {}).get("status") == "True"
    if available and (status.get("availableReplicas") or 0) >= 1:
        return condition(
            COLLECTOR_AVAILABLE,
            True,
            "Available",
            "the collector pod is ready (connected and subscribed)",
        )
    progressing = conditions.get("Progressing", {})
    failed = conditions.get("ReplicaFailure", {}).get("status") == "True"
    if not failed and (
        not conditions
        or (progressing.get("status") == "True" and progressing.get("reason") in _ROLLING)
    ):
        # A new or updated ReplicaSet within its progress deadline: starting, not failing.
        return condition(
            COLLECTOR_AVAILABLE,
            False,
            PROGRESSING,
            "the collector pod is starting (ready once connected and subscribed)",
        )
    # The Deployment controller's own words: a replica failure (status True is bad),
    # or a stalled rollout / unavailability (status False is bad).
    bad = (("ReplicaFailure", "True"), ("Progressing", "False"), ("Available", "False"))
    detail = next(
        (
            str(c.get("message"))
            for t, bad_status in bad
            if (c := conditions.get(t)) and c.get("status") == bad_status and c.get("message")
        ),
        "no ready collector pod; see `kubectl describe pod` (exit code 10: disconnected, "
        "11: configuration error, 12: authentication rejected)",
    )
    return condition(COLLECTOR_AVAILABLE, False, "Unavailable", detail)


def ready_condition(parts: Sequence[Condition], paused: bool) -> Condition:
    """Ready is True when every other condition is; else it carries the first failure."""
    if all(c.true for c in parts):
        return condition(READY, True, "Ready", "the collector is running and ready")
    if paused and all(c.true for c in parts if c.type != COLLECTOR_AVAILABLE):
        return condition(READY, False, "Paused", "spec.paused is true")
    first = next(c for c in parts if not c.true)
    return condition(READY, False, first.reason, f"{first.type}: {first.message}")


def status_body(
    conditions: Sequence[Condition],
    running: Running | None,
    generation: int | None,
    previous: Mapping[str, Any],
    now: dt.datetime,
) -> dict[str, Any]:
    """The full ``status`` to write, keeping transition times of unchanged conditions."""
    before = {c.get("type"): c for c in previous.get("conditions") or [] if isinstance(c, Mapping)}
    rendered: list[dict[str, Any]] = []
    for c in conditions:
        old = before.get(c.type)
        since = (
            old.get("lastTransitionTime")
            if old is not None and old.get("status") == c.status and old.get("lastTransitionTime")
            else now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        )
        item: dict[str, Any] = {
            "type": c.type,
            "status": c.status,
            "reason": c.reason,
            "message": c.message,
            "lastTransitionTime": since,
        }
        if generation is not None:
            item["observedGeneration"] = generation
        rendered.append(item)
    body: dict[str, Any] = {
        "conditions": rendered,
        "environment": running.environment if running else None,
        "feed": running.feed if running else None,
        "feedVersion": running.feed_version if running else None,
        "endpoint": running.endpoint if running else None,
        "schema": running.schema if running else None,
        "snapshotHash": running.snapshot_hash if running else None,
    }
    if generation is not None:
        body["observedGeneration"] = generation
    return body


def transitions(previous: Mapping[str, Any], conditions: Sequence[Condition]) -> list[Condition]:
    """Conditions whose status or reason differs from ``previous`` (new ones count).

    Each becomes one Event; a changed reason is news too (the Secret was found but
    still lacks a field).
    """
    before = {
        c.get("type"): (c.get("status"), c.get("reason"))
        for c in previous.get("conditions") or []
        if isinstance(c, Mapping)
    }
    return [c for c in conditions if before.get(c.type) != (c.status, c.reason)]


def announced(changed: Sequence[Condition]) -> list[Condition]:
    """The transitions worth an Event: Ready repeating another's reason is one story, told once.

    Ready carries the first failing condition's reason, so without this every
    failure (a refused write, a pause) would be reported twice.
    """
    told = {c.reason for c in changed if c.type != READY}
    return [c for c in changed if c.type != READY or c.true or c.reason not in told]
