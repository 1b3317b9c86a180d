"""The Kalshi exchange plug-in: channel rules, key handling and the WebSocket connector."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Mapping, Sequence

from ...keys import MissingKeys, read_pem
from ...metadata import Resolved, Subscription
from ..protocol import ConnectorOptions, CredentialsInvalid, EventSink
from . import channels as ch
from .connector import KalshiConnector
from .signing import Credentials, KeyFormatError, load_private_key
from .subscriptions import wanted_channels

__all__ = ["KALSHI", "Credentials", "Kalshi", "KalshiConnector"]


class Kalshi:
    name = "kalshi"

    def check_subscriptions(
        self, subscriptions: Sequence[Subscription], has_keys: bool
    ) -> list[tuple[str, str, object]]:
        problems: list[tuple[str, str, object]] = []
        all_markets: dict[str, int] = {}
        filtered: dict[str, int] = {}
        for i, sub in enumerate(subscriptions):
            where = f"subscriptions[{i}]"
            for name in sub.channels:
                if name in ch.REMOVED:
                    problems.append((f"{where}.channels", f"a current Kalshi channel ({name} was "
                                     f"{ch.REMOVED[name]})", name))  # fmt: skip
                elif name not in ch.KNOWN:
                    problems.append(
                        (f"{where}.channels", "one of " + ", ".join(sorted(ch.KNOWN)), name)
                    )
            private = sorted(set(sub.channels) & ch.PRIVATE)
            if private and not has_keys:
                problems.append(
                    (
                        f"{where}.channels",
                        "only public channels (" + ", ".join(sorted(ch.PUBLIC)) + ") when the "
                        "environment has no keys",
                        private,
                    )
                )
            needs = sorted(set(sub.channels) & ch.REQUIRES_TICKERS)
            if needs and not sub.market_tickers:
                problems.append(
                    (f"{where}.market_tickers", f"market tickers for {', '.join(needs)}", None)
                )
            ignored = sorted(set(sub.channels) - ch.TAKES_TICKERS - set(ch.REMOVED))
            ignored = [c for c in ignored if c in ch.KNOWN]
            if sub.market_tickers and ignored:
                problems.append(
                    (
                        f"{where}.market_tickers",
                        "no market filter with channels that always cover every market ("
                        + ", ".join(ignored)
                        + "): list them in an entry of their own",
                        list(sub.market_tickers[:3]),
                    )
                )
            for name in sub.channels:
                (filtered if sub.market_tickers else all_markets).setdefault(name, i)
        for name in sorted(set(all_markets) & set(filtered)):
            problems.append(
                (
                    f"subscriptions[{filtered[name]}].channels",
                    f"{name} with market tickers or without, not both (subscriptions"
                    f"[{all_markets[name]}] subscribes it for every market)",
                    name,
                )
            )
        return problems

    def load_credentials(self, keys: Mapping[str, Mapping[str, str]]) -> Credentials | None:
        for name, fields in keys.items():
            if "api_key" in fields and "private_key" in fields:
                try:
                    pem = read_pem(fields["private_key"])
                    load_private_key(pem)
                except (MissingKeys, KeyFormatError) as exc:
                    raise CredentialsInvalid(name, "private_key", str(exc)) from None
                return Credentials(fields["api_key"], pem)
        return None

    def connector(
        self,
        resolved: Resolved,
        credentials: object | None,
        options: ConnectorOptions,
        events: EventSink,
        *,
        ssl_context: object | None,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> KalshiConnector:
        assert credentials is None or isinstance(credentials, Credentials)
        assert ssl_context is None or isinstance(ssl_context, ssl.SSLContext)
        return KalshiConnector(
            resolved.feed_version.endpoint,
            wanted_channels(resolved.environment.subscriptions),
            options,
            events,
            credentials=credentials,
            ssl_context=ssl_context,
            clock_ns=clock_ns,
        )


KALSHI = Kalshi()
