"""The rate limiter shared through a real Redis: strict bound across replicas, 45009 blocks, no refill."""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis

from tests.services import RedisClusterGroup, RedisServer
from worker.errors import StoreUnavailable
from worker.ports import Slot, TooLong
from worker.ratelimit import MICROS, Window, parse_rate_limit
from worker.redis_ratelimit import RedisRateLimiter, Reservation, limiter_key
from worker.redis_target import RedisConnection, connect_redis, parse_redis_url

CORP = "ww-limit-corp"
Factory = Callable[..., Awaitable[RedisRateLimiter]]


@pytest.fixture
async def limiters(fresh_redis_url: str) -> AsyncIterator[Factory]:
    """Builds limiters (``limiters(windows, url=...)``), each on a connection of its own."""
    connections: list[RedisConnection] = []

    async def make(windows: tuple[Window, ...], url: str = fresh_redis_url) -> RedisRateLimiter:
        connection = await connect_redis(parse_redis_url(url), password=None, socket_timeout=2.0)
        connections.append(connection)
        return RedisRateLimiter(connection, windows)

    yield make
    for connection in connections:
        await connection.close()


def server_now(url: str) -> float:
    """The Redis server's clock, Unix seconds."""
    with redis.Redis.from_url(url) as client:
        seconds, micros = client.time()
    now: float = seconds + micros / MICROS
    return now


def most_in_any_window(slots: list[int], span: int) -> int:
    """The largest number of slots inside any half-open interval of ``span`` µs."""
    ordered = sorted(slots)
    return max(
        bisect.bisect_left(ordered, start + span) - index for index, start in enumerate(ordered)
    )


async def test_replicas_together_stay_inside_the_window_at_the_full_rate(
    limiters: Factory,
) -> None:
    """4 limiters (replicas) x 10 tasks asking at once for 3 s of 50/s: no second holds over 50."""
    windows = parse_rate_limit("50/s")
    replicas = [await limiters(windows) for _ in range(4)]
    slots: list[int] = []
    first = await replicas[0].reserve(CORP, 5.0)
    assert isinstance(first, Reservation)
    slots.append(first.slot)
    end = first.slot + 3 * MICROS

    async def caller(limiter: RedisRateLimiter) -> None:
        while True:
            reserved = await limiter.reserve(CORP, 5.0)
            assert isinstance(reserved, Reservation)
            if reserved.slot > end:
                return
            slots.append(reserved.slot)
            await asyncio.sleep(reserved.wait / MICROS)

    await asyncio.gather(*(caller(limiter) for limiter in replicas for _ in range(10)))
    assert len(set(slots)) == len(slots)  # no slot handed out twice
    assert most_in_any_window(slots, MICROS) <= 50
    window = windows[0]
    sustained = sorted(slots)[window.burst - 1 :]  # after the first burst: the steady pace
    rate = (len(sustained) - 1) * MICROS / (sustained[-1] - sustained[0])
    assert rate == pytest.approx(MICROS / window.interval, rel=0.03)


async def test_a_block_seen_by_one_replica_holds_every_replica(
    limiters: Factory, fresh_redis_url: str
) -> None:
    """45009 at one replica: no replica gets a slot of that corp before the block ends."""
    windows = parse_rate_limit("50/s")
    seeing, other = await limiters(windows), await limiters(windows)
    until = server_now(fresh_redis_url) + 30
    await seeing.block(CORP, until)
    refused = await other.acquire(CORP, 5.0)
    assert isinstance(refused, TooLong)
    assert refused.wait == pytest.approx(30, abs=1)
    reserved = await other.reserve(CORP, 60.0)
    assert isinstance(reserved, Reservation)
    assert reserved.slot >= until * MICROS
    assert await other.acquire("ww-another-corp", 0.0) == Slot(waited=0.0)
    await seeing.block(CORP, until - 10)  # an earlier end never shortens the block
    again = await other.acquire(CORP, 5.0)
    assert isinstance(again, TooLong)
    assert again.wait > 25


async def test_too_long_reserves_nothing(limiters: Factory, fresh_redis_url: str) -> None:
    """A slot beyond max_wait is refused and the corp's state is left exactly as it was."""
    limiter = await limiters((Window(3, 60, burst=1),))
    assert await limiter.acquire(CORP, 0.0) == Slot(waited=0.0)
    with redis.Redis.from_url(fresh_redis_url) as client:
        before = client.hgetall(limiter_key("wecom:", CORP))
        for _ in range(5):
            assert isinstance(await limiter.acquire(CORP, 1.0), TooLong)
        assert client.hgetall(limiter_key("wecom:", CORP)) == before


async def test_a_restarted_worker_does_not_get_the_burst_back(limiters: Factory) -> None:
    """The burst spent by one process stays spent for the process started after it."""
    windows = (Window(100, 60, burst=5),)
    first = await limiters(windows)
    for _ in range(5):
        assert await first.acquire(CORP, 0.0) == Slot(waited=0.0)
    restarted = await limiters(windows)
    next_slot = await restarted.reserve(CORP, 60.0)
    assert isinstance(next_slot, Reservation)
    assert next_slot.wait > 0


async def test_state_outlives_the_longest_window(limiters: Factory, fresh_redis_url: str) -> None:
    """The corp's key lives at least as long as its longest window (no early refill by expiry)."""
    limiter = await limiters(parse_rate_limit("50/s,1000/h"))
    await limiter.acquire(CORP, 0.0)
    with redis.Redis.from_url(fresh_redis_url) as client:
        ttl = client.pttl(limiter_key("wecom:", CORP))
        await limiter.block(CORP, server_now(fresh_redis_url) + 7200)
        blocked_ttl = client.pttl(limiter_key("wecom:", CORP))
    assert ttl >= 3600 * 1000
    assert blocked_ttl >= 7200 * 1000


async def test_redis_down_is_store_unavailable(
    make_redis: Callable[..., RedisServer], limiters: Factory
) -> None:
    """A limiter whose Redis is gone raises StoreUnavailable instead of granting or hanging."""
    server = make_redis()
    limiter = await limiters(parse_rate_limit("50/s"), url=server.url)
    assert await limiter.acquire(CORP, 0.0) == Slot(waited=0.0)
    server.stop()
    with pytest.raises(StoreUnavailable, match="rate limiter"):
        await asyncio.wait_for(limiter.acquire(CORP, 0.0), 10)
    with pytest.raises(StoreUnavailable):
        await limiter.block(CORP, time.time() + 60)


async def test_the_limiter_runs_on_a_cluster(
    limiters: Factory, redis_cluster: RedisClusterGroup
) -> None:
    """Acquire, TooLong and block work on a 3-master Redis Cluster, for corps on several slots."""
    limiter = await limiters((Window(2, 60, burst=2),), url=redis_cluster.url)
    corps = [f"{CORP}-{time.time_ns()}-{i}" for i in range(6)]
    for corp in corps:
        assert await limiter.acquire(corp, 0.0) == Slot(waited=0.0)
        assert await limiter.acquire(corp, 0.0) == Slot(waited=0.0)
        assert isinstance(await limiter.acquire(corp, 1.0), TooLong)
    await limiter.block("ww-blocked", time.time() + 60)
    assert isinstance(await limiter.acquire("ww-blocked", 1.0), TooLong)
