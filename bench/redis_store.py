"""What the Redis state store costs and what each Redis setup loses when it fails.

    .venv/bin/python bench/redis_store.py [--codes 5000] [--result-bytes 300] [--skip-sentinel]

Three tables, all on real servers started here on loopback (``tests/services.py``):

* **cost**: CPU µs of this process per code (claim + complete, 64 at a time) and
  wall time, for the Redis store and the SQLite store on the same codes;
  bytes per done record in Redis (``MEMORY USAGE`` and ``used_memory`` growth).
* **durability**: 32 tasks claim fresh codes as fast as they can; after a second
  the Redis process is SIGKILLed mid-stream and started again (standalone), or
  the Sentinel master is SIGKILLed and a replica promoted. Lost = claims the
  store acknowledged (the caller would have sent the code) that the Redis
  serving afterwards does not hold: each is a code that may be sent twice.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import resource
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests/ is not an installed package

import redis  # noqa: E402 - after the path

from tests.services import RedisSentinelGroup, RedisServer  # noqa: E402 - needs ROOT on sys.path
from worker.errors import StoreUnavailable  # noqa: E402
from worker.ports import Claimed, CodeKey, StateStore  # noqa: E402
from worker.redis_target import connect_redis, parse_redis_url  # noqa: E402
from worker.state.redis import RedisStateStore, code_key  # noqa: E402
from worker.state.sqlite import SqliteStateStore  # noqa: E402

CORP = "ww0123456789abcdef"


def cpu_seconds() -> float:
    """User + system CPU time of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def open_redis(url: str, **options: Any) -> RedisStateStore:
    """A Redis store on ``url``."""
    connection = await connect_redis(parse_redis_url(url), password=None, socket_timeout=1.0)
    return await RedisStateStore.open(connection, owner="bench", **options)


async def cost(store: StateStore, codes: int, result: bytes, tag: str) -> tuple[float, float]:
    """CPU µs and wall µs per code for claim + complete, 64 codes in flight."""
    keys = [CodeKey(CORP, f"{tag}-{i}") for i in range(codes)]
    gate = asyncio.Semaphore(64)

    async def one(key: CodeKey) -> None:
        async with gate:
            await store.claim(key, key.response_code)
            await store.complete(key, key.response_code, result, spent=True)

    cpu, wall = cpu_seconds(), time.perf_counter()
    await asyncio.gather(*(one(key) for key in keys))
    return (cpu_seconds() - cpu) * 1e6 / codes, (time.perf_counter() - wall) * 1e6 / codes


async def cost_table(codes: int, result_bytes: int) -> None:
    """Redis against SQLite on the same work; bytes per done record."""
    result = b'{"status":"ok","padding":"' + b"x" * max(0, result_bytes - 28) + b'"}'
    server = RedisServer()
    server.start()
    try:
        store = await open_redis(server.url)
        with redis.Redis.from_url(server.url) as client:
            before = int(client.info("memory")["used_memory"])
            redis_cpu, redis_wall = await cost(store, codes, result, "cost")
            after = int(client.info("memory")["used_memory"])
            sample = client.memory_usage(code_key("wecom:", CodeKey(CORP, "cost-0")))
        await store.close()
    finally:
        server.close()
    with tempfile.TemporaryDirectory() as directory:
        sqlite = await SqliteStateStore.open(f"{directory}/state.db", owner="bench")
        sqlite_cpu, sqlite_wall = await cost(sqlite, codes, result, "cost")
        await sqlite.close()
    print(f"\ncost of one code (claim + complete), {codes} codes, result {len(result)} bytes")
    print("| store | CPU µs / code (this process) | wall µs / code |")
    print("| --- | ---: | ---: |")
    print(f"| redis (AOF always) | {redis_cpu:.0f} | {redis_wall:.0f} |")
    print(f"| sqlite (FULL) | {sqlite_cpu:.0f} | {sqlite_wall:.0f} |")
    print(f"redis/sqlite CPU ratio: {redis_cpu / sqlite_cpu:.2f}")
    print(
        f"bytes per done record in Redis: MEMORY USAGE {sample}, "
        f"used_memory growth {(after - before) / codes:.0f}"
    )


async def claim_until_killed(
    url: str, kill: Any, *, wait_replicas: int = 0, settle: float = 0.0
) -> tuple[int, int, list[CodeKey]]:
    """Claim fresh codes with 32 tasks; ``kill()`` after 1 s; keep going ``settle`` s more.

    Returns (acknowledged, refused, acknowledged keys).
    """
    store = await open_redis(url, wait_replicas=wait_replicas, wait_timeout=1.0)
    acked: list[CodeKey] = []
    refused = 0
    stop = asyncio.Event()
    numbers = itertools.count()

    async def claimer() -> None:
        nonlocal refused
        while not stop.is_set():
            key = CodeKey(CORP, f"dur-{next(numbers)}")
            try:
                if await store.claim(key, "a") == Claimed(maybe_spent=False):
                    acked.append(key)
            except StoreUnavailable:
                refused += 1
                await asyncio.sleep(0.01)

    tasks = [asyncio.create_task(claimer()) for _ in range(32)]
    await asyncio.sleep(1.0)
    await asyncio.to_thread(kill)
    await asyncio.sleep(settle)
    stop.set()
    await asyncio.gather(*tasks)
    await store.close()
    return len(acked), refused, acked


def missing(port: int, keys: list[CodeKey]) -> int:
    """How many of ``keys`` the Redis on ``port`` does not hold."""
    with redis.Redis(port=port) as client, client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.exists(code_key("wecom:", key))
        return sum(1 for found in pipe.execute() if not found)


async def standalone_row(name: str, **options: Any) -> None:
    """SIGKILL a standalone Redis mid-stream, start it again, count what it forgot."""
    server = RedisServer(**options)
    server.start()
    try:

        def kill() -> None:
            assert server._process is not None  # noqa: SLF001 - the bench controls it
            os.killpg(server._process.process.pid, signal.SIGKILL)  # noqa: SLF001

        acked, refused, keys = await claim_until_killed(server.url, kill)
        server.stop()
        server.start()
        lost = missing(server.port, keys)
    finally:
        server.close()
    print(f"| {name} | {acked} | {refused} | {lost} |")


async def sentinel_row(wait_replicas: int) -> None:
    """SIGKILL the Sentinel master mid-stream; count what the promoted replica does not hold."""
    group = RedisSentinelGroup()
    group.start()
    try:
        old = group.master_port()
        master = next(server for server in group.servers if server.port == old)

        def kill() -> None:
            assert master._process is not None  # noqa: SLF001 - the bench controls it
            os.killpg(master._process.process.pid, signal.SIGKILL)  # noqa: SLF001

        acked, refused, keys = await claim_until_killed(
            group.url, kill, wait_replicas=wait_replicas, settle=8.0
        )
        new = group.master_port()
        lost = missing(new, keys) if new != old else -1
    finally:
        group.close()
    name = f"Sentinel, no AOF, master SIGKILLed, WAIT {wait_replicas}"
    print(f"| {name} | {acked} | {refused} | {lost} |")


async def main() -> None:
    """Print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--codes", type=int, default=5000)
    parser.add_argument("--result-bytes", type=int, default=300)
    parser.add_argument("--skip-sentinel", action="store_true")
    args = parser.parse_args()
    await cost_table(args.codes, args.result_bytes)
    print("\nclaims acknowledged, then Redis killed: lost = acknowledged claims Redis forgot")
    print("| setup | claims acknowledged | claims refused | lost (code may go twice) |")
    print("| --- | ---: | ---: | ---: |")
    await standalone_row("AOF appendfsync always, SIGKILL + restart")
    await standalone_row("AOF appendfsync everysec, SIGKILL + restart", appendfsync="everysec")
    await standalone_row("no persistence, SIGKILL + restart", appendonly=False)
    if not args.skip_sentinel:
        await sentinel_row(0)
        await sentinel_row(1)


if __name__ == "__main__":
    asyncio.run(main())
