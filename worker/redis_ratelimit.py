"""Calls per corp inside every configured window, shared by every replica on one Redis.

The same strict GCRA as :mod:`worker.ratelimit` (its :class:`~worker.ratelimit.Window`
objects, integer-microsecond ``interval`` and ``tolerance``, hence its proof that no
sliding window of ``period + slack`` ever holds more than ``limit`` calls), run as
ONE Lua script per acquire on the Redis server, timed by the server's ``TIME``: no
replica's clock decides. A corp's state is one hash, ``{prefix}limit:{corp}``
(a hash tag of its own, so it lives on one Cluster slot): the TAT of each window,
keyed by its period, and ``b``, the end of a 45009 block.

``acquire`` reserves the earliest conforming slot when it is at most ``max_wait``
away (the TATs move past it at once, so callers of all replicas are served in
the order they asked and never wake together) and sleeps until then; a slot
further away returns :class:`~worker.ports.TooLong` and reserves nothing, and the
command is deferred through the delay queue. ``block`` (45009) moves ``b``
past the block for every replica.

The state lives in Redis, so a worker restart does not refill the burst (a crash
loop cannot overrun WeCom). The key's TTL is the longest window plus the time
until the state goes idle (every TAT and the block in the past): it expires only
when the state is equal to an absent one, which is why an absent key may start
with the full burst.

Why a script of our own and not a library's Redis backend:

* throttled-py (GCRA on Redis, async, "wait-retry" mode): one quota per limiter,
  so the minute and the hour windows would be two keys and two round trips, not
  atomic (a grant by one and a refusal by the other still spends the first);
  textbook tolerance (``capacity × interval``), which lets almost 2N calls into
  one sliding window after a burst, the very overrun that earns a 45009; times
  as float seconds; and a refused caller sleeps and asks again instead of
  holding a reserved slot, so waiters of many replicas race each other with no
  order and a long wait cannot be told apart from a short one before sleeping.
* PyrateLimiter (Redis bucket): exact sliding-window log, but as a sorted set of
  one entry per call and rate: 150,000 entries per corp for the hour window,
  O(log N) work and megabytes of memory per corp, and the blocking mode polls
  (no reservation, no order).
* The reasons they were rejected for in-process use (no strict sliding-window
  bound, no reserve-ahead, no 45009 block) hold for their Redis backends too;
  what the script adds is small: ~30 lines of Lua reusing the arithmetic and the
  proof of :mod:`worker.ratelimit`, one key per corp, one round trip per call.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from worker.ports import Slot, TooLong
from worker.ratelimit import MICROS
from worker.redis_batch import ScriptBatcher
from worker.redis_lua import LUA_NOW, LuaScript

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from worker.ratelimit import Window
    from worker.redis_target import RedisConnection

__all__ = ["RedisRateLimiter", "Reservation", "limiter_key"]

IDLE_MARGIN_MS: Final = 1000  # the TTL's margin past the moment the state goes idle

# KEYS[1] the corp's hash. ARGV: max wait µs, longest period ms, time shift µs, TTL margin ms,
# then per window: field, interval µs, tolerance µs. Returns {granted 0/1, wait µs, slot µs}.
_ACQUIRE = LuaScript(
    LUA_NOW
    + """
local key = KEYS[1]
local now = server_now(ARGV[3])
local slot = now
local blocked = tonumber(redis.call('HGET', key, 'b') or '0')
if blocked > slot then slot = blocked end
local windows = (#ARGV - 4) / 3
local tats = {}
for i = 1, windows do
  local at = 4 + (i - 1) * 3
  local tat = tonumber(redis.call('HGET', key, ARGV[at + 1]) or now)
  tats[i] = tat
  local earliest = tat - tonumber(ARGV[at + 3])
  if earliest > slot then slot = earliest end
end
local wait = slot - now
if wait > tonumber(ARGV[1]) then return {0, int(wait), int(slot)} end
local idle = math.max(blocked, now)
for i = 1, windows do
  local at = 4 + (i - 1) * 3
  local tat = math.max(slot, tats[i]) + tonumber(ARGV[at + 2])
  if tat > idle then idle = tat end
  redis.call('HSET', key, ARGV[at + 1], int(tat))
end
local ttl = math.max(tonumber(ARGV[2]), math.ceil((idle - now) / 1000)) + tonumber(ARGV[4])
redis.call('PEXPIRE', key, ttl)
return {1, int(wait), int(slot)}
"""
)

# KEYS[1] the corp's hash. ARGV: block end (Unix µs), longest period ms, time shift µs, TTL
# margin ms.
_BLOCK = LuaScript(
    LUA_NOW
    + """
local key = KEYS[1]
local now = server_now(ARGV[3])
local block_end = tonumber(ARGV[1])
local blocked = tonumber(redis.call('HGET', key, 'b') or '0')
if block_end <= blocked then return 0 end
redis.call('HSET', key, 'b', int(block_end))
local ttl = math.max(tonumber(redis.call('PTTL', key)), tonumber(ARGV[2]),
                     math.ceil((block_end - now) / 1000)) + tonumber(ARGV[4])
redis.call('PEXPIRE', key, ttl)
return 1
"""
)


def limiter_key(prefix: str, corp_id: str) -> str:
    """The Redis key of a corp's limiter state (hash-tagged: one slot per corp)."""
    return f"{prefix}limit:{{{corp_id}}}"


@dataclass(frozen=True, slots=True)
class Reservation:
    """A slot reserved at ``slot`` (server Unix microseconds), ``wait`` µs after the request."""

    slot: int
    wait: int


class RedisRateLimiter:
    """:class:`worker.ports.RateLimiter` on Redis: every replica on it shares each corp's limit."""

    def __init__(
        self,
        connection: RedisConnection,
        windows: Sequence[Window],
        *,
        prefix: str = "wecom:",
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        time_shift: Callable[[], float] = lambda: 0.0,
    ) -> None:
        """Enforce ``windows`` per corp through ``connection`` (closed by its owner, not here).

        ``time_shift`` (seconds added to the server's clock) is for tests only.
        """
        if not windows:
            raise ValueError("at least one window is needed")
        self._connection = connection
        self._batcher = ScriptBatcher(connection, "redis rate limiter")
        self._windows = tuple(windows)
        self._prefix = prefix
        self._sleep = sleep
        self._time_shift = time_shift
        self._longest_ms = max(window.period for window in self._windows) * 1000
        self._window_args: list[Any] = []
        for window in self._windows:
            self._window_args += [str(window.period), window.interval, window.tolerance]

    @property
    def windows(self) -> tuple[Window, ...]:
        """The windows enforced for every corp."""
        return self._windows

    async def acquire(self, corp_id: str, max_wait: float) -> Slot | TooLong:
        """Reserve the corp's next slot and sleep until it, unless it is over ``max_wait`` s away.

        Raises :class:`~worker.errors.StoreUnavailable` when Redis cannot be asked.
        """
        reserved = await self.reserve(corp_id, max_wait)
        if isinstance(reserved, TooLong):
            return reserved
        if reserved.wait <= 0:
            return Slot(waited=0.0)
        waited = reserved.wait / MICROS
        await self._sleep(waited)
        return Slot(waited=waited)

    async def reserve(self, corp_id: str, max_wait: float) -> Reservation | TooLong:
        """Reserve the corp's next slot without waiting: when it is, by the server's clock."""
        args = [math.floor(max_wait * MICROS), self._longest_ms, self._shift_us(), IDLE_MARGIN_MS]
        granted, wait, slot = await self._batcher.run(
            _ACQUIRE, self._key(corp_id), args + self._window_args, "reserve a call slot"
        )
        if not granted:
            return TooLong(wait=int(wait) / MICROS)
        return Reservation(slot=int(slot), wait=int(wait))

    async def block(self, corp_id: str, until: float) -> None:
        """Grant this corp no slot before ``until`` (Unix seconds), on every replica: 45009."""
        args = [math.ceil(until * MICROS), self._longest_ms, self._shift_us(), IDLE_MARGIN_MS]
        await self._batcher.run(_BLOCK, self._key(corp_id), args, "block a corp")

    def _key(self, corp_id: str) -> str:
        return limiter_key(self._prefix, corp_id)

    def _shift_us(self) -> int:
        return round(self._time_shift() * MICROS)
