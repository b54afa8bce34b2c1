"""The Redis state store on real servers: replicas racing, durability as found, faults, Sentinel, Cluster.

The behaviour it shares with the SQLite store is proven in test_state_store.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest
import redis

from tests.services import RedisClusterGroup, RedisSentinelGroup, RedisServer
from worker.errors import StoreUnavailable
from worker.ports import AlreadyUsed, Busy, Claimed, CodeKey, Replay
from worker.redis_target import connect_redis, parse_redis_url
from worker.settings import load_settings
from worker.state.redis import KEPT_PERIOD_SECONDS, RedisStateStore, code_key, kept_base
from worker.wiring import open_shared

KEY = CodeKey("ww0123456789abcdef", "code-1")
RESULT = b'{"command_id":"a","status":"ok"}'
SECRET = "s3cret-redis-pa55"
T = TypeVar("T")
Opener = Callable[..., Awaitable[RedisStateStore]]


@pytest.fixture
async def open_store() -> AsyncIterator[Opener]:
    """Opens Redis stores (``open_store(url, owner=..., **options)``); closes them after the test."""
    opened: list[RedisStateStore] = []

    async def opener(
        url: str, *, password: str | None = None, socket_timeout: float = 2.0, **options: Any
    ) -> RedisStateStore:
        connection = await connect_redis(
            parse_redis_url(url), password=password, socket_timeout=socket_timeout
        )
        options.setdefault("owner", "owner-1")
        try:
            store = await RedisStateStore.open(connection, **options)
        except BaseException:
            await connection.close()
            raise
        opened.append(store)
        return store

    yield opener
    for store in opened:
        await store.close()


async def eventually(call: Callable[[], Awaitable[T]], timeout: float = 30.0) -> T:
    """The first answer of ``call`` that is not StoreUnavailable, retried until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


# --- many replicas ---------------------------------------------------------------------------


async def test_two_replicas_claiming_one_code_at_once_give_one_winner(
    fresh_redis_url: str, open_store: Opener
) -> None:
    """Two stores (two replicas, own connections) race for each of 300 codes: one winner per code."""
    first = await open_store(fresh_redis_url, owner="replica-1")
    second = await open_store(fresh_redis_url, owner="replica-2")
    keys = [CodeKey(KEY.corp_id, f"race-{i}") for i in range(300)]
    outcomes = await asyncio.gather(
        *(store.claim(key, f"cmd-{store.owner}") for key in keys for store in (first, second))
    )
    for index in range(len(keys)):
        pair = outcomes[2 * index : 2 * index + 2]
        assert sorted(type(outcome).__name__ for outcome in pair) == ["Busy", "Claimed"]


async def test_another_replica_cannot_release_or_renew_a_claim(
    fresh_redis_url: str, open_store: Opener
) -> None:
    """The owner is the fencing token: the same command id from another replica touches nothing."""
    holder = await open_store(fresh_redis_url, owner="replica-1")
    other = await open_store(fresh_redis_url, owner="replica-2")
    await holder.claim(KEY, "a")
    await other.release(KEY, "a", maybe_spent=False)
    assert await other.renew([(KEY, "a")]) == 0
    assert isinstance(await other.claim(KEY, "b"), Busy)
    await holder.release(KEY, "a", maybe_spent=False)
    assert await other.claim(KEY, "b") == Claimed(maybe_spent=False)


async def test_a_replica_sees_what_another_recorded(
    fresh_redis_url: str, open_store: Opener
) -> None:
    """Replay and duplicate work across replicas: the record is shared."""
    first = await open_store(fresh_redis_url, owner="replica-1")
    second = await open_store(fresh_redis_url, owner="replica-2")
    await first.claim(KEY, "a")
    await first.complete(KEY, "a", RESULT, spent=True)
    assert await second.claim(KEY, "a") == Replay(RESULT)
    assert await second.claim(KEY, "b") == AlreadyUsed("a")


# --- records ---------------------------------------------------------------------------------


async def test_records_expire_by_ttl_after_their_last_change(
    fresh_redis_url: str, open_store: Opener
) -> None:
    """A claim lives for the retention; a done record for the window; its kept outcome's hash for the retention after its hour."""
    store = await open_store(
        fresh_redis_url, retention_seconds=73 * 3600.0, replay_window_seconds=600.0
    )
    with redis.Redis.from_url(fresh_redis_url) as client:
        await store.claim(KEY, "a")
        assert 73 * 3600_000 - 5000 < client.pttl(code_key("wecom:", KEY)) <= 73 * 3600_000
        await store.complete(KEY, "a", RESULT, spent=True)
        assert 600_000 - 5000 < client.pttl(code_key("wecom:", KEY)) <= 600_000
        (bucket,) = client.keys(kept_base("wecom:", KEY) + "*")
        assert int(bucket.rsplit(b":", 1)[1]) == int(time.time() // KEPT_PERIOD_SECONDS)
        lives = (73 * 3600 + KEPT_PERIOD_SECONDS) * 1000  # a retention after its period's end
        assert lives - 5000 < client.pttl(bucket) <= lives
    short = await open_store(fresh_redis_url, owner="owner-2", retention_seconds=0.2)
    other = CodeKey(KEY.corp_id, "code-2")
    await short.claim(other, "a")
    await short.release(other, "a", maybe_spent=True)
    await asyncio.sleep(0.3)
    assert await short.claim(other, "b") == Claimed(maybe_spent=False)


async def test_a_done_record_is_small(fresh_redis_url: str, open_store: Opener) -> None:
    """A done record holds state, command id, flags, the result, its time and bucket, little else."""
    store = await open_store(fresh_redis_url)
    await store.claim(KEY, "command-0001")
    await store.complete(KEY, "command-0001", RESULT, spent=True)
    with redis.Redis.from_url(fresh_redis_url) as client:
        fields = client.hgetall(code_key("wecom:", KEY))
        usage = client.memory_usage(code_key("wecom:", KEY))
    assert set(fields) == {b"s", b"i", b"m", b"p", b"r", b"f", b"b"}
    assert usage is not None
    assert usage < 200 + len(RESULT)


async def test_kept_outcomes_share_their_records_slot() -> None:
    """The hashes of a code's kept outcome hash to its record's slot, whatever the code (Redis Cluster)."""
    codes = [f"code-{i}" for i in range(300)] + ["a{b}c", "{x}", "}{", "{}", "ö"]
    for code in codes:
        key = CodeKey(KEY.corp_id, code)
        record, kept = code_key("wecom:", key), kept_base("wecom:", key) + "82305"
        assert redis.crc.key_slot(kept.encode()) == redis.crc.key_slot(record.encode())
        assert len(kept) <= len("wecom:k:{abc}:0:82305")


async def test_kept_outcomes_of_a_slot_share_one_small_hash(
    fresh_redis_url: str, open_store: Opener
) -> None:
    """Codes of one slot, split and period go to one listpack hash; their records go with the window."""
    store = await open_store(fresh_redis_url, replay_window_seconds=0.05)
    slot = [CodeKey(KEY.corp_id, f"{{same-slot}}-{i}") for i in range(400)]
    keys = [key for key in slot if kept_base("wecom:", key) == kept_base("wecom:", slot[0])][:50]
    assert len(keys) == 50
    for key in keys:
        await store.claim(key, "a")
        await store.complete(key, "a", RESULT, spent=True)
    await asyncio.sleep(0.2)
    with redis.Redis.from_url(fresh_redis_url) as client:
        assert client.keys("wecom:code:*") == []
        (bucket,) = client.keys(kept_base("wecom:", keys[0]) + "*")
        assert client.hlen(bucket) == 50
        assert client.object("encoding", bucket) == b"listpack"
    assert await store.claim(keys[7], "b") == AlreadyUsed("a")


# --- durability as found ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    [
        ({"appendonly": True, "appendfsync": "always"}, 0, True, None),
        ({"appendonly": True, "appendfsync": "everysec"}, 0, False, "appendfsync everysec"),
        ({"appendonly": False}, 0, False, "no AOF"),
        ({"appendonly": False}, 1, True, None),
        ({"maxmemory_policy": "allkeys-lru"}, 0, False, "maxmemory-policy is allkeys-lru"),
        ({"maxmemory_policy": "volatile-ttl"}, 1, False, "maxmemory-policy is volatile-ttl"),
        ({"extra": ("--rename-command", "CONFIG", "")}, 0, False, "CONFIG GET is not allowed"),
        ({"extra": ("--rename-command", "CONFIG", "")}, 1, True, "CONFIG GET is not allowed"),
    ],
)
async def test_report_says_what_could_forget_a_code(
    make_redis: Callable[..., RedisServer],
    open_store: Opener,
    case: tuple[dict[str, Any], int, bool, str | None],
) -> None:
    """The report reads the server's own settings and names each one that breaks single use."""
    options, wait_replicas, durable, problem = case
    server = make_redis(**options)
    store = await open_store(server.url, wait_replicas=wait_replicas)
    report = await store.report()
    assert report.backend == "redis"
    assert report.durable is durable
    if problem is None:
        assert report.problems == ()
    else:
        assert any(problem in text for text in report.problems), report.problems
    assert report.details["wait_replicas"] == str(wait_replicas)


# --- faults ----------------------------------------------------------------------------------


async def test_redis_restarted_empty_gets_the_claim_back_at_renewal(
    make_redis: Callable[..., RedisServer], open_store: Opener
) -> None:
    """A Redis that restarts without its data forgets the claim; the holder's renewal writes it again."""
    server = make_redis(appendonly=False)
    store = await open_store(server.url)
    await store.claim(KEY, "a")
    server.restart()
    assert await eventually(lambda: store.claim(CodeKey(KEY.corp_id, "x"), "probe")) == Claimed(
        maybe_spent=False
    )
    assert await store.renew([(KEY, "a")]) == 1
    outcome = await store.claim(KEY, "b")
    assert isinstance(outcome, Busy)
    assert outcome.command_id == "a"


async def test_redis_restarted_with_its_aof_keeps_the_claim(
    make_redis: Callable[..., RedisServer], open_store: Opener
) -> None:
    """With AOF fsynced on every write a restart loses nothing: renewal re-creates nothing."""
    server = make_redis()
    store = await open_store(server.url)
    await store.claim(KEY, "a")
    server.restart()
    assert await eventually(lambda: store.renew([(KEY, "a")])) == 0


async def test_frozen_redis_fails_calls_in_time_and_recovers(
    make_redis: Callable[..., RedisServer], open_store: Opener
) -> None:
    """A SIGSTOPped Redis makes every call raise StoreUnavailable (no hang); after SIGCONT they work."""
    server = make_redis()
    store = await open_store(server.url, socket_timeout=0.5)
    await store.ping()
    server.pause()
    try:
        for call in (
            store.ping,
            lambda: store.claim(KEY, "a"),
            lambda: store.renew([(KEY, "a")]),
            store.report,
        ):
            with pytest.raises(StoreUnavailable, match="Timeout") as caught:
                await asyncio.wait_for(call(), 10)  # a hang would end as TimeoutError here
            assert server.url.rsplit("/", 1)[0].split("//")[1] in str(caught.value)
    finally:
        server.resume()
    await eventually(store.ping)
    assert isinstance(await store.claim(CodeKey(KEY.corp_id, "after"), "b"), Claimed)


async def test_errors_never_show_the_password(
    make_redis: Callable[..., RedisServer], open_store: Opener
) -> None:
    """A password given separately overrides the URL's; a wrong one fails without being shown."""
    server = make_redis(extra=("--requirepass", SECRET))
    url = server.url.replace("redis://", "redis://:wrong-in-url@")
    store = await open_store(url, password=SECRET)
    assert await store.claim(KEY, "a") == Claimed(maybe_spent=False)
    with pytest.raises(StoreUnavailable) as caught:
        await open_store(server.url.replace("redis://", f"redis://:{SECRET}x@"))
    assert SECRET not in str(caught.value)
    assert ":***@" in str(caught.value)


async def test_claim_not_acknowledged_by_enough_replicas_is_refused(
    make_redis: Callable[..., RedisServer], open_store: Opener
) -> None:
    """WAIT 1 on a Redis without replicas: the claim fails, saying so, and is handed back."""
    server = make_redis()
    store = await open_store(server.url, wait_replicas=1, wait_timeout=0.05)
    with pytest.raises(StoreUnavailable, match="reached 0 of the 1 replicas"):
        await store.claim(KEY, "a")
    without_wait = await open_store(server.url, owner="owner-2")
    assert await without_wait.claim(KEY, "b") == Claimed(maybe_spent=False)


async def test_outcome_not_acknowledged_by_enough_replicas_is_not_taken_as_recorded(
    make_redis: Callable[..., RedisServer], open_store: Opener
) -> None:
    """WAIT 1 on a Redis without replicas: complete fails, so the pipeline keeps retrying it.

    A done record only the old master held is lost in a failover; the code's claim (which
    WAIT did replicate) then outlives it, and the next command with that code would take it
    over when its lease ran out and send the code again.
    """
    server = make_redis()
    store = await open_store(server.url, wait_replicas=1, wait_timeout=0.05)
    with pytest.raises(StoreUnavailable, match="reached 0 of the 1 replicas"):
        await store.complete(KEY, "a", RESULT, spent=True)


async def test_wait_as_wired_answers_before_the_socket_timeout(
    make_redis: Callable[..., RedisServer],
) -> None:
    """The worker's own store with WAIT 1 and no replica: refused by WAIT's answer, not by a
    socket timeout (which would drop the connection and hide the reason)."""
    server = make_redis()
    environ = {
        "WECOM_STATE_URL": server.url,
        "WECOM_REDIS_WAIT_REPLICAS": "1",
        "WECOM_CORP_ID": KEY.corp_id,
        "WECOM_AGENT_ID": "1000002",
        "WECOM_SECRET": SECRET,
    }
    async with contextlib.AsyncExitStack() as stack:
        shared = await open_shared(load_settings(environ), stack)
        with pytest.raises(StoreUnavailable, match="reached 0 of the 1 replicas"):
            await shared.store.claim(KEY, "a")


# --- Sentinel and Cluster --------------------------------------------------------------------


async def test_sentinel_failover_is_followed_and_no_claim_is_lost(
    redis_sentinel: RedisSentinelGroup, open_store: Opener
) -> None:
    """Claims made during a failover with WAIT 1 all survive it; the same store follows it."""
    store = await open_store(redis_sentinel.url, wait_replicas=1, wait_timeout=0.5, owner="s-1")
    run = time.time_ns()
    granted: list[CodeKey] = []
    refused = 0
    stop = asyncio.Event()

    async def keep_claiming() -> None:
        nonlocal refused
        for index in itertools.count():
            if stop.is_set():
                return
            key = CodeKey(KEY.corp_id, f"failover-{run}-{index}")
            try:
                if await store.claim(key, "a") == Claimed(maybe_spent=False):
                    granted.append(key)
            except StoreUnavailable:
                refused += 1  # the code would not be sent: the command goes back to the queue
                await asyncio.sleep(0.05)

    claiming = asyncio.create_task(keep_claiming())
    await asyncio.sleep(0.3)
    before = redis_sentinel.master_port()
    after = await asyncio.to_thread(redis_sentinel.failover)
    await asyncio.sleep(0.3)
    stop.set()
    await claiming
    assert after != before
    assert len(granted) > 10
    with redis.Redis(port=after) as client:
        missing = [key for key in granted if not client.exists(code_key("wecom:", key))]
    assert missing == []
    fresh = CodeKey(KEY.corp_id, f"after-failover-{run}")
    assert await eventually(lambda: store.claim(fresh, "c")) == Claimed(maybe_spent=False)


async def test_every_script_runs_on_a_cluster(
    redis_cluster: RedisClusterGroup, open_store: Opener
) -> None:
    """Claim, complete, release, renew (pipelined across nodes), kept outcomes and report work on 3 masters."""
    store = await open_store(redis_cluster.url)
    prefix = f"cluster-{time.time_ns()}"
    keys = [CodeKey(KEY.corp_id, f"{prefix}-{i}") for i in range(30)]  # spread over the slots
    assert [await store.claim(key, "a") for key in keys] == [Claimed(maybe_spent=False)] * 30
    assert await store.renew([(key, "a") for key in keys]) == 0
    gone = [CodeKey(KEY.corp_id, f"{prefix}-gone-{i}") for i in range(10)]
    assert await store.renew([(key, "a") for key in gone]) == 10
    await store.complete(keys[0], "a", RESULT, spent=True)
    assert await store.claim(keys[0], "b") == AlreadyUsed("a")
    for key in keys[2:]:
        await store.complete(key, "a", RESULT, spent=True)
    later = await open_store(redis_cluster.url, owner="owner-2", time_shift=lambda: 7200.0)
    for key in keys[2:]:  # past the window: kept outcomes, read on each key's node
        assert await later.claim(key, "b") == AlreadyUsed("a")
        assert isinstance(await later.claim(key, "a"), Replay)
    await store.release(keys[1], "a", maybe_spent=True)
    assert await store.claim(keys[1], "b") == Claimed(maybe_spent=True)
    report = await store.report()
    assert report.durable
    assert report.details["appendfsync"] == "always"
    weak = redis_cluster.servers[2]
    with redis.Redis(port=weak.port) as client:
        client.config_set("appendfsync", "everysec")
    try:
        weakened = await store.report()
    finally:
        with redis.Redis(port=weak.port) as client:
            client.config_set("appendfsync", "always")
    assert not weakened.durable  # one weak primary is enough to forget codes
    assert weakened.details["appendfsync"] == "everysec"
    with pytest.raises(StoreUnavailable, match="not supported on Redis Cluster"):
        await open_store(redis_cluster.url, wait_replicas=1)
