"""``ssmd-operator``: run the SsmdEnvironment operator, namespaced or cluster-wide.

    ssmd-operator --namespace ssmd          # only these namespaces (repeatable)
    ssmd-operator                           # every namespace (needs a ClusterRole)

The liveness endpoint (``http://0.0.0.0:8081/healthz`` by default) is kopf's own:
it answers 200 while the operator's tasks run and reports the probe results
(the number of environments watched). Prometheus metrics are on
``http://0.0.0.0:8082/metrics`` (``metrics.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Sequence

import kopf

from .handlers import OperatorConfig, build_registry, operator_settings
from .names import RUN_AS_USER


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ssmd-operator",
        description="Reconcile SsmdEnvironment resources into running ssmd collectors.",
    )
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch only this namespace (repeat for several; default: $WATCH_NAMESPACE, "
        "comma-separated, or all namespaces)",
    )
    parser.add_argument(
        "-A",
        "--all-namespaces",
        action="store_true",
        help="watch every namespace even if $WATCH_NAMESPACE is set",
    )
    parser.add_argument("--liveness-host", default="0.0.0.0")  # noqa: S104 - probed by kubelet
    parser.add_argument("--liveness-port", type=int, default=8081)
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=8082,
        help="serve Prometheus /metrics on this port (default 8082; 0: not served)",
    )
    parser.add_argument(
        "--resync-seconds",
        type=float,
        default=60.0,
        help="reconcile every environment this often even without events (default 60)",
    )
    parser.add_argument(
        "--collector-uid",
        type=collector_uid,
        default=os.environ.get("SSMD_COLLECTOR_UID", str(RUN_AS_USER)),
        help=f"uid, gid and fsGroup of collector pods (default {RUN_AS_USER}, the image's "
        "user; $SSMD_COLLECTOR_UID), or 'platform' to leave them to the platform "
        "(OpenShift's restricted SCC assigns one per namespace)",
    )
    parser.add_argument("--verbose", action="store_true", help="log at INFO with details")
    parser.add_argument("--debug", action="store_true", help="log at DEBUG")
    parser.add_argument(
        "--log-format", choices=("json", "text"), default="text", help="log line format"
    )
    return parser.parse_args(argv)


def collector_uid(text: str) -> int | None:
    """``platform`` -> None (the platform assigns it), else a uid above 0."""
    if text == "platform":
        return None
    try:
        uid = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a uid above 0 or 'platform'; found {text!r}"
        ) from None
    if uid <= 0:
        raise argparse.ArgumentTypeError(f"expected a uid above 0 or 'platform'; found {uid}")
    return uid


def namespaces_from(args: argparse.Namespace) -> list[str]:
    """Explicit namespaces win; then $WATCH_NAMESPACE; empty means cluster-wide."""
    if args.all_namespaces:
        return []
    if args.namespace:
        return [n for item in args.namespace for n in item.split(",") if n]
    return [n for n in os.environ.get("WATCH_NAMESPACE", "").split(",") if n]


def main(argv: Sequence[str] | None = None) -> None:
    """Console script ``ssmd-operator``."""
    args = parse_args(argv)
    namespaces = namespaces_from(args)
    kopf.configure(
        verbose=args.verbose,
        debug=args.debug,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL,
    )
    config = OperatorConfig(
        resync_seconds=args.resync_seconds,
        collector_uid=args.collector_uid,
        metrics_address=(args.liveness_host, args.metrics_port) if args.metrics_port else None,
    )
    asyncio.run(
        kopf.operator(
            registry=build_registry(config),
            settings=operator_settings(),
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=True,  # one replica; no peering objects to create or permit
            liveness_endpoint=f"http://{args.liveness_host}:{args.liveness_port}/healthz",
        )
    )
