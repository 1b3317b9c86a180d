"""Market discovery over REST against the simulator's listing, over real HTTP on loopback.

The REST client pages, paces, backs off on 429 and fails with the URL and status; the
simulator's ``GET /markets`` pages and filters as Kalshi's does; a selector discovers
exactly the markets it names (the expectation computed from the listing itself).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import websockets
from deadlines import within

from ssmd_collector.connectors.kalshi.discovery import Discovery, walks
from ssmd_collector.connectors.kalshi.rest import KalshiRest, RestError, TokenBucket
from ssmd_collector.connectors.kalshi.signing import Credentials
from ssmd_collector.metadata import MarketSelector
from ssmd_collector.sim import SimConfig, SimServer
from ssmd_collector.sim.listing import ListedMarket


def sim(**kw: Any) -> SimServer:
    return SimServer(SimConfig(port=0, allow_unsigned=True, heartbeat=0, **kw))


class Sleeps:
    """Records the back-off delays asked for, without waiting them out."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def client(server: SimServer, **kw: Any) -> KalshiRest:
    return KalshiRest(server.rest_url, rate=1000, **kw)


async def test_discovery_pages_through_a_universe_larger_than_a_page() -> None:
    async with sim(markets=3000) as server:
        rest = client(server)
        pages: list[tuple[str, bytes]] = []
        found = await Discovery(rest, lambda url, body: pages.append((url, body))).select(
            [MarketSelector()]
        )
        await rest.close()
    expected = [m.ticker for m in server.listing if m.status == "active" and not m.multivariate]
    assert len(expected) > 2000
    assert [m.ticker for m in found[MarketSelector()]] == expected
    assert len(server.rest_requests) == 3 == len(pages)
    assert all("limit=1000" in r and "status=open" in r for r in server.rest_requests)
    assert "cursor=" not in server.rest_requests[0]
    assert "cursor=" in server.rest_requests[1]
    assert pages[0][0].startswith(server.rest_url + "/markets?status=open")
    assert pages[0][1].startswith(b'{"markets":[{"ticker":')


async def test_a_429_is_retried_with_exponential_back_off() -> None:
    async with sim(markets=30) as server:
        server.throttle(3)
        sleeps = Sleeps()
        rest = client(server, sleep=sleeps)
        found = await Discovery(rest).select([MarketSelector()])
        await rest.close()
    assert len(found[MarketSelector()]) == 25
    assert sleeps.delays == [0.5, 1.0, 2.0]
    assert rest.metrics.responses == {429: 3, 200: 1}
    assert len(server.rest_requests) == 4


async def test_persistent_429_ends_with_the_url_and_status() -> None:
    async with sim(markets=30) as server:
        server.throttle(100)
        rest = client(server, sleep=Sleeps(), max_attempts=3)
        with pytest.raises(RestError) as failure:
            await Discovery(rest).select([MarketSelector()])
        await rest.close()
    message = str(failure.value)
    assert message.startswith(f"GET {server.rest_url}/markets?status=open&mve_filter=exclude")
    assert "HTTP 429" in message
    assert "too many requests" in message
    assert "gave up after 3 attempts" in message
    assert len(server.rest_requests) == 3


async def test_a_bad_request_is_not_retried_and_says_why() -> None:
    async with sim(markets=30) as server:
        rest = client(server, sleep=Sleeps())
        with pytest.raises(RestError) as failure:
            await rest.get("/markets", {"limit": 5000})
        await rest.close()
    assert failure.value.status == 400
    assert "limit: expected an integer from 1 to 1000; found '5000'" in str(failure.value)
    assert len(server.rest_requests) == 1


async def test_an_unreachable_exchange_is_named(free_port: int) -> None:
    rest = KalshiRest(f"http://127.0.0.1:{free_port}/trade-api/v2", sleep=Sleeps(), max_attempts=2)
    with pytest.raises(RestError) as failure:
        await rest.get("/markets", {})
    await rest.close()
    assert str(failure.value).startswith(
        f"GET http://127.0.0.1:{free_port}/trade-api/v2/markets: no answer: "
    )


async def test_signed_requests_verify_and_a_wrong_key_is_refused(
    ed25519_keys: tuple[bytes, bytes], rsa_keys: tuple[bytes, bytes]
) -> None:
    private, public = ed25519_keys
    config = {"public_key_pem": public, "allow_unsigned": False, "timestamp_window": None}
    async with SimServer(SimConfig(port=0, heartbeat=0, markets=10, **config)) as server:
        good = client(server, credentials=Credentials("key-1", private))
        _body, page = await good.get("/markets", {"limit": 3})
        bad = client(server, credentials=Credentials("key-1", rsa_keys[0]), sleep=Sleeps())
        with pytest.raises(RestError) as failure:
            await bad.get("/markets", {"limit": 3})
        for rest in (good, bad):
            await rest.close()
    assert len(page["markets"]) == 3
    assert failure.value.status == 401
    assert "does not verify for GET /trade-api/v2/markets" in str(failure.value)


def active(m: ListedMarket) -> bool:
    return m.status == "active"


SELECTORS: list[tuple[str, MarketSelector, Callable[[ListedMarket], bool]]] = [
    ("open", MarketSelector(), lambda m: active(m) and not m.multivariate),
    ("unopened", MarketSelector("unopened"), lambda m: m.status == "initialized"),
    ("paused", MarketSelector("paused"), lambda m: m.status == "inactive"),
    ("closed", MarketSelector("closed"), lambda m: m.status == "closed"),
    ("settled", MarketSelector("settled"), lambda m: m.status == "finalized"),
    (
        "series",
        MarketSelector(series=("KXBTCD", "KXINXD")),
        lambda m: active(m) and m.series_ticker in ("KXBTCD", "KXINXD"),
    ),
    (
        "events",
        MarketSelector(events=("KXETHD-26JAN01E0000", "KXHIGHNY-26JAN01E0001")),
        lambda m: active(m) and m.event_ticker in ("KXETHD-26JAN01E0000", "KXHIGHNY-26JAN01E0001"),
    ),
    (
        "tickers",
        MarketSelector(tickers=("KXBTCD-26JAN01E0000-T94999.99", "KXETHD-26JAN01E0000-T3324.99")),
        lambda m: m.ticker in ("KXBTCD-26JAN01E0000-T94999.99", "KXETHD-26JAN01E0000-T3324.99"),
    ),
    (
        "series-and-events",
        MarketSelector(series=("KXBTCD",), events=("KXBTCD-26JAN01E0001", "KXETHD-26JAN01E0000")),
        lambda m: active(m) and m.event_ticker == "KXBTCD-26JAN01E0001",
    ),
    ("mve-only", MarketSelector(multivariate="only"), lambda m: active(m) and m.multivariate),
    ("mve-include", MarketSelector(multivariate="include"), active),
]


@pytest.mark.parametrize(("selector", "expected"), [s[1:] for s in SELECTORS],
                         ids=[s[0] for s in SELECTORS])  # fmt: skip
async def test_selectors_select_exactly_what_they_say(
    selector: MarketSelector, expected: Callable[[ListedMarket], bool]
) -> None:
    async with sim(markets=300) as server:
        rest = client(server)
        found = await Discovery(rest, page_limit=40).select([selector])
        await rest.close()
    want = [m.ticker for m in server.listing if expected(m)]
    assert want, "the listing should hold markets for every selector"
    assert sorted(m.ticker for m in found[selector]) == sorted(want)
    assert len(server.rest_requests) >= len(walks(selector))


async def test_a_living_listing_answers_rest_at_once() -> None:
    async with sim(markets=20) as server:
        new = server.create_market("KXBTCD-26JAN01E0000")
        old = next(m.ticker for m in server.listing if m.status == "active")
        server.settle_market(old)
        rest = client(server)
        found = await Discovery(rest).lookup([new, old, "KXNOPE-1-T1"])
        await rest.close()
    assert {(m.ticker, m.status, m.event_ticker) for m in found} == {
        (new, "active", "KXBTCD-26JAN01E0000"),
        (old, "finalized", old.rsplit("-", 1)[0]),
    }


async def test_events_are_listed_with_their_markets() -> None:
    async with sim(markets=40) as server:
        rest = client(server)
        _, first = await rest.get("/events", {"limit": 3, "with_nested_markets": "true"})
        _, rest_page = await rest.get("/events", {"cursor": first["cursor"]})
        await rest.close()
    assert [e["event_ticker"] for e in first["events"]] == [
        "KXBTCD-26JAN01E0000",
        "KXETHD-26JAN01E0000",
        "KXHIGHNY-26JAN01E0000",
    ]
    assert len(first["events"][0]["markets"]) == 10
    assert [e["event_ticker"] for e in rest_page["events"]] == ["KXINXD-26JAN01E0000"]
    assert rest_page["cursor"] == ""


def test_the_token_bucket_paces_after_its_burst() -> None:
    now = [0.0]
    bucket = TokenBucket(10, 2, monotonic=lambda: now[0])
    assert bucket.wait_time() == 0
    bucket._tokens -= 2  # the burst spent
    assert bucket.wait_time() == pytest.approx(0.1)
    now[0] = 0.05
    assert bucket.wait_time() == pytest.approx(0.05)
    now[0] = 10.0
    assert bucket.wait_time() == 0
    assert bucket._tokens == 2


async def test_a_living_listing_announces_what_it_lists_and_settles() -> None:
    async with sim(markets=20, life_interval=0.05) as server:
        async with websockets.connect(server.url) as ws:
            subscribe = {"channels": ["market_lifecycle_v2"]}
            await ws.send(json.dumps({"id": 1, "cmd": "subscribe", "params": subscribe}))
            seen: dict[str, list[str]] = {}

            async def until_both() -> None:
                while not ({"created", "settled"} <= set(seen)):
                    frame = json.loads(await ws.recv())
                    msg = frame.get("msg", {})
                    if frame.get("type") == "market_lifecycle_v2" and msg.get("event_type"):
                        seen.setdefault(msg["event_type"], []).append(msg["market_ticker"])

            await within(until_both(), "a market listed and one settled")
        created, settled = seen["created"][0], seen["settled"][0]
    assert server.listing.markets[created].status == "active"
    assert server.listing.markets[settled].status == "finalized"
