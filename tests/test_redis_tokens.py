"""Token caches of three replicas sharing a real Redis, against the simulator: one gettoken per app."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
import redis
from structlog.testing import capture_logs

from simulator import App as SimApp
from simulator import RunningSimulator, SimulatorConfig, run_simulator
from tests.services import RedisClusterGroup, RedisServer
from worker.apps import App
from worker.metrics import Metrics
from worker.redis_target import RedisConnection, connect_redis, parse_redis_url
from worker.wecom.redis_tokens import RedisTokenStore
from worker.wecom.tokens import TokenCache, token_key

SECRET = "shared-t0ken-s3cret"
SIM_APPS = (
    SimApp(corp_id="ww-shared-token", agentid=1000002, secret=SECRET),
    SimApp(corp_id="ww-shared-token", agentid=1000003, secret=SECRET + "-2"),
)
APPS = tuple(App(corp_id=a.corp_id, agentid=a.agentid, secret=a.secret) for a in SIM_APPS)
Replicas = Callable[..., Awaitable[list[TokenCache]]]


@pytest.fixture
async def simulator() -> AsyncIterator[RunningSimulator]:
    """A simulator whose gettoken takes 50 ms, so concurrent refreshes overlap."""
    config = SimulatorConfig(apps=SIM_APPS, latency_ms=50, latency_on_gettoken=True)
    async with run_simulator(config) as sim:
        yield sim


@pytest.fixture
async def replicas(simulator: RunningSimulator) -> AsyncIterator[Replicas]:
    """``replicas(redis_url[, prefix])``: three TokenCaches, each with its own session and store."""
    opened: list[tuple[aiohttp.ClientSession, RedisConnection]] = []

    async def make(url: str, prefix: str = "wecom:") -> list[TokenCache]:
        caches = []
        for _ in range(3):
            session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
            connection = await connect_redis(
                parse_redis_url(url), password=None, socket_timeout=1.0
            )
            opened.append((session, connection))
            store = RedisTokenStore(connection, prefix=prefix)
            caches.append(TokenCache(session, simulator.url, Metrics(), store=store))
        return caches

    yield make
    for session, connection in opened:
        await session.close()
        await connection.close()


def all_gettoken_calls(sim: RunningSimulator) -> int:
    """How many gettoken calls reached the simulator."""
    return sum(1 for call in sim.state.calls if call.endpoint == "gettoken")


async def test_three_replicas_call_gettoken_once_per_app(
    replicas: Replicas, simulator: RunningSimulator, fresh_redis_url: str
) -> None:
    """Thirty concurrent gets per app on three cold replicas: one gettoken per app, one token."""
    caches = await replicas(fresh_redis_url)
    for app in APPS:
        tokens = await asyncio.gather(*(cache.get(app) for cache in caches for _ in range(10)))
        assert len(set(tokens)) == 1
    assert all_gettoken_calls(simulator) == len(APPS)


async def test_an_invalidated_token_is_refreshed_once_for_all(
    replicas: Replicas, simulator: RunningSimulator, fresh_redis_url: str
) -> None:
    """WeCom refuses the token at every replica: one of them refreshes, the others take its token."""
    caches = await replicas(fresh_redis_url)
    app = APPS[0]
    old = await caches[0].get(app)
    assert {await cache.get(app) for cache in caches} == {old}
    await asyncio.gather(*(cache.invalidate(app, old) for cache in caches))
    fresh = await asyncio.gather(*(cache.get(app) for cache in caches for _ in range(5)))
    assert len(set(fresh)) == 1
    assert fresh[0] == await caches[0].get(app)  # (WeCom may hand out the same token again)
    assert all_gettoken_calls(simulator) == 2


async def test_keys_hold_no_token_and_no_secret(replicas: Replicas, fresh_redis_url: str) -> None:
    """The Redis key names are made of corp, agentid and a digest: no token, no secret."""
    caches = await replicas(fresh_redis_url)
    token = await caches[0].get(APPS[0])
    with redis.Redis.from_url(fresh_redis_url) as client:
        names = [name.decode() for name in client.keys("*")]
    assert names
    assert not any(token in name or SECRET in name for name in names)


async def test_a_replica_without_redis_fetches_its_own_token_and_says_so(
    replicas: Replicas, simulator: RunningSimulator, make_redis: Callable[..., RedisServer]
) -> None:
    """Redis gone: every replica still gets a token from gettoken itself, logging the fallback."""
    server = make_redis()
    caches = await replicas(server.url)
    server.stop()
    with capture_logs() as logs:
        tokens = await asyncio.gather(*(cache.get(APPS[0]) for cache in caches))
        await caches[0].invalidate(APPS[0], tokens[0])  # harmless without Redis
    assert all(tokens)
    assert all_gettoken_calls(simulator) == 3
    fallbacks = [entry for entry in logs if entry["event"] == "wecom.token_store_unreachable"]
    assert fallbacks
    assert any(entry["fallback"] == "own gettoken" for entry in fallbacks)
    assert not any(token in str(entry) for entry in logs for token in tokens)


async def test_a_dead_holders_lock_runs_out_and_a_waiter_fetches(
    simulator: RunningSimulator, fresh_redis_url: str
) -> None:
    """A lock left by a replica that died mid-refresh expires; the waiter then fetches once."""
    connection = await connect_redis(
        parse_redis_url(fresh_redis_url), password=None, socket_timeout=1.0
    )
    store = RedisTokenStore(connection, lock_seconds=0.3)
    async with aiohttp.ClientSession() as session:
        cache = TokenCache(session, simulator.url, Metrics(), store=store)
        with redis.Redis.from_url(fresh_redis_url) as client:
            client.set(f"wecom:token-lock:{{{token_key(APPS[0])}}}", "dead-replica", px=300)
        assert await cache.get(APPS[0])
    await connection.close()
    assert all_gettoken_calls(simulator) == 1


async def test_tokens_are_shared_on_a_cluster(
    replicas: Replicas, simulator: RunningSimulator, redis_cluster: RedisClusterGroup
) -> None:
    """Three replicas on a 3-master Redis Cluster still call gettoken once per app."""
    caches = await replicas(redis_cluster.url, f"test-{time.time_ns()}:")
    for app in APPS:
        tokens = await asyncio.gather(*(cache.get(app) for cache in caches for _ in range(5)))
        assert len(set(tokens)) == 1
    assert all_gettoken_calls(simulator) == len(APPS)
