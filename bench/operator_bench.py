"""The operator from cold start: 200 SsmdEnvironments to Ready against the kmock emulator.

Set-up is the operator tests' own harness (tests/operator/operator_harness.py): the
emulated API server with the resources the operator uses and the metadata ConfigMaps
from exchanges/, and their object builders. Every environment (with its own Secret)
exists *before* the operator starts, so what is timed is a cold start with a backlog.

The operator is the real ``ssmd-operator`` process (its CLI, its default login through
a kubeconfig pointed at the emulator), pinned to the receiver core; the emulator runs
in this process on the sender core. The driver plays the Deployment controller: each
collector Deployment that appears is marked available, as a ready pod would make it,
so environments can become Ready.

Reported: seconds from spawn until the liveness endpoint answers (start-up), until
every Deployment exists, and until every environment's ``Ready`` condition is True;
the operator's CPU seconds by then; and its peak RSS (VmHWM then, ru_maxrss at exit).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import attrs
import kmock

from bench.collector_run import free_port
from bench.processes import VENV_BIN, Child, pinned

_OPERATOR_TESTS = Path(__file__).resolve().parent.parent / "tests" / "operator"
_POLL_S = 0.25
"""Poll period of the driver: each list costs kmock a scan of every object."""


def _harness() -> ModuleType:
    """tests/operator/operator_harness.py (not a package: imported by path, as pytest does)."""
    if str(_OPERATOR_TESTS) not in sys.path:
        sys.path.insert(0, str(_OPERATOR_TESTS))
    return importlib.import_module("operator_harness")


@dataclass
class OperatorResult:
    environments: int
    startup_s: float = 0.0
    deployments_s: float = 0.0
    ready_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    requests: int = 0
    """API requests the operator made until all were Ready."""
    by_kind: dict[str, int] = field(default_factory=dict)
    """Requests served meanwhile by action and resource (the driver's own included)."""
    emulator_cpu_s: float = 0.0
    """CPU of this process (kmock and the driver's polls) meanwhile: when it nears the
    wall time, the emulator, not the operator, set the pace."""
    exit_code: int = 0
    error: str = ""

    @property
    def complete(self) -> bool:
        return not self.error


@attrs.define(kw_only=True)
class LeanEmulator(kmock.KubernetesEmulator):
    """kmock's emulator, forgetting requests once they are served.

    kmock records every request and, for each new one, scans that whole history once
    per candidate reaction (``request in view``): cost grows with the square of the
    requests served, and at 200 environments the emulator, not the operator, would
    be what is timed (a 20-environment run spent 80 s in kmock). The benchmark asserts
    nothing on the history, so only requests still being served are kept (they must
    stay: the scan looks for them).
    """

    _serving: list[Any] = attrs.field(factory=list, init=False)
    served: int = attrs.field(default=0, init=False)
    by_kind: Counter[str] = attrs.field(factory=Counter, init=False)
    """Requests by action and resource (``patch deployments/status``...)."""

    async def _handle(self, request: Any) -> Any:
        self.served += 1
        res = request.resource
        plural = getattr(res, "plural", None) or request.url.path
        sub = f"/{request.subresource}" if request.subresource else ""
        action = getattr(request.action, "value", None) or request.method.value
        self.by_kind[f"{str(action).lower()} {plural}{sub}"] += 1
        serving = self._serving
        serving.append(request)
        keep = {id(r) for r in serving}
        self._requests[:] = [r for r in self._requests if id(r) in keep]
        try:
            return await super()._handle(request)
        finally:
            for i, r in enumerate(serving):
                if r is request:
                    del serving[i]
                    break


def _kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: kmock\n  cluster:\n    server: {server}\n"
        "users:\n- name: bench\n  user: {}\n"
        "contexts:\n- name: kmock\n  context:\n    cluster: kmock\n    user: bench\n"
        "current-context: kmock\n"
    )
    return path


def _own_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _ready(env: dict[str, Any]) -> bool:
    conditions = (env.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


async def _live(session: aiohttp.ClientSession, url: str) -> bool:
    with contextlib.suppress(aiohttp.ClientError, OSError):
        async with session.get(url) as r:
            return r.status == 200
    return False


async def _reconcile(count: int, core: int | None, workdir: Path, timeout: float) -> OperatorResult:
    h = _harness()
    result = OperatorResult(count)
    async with (
        LeanEmulator() as emulator,
        kmock.Server(emulator),
        h.emulated_cluster(emulator) as cluster,
    ):
        for i in range(count):
            name = f"bench-{i:03d}"
            await cluster.create(h.SECRET, h.keys_secret(f"{name}-keys"))
            await cluster.create(
                h.ENV,
                h.environment(
                    name, f"uid-{name}", environment="kalshi-prod", secretName=f"{name}-keys"
                ),
            )
        port = free_port()
        argv = [
            str(VENV_BIN / "ssmd-operator"),
            "--all-namespaces",  # as the harness: kmock mis-parses namespaced watches
            "--liveness-host=127.0.0.1",
            f"--liveness-port={port}",
            "--resync-seconds=3600",  # only the cold start is timed, not a periodic pass
            "--log-format=json",
        ]
        env = {**os.environ, "KUBECONFIG": str(_kubeconfig(workdir / "kubeconfig", cluster.url))}
        with (workdir / "ssmd-operator.log").open("wb") as log:
            t0 = time.perf_counter()
            child = Child(pinned(core, argv), stderr=log, env=env)
        available: set[str] = set()
        served0, own = emulator.served, 0
        emulator.by_kind.clear()
        cpu0 = _own_cpu()
        deadline = t0 + timeout
        try:
            while time.perf_counter() < deadline:
                await asyncio.sleep(_POLL_S)
                if child.poll() is not None:
                    result.error = f"ssmd-operator exited with {child.exit}"
                    break
                now = time.perf_counter() - t0
                if not result.startup_s and await _live(
                    cluster.session, f"http://127.0.0.1:{port}/healthz"
                ):
                    result.startup_s = now
                    if core is not None and os.sched_getaffinity(child.pid) != {core}:
                        result.error = f"ssmd-operator is not pinned to CPU {core}"
                        break
                if len(available) < count:
                    own += 1
                    for dep in await cluster.list(h.DEPLOY):
                        name = dep["metadata"]["name"].removesuffix("-collector")
                        if name not in available:
                            own += 1
                            await cluster.make_available(name)
                            available.add(name)
                    if len(available) == count:
                        result.deployments_s = now
                    continue
                own += 1
                if sum(map(_ready, await cluster.list(h.ENV))) == count:
                    result.ready_s = time.perf_counter() - t0
                    result.cpu_s = child.cpu_seconds()
                    break
            else:
                result.error = f"{len(available)} Deployments, not all Ready after {timeout:g}s"
        finally:
            result.requests = emulator.served - served0 - own
            result.by_kind = dict(emulator.by_kind.most_common())
            result.emulator_cpu_s = _own_cpu() - cpu0
            exited = await asyncio.to_thread(child.stop, 20.0)
        result.exit_code = exited.code
        result.peak_rss_mb = exited.peak_rss_mb
    return result


def reconcile_from_cold(
    count: int, core: int | None, workdir: Path, timeout: float = 120.0
) -> OperatorResult:
    workdir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_reconcile(count, core, workdir, timeout))
