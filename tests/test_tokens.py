"""TokenCache against the real simulator on port 0: caching, single flight, invalidation, errors."""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import aiohttp
import pytest

from simulator import App as SimApp
from simulator import Fault, FaultKind, RunningSimulator, SimulatorConfig, run_simulator
from tests.services import LOOPBACK, free_port
from worker.apps import App
from worker.errors import TokenRejected, TokenUnavailable
from worker.metrics import Metrics
from worker.redact import describe_error
from worker.wecom.tokens import (
    MemoryTokenStore,
    TokenCache,
    use_until,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

SECRET = "tok3n-cache-s3cret-value"
SIM_APP = SimApp(corp_id="ww-token-corp", agentid=1000002, secret=SECRET)
APP = App(corp_id=SIM_APP.corp_id, agentid=SIM_APP.agentid, secret=SECRET)


class FakeClock:
    """Unix seconds that move only when told."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def simulator(config: SimulatorConfig | None = None) -> AsyncIterator[RunningSimulator]:
    """A simulator serving SIM_APP (or ``config``)."""
    async with run_simulator(config or SimulatorConfig(apps=(SIM_APP,))) as sim:
        yield sim


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """One ClientSession per test, closed after it."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        yield http


def gettoken_calls(sim: RunningSimulator) -> int:
    """How many gettoken calls reached the simulator."""
    return sum(1 for call in sim.state.calls if call.endpoint == "gettoken")


def refreshes(metrics: Metrics, result: str) -> float:
    """wecom_token_refreshes_total for SIM_APP's corp and ``result``."""
    value = metrics.registry.get_sample_value(
        "wecom_token_refreshes_total", {"corp_id": APP.corp_id, "result": result}
    )
    return value or 0.0


def test_tokens_are_used_until_the_smaller_of_5_minutes_and_10_percent_before_expiry() -> None:
    """A 2 h token is refreshed 5 min early; a 60 s token 6 s early."""
    assert use_until(1000.0, 7200) == 1000.0 + 6900
    assert use_until(1000.0, 60) == pytest.approx(1000.0 + 54)


async def test_a_token_is_fetched_once_and_then_served_from_the_cache(
    session: aiohttp.ClientSession,
) -> None:
    """The first get calls gettoken; later gets and cached() return the same token without it."""
    async with simulator() as sim:
        metrics = Metrics()
        cache = TokenCache(session, sim.url, metrics)
        assert cache.cached(APP) is None
        first = await cache.get(APP)
        assert await cache.get(APP) == first
        assert cache.cached(APP) == first
        assert gettoken_calls(sim) == 1
        assert refreshes(metrics, "ok") == 1


async def test_concurrent_callers_share_one_refresh(session: aiohttp.ClientSession) -> None:
    """Fifty concurrent gets on a cold cache make one gettoken call and all get its token."""
    config = SimulatorConfig(apps=(SIM_APP,), latency_ms=50, latency_on_gettoken=True)
    async with simulator(config) as sim:
        cache = TokenCache(session, sim.url, Metrics())
        tokens = await asyncio.gather(*(cache.get(APP) for _ in range(50)))
        assert len(set(tokens)) == 1
        assert gettoken_calls(sim) == 1


async def test_a_cancelled_caller_does_not_cancel_the_shared_refresh(
    session: aiohttp.ClientSession,
) -> None:
    """The caller that started a refresh may give up; the others still get the token."""
    config = SimulatorConfig(apps=(SIM_APP,), latency_ms=100, latency_on_gettoken=True)
    async with simulator(config) as sim:
        cache = TokenCache(session, sim.url, Metrics())
        starter = asyncio.create_task(cache.get(APP))
        await asyncio.sleep(0.02)
        follower = asyncio.create_task(cache.get(APP))
        await asyncio.sleep(0.02)
        starter.cancel()
        token = await follower
        assert cache.cached(APP) == token
        assert gettoken_calls(sim) == 1
        with pytest.raises(asyncio.CancelledError):
            await starter


async def test_a_token_past_its_margin_is_refreshed(session: aiohttp.ClientSession) -> None:
    """Once the clock passes expires_in minus the margin, the next get calls gettoken again."""
    clock = FakeClock()
    async with simulator() as sim:
        cache = TokenCache(session, sim.url, Metrics(), clock=clock)
        await cache.get(APP)
        clock.now += 7200 - 300 - 1
        assert cache.cached(APP) is not None
        clock.now += 2
        assert cache.cached(APP) is None
        await cache.get(APP)
        assert gettoken_calls(sim) == 2


async def test_invalidating_the_current_token_forces_a_refresh(
    session: aiohttp.ClientSession,
) -> None:
    """WeCom refused the cached token: it is dropped and the next get asks gettoken."""
    async with simulator() as sim:
        cache = TokenCache(session, sim.url, Metrics())
        token = await cache.get(APP)
        await cache.invalidate(APP, token)
        assert cache.cached(APP) is None
        await cache.get(APP)
        assert gettoken_calls(sim) == 2


async def test_invalidating_a_stale_token_keeps_the_fresh_one(
    session: aiohttp.ClientSession,
) -> None:
    """A late 40014 for an old token must not throw away the token fetched since."""
    async with simulator() as sim:
        cache = TokenCache(session, sim.url, Metrics())
        token = await cache.get(APP)
        await cache.invalidate(APP, "an-older-token")
        assert cache.cached(APP) == token
        assert gettoken_calls(sim) == 1


async def test_caches_sharing_a_store_share_the_token(session: aiohttp.ClientSession) -> None:
    """Two caches (two replicas) on one TokenStore call gettoken once between them."""
    async with simulator() as sim:
        store = MemoryTokenStore()
        first = TokenCache(session, sim.url, Metrics(), store=store)
        second = TokenCache(session, sim.url, Metrics(), store=store)
        assert await first.get(APP) == await second.get(APP)
        assert gettoken_calls(sim) == 1


async def test_a_token_invalidated_by_one_cache_leaves_the_shared_store(
    session: aiohttp.ClientSession,
) -> None:
    """After one replica drops a refused token, another replica fetches a new one, not the old."""
    async with simulator() as sim:
        store = MemoryTokenStore()
        first = TokenCache(session, sim.url, Metrics(), store=store)
        second = TokenCache(session, sim.url, Metrics(), store=store)
        token = await first.get(APP)
        await first.invalidate(APP, token)
        await second.get(APP)
        assert gettoken_calls(sim) == 2


@pytest.mark.parametrize(
    ("app", "errcode"),
    [
        (App(corp_id=SIM_APP.corp_id, agentid=SIM_APP.agentid, secret="wrong-" + SECRET), 40001),
        (App(corp_id="ww-no-such-corp", agentid=SIM_APP.agentid, secret=SECRET), 40013),
    ],
)
async def test_refused_credentials_raise_token_rejected_without_the_secret(
    session: aiohttp.ClientSession, app: App, errcode: int
) -> None:
    """A wrong secret or corp id is final: TokenRejected with gettoken's errcode, no secret in it."""
    async with simulator() as sim:
        metrics = Metrics()
        cache = TokenCache(session, sim.url, metrics)
        with pytest.raises(TokenRejected) as caught:
            await cache.get(app)
        assert caught.value.errcode == errcode
        assert caught.value.errmsg
        assert SECRET not in str(caught.value)
        assert SECRET not in caught.value.errmsg
        assert (
            metrics.registry.get_sample_value(
                "wecom_token_refreshes_total", {"corp_id": app.corp_id, "result": "rejected"}
            )
            == 1
        )


@pytest.mark.parametrize(
    ("kind", "count"),
    # aiohttp resends a GET once over a fresh connection when the first is dropped: two losses
    [("system_busy", 1), ("http_500", 1), ("lost_answer", 2)],
)
async def test_transient_gettoken_failures_raise_token_unavailable_then_recover(
    session: aiohttp.ClientSession, kind: FaultKind, count: int
) -> None:
    """-1, HTTP 500 and a dropped connection are retryable; the next get succeeds."""
    fault = Fault(kind=kind, count=count, endpoint="gettoken", consume_code=False)
    async with simulator(SimulatorConfig(apps=(SIM_APP,), faults=(fault,))) as sim:
        metrics = Metrics()
        cache = TokenCache(session, sim.url, metrics)
        with pytest.raises(TokenUnavailable) as caught:
            await cache.get(APP)
        assert SECRET not in str(caught.value)
        assert await cache.get(APP)
        assert refreshes(metrics, "error") == 1
        assert refreshes(metrics, "ok") == 1


async def test_an_unreachable_gettoken_raises_token_unavailable_without_the_secret(
    session: aiohttp.ClientSession,
) -> None:
    """Connection refused: TokenUnavailable, and the secret is not in the text aiohttp gave."""
    cache = TokenCache(session, f"http://{LOOPBACK}:{free_port()}", Metrics())
    with pytest.raises(TokenUnavailable) as caught:
        await cache.get(APP)
    assert "ClientConnectorError" in caught.value.reason
    assert SECRET not in str(caught.value)


def test_error_descriptions_mask_tokens_and_secrets_in_urls() -> None:
    """aiohttp puts the request URL in some messages; describe_error masks what it carries."""
    url = f"http://h/cgi-bin/gettoken?corpid=c&corpsecret={SECRET}"
    error = aiohttp.ConnectionTimeoutError(f"Connection timeout to host {url}")
    text = describe_error(error)
    assert SECRET not in text
    assert "corpsecret=***" in text
    token_error = aiohttp.ClientPayloadError("bad body from /x?access_token=abc123TOKEN&y=1")
    assert "abc123TOKEN" not in describe_error(token_error)
    assert "opaque-token" not in describe_error(ValueError("got opaque-token back"), "opaque-token")
