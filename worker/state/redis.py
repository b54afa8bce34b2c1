"""The Redis state store: single use of response codes for MANY worker replicas.

The same state machine as :mod:`worker.state.sqlite` (``claimed`` -> ``done`` or
``released``; replay, duplicate, takeover of an expired lease as "maybe spent",
the completion rules of its ``_COMPLETE``), one Redis hash per (corp_id,
response_code). Each operation is ONE Lua script: atomic (two replicas claiming
one code at the same instant get exactly one winner), one round trip, and timed
by the Redis server's ``TIME``, so no replica's clock decides a lease. Each
script touches exactly one key, hence one slot: it runs unchanged on Redis
Cluster.

Records expire by Redis TTL, ``retention_seconds`` after their last change (72 h
plus a margin by default): no purge job. A claim carries its holder's
``owner`` (this process's random id) as a fencing token: only that owner renews
or releases it. A claim also carries a per-call nonce, so a claim retried after
a broken connection recognises its own write instead of seeing "busy".

Fields (short names keep each record small): ``s`` state (``c`` claimed, ``d``
done, ``r`` released), ``i`` command_id, ``o`` owner, ``n`` claim nonce, ``l``
lease end (server microseconds), ``m`` maybe spent, ``p`` spent, ``r`` the
stored Result, ``f`` when it was recorded (server microseconds), ``b`` the
period number of its kept outcome's hash.

The replay window: a ``done`` record lives only ``replay_window_seconds``; the
same script that writes it writes the code's *kept outcome*
(:mod:`worker.state.compact`, ~30 bytes) as a field of a small hash shared with
other codes of its slot and period (see ``_LUA_KEPT``), kept for the retention.
A claim that finds no record (or a done one older than the window: the answer
must not depend on when Redis expires it) decides from the kept outcome. The
hashes' names carry a hash tag chosen to fall in the record's slot
(:func:`kept_base`), so every script still runs on one slot.

Calls of many tasks go to Redis together (:mod:`worker.redis_batch`): one
pipeline per turn of the event loop, which costs a fraction of the CPU of one
call at a time. With ``wait_replicas > 0`` a batch holding claims ends with
``WAIT n`` on the same connection, in the same round trip (not on Redis
Cluster, where a pipeline cannot keep both on one connection); a claim
acknowledged by fewer replicas in
time is handed back (released) and fails with :class:`StoreUnavailable`, so the
code is not sent and its redelivery can take it at once. An outcome short of
its acks fails the same way and is written again by the pipeline. Every Redis
error or timeout becomes :class:`StoreUnavailable`, whose message names the
target without its password.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import secrets
import string
import time
from typing import TYPE_CHECKING, Any, Final, TypeVar

import structlog
from redis.asyncio import RedisCluster
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import RedisError, ResponseError

from worker.errors import StoreUnavailable
from worker.ports import (
    AlreadyUsed,
    Busy,
    Claimed,
    ClaimOutcome,
    CodeKey,
    Replay,
    StoreReport,
)
from worker.redis_batch import ScriptBatcher
from worker.redis_lua import LUA_NOW, LuaScript
from worker.state.compact import HEAD_BYTES, code_digest, decide_kept, pack_command_id, pack_kept

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from worker.redis_target import RedisConnection

__all__ = ["KEPT_PERIOD_SECONDS", "RedisStateStore", "code_key", "kept_base", "kept_field"]

T = TypeVar("T")

_log = structlog.get_logger(__name__)

MICROS: Final = 1_000_000
# A claim of a fresh code reads one kept hash per period of the retention (~1 µs each): 6 h
# makes 13. Split in 4 by the code's digest, a hash holds ~55 codes at WeCom's ceiling of
# 10,000 calls/min: under the 128 entries of Redis's compact listpack encoding.
KEPT_PERIOD_SECONDS: Final = 6 * 3600
KEPT_SPLIT: Final = 4
EVICTION_FREE: Final = "noeviction"  # every record has a TTL: volatile-* policies evict them too

# Kept outcomes live in hashes, one per period, hash slot and split:
# ``<prefix>k:{tag}:<split>:<period number>`` (``{tag}`` puts it in its record's slot,
# :func:`kept_base`), field = the code's 12-byte digest, value = compact.pack_kept. A
# small hash is one listpack: ~50 bytes a code instead of a key of its own (~200). A bucket
# expires a retention after its period ends and a lookup reads the buckets of a retention
# back, all by the server's clock: a kept outcome is remembered for the retention, rounded up
# to the period. A done record names its bucket (``b``): a code has at most one kept
# outcome, found without a search while its record lives.
# ARGV of the kept functions: base (KEYS[2]), field, retention ms, period µs.
_LUA_KEPT = """
local function kept_find(base, field, now, retention_ms, period)
  local last = math.floor(now / period)
  local first = math.floor((now - tonumber(retention_ms) * 1000) / period)
  for b = last, first, -1 do
    local name = base .. int(b)
    local v = redis.call('HGET', name, field)
    if v then return v, name end
  end
  return false, nil
end
local function kept_put(base, field, value, now, retention_ms, period)
  local b = int(math.floor(now / period))
  local name = base .. b
  redis.call('HSET', name, field, value)
  redis.call('PEXPIRE', name, int(tonumber(retention_ms) + period / 1000), 'NX')
  return b
end
"""

# Past the window a claim answers from the kept outcome (byte 1 flags: 1 spent, 2 maybe
# spent; the command id after HEAD_BYTES bytes): 'k' hands it to Python for a late replay or
# a duplicate; an unspent one is taken over here.
# KEYS[1] record, KEYS[2] kept base; ARGV command_id, owner, nonce, lease µs, retention ms,
# time shift µs, replay window µs, packed command id, kept field, kept period µs
_CLAIM = LuaScript(
    LUA_NOW
    + _LUA_KEPT
    + """
local key, base, cmd, field = KEYS[1], KEYS[2], ARGV[1], ARGV[9]
local period = tonumber(ARGV[10])
local now = server_now(ARGV[6])
local rec = redis.call('HMGET', key, 's', 'i', 'l', 'm', 'p', 'r', 'n', 'f', 'b')
local state = rec[1]
local kept, kept_at = false, nil
local function take(maybe)
  if kept_at then redis.call('HDEL', kept_at, field) end
  redis.call('DEL', key)
  redis.call('HSET', key, 's', 'c', 'i', cmd, 'o', ARGV[2], 'n', ARGV[3],
             'l', int(now + tonumber(ARGV[4])), 'm', maybe)
  redis.call('PEXPIRE', key, ARGV[5])
  return {'c', maybe}
end
if state == 'd' and rec[9] then
  kept_at = base .. rec[9]
  if rec[8] and now - tonumber(rec[8]) >= tonumber(ARGV[7]) then
    kept = redis.call('HGET', kept_at, field)
    if kept then state = nil end
  end
end
if not state then
  if not kept then kept, kept_at = kept_find(base, field, now, ARGV[5], period) end
  if not kept then return take('0') end
  local flags = string.byte(kept, 1)
  if string.sub(kept, HEAD_BYTES + 1) == ARGV[8] or flags % 2 == 1 then return {'k', kept} end
  if flags >= 2 then return take('1') end
  return take('0')
end
if state == 'd' then
  if rec[2] == cmd then return {'r', rec[6] or ''} end
  if rec[5] == '1' then return {'u', rec[2]} end
  return take(rec[4])
end
if state == 'r' then return take(rec[4]) end
if rec[7] == ARGV[3] then return {'c', rec[4]} end
if tonumber(rec[3]) > now then return {'b', rec[2], rec[3]} end
return take('1')
""".replace("HEAD_BYTES", str(HEAD_BYTES))
)

# The rules of sqlite.py's _COMPLETE: a done record whose code was spent is final; an unspent
# outcome never displaces another command's claim or release. An expired record is absent.
# A kept outcome counts as a done record. The record lives for the replay window, its kept
# outcome (ARGV[6] with its flags byte set here) for the retention.
# KEYS[1] record, KEYS[2] kept base; ARGV command_id, spent (0/1), result, retention ms,
# replay window ms, kept outcome, time shift µs, kept field, kept period µs
_COMPLETE = LuaScript(
    LUA_NOW
    + _LUA_KEPT
    + """
local key, base, cmd, spent, field = KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[8]
local period = tonumber(ARGV[9])
local now = server_now(ARGV[7])
local rec = redis.call('HMGET', key, 's', 'i', 'm', 'p', 'b')
local maybe = spent
local kept_at = nil
if rec[1] then
  if rec[1] == 'd' and rec[4] == '1' then return 0 end
  if spent == '0' and rec[2] ~= cmd and rec[1] ~= 'd' then return 0 end
  if rec[3] == '1' then maybe = '1' end
  if rec[1] == 'd' and rec[5] then kept_at = base .. rec[5] end
else
  local kept
  kept, kept_at = kept_find(base, field, now, ARGV[4], period)
  if kept then
    local flags = string.byte(kept, 1)
    if flags % 2 == 1 then return 0 end
    if flags >= 2 then maybe = '1' end
  end
end
if kept_at then redis.call('HDEL', kept_at, field) end
local flags = tonumber(spent)
if maybe == '1' then flags = flags + 2 end
local b = kept_put(base, field, string.char(flags) .. string.sub(ARGV[6], 2), now, ARGV[4], period)
redis.call('DEL', key)
redis.call('HSET', key, 's', 'd', 'i', cmd, 'm', maybe, 'p', spent, 'r', ARGV[3],
           'f', int(now), 'b', b)
redis.call('PEXPIRE', key, ARGV[5])
return 1
"""
)

# Only the holder (command and owner) releases; maybe_spent is OR-ed, never forgotten.
# KEYS[1] record; ARGV command_id, owner, maybe_spent (0/1), retention ms
_RELEASE = LuaScript(
    """
local key = KEYS[1]
local rec = redis.call('HMGET', key, 's', 'i', 'o', 'm')
if rec[1] ~= 'c' or rec[2] ~= ARGV[1] or rec[3] ~= ARGV[2] then return 0 end
local maybe = ARGV[3]
if rec[4] == '1' then maybe = '1' end
redis.call('DEL', key)
redis.call('HSET', key, 's', 'r', 'i', ARGV[1], 'm', maybe)
redis.call('PEXPIRE', key, ARGV[4])
return 1
"""
)

# Extend a held lease; a record that vanished (restart, failover, eviction) is written again,
# unless a kept outcome says the code is finished. Returns 1 when it re-created the claim.
# KEYS[1] record, KEYS[2] kept base; ARGV command_id, owner, lease µs, retention ms,
# time shift µs, kept field, kept period µs
_RENEW = LuaScript(
    LUA_NOW
    + _LUA_KEPT
    + """
local key = KEYS[1]
local now = server_now(ARGV[5])
local lease_until = int(now + tonumber(ARGV[3]))
local rec = redis.call('HMGET', key, 's', 'i', 'o')
if rec[1] == 'c' and rec[2] == ARGV[1] and rec[3] == ARGV[2] then
  redis.call('HSET', key, 'l', lease_until)
  redis.call('PEXPIRE', key, ARGV[4])
  return 0
end
if rec[1] or kept_find(KEYS[2], ARGV[6], now, ARGV[4], tonumber(ARGV[7])) then return 0 end
redis.call('HSET', key, 's', 'c', 'i', ARGV[1], 'o', ARGV[2], 'l', lease_until, 'm', '0')
redis.call('PEXPIRE', key, ARGV[4])
return 1
"""
)


# A claim that too few replicas acknowledged is handed back, so that the command's redelivery
# (or another command) can take the code at once instead of waiting for the lease to run out.
# Released, it keeps its maybe-spent flag: what the next claimer hears is what it would have
# heard before this claim. KEYS[1]; ARGV nonce, retention ms
_UNCLAIM = LuaScript(
    """
local key = KEYS[1]
local rec = redis.call('HMGET', key, 's', 'n', 'i', 'm')
if rec[1] ~= 'c' or rec[2] ~= ARGV[1] then return 0 end
redis.call('DEL', key)
redis.call('HSET', key, 's', 'r', 'i', rec[3], 'm', rec[4])
redis.call('PEXPIRE', key, ARGV[2])
return 1
"""
)


def code_key(prefix: str, key: CodeKey) -> str:
    """The record's Redis key; the corp id's length keeps any two (corp, code) pairs apart."""
    return f"{prefix}code:{len(key.corp_id)}:{key.corp_id}:{key.response_code}"


def kept_base(prefix: str, key: CodeKey) -> str:
    """The start of the names of the hashes (one per period) that may hold this code's kept outcome.

    Its hash tag is chosen to fall in the record's slot, so that a script reads both on
    one Redis Cluster node.
    """
    tag = slot_tag(key_slot(code_key(prefix, key).encode()))
    split = code_digest(key.corp_id, key.response_code)[-1] % KEPT_SPLIT
    return f"{prefix}k:{{{tag}}}:{split}:"


def kept_field(key: CodeKey) -> bytes:
    """The code's field in its kept hash: its 12-byte digest."""
    return code_digest(key.corp_id, key.response_code)


SLOT_TAG_WIDTH: Final = 3  # three letters or digits reach every slot


@functools.cache
def _slot_tags() -> bytes:
    """For each hash slot, the shortest hash tag of letters and digits that falls in it.

    Packed as ``SLOT_TAG_WIDTH`` bytes per slot, padded with NUL: 48 KiB, where a
    tuple of 16,384 strings took 0.9 MiB of every replica's memory.
    """
    tags = bytearray(REDIS_CLUSTER_HASH_SLOTS * SLOT_TAG_WIDTH)
    found = bytearray(REDIS_CLUSTER_HASH_SLOTS)
    left = REDIS_CLUSTER_HASH_SLOTS
    alphabet = (string.ascii_letters + string.digits).encode()
    for length in range(1, SLOT_TAG_WIDTH + 1):
        for letters in itertools.product(alphabet, repeat=length):
            tag = bytes(letters)
            slot = key_slot(tag)
            if not found[slot]:
                found[slot] = 1
                at = slot * SLOT_TAG_WIDTH
                tags[at : at + length] = tag
                left -= 1
                if not left:
                    return bytes(tags)
    raise AssertionError("some slot has no tag of three letters or digits")  # pragma: no cover


def slot_tag(slot: int) -> str:
    """The shortest hash tag that falls in ``slot``."""
    at = slot * SLOT_TAG_WIDTH
    return _slot_tags()[at : at + SLOT_TAG_WIDTH].rstrip(b"\0").decode()


class RedisStateStore:
    """:class:`worker.ports.StateStore` on Redis, shared by replicas. Open with :meth:`open`."""

    def __init__(
        self,
        connection: RedisConnection,
        *,
        owner: str,
        lease_seconds: float,
        retention_seconds: float,
        replay_window_seconds: float,
        wait_replicas: int,
        wait_timeout: float,
        prefix: str,
        time_shift: Callable[[], float],
        close_connection: bool,
    ) -> None:
        """Hold the settings; :meth:`open` checks them and the connection."""
        if min(lease_seconds, retention_seconds, replay_window_seconds) <= 0 or wait_replicas < 0:
            raise ValueError(
                "lease_seconds, retention_seconds and replay_window_seconds must be positive, "
                "wait_replicas >= 0"
            )
        self._connection = connection
        self._client = connection.client
        self.target = connection.describe()
        self.owner = owner
        self.lease_us = round(lease_seconds * MICROS)
        self.retention_ms = round(retention_seconds * 1000)
        self.replay_window_seconds = replay_window_seconds
        # A done record outliving its retention would be pointless: the window is capped by it.
        self.window_ms = round(min(replay_window_seconds, retention_seconds) * 1000)
        self.wait_replicas = wait_replicas
        self.wait_ms = max(1, round(wait_timeout * 1000))
        self.prefix = prefix
        self._time_shift = time_shift
        self._close_connection = close_connection
        self._closed = False
        self._batcher = ScriptBatcher(
            connection, "redis state store", wait_replicas=wait_replicas, wait_ms=self.wait_ms
        )

    @classmethod
    async def open(
        cls,
        connection: RedisConnection,
        *,
        owner: str,
        lease_seconds: float = 60.0,
        retention_seconds: float = 73 * 3600.0,
        replay_window_seconds: float = 3600.0,
        wait_replicas: int = 0,
        wait_timeout: float = 1.0,
        prefix: str = "wecom:",
        time_shift: Callable[[], float] = lambda: 0.0,
        close_connection: bool = True,
    ) -> RedisStateStore:
        """A store on ``connection``; pings Redis first.

        :meth:`close` closes ``connection`` too unless ``close_connection`` is false
        (the connection is shared with the limiter and the token store).

        ``owner`` is this process's random id, the fencing token of its claims.
        ``wait_replicas``: claims must reach that many replicas (``WAIT``) within
        ``wait_timeout`` seconds. ``time_shift`` (seconds added to the server's
        clock) lets tests move time; it is 0 in the worker.
        ``replay_window_seconds``: how long a done record keeps its full Result.
        """
        if wait_replicas and connection.target.kind == "cluster":
            raise StoreUnavailable(
                f"redis state store {connection.describe()}: WECOM_REDIS_WAIT_REPLICAS is not "
                "supported on Redis Cluster (WAIT must follow the claim on its connection)"
            )
        store = cls(
            connection,
            owner=owner,
            lease_seconds=lease_seconds,
            retention_seconds=retention_seconds,
            replay_window_seconds=replay_window_seconds,
            wait_replicas=wait_replicas,
            wait_timeout=wait_timeout,
            prefix=prefix,
            time_shift=time_shift,
            close_connection=close_connection,
        )
        _slot_tags()  # built once per process: ~30 ms of CPU, before the first claim
        await store.ping()
        return store

    # --- the StateStore protocol ----------------------------------------------------------

    async def claim(self, key: CodeKey, command_id: str) -> ClaimOutcome:
        """Atomically take the code for ``command_id`` or say who has it (see the module doc)."""
        self._check_open()
        nonce = secrets.token_hex(8)
        args = [
            command_id,
            self.owner,
            nonce,
            self.lease_us,
            self.retention_ms,
            self._shift_us(),
            self.window_ms * 1000,
            pack_command_id(command_id),
            kept_field(key),
            KEPT_PERIOD_SECONDS * MICROS,
        ]
        name = self._key(key)
        names = (name, kept_base(self.prefix, key))
        if not self.wait_replicas:
            reply = await self._batcher.run(_CLAIM, names, args, "claim a code")
            return self._decode_claim(reply, key, command_id)
        reply, acked = await self._batcher.run_replicated(_CLAIM, names, args, "claim a code")
        outcome = self._decode_claim(reply, key, command_id)
        if isinstance(outcome, Claimed) and acked < self.wait_replicas:
            with contextlib.suppress(StoreUnavailable):  # if this fails, the lease runs out
                unclaim = [nonce, self.retention_ms]
                await self._batcher.run(_UNCLAIM, name, unclaim, "hand back a claim")
            raise StoreUnavailable(
                f"redis state store {self.target}: the claim reached {acked} of the "
                f"{self.wait_replicas} replicas WECOM_REDIS_WAIT_REPLICAS asks for within "
                f"{self.wait_ms} ms; the code is not sent"
            )
        return outcome

    async def complete(self, key: CodeKey, command_id: str, result: bytes, *, spent: bool) -> None:
        """Record the outcome; written over a lost claim but never over a spent code's record.

        With ``wait_replicas`` the record must reach that many replicas too: one only the old
        master held is lost in a failover while the (replicated) claim survives it, and the
        next command with the code would take that claim over and send the code again. Short
        of the acks this raises, and the pipeline writes the outcome again (idempotent).
        """
        self._check_open()
        shift = self._time_shift()
        kept = pack_kept(
            result, command_id, spent=spent, maybe_spent=False, finished_at=time.time() + shift
        )
        args = [
            command_id,
            int(spent),
            result,
            self.retention_ms,
            self.window_ms,
            kept,
            round(shift * MICROS),
            kept_field(key),
            KEPT_PERIOD_SECONDS * MICROS,
        ]
        names = (self._key(key), kept_base(self.prefix, key))
        if not self.wait_replicas:
            await self._batcher.run(_COMPLETE, names, args, "record an outcome")
            return
        _, acked = await self._batcher.run_replicated(_COMPLETE, names, args, "record an outcome")
        if acked < self.wait_replicas:
            raise StoreUnavailable(
                f"redis state store {self.target}: the outcome reached {acked} of the "
                f"{self.wait_replicas} replicas WECOM_REDIS_WAIT_REPLICAS asks for within "
                f"{self.wait_ms} ms; it is written again"
            )

    async def release(self, key: CodeKey, command_id: str, *, maybe_spent: bool) -> None:
        """Give back a code this command holds in this process; the flag is OR-ed in."""
        self._check_open()
        args = [command_id, self.owner, int(maybe_spent), self.retention_ms]
        await self._batcher.run(_RELEASE, self._key(key), args, "release a code")

    async def renew(self, claims: list[tuple[CodeKey, str]]) -> int:
        """Extend the leases held; re-create the claims whose record is gone; count those."""
        self._check_open()
        if not claims:
            return 0
        shift = self._shift_us()
        replies = await asyncio.gather(
            *(
                self._batcher.run(
                    _RENEW,
                    (self._key(key), kept_base(self.prefix, key)),
                    [
                        command_id,
                        self.owner,
                        self.lease_us,
                        self.retention_ms,
                        shift,
                        kept_field(key),
                        KEPT_PERIOD_SECONDS * MICROS,
                    ],
                    "renew leases",
                )
                for key, command_id in claims
            )
        )
        recreated = sum(int(reply) for reply in replies)
        if recreated:
            _log.warning("redis_state_claims_recreated", target=self.target, claims=recreated)
        return recreated

    async def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless Redis answers."""
        await self._guard(self._client.ping(), "answer a ping")

    async def report(self) -> StoreReport:
        """Persistence and eviction as the server says, and what would break single use."""
        return await self._guard(self._report(), "read its settings")

    async def close(self) -> None:
        """Refuse further calls; close the connection if it is the store's (twice is harmless)."""
        if not self._closed:
            self._closed = True
            if self._close_connection:
                await self._connection.close()

    # --- inside -----------------------------------------------------------------------------

    def _key(self, key: CodeKey) -> str:
        return code_key(self.prefix, key)

    def _decode_claim(self, reply: list[Any], key: CodeKey, command_id: str) -> ClaimOutcome:
        """The claim script's answer as a :data:`ClaimOutcome`."""
        tag = reply[0]
        if tag == b"c":
            return Claimed(maybe_spent=reply[1] == b"1")
        if tag == b"r":
            return Replay(bytes(reply[1]))
        if tag == b"u":
            return AlreadyUsed(reply[1].decode())
        if tag == b"k":
            return decide_kept(bytes(reply[1]), key, command_id, self.replay_window_seconds)
        return Busy(reply[1].decode(), int(reply[2]) / MICROS)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable(f"redis state store {self.target} is closed")

    def _shift_us(self) -> int:
        return round(self._time_shift() * MICROS)

    async def _guard(self, call: Awaitable[T], what: str) -> T:
        """Await ``call``; a Redis failure becomes :class:`StoreUnavailable` saying what failed."""
        if self._closed:
            if asyncio.iscoroutine(call):
                call.close()
            raise StoreUnavailable(f"redis state store {self.target} is closed")
        try:
            async with self._connection.calls:
                return await call
        except StoreUnavailable:
            raise
        except (RedisError, OSError, TimeoutError) as error:
            raise StoreUnavailable(
                f"redis state store {self.target}: cannot {what}: {_describe(error)}"
            ) from None

    async def _report(self) -> StoreReport:
        settings, config_problem = await self._config()
        appendonly = settings.get("appendonly", "?")
        appendfsync = settings.get("appendfsync", "?")
        policy = settings.get("maxmemory-policy", "?")
        waits = self.wait_replicas > 0
        problems: list[str] = []
        if config_problem:
            problems.append(config_problem)
        elif appendonly != "yes" or appendfsync != "always":
            aof = "no AOF" if appendonly != "yes" else f"AOF with appendfsync {appendfsync}"
            if not waits:
                problems.append(
                    f"{aof}: claims written just before Redis stops may be forgotten and their "
                    "codes sent again (appendonly yes + appendfsync always, or "
                    "WECOM_REDIS_WAIT_REPLICAS >= 1, prevents it)"
                )
        if not config_problem and policy != EVICTION_FREE:
            problems.append(
                f"maxmemory-policy is {policy}: Redis may evict used codes under memory "
                f"pressure and they would be sent again (set {EVICTION_FREE})"
            )
        durable = waits if config_problem else not problems
        details = {
            "target": self.target,
            "appendonly": appendonly,
            "appendfsync": appendfsync,
            "maxmemory-policy": policy,
            "wait_replicas": str(self.wait_replicas),
        }
        return StoreReport("redis", durable, details, tuple(problems))

    async def _config(self) -> tuple[dict[str, str], str | None]:
        """CONFIG GET of the three settings (the weakest value over a cluster's primaries)."""
        try:
            found: dict[str, str] = {}
            for name in ("appendonly", "appendfsync", "maxmemory-policy"):
                if isinstance(self._client, RedisCluster):  # ask every primary, not one
                    primaries = RedisCluster.PRIMARIES
                    reply = await self._client.config_get(name, target_nodes=primaries)
                else:
                    reply = await self._client.config_get(name)
                found[name] = _weakest(name, reply)
        except ResponseError as error:
            return {}, (
                f"CONFIG GET is not allowed on this Redis ({_describe(error)}): its persistence "
                "and eviction cannot be checked"
                + ("" if self.wait_replicas else "; set WECOM_REDIS_WAIT_REPLICAS or allow CONFIG")
            )
        return found, None


def _weakest(name: str, reply: Any) -> str:
    """The value of ``name`` in a CONFIG GET reply; over several nodes, the least durable one."""
    values: list[str] = []
    if isinstance(reply, dict) and name.encode() not in reply and name not in reply:
        for per_node in reply.values():  # a cluster answers per node
            values.extend(_values(name, per_node))
    else:
        values.extend(_values(name, reply))
    if not values:
        return "?"
    rank = {"appendonly": ["no", "yes"], "appendfsync": ["no", "everysec", "always"]}
    order = rank.get(name)
    if order is None:  # maxmemory-policy: anything but noeviction is the weaker
        return next((value for value in values if value != EVICTION_FREE), values[0])
    return min(values, key=lambda value: order.index(value) if value in order else -1)


def _values(name: str, reply: Any) -> list[str]:
    if not isinstance(reply, dict):
        return []
    value = reply.get(name.encode(), reply.get(name))
    if value is None:
        return []
    return [value.decode() if isinstance(value, bytes) else str(value)]


def _describe(error: BaseException) -> str:
    """An error's class and message; redis-py's messages name hosts, never passwords."""
    message = str(error)
    name = type(error).__name__
    return f"{name}: {message}" if message else name
