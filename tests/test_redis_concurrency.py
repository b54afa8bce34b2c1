"""The 45033 concurrency limit shared by replicas through a real Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.services import RedisClusterGroup, RedisServer
from worker.redis_concurrency import SharedCorpConcurrency
from worker.redis_target import RedisConnection, connect_redis, parse_redis_url

CORP = "ww-busy-corp"
Factory = Callable[..., Awaitable[SharedCorpConcurrency]]


@pytest.fixture
async def replicas(fresh_redis_url: str) -> AsyncIterator[Factory]:
    """Builds SharedCorpConcurrency instances (replicas), each on its own connection."""
    made: list[tuple[SharedCorpConcurrency, RedisConnection]] = []

    async def make(
        maximum: int = 64, url: str = fresh_redis_url, **options: Any
    ) -> SharedCorpConcurrency:
        connection = await connect_redis(parse_redis_url(url), password=None, socket_timeout=1.0)
        concurrency = SharedCorpConcurrency(connection, maximum, **options)
        made.append((concurrency, connection))
        return concurrency

    yield make
    for concurrency, connection in made:
        await concurrency.close()
        await connection.close()


async def settled(concurrency: SharedCorpConcurrency) -> None:
    """Wait for the Redis updates a replica has under way."""
    await asyncio.gather(*concurrency._pending)


async def test_a_45033_at_one_replica_lowers_every_replica(replicas: Factory) -> None:
    """One replica halves the corp's limit; another picks the halved limit up at its refresh."""
    seeing, other = await replicas(), await replicas()
    other.slot(CORP)  # the other replica has served this corp too
    seeing.congested(CORP)
    assert seeing.limit(CORP) == 32  # at once, before Redis answers
    await settled(seeing)
    await other.refresh()
    assert other.limit(CORP) == 32
    assert other.limits() == {CORP: 32}


async def test_simultaneous_45033s_of_two_replicas_cut_once(replicas: Factory) -> None:
    """Two replicas hit by the same burst of 45033s halve the shared limit once, not twice."""
    first, second = await replicas(cut_gap=30.0), await replicas(cut_gap=30.0)
    first.congested(CORP)
    second.congested(CORP)
    await settled(first)
    await settled(second)
    await first.refresh()
    assert (first.limit(CORP), second.limit(CORP)) == (32, 32)


async def test_the_shared_limit_grows_back_with_successes(replicas: Factory) -> None:
    """After as many successes as its limit, a replica raises the shared limit by one for all."""
    first, second = await replicas(maximum=8), await replicas(maximum=8)
    second.slot(CORP)
    first.congested(CORP)
    await settled(first)
    for _ in range(4):
        first.succeeded(CORP)
    await settled(first)
    await second.refresh()
    assert (first.limit(CORP), second.limit(CORP)) == (5, 5)


async def test_calls_beyond_the_shared_limit_wait_in_line(replicas: Factory) -> None:
    """With the shared limit at 2, a third call of the corp waits until one of two finishes."""
    concurrency = await replicas(maximum=4)
    concurrency.congested(CORP)
    await settled(concurrency)
    slots = concurrency.slot(CORP)
    release = asyncio.Event()

    async def call() -> None:
        async with slots:
            await release.wait()

    calls = [asyncio.create_task(call()) for _ in range(3)]
    await asyncio.sleep(0.05)
    assert (slots.in_use, slots.waiting) == (2, 1)
    release.set()
    await asyncio.gather(*calls)
    assert slots.in_use == 0


async def test_the_cut_reaches_a_running_replica_by_itself(replicas: Factory) -> None:
    """A started replica follows the shared limit in the background, without being asked."""
    seeing = await replicas()
    follower = await replicas(refresh_interval=0.05)
    follower.slot(CORP)
    await follower.start()
    seeing.congested(CORP)
    deadline = time.monotonic() + 10
    while follower.limit(CORP) != 32 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert follower.limit(CORP) == 32


async def test_without_redis_a_replica_adapts_alone(
    make_redis: Callable[..., RedisServer], replicas: Factory
) -> None:
    """Redis gone: a 45033 still halves this replica's limit, and nothing raises."""
    server = make_redis()
    concurrency = await replicas(url=server.url)
    server.stop()
    concurrency.congested(CORP)
    await settled(concurrency)
    await concurrency.refresh()
    assert concurrency.limit(CORP) == 32


async def test_the_shared_limit_works_on_a_cluster(
    replicas: Factory, redis_cluster: RedisClusterGroup
) -> None:
    """Cut, growth and the pipelined refresh work on a 3-master Redis Cluster."""
    corps = [f"{CORP}-{time.time_ns()}-{i}" for i in range(6)]  # spread over the slots
    seeing = await replicas(maximum=8, url=redis_cluster.url)
    other = await replicas(maximum=8, url=redis_cluster.url)
    for corp in corps:
        other.slot(corp)
        seeing.congested(corp)
    await settled(seeing)
    for _ in range(4):
        seeing.succeeded(corps[0])
    await settled(seeing)
    await other.refresh()
    assert [other.limit(corp) for corp in corps] == [5, 4, 4, 4, 4, 4]
