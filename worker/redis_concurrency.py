"""Calls in flight per corp, with the 45033 limit shared by every replica through Redis.

:class:`worker.concurrency.CorpConcurrency` adapts one process's limit (AIMD: a
45033 halves it, ``limit`` successes grow it by one). With several replicas a
45033 seen by one must slow them all down, so here the limit itself lives in
Redis, one hash per corp (``{prefix}concurrency:{corp}``: ``c`` the cap, ``t`` the
server time of the last cut), and each replica applies it to its own calls in
flight (the same waiting line as :class:`~worker.concurrency.CorpSlots`).

A shared cap, not a shared counter of calls in flight: a counter would cost two
round trips per call, leak the slots of a SIGKILLed replica until some lease ran
out, and make waiters poll Redis. The cap costs nothing per call: a round trip
on each 45033, one per ``limit`` successes (to grow it), and one read per corp
every ``refresh_interval`` to pick up the other replicas' cuts. The corp's total
in flight is at most replicas × cap; AIMD on the shared cap keeps halving while
that total draws 45033s, so it settles where WeCom stops refusing.

A cut counts once per ``cut_gap`` seconds across replicas (the calls started
before a cut report their 45033s later; counting each would drive the cap to 1).
The cap expires ``idle_seconds`` after its last change: a corp quiet that long
starts again at the maximum. When Redis cannot be reached the replica keeps its
own limit and goes on adapting it alone; the next refresh syncs it again.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any, Final

import structlog
from redis.exceptions import RedisError

from worker.concurrency import CorpConcurrency
from worker.redis_lua import LUA_NOW, LuaScript

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from worker.redis_target import RedisConnection

__all__ = ["SharedCorpConcurrency"]

log = structlog.get_logger(__name__)

CLOSE_GRACE: Final = 2.0  # seconds close() waits for calls under way

_REDIS_ERRORS: Final = (RedisError, OSError, TimeoutError)

# KEYS[1] the corp's hash. ARGV maximum, cut gap µs, idle ms. Halve the cap unless it was cut
# less than a gap ago; returns the cap.
_CUT = LuaScript(
    LUA_NOW
    + """
local key = KEYS[1]
local now = server_now(0)
local cap = tonumber(redis.call('HGET', key, 'c') or ARGV[1])
local cut_at = tonumber(redis.call('HGET', key, 't') or '0')
if now - cut_at < tonumber(ARGV[2]) then return cap end
cap = math.max(1, math.floor(cap / 2))
redis.call('HSET', key, 'c', cap, 't', int(now))
redis.call('PEXPIRE', key, ARGV[3])
return cap
"""
)

# KEYS[1] the corp's hash. ARGV maximum, idle ms. Grow the cap by one (an absent cap is the
# maximum already); returns the cap.
_GROW = LuaScript(
    """
local key = KEYS[1]
local cap = redis.call('HGET', key, 'c')
if not cap then return tonumber(ARGV[1]) end
cap = math.min(tonumber(ARGV[1]), tonumber(cap) + 1)
redis.call('HSET', key, 'c', cap)
redis.call('PEXPIRE', key, ARGV[2])
return cap
"""
)


class SharedCorpConcurrency(CorpConcurrency):
    """:class:`worker.concurrency.CorpConcurrency`, with each corp's limit shared in Redis.

    ``start()`` it to follow the other replicas' cuts; ``close()`` it when done.
    """

    def __init__(
        self,
        connection: RedisConnection,
        maximum: int = 64,
        *,
        prefix: str = "wecom:",
        refresh_interval: float = 1.0,
        cut_gap: float = 1.0,
        idle_seconds: float = 600.0,
    ) -> None:
        """Allow up to ``maximum`` calls in flight per corp per replica (WECOM_CONCURRENCY)."""
        super().__init__(maximum)
        self._connection = connection
        self._prefix = prefix
        self._refresh_interval = refresh_interval
        self._cut_gap_us = round(cut_gap * 1_000_000)
        self._idle_ms = round(idle_seconds * 1000)
        self._successes: dict[str, int] = {}
        self._pending: set[asyncio.Task[None]] = set()
        self._refresher: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        """Follow the shared limits in the background."""
        if self._refresher is None:
            self._refresher = asyncio.create_task(self._follow(), name="shared concurrency")

    async def close(self) -> None:
        """Stop following and wait (bounded) for the updates under way.

        The follower is asked to stop, not cancelled: a Redis call cancelled
        mid-reply can leave its pooled connection stuck, and closing the pool
        then never returns. Whatever is still running after ``CLOSE_GRACE``
        is cancelled all the same; shutdown must end.
        """
        self._stopping.set()
        running = {task for task in (self._refresher, *self._pending) if task is not None}
        if running:
            _, late = await asyncio.wait(running, timeout=CLOSE_GRACE)
            for task in late:
                task.cancel()
        self._refresher = None

    def congested(self, corp_id: str) -> None:
        """WeCom answered 45033: halve the corp's limit here at once and for every replica."""
        slots = self.slot(corp_id)
        if slots.in_use > slots.limit:  # a call started before the last cut: counted already
            return
        slots.congested()
        self._successes[corp_id] = 0
        self._spawn(self._update(corp_id, _CUT, [self.maximum, self._cut_gap_us, self._idle_ms]))

    def succeeded(self, corp_id: str) -> None:
        """A call went through: after ``limit`` of them here, the shared limit grows by one."""
        slots = self.slot(corp_id)
        if slots.limit >= self.maximum:
            return
        count = self._successes.get(corp_id, 0) + 1
        if count < slots.limit:
            self._successes[corp_id] = count
            return
        self._successes[corp_id] = 0
        slots.set_limit(slots.limit + 1)  # at once here; Redis says what the others did
        self._spawn(self._update(corp_id, _GROW, [self.maximum, self._idle_ms]))

    async def refresh(self) -> None:
        """Take the shared limit of every corp seen so far (one pipelined round trip)."""
        corps = list(self._corps)
        if not corps:
            return
        try:
            async with self._connection.calls, self._connection.client.pipeline() as pipe:
                for corp_id in corps:
                    pipe.hget(self._key(corp_id), "c")
                caps = await pipe.execute()
        except _REDIS_ERRORS as error:
            log.warning("shared_concurrency_unreachable", error=type(error).__name__)
            return
        for corp_id, cap in zip(corps, caps, strict=True):
            self._corps[corp_id].set_limit(self.maximum if cap is None else int(cap))

    def _key(self, corp_id: str) -> str:
        return f"{self._prefix}concurrency:{{{corp_id}}}"

    def _spawn(self, update: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(update)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _update(self, corp_id: str, script: LuaScript, args: list[int]) -> None:
        try:
            async with self._connection.calls:
                cap = await script(self._connection.client, [self._key(corp_id)], list(args))
        except _REDIS_ERRORS as error:
            log.warning(
                "shared_concurrency_unreachable", corp_id=corp_id, error=type(error).__name__
            )
            return
        self.slot(corp_id).set_limit(int(cap))

    async def _follow(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._refresh_interval)
            if not self._stopping.is_set():
                await self.refresh()
