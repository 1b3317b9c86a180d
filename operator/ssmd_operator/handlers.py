"""kopf wiring: which watch events trigger a reconcile of which SsmdEnvironment.

Thin on purpose: every handler maps an event to (namespace, name) pairs and calls
``Reconciler.reconcile``. Three kopf indexes make the mapping cheap:

- ``ssmd_environments``: every SsmdEnvironment, for the periodic resync;
- ``ssmd_references``: (kind, namespace, name) of each metadata ConfigMap and
  Secret -> the environments naming it, so a change re-reconciles exactly those;
- ``ssmd_secret_keys``: each Secret's data *key names* (never values), read by the
  reconciler instead of fetching Secrets.

Handlers are registered on a registry built per operator (``build_registry``), so
tests run the real operator with their own login and clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp.web
import kopf

from . import metrics
from .kube import KubeApi
from .names import GROUP, KIND, LABEL_MANAGED_BY, OPERATOR_NAME, PLURAL, RUN_AS_USER, VERSION
from .reconcile import Reconciler, SecretKeys, utc_now
from .spec import SpecInvalid, parse_spec

logger = logging.getLogger(__name__)

Login = Callable[..., Any]
"""A kopf login function: keyword arguments in, ``kopf.ConnectionInfo`` (maybe awaitable) out."""


def default_login(**kwargs: Any) -> Any:
    """In-cluster service account or kubeconfig, the way kopf itself would log in."""
    for login in (
        kopf.login_via_client,
        kopf.login_with_service_account,
        kopf.login_with_kubeconfig,
    ):
        try:
            info = login(**kwargs)
        except (ImportError, OSError, kopf.LoginError):
            continue
        if info is not None:
            return info
    raise kopf.LoginError("no credentials: neither an in-cluster service account nor a kubeconfig")


@dataclass
class OperatorConfig:
    login: Login = default_login
    resync_seconds: float = 60.0
    """Every environment is reconciled this often even without events (date rollover)."""
    retry_seconds: float = 10.0
    """First retry of a failed pass; each further failure in a row doubles it..."""
    retry_max_seconds: float = 300.0
    """...up to this."""
    clock: Callable[[], dt.datetime] = utc_now
    api: KubeApi = field(default_factory=KubeApi)
    collector_uid: int | None = RUN_AS_USER
    """uid/gid/fsGroup of collector pods; None: the platform assigns them (OpenShift)."""
    metrics_address: tuple[str, int] | None = None
    """(host, port) serving ``/metrics`` (metrics.py); None: not served."""


def operator_settings() -> kopf.OperatorSettings:
    """Settings that keep the operator's permissions small and its writes to its own."""
    settings = kopf.OperatorSettings()
    # No CRD or namespace watching: resources are resolved once at start (the CRD
    # is installed first), so no cluster-scoped read permissions are needed.
    settings.scanning.disabled = True
    # Only explicit Events (posted by the reconciler); log lines stay in the log.
    settings.posting.enabled = False
    # Initial listings in pages: cluster-wide, one unpaginated list of every Secret
    # (Helm keeps releases in Secrets of up to 1 MiB each) would have to fit in the
    # pod's memory at once. Values pass through this process while a page is read;
    # only key names are kept (the ssmd_secret_keys index).
    settings.watching.chunk_size = LIST_CHUNK_SIZE
    return settings


LIST_CHUNK_SIZE = 50
"""Objects per page of kopf's initial list (``?limit=``), for every watched resource."""


def build_registry(config: OperatorConfig) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    api = config.api
    reconciler = Reconciler(
        api,
        clock=config.clock,
        retry_seconds=config.retry_seconds,
        retry_max_seconds=config.retry_max_seconds,
        collector_uid=config.collector_uid,
    )
    background: list[asyncio.Task[None]] = []

    # Indexes, watch handlers and the resync all funnel into reconcile_all below.

    async def login_once(**kwargs: Any) -> Any:
        info = config.login(**kwargs)
        return await info if isinstance(info, Awaitable) else info

    crd = _CrdAtStart()

    @kopf.on.login(registry=registry)
    async def login(**kwargs: Any) -> Any:
        info = await login_once(**kwargs)
        api.use(info, relogin=lambda: login_once(**kwargs))
        if crd.served is None:
            # kopf resolves what to watch once, right after this first login (resource
            # scanning is off): whatever discovery says now is what it will watch.
            crd.served = await _served(api)
        return info

    @kopf.on.probe(registry=registry, id="crd")
    def crd_watched(**_: Any) -> str:
        if crd.served is False:
            raise kopf.PermanentError(
                f"{PLURAL}.{GROUP}/{VERSION} was not served when the operator started, so "
                f"nothing is watched: apply crds/ (kubectl apply -f crds/); the restart this "
                "failed liveness probe causes picks it up"
            )
        return "watched"

    @kopf.index(GROUP, VERSION, PLURAL, registry=registry, id=ENVIRONMENTS)
    def environments(namespace: str | None, name: str, **_: Any) -> object:
        return {(namespace, name): True}

    @kopf.index(GROUP, VERSION, PLURAL, registry=registry, id=REFERENCES)
    def references(namespace: str | None, name: str, spec: kopf.Spec, **_: Any) -> object:
        return _references(namespace or "", name, spec)

    @kopf.index("", "v1", "secrets", registry=registry, id=SECRET_KEYS)
    def secret_keys(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> object:
        return {(namespace, name): frozenset((body.get("data") or {}).keys())}

    @kopf.on.startup(registry=registry)
    async def start_resync(**kwargs: Any) -> None:
        indices = _Indices.of(kwargs)

        async def resync() -> None:
            while True:
                await asyncio.sleep(config.resync_seconds)
                await reconcile_all(list(indices.environments), indices)

        background.append(asyncio.get_running_loop().create_task(resync()))

    servers: list[aiohttp.web.AppRunner] = []

    @kopf.on.startup(registry=registry)
    async def start_metrics(**_: Any) -> None:
        if config.metrics_address is not None:
            host, port = config.metrics_address
            servers.append(await metrics.serve(reconciler.metrics, host, port))

    @kopf.on.cleanup(registry=registry)
    async def stop(**_: Any) -> None:
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for server in servers:
            await server.cleanup()
        await reconciler.stop()
        await api.close()

    @kopf.on.probe(registry=registry, id="environments")
    def count(**kwargs: Any) -> int:
        return len(_Indices.of(kwargs).environments)

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def environment_event(type: str, namespace: str | None, name: str, **kwargs: Any) -> None:
        if type == "DELETED":
            reconciler.forget(namespace or "", name)  # children go with ownerReference GC
            return
        await reconcile_all([(namespace or "", name)], _Indices.of(kwargs))

    def referenced(kind: str) -> Callable[..., bool]:
        def when(namespace: str | None, name: str, **kwargs: Any) -> bool:
            return (kind, namespace, name) in _Indices.of(kwargs).references

        return when

    async def reconcile_all(targets: Iterable[tuple[str, str]], indices: _Indices) -> None:
        keys = indices.secret_lookup()
        await asyncio.gather(*(reconciler.reconcile(ns, n, keys) for ns, n in sorted(set(targets))))

    @kopf.on.event("", "v1", "configmaps", registry=registry, when=referenced("configmaps"))
    async def metadata_event(namespace: str | None, name: str, **kwargs: Any) -> None:
        indices = _Indices.of(kwargs)
        await reconcile_all(indices.references.get(("configmaps", namespace, name), ()), indices)

    @kopf.on.event("", "v1", "secrets", registry=registry, when=referenced("secrets"))
    async def secret_event(namespace: str | None, name: str, **kwargs: Any) -> None:
        indices = _Indices.of(kwargs)
        await reconcile_all(indices.references.get(("secrets", namespace, name), ()), indices)

    owned = {LABEL_MANAGED_BY: OPERATOR_NAME}

    @kopf.on.event("", "v1", "configmaps", registry=registry, labels=owned)
    async def snapshot_event(namespace: str | None, meta: kopf.Meta, **kwargs: Any) -> None:
        await reconcile_all(_owners(namespace or "", meta), _Indices.of(kwargs))

    @kopf.on.event("apps", "v1", "deployments", registry=registry, labels=owned)
    async def collector_event(namespace: str | None, meta: kopf.Meta, **kwargs: Any) -> None:
        await reconcile_all(_owners(namespace or "", meta), _Indices.of(kwargs))

    return registry


@dataclass
class _CrdAtStart:
    """Was the SsmdEnvironment CRD served when kopf decided what to watch?

    With resource scanning off (no cluster-scoped permissions), kopf looks for the
    resources once at start: a CRD applied later is never watched, and the operator
    would idle with a green liveness probe. The probe fails instead, so the kubelet
    restarts the operator, which then finds the CRD.
    """

    served: bool | None = None
    """None until checked; True also when discovery itself failed (not knowing, stay up)."""


async def _served(api: KubeApi) -> bool:
    try:
        listing = await api.get(f"/apis/{GROUP}/{VERSION}")
    except Exception:  # discovery trouble is not proof of absence
        logger.warning("could not check that %s.%s is served", PLURAL, GROUP, exc_info=True)
        return True
    resources = (listing or {}).get("resources") or []
    served = any(r.get("name") == PLURAL for r in resources if isinstance(r, Mapping))
    if not served:
        logger.error(
            "%s.%s/%s is not served (apply crds/ first): nothing will be watched; "
            "the liveness probe fails so that a restart picks it up",
            PLURAL,
            GROUP,
            VERSION,
        )
    return served


ENVIRONMENTS = "ssmd_environments"
REFERENCES = "ssmd_references"
SECRET_KEYS = "ssmd_secret_keys"  # noqa: S105 - an index name, not a password


@dataclass(frozen=True)
class _Indices:
    """The operator's kopf indexes, as kopf passes them to every handler by id."""

    environments: Mapping[Any, Any]
    references: Mapping[Any, Any]
    secret_keys: Mapping[Any, Any]

    @classmethod
    def of(cls, kwargs: Mapping[str, Any]) -> _Indices:
        return cls(kwargs[ENVIRONMENTS], kwargs[REFERENCES], kwargs[SECRET_KEYS])

    def secret_lookup(self) -> SecretKeys:
        """(namespace, name) -> the Secret's key names; an index maps keys to stores."""

        def keys(namespace: str, name: str) -> Collection[str] | None:
            store = self.secret_keys.get((namespace, name))
            found: Collection[str] | None = next(iter(store), None) if store else None
            return found

        return keys


def _references(
    namespace: str, name: str, spec: Mapping[str, Any]
) -> dict[tuple[str, str, str], tuple[str, str]]:
    try:
        parsed = parse_spec(name, spec)
    except SpecInvalid:
        return {}  # the reconcile reports it; nothing to follow meanwhile
    refs = {("configmaps", namespace, cm): (namespace, name) for cm in parsed.config_maps}
    if parsed.secret_name:
        refs[("secrets", namespace, parsed.secret_name)] = (namespace, name)
    return refs


def _owners(namespace: str, meta: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The SsmdEnvironments a child names as its owner (so a deleted child is recreated)."""
    return [
        (namespace, str(ref.get("name")))
        for ref in meta.get("ownerReferences") or []
        if ref.get("kind") == KIND and str(ref.get("apiVersion", "")).startswith(f"{GROUP}/")
    ]
