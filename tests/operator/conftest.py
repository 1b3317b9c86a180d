"""Fixtures shared by the operator tests: an emulated cluster, and a fault proxy before it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from operator_harness import Cluster, FaultProxy, emulated_cluster


@pytest.fixture
async def cluster(kmock: Any) -> AsyncIterator[Cluster]:
    """kmock set up as a Kubernetes API with the resources the operator uses."""
    async with emulated_cluster(kmock) as c:
        yield c


@pytest.fixture
async def proxy(cluster: Cluster) -> AsyncIterator[FaultProxy]:
    """A proxy in front of ``cluster`` that can fail, lose or hold requests."""
    async with FaultProxy(cluster.url) as p:
        yield p
