"""Kubernetes Events about an SsmdEnvironment, as ``kubectl describe`` shows them.

Posted for condition transitions and for writes to the children, so the history
of a collector (snapshot rolled, Secret missing, drift repaired) reads top to bottom.
Messages are built from metadata names and condition messages only: never values.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from .names import API_VERSION, KIND, OPERATOR_NAME
from .render import Manifest, Owner

NORMAL = "Normal"
WARNING = "Warning"


def event(owner: Owner, type_: str, reason: str, message: str, now: dt.datetime) -> Manifest:
    """A core/v1 Event on ``owner``; the name is unique without relying on ``generateName``."""
    stamp = now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    involved: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": owner.name,
        "namespace": owner.namespace,
        "uid": owner.uid,
    }
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{owner.name}.{secrets.token_hex(8)}",
            "namespace": owner.namespace,
        },
        "involvedObject": involved,
        "type": type_,
        "reason": reason,
        "message": message[:1000],
        "source": {"component": OPERATOR_NAME},
        "reportingComponent": OPERATOR_NAME,
        "reportingInstance": OPERATOR_NAME,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
