"""One reconcile pass for one SsmdEnvironment, level-triggered and idempotent.

Every trigger (the resource itself, a metadata ConfigMap, the Secret, an owned
child, the periodic resync) calls ``Reconciler.reconcile``. A pass reads the
current state, computes the desired children with pure functions, and writes only
what differs. Rules that keep a collector safe:

- The children are written only from a *good state*: metadata that resolves (now,
  or else the last good snapshot) and a Secret with every needed field. Without
  one, nothing is written or deleted: a running collector keeps running, and the
  status says why it is not being updated.
- Objects with the child names that another owner holds are never adopted.
- Passes for one environment never overlap; requests during a pass coalesce into
  one more pass.
- A failed pass (API errors, timeouts) is retried with exponential backoff
  (``retry_seconds`` doubling up to ``retry_max_seconds``, +-20 % jitter so many
  environments failing together do not retry in step); a good pass resets it.
- A create answered 409 AlreadyExists (the object appeared since it was read)
  reads the object again and continues from it, unless another owner holds it.
- A child write the API server *refuses* (a 4xx other than 404, 409 and 429: a
  422 from validation, a policy webhook, a quota, a 403) is not retried with
  backoff, since the same request gets the same answer: the pass completes, the
  status says ``CollectorAvailable=False`` with reason ``ApplyRejected`` and the
  server's message, ``observedGeneration`` advances, and the transition posts a
  Warning Event. The periodic resync tries again (a quota may free up).

Shards (``spec.shards`` = N): one collector Deployment per shard index, named for
the index alone (``render.collector_names``), each ``Recreate``. A pass finds the
live ones with one list call (by the ``ssmd.io/environment`` label; the ownerReference
decides what is ours), writes the snapshot, then *deletes* the owned collectors N no
longer wants (``render.stale_collectors``) and only then creates or updates the
wanted ones, in shard order. Why that is enough for "never two collectors on one
shard": a shard is the pair (I, N), and only the Deployment named for I ever runs
index I, so two collectors of one pair would have to be two pods of one Deployment,
which ``Recreate`` rules out (the old pod is gone before the new one starts). While N
changes, collectors of the old and the new N coexist for a while (a stale one
terminating, a shard not yet rolled): they split the markets differently, so a market
may be recorded twice or, for a moment, by no one, but never into the same file, since
a collector names its files ``<feed>-shard<I>of<N>`` when N > 1 and ``<feed>`` alone
when N = 1. docs/operator.md ("Shards") states the limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from ssmd_collector.metadata import (
    FeedVersion,
    MetadataInvalid,
    Problem,
    Resolved,
    resolve_environment,
)

from . import events, metrics, render, snapshot
from .drift import changed, matches
from .kube import ApiError, KubeApi, resource_path
from .names import (
    ANNOTATION_FEED_VERSION,
    API_VERSION,
    LABEL_ENVIRONMENT,
    PLURAL,
    RUN_AS_USER,
    config_map_name,
    deployment_name,
)
from .secrets import SecretCheck, check_secret
from .spec import EnvironmentSpec, SpecInvalid, parse_spec
from .status import (
    APPLY_REJECTED,
    COLLECTOR_AVAILABLE,
    EXPECTED_REASONS,
    METADATA_RESOLVED,
    SECRET_READY,
    Condition,
    Running,
    announced,
    condition,
    ready_condition,
    shards_condition,
    status_body,
    transitions,
)

logger = logging.getLogger(__name__)

SecretKeys = Callable[[str, str], Collection[str] | None]
"""(namespace, Secret name) -> the Secret's data key names, or None if it does not exist."""


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class _Slot:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pending: bool = False
    retry: asyncio.Task[None] | None = None
    failures: int = 0
    """Passes failed in a row; sets the backoff of the next retry."""


@dataclass(frozen=True)
class _Desired:
    """What a pass decided, before it is written."""

    conditions: tuple[Condition, Condition]  # MetadataResolved, SecretReady
    resolved: Resolved | None = None
    snapshot: snapshot.Snapshot | None = None
    secret: SecretCheck | None = None


class Reconciler:
    def __init__(
        self,
        api: KubeApi,
        *,
        clock: Callable[[], dt.datetime] = utc_now,
        retry_seconds: float = 10.0,
        retry_max_seconds: float = 300.0,
        collector_uid: int | None = RUN_AS_USER,
    ) -> None:
        self.api = api
        self.collector_uid = collector_uid
        self.clock = clock
        self.retry_seconds = retry_seconds
        self.retry_max_seconds = max(retry_max_seconds, retry_seconds)
        self._slots: dict[tuple[str, str], _Slot] = {}
        self._stopped = False
        self._latest: dict[tuple[str, str], tuple[Condition, ...]] = {}
        """Conditions each environment's last completed pass computed (for metrics)."""
        self.metrics = metrics.OperatorMetrics(
            lambda: metrics.condition_counts(self._latest.values())
        )

    async def reconcile(self, namespace: str, name: str, secret_keys: SecretKeys) -> None:
        """Run a pass now, or make sure one starts after the pass in progress."""
        slot = self._slots.setdefault((namespace, name), _Slot())
        slot.pending = True
        async with slot.lock:
            if not slot.pending:
                return  # a pass that started after this request has already run
            slot.pending = False
            started = time.monotonic()
            try:
                rejected = await self._pass(namespace, name, secret_keys)
            except Exception as exc:
                if self._stopped:
                    logger.debug("reconcile of %s/%s stopped with the operator", namespace, name)
                    return
                self.metrics.observe(time.monotonic() - started, metrics.failure_reason(exc))
                # Errors of one environment stay with it; the retry (and the periodic
                # resync) run the pass again.
                slot.failures += 1
                delay = self.backoff(slot.failures)
                logger.exception(
                    "reconcile of %s/%s failed (%d in a row); retrying in %.2f s",
                    namespace,
                    name,
                    slot.failures,
                    delay,
                )
                self._retry_later(slot, namespace, name, secret_keys, delay)
            else:
                failure = metrics.APPLY_REJECTED if rejected else None
                self.metrics.observe(time.monotonic() - started, failure)
                slot.failures = 0

    def backoff(self, failures: int) -> float:
        """Seconds before retrying after ``failures`` failed passes in a row."""
        exponent = min(max(failures - 1, 0), 32)  # 2**32 * anything is past any cap
        delay = min(self.retry_seconds * 2.0**exponent, self.retry_max_seconds)
        return delay * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not cryptography

    async def stop(self) -> None:
        """Operator shutdown: cancel scheduled retries; none outlives the API client."""
        self._stopped = True
        retries = [s.retry for s in self._slots.values() if s.retry is not None]
        for task in retries:
            task.cancel()
        for task in retries:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def forget(self, namespace: str, name: str) -> None:
        """The resource is gone: drop its slot (children go by ownerReference GC)."""
        slot = self._slots.pop((namespace, name), None)
        self._latest.pop((namespace, name), None)
        if slot is not None and slot.retry is not None:
            slot.retry.cancel()

    def _retry_later(
        self, slot: _Slot, namespace: str, name: str, keys: SecretKeys, delay: float
    ) -> None:
        if self._stopped or (slot.retry is not None and not slot.retry.done()):
            return

        async def retry() -> None:
            await asyncio.sleep(delay)
            slot.retry = None
            await self.reconcile(namespace, name, keys)

        slot.retry = asyncio.get_running_loop().create_task(retry())

    async def _pass(self, namespace: str, name: str, secret_keys: SecretKeys) -> bool:
        """One pass; True if the API server refused a child write (see the module doc)."""
        cr_path = resource_path(API_VERSION, PLURAL, namespace, name)
        cr = await self.api.get(cr_path)
        if cr is None or (cr.get("metadata") or {}).get("deletionTimestamp"):
            self._latest.pop((namespace, name), None)
            return False
        meta = cr["metadata"]
        owner = render.Owner(name, namespace, str(meta.get("uid", "")))
        generation = meta.get("generation")
        now = self.clock()

        spec: EnvironmentSpec | None = None
        try:
            spec = parse_spec(name, cr.get("spec") or {})
        except SpecInvalid as exc:
            invalid: SpecInvalid | None = exc
        else:
            invalid = None

        cm_path = resource_path("v1", "configmaps", namespace, config_map_name(name))
        current_cm = await self.api.get(cm_path)
        live = await self._collectors(owner)
        if spec is not None:
            wanted = render.collector_names(name, spec.shards)
        else:  # no spec to say how many: report on what runs
            wanted = _own_collectors(live, owner) or [deployment_name(name)]
        # The unsharded name is always looked at: a Deployment written before children
        # carried the environment label is not listed, and must not be left running.
        for dep_name in dict.fromkeys((*wanted, deployment_name(name))):
            if dep_name not in live:
                path = resource_path("apps/v1", "deployments", namespace, dep_name)
                if (found := await self.api.get(path)) is not None:
                    live[dep_name] = found
        wanted_deps = {n: live.get(n) for n in wanted}
        ours = _own_collectors(live, owner)
        foreign = [
            o for o in (current_cm, *wanted_deps.values()) if o is not None and not _owned(o, owner)
        ]

        paused = False
        writes: list[tuple[str, str]] = []
        rejected: ApiError | None = None
        running: Running | None = None
        if spec is None:
            unknown = Condition(SECRET_READY, "Unknown", "SpecInvalid", "not checked")
            desired = _Desired(
                (condition(METADATA_RESOLVED, False, "SpecInvalid", str(invalid)), unknown)
            )
        else:
            paused = spec.paused
            desired = await self._decide(namespace, spec, current_cm, secret_keys, now.date())
            if desired.resolved and desired.snapshot and desired.secret and not foreign:
                stale = [live[n] for n in render.stale_collectors(name, spec.shards, ours)]
                applied = await self._apply(
                    owner,
                    spec,
                    desired.resolved,
                    desired.snapshot,
                    desired.secret,
                    current_cm,
                    wanted_deps,
                    stale,
                )
                current_cm, wanted_deps, writes, rejected = applied
                wanted_live = [d for d in wanted_deps.values() if d is not None]
                if rejected is None:
                    running = _running(desired.resolved, desired.snapshot)
                elif wanted_live:
                    running = _deployed(current_cm, wanted_live[0], spec.environment, now.date())
            elif not foreign and (still := [live[n] for n in (*wanted, *ours) if n in live]):
                # Not a good state: nothing was written, so report what still runs (a
                # wanted collector or, N having changed meanwhile, one N no longer wants).
                running = _deployed(current_cm, still[0], spec.environment, now.date())

        collector, shards = shards_condition(list(wanted_deps.items()), paused)
        if foreign:
            names = ", ".join(str(o["metadata"].get("name")) for o in foreign)
            collector = condition(
                COLLECTOR_AVAILABLE,
                False,
                "ResourceConflict",
                f"{names} already exist(s) and belong(s) to another owner: rename or delete them",
            )
        elif rejected is not None:
            collector = condition(
                COLLECTOR_AVAILABLE,
                False,
                APPLY_REJECTED,
                f"the API server refused the change ({rejected}); fix the spec (or the "
                "policy, quota or permission named) and the operator applies it",
            )
        parts = (*desired.conditions, collector)
        conditions = (*parts, ready_condition(parts, paused))
        self._latest[(namespace, name)] = conditions
        previous = cr.get("status") or {}
        body = status_body(conditions, running, generation, previous, now, shards)
        for kind, message in writes:
            await self._event(owner, events.NORMAL, kind, message, now)
        if not matches(body, previous):
            try:
                await self.api.patch(
                    resource_path(API_VERSION, PLURAL, namespace, name, "status"), {"status": body}
                )
            except ApiError as exc:
                if exc.status != 404:
                    raise
                # Deleted during the pass; anything created meanwhile names the old uid
                # as its owner, so the garbage collector removes it.
                logger.info("%s/%s was deleted during its reconcile", namespace, name)
                self._latest.pop((namespace, name), None)
                return False
            for c in announced(transitions(previous, conditions)):
                expected = c.true or c.reason in EXPECTED_REASONS
                kind = events.NORMAL if expected else events.WARNING
                await self._event(owner, kind, c.reason, f"{c.type}={c.status}: {c.message}", now)
        return rejected is not None

    async def _decide(
        self,
        namespace: str,
        spec: EnvironmentSpec,
        current_cm: Mapping[str, Any] | None,
        secret_keys: SecretKeys,
        day: dt.date,
    ) -> _Desired:
        resolved: Resolved | None
        snap: snapshot.Snapshot | None
        try:
            tree = await self._metadata_tree(namespace, spec)
            resolved = resolve_environment(tree, spec.environment, day)
            snap = snapshot.take(resolved, tree)
            metadata = condition(METADATA_RESOLVED, True, "Resolved", _describe(resolved))
        except MetadataInvalid as exc:
            resolved, snap = _last_good(current_cm, spec.environment, day)
            kept = (
                f"the collector keeps the last good snapshot {snap.hash}"
                if snap is not None
                else "no collector is started until it resolves"
            )
            problems = "; ".join(str(p) for p in exc.problems)
            metadata = condition(
                METADATA_RESOLVED, False, "MetadataInvalid", f"{problems} ({kept})"
            )
        if resolved is None:
            unknown = Condition(
                SECRET_READY, "Unknown", "MetadataNotResolved", "unknown until metadata resolves"
            )
            return _Desired((metadata, unknown))
        keys = secret_keys(namespace, spec.secret_name) if spec.secret_name else None
        secret = check_secret(resolved.environment.keys, spec.secret_name, keys)
        secret_cond = condition(SECRET_READY, secret.ready, secret.reason, secret.message)
        if not secret.ready:
            return _Desired((metadata, secret_cond), resolved, snap)
        return _Desired((metadata, secret_cond), resolved, snap, secret)

    async def _metadata_tree(self, namespace: str, spec: EnvironmentSpec) -> dict[str, bytes]:
        pairs = []
        missing: list[Problem] = []
        for source in spec.metadata:
            path = resource_path("v1", "configmaps", namespace, source.config_map)
            config_map = await self.api.get(path)
            if config_map is None:
                missing.append(
                    Problem(
                        f"{source.directory}/",
                        "",
                        f"ConfigMap {namespace}/{source.config_map} with the {source.directory}/ "
                        "files (see exchanges/kustomization.yaml)",
                        "no such ConfigMap",
                    )
                )
            else:
                pairs.append((source, config_map))
        if missing:
            raise MetadataInvalid(missing)
        return snapshot.metadata_tree(pairs)

    async def _collectors(self, owner: render.Owner) -> dict[str, dict[str, Any]]:
        """Deployments labelled as this environment's, by name: one list call for every
        shard. Anyone can copy a label, so the caller checks ownership."""
        items = await self.api.list(
            resource_path("apps/v1", "deployments", owner.namespace),
            f"{LABEL_ENVIRONMENT}={owner.name}",
        )
        return {
            str(item["metadata"]["name"]): {"apiVersion": "apps/v1", "kind": "Deployment", **item}
            for item in items
            # The server filtered already; this keeps a server that ignores the
            # selector (the test emulator) from handing over other environments'.
            if ((item.get("metadata") or {}).get("labels") or {}).get(LABEL_ENVIRONMENT)
            == owner.name
        }

    async def _apply(
        self,
        owner: render.Owner,
        spec: EnvironmentSpec,
        resolved: Resolved,
        snap: snapshot.Snapshot,
        secret: SecretCheck,
        current_cm: dict[str, Any] | None,
        current_deps: Mapping[str, dict[str, Any] | None],
        stale: list[dict[str, Any]],
    ) -> tuple[
        dict[str, Any] | None,
        dict[str, dict[str, Any] | None],
        list[tuple[str, str]],
        ApiError | None,
    ]:
        """Write the snapshot, delete ``stale`` collectors, then write each shard's
        Deployment (in that order: see the module doc); a refused write or delete stops
        there and is returned, not raised."""
        writes: list[tuple[str, str]] = []
        deps = dict(current_deps)
        cm = render.config_map(owner, snap, current_cm)
        try:
            current_cm, did = await self._write("v1", "configmaps", owner, cm, current_cm)
        except ApiError as exc:
            if not refused(exc):
                raise
            return current_cm, deps, writes, exc
        if did:
            writes.append(
                ("SnapshotWritten", f"{did} ConfigMap {cm['metadata']['name']}: {snap.hash}")
            )
        for old in stale:
            try:
                deleted = await self._delete_collector(owner, old)
            except ApiError as exc:
                if not refused(exc):
                    raise
                return current_cm, deps, writes, exc
            if deleted:
                writes.append(
                    (
                        "CollectorDeleted",
                        f"Deleted Deployment {old['metadata']['name']}: spec.shards is "
                        f"{spec.shards}",
                    )
                )
        version = resolved.feed_version.version
        live = {n: d for n, d in deps.items() if d is not None}
        for dep in render.deployments(
            owner, spec, snap, secret.env, version, uid=self.collector_uid, current=live
        ):
            dep_name = dep["metadata"]["name"]
            try:
                deps[dep_name], did = await self._write(
                    "apps/v1", "deployments", owner, dep, deps.get(dep_name)
                )
            except ApiError as exc:
                if not refused(exc):
                    raise
                return current_cm, deps, writes, exc
            if did:
                replicas = dep["spec"]["replicas"]
                writes.append(
                    (
                        f"Collector{did}",
                        f"{did} Deployment {dep_name}: {replicas} replica(s), snapshot {snap.hash}",
                    )
                )
        return current_cm, deps, writes, None

    async def _delete_collector(self, owner: render.Owner, dep: Mapping[str, Any]) -> bool:
        """Delete a collector this environment no longer wants; False if already gone.

        ``Background``: the call returns at once and the garbage collector stops the
        pod (its graceful termination closes the files it writes). The uid
        precondition makes sure the object deleted is the one listed, not one created
        under that name since (the server answers 409, and the pass is retried).
        """
        meta = dep["metadata"]
        path = resource_path("apps/v1", "deployments", owner.namespace, str(meta["name"]))
        options: dict[str, Any] = {"propagationPolicy": "Background"}
        if meta.get("uid"):
            options["preconditions"] = {"uid": meta["uid"]}
        deleted = await self.api.delete(path, options)
        if deleted:
            logger.info("deleted deployments %s/%s", owner.namespace, meta["name"])
        return deleted

    async def _write(
        self,
        api_version: str,
        plural: str,
        owner: render.Owner,
        desired: dict[str, Any],
        current: dict[str, Any] | None,
    ) -> tuple[dict[str, Any], str | None]:
        """Create, patch, or (already matching) leave alone; returns the object and the verb."""
        name = desired["metadata"]["name"]
        path = resource_path(api_version, plural, owner.namespace, name)
        if current is None:
            try:
                created = await self.api.create(
                    resource_path(api_version, plural, owner.namespace),
                    render.without_nones(desired),
                )
            except ApiError as exc:
                if exc.status != 409:
                    raise
                # Created by someone since this pass read it (a previous operator whose
                # answer was lost, a user): continue from what is there if it is ours.
                current = await self.api.get(path)
                if current is None or not _owned(current, owner):
                    raise  # gone again, or foreign: the retried pass sorts it out
                logger.info(
                    "%s %s/%s already exists; continuing from it", plural, owner.namespace, name
                )
            else:
                logger.info("created %s %s/%s", plural, owner.namespace, name)
                return created, "Created"
        if matches(desired, current):
            return current, None
        patched = await self.api.patch(path, desired)
        if not changed(current, patched):
            # Someone puts back what the patch takes out (a mutating webhook adding a
            # sidecar or an env var): the server's object is as it was, so no update
            # is reported. The patch repeats each pass, a no-op for the server.
            logger.debug("patch of %s %s/%s changed nothing", plural, owner.namespace, name)
            return patched, None
        logger.info("updated %s %s/%s", plural, owner.namespace, name)
        return patched, "Updated"

    async def _event(
        self, owner: render.Owner, type_: str, reason: str, message: str, now: dt.datetime
    ) -> None:
        body = events.event(owner, type_, reason, message, now)
        try:
            await self.api.create(resource_path("v1", "events", owner.namespace), body)
        except Exception:  # an Event is informative; losing one must not fail the pass
            logger.warning("could not post Event %s for %s", reason, owner.name, exc_info=True)


def refused(exc: ApiError) -> bool:
    """A final answer to this request: retrying the same write gets the same refusal.

    404 (a namespace or object gone), 409 (a race) and 429 (throttling) are
    transient; every other 4xx is the server judging the request itself.
    """
    return 400 <= exc.status < 500 and exc.status not in (404, 409, 429)


def _owned(obj: Mapping[str, Any], owner: render.Owner) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == owner.uid and r.get("kind") == "SsmdEnvironment" for r in refs)


def _own_collectors(live: Mapping[str, Mapping[str, Any]], owner: render.Owner) -> list[str]:
    """The collector Deployments among ``live`` that ``owner`` holds, in shard order."""
    owned = [n for n, obj in live.items() if _owned(obj, owner)]
    return render.live_collectors(owner.name, owned)


def _last_good(
    current_cm: Mapping[str, Any] | None, environment: str, day: dt.date
) -> tuple[Resolved | None, snapshot.Snapshot | None]:
    """Resolve from the snapshot already written, so invalid metadata keeps the collector."""
    if current_cm is None:
        return None, None
    last = snapshot.from_config_map(current_cm)
    try:
        return resolve_environment(last.files, environment, day), last
    except MetadataInvalid:
        return None, None


def _describe(resolved: Resolved) -> str:
    feed, schema = resolved.feed_version, resolved.schema_version
    return (
        f"environment {resolved.environment.name}: feed {resolved.feed.name} {feed.version} "
        f"({feed.endpoint}), schema {resolved.schema.name}:{schema.version}"
    )


def _deployed(
    current_cm: Mapping[str, Any] | None,
    current_dep: Mapping[str, Any],
    environment: str,
    day: dt.date,
) -> Running | None:
    """What the live Deployment runs: its snapshot, and the feed version it started with."""
    resolved, snap = _last_good(current_cm, environment, day)
    if resolved is None or snap is None:
        return None
    template = ((current_dep.get("spec") or {}).get("template") or {}).get("metadata") or {}
    name = (template.get("annotations") or {}).get(ANNOTATION_FEED_VERSION)
    version = next((v for v in resolved.feed.versions if v.version == name), None)
    return _running(resolved, snap, version)


def _running(
    resolved: Resolved, snap: snapshot.Snapshot, version: FeedVersion | None = None
) -> Running:
    feed_version = version or resolved.feed_version
    return Running(
        environment=resolved.environment.name,
        feed=resolved.feed.name,
        feed_version=feed_version.version,
        endpoint=feed_version.endpoint,
        schema=f"{resolved.schema.name}:{resolved.schema_version.version}",
        snapshot_hash=snap.hash,
    )
