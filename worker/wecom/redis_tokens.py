"""access_tokens shared by every replica through Redis: one gettoken per app, not one per replica.

A token is a hash ``{prefix}token:{KEY}`` (``t`` the token, ``u`` when to stop
using it) expiring when it stops being usable; ``KEY`` is
:func:`~worker.wecom.tokens.token_key` (corp, agentid and a digest of the secret),
so no key name holds a secret or a token. A refresh takes a short lock
``{prefix}token-lock:{KEY}`` (``SET NX PX`` with a random value, released only by
its holder through a compare-and-delete script); the other replicas poll for
the token it stores. A holder that dies leaves the lock to expire
(``lock_seconds``); a waiter that saw no token by then fetches one itself.

Redis is a help here, never a dependency: a replica that cannot reach it calls
gettoken itself (and logs that it does), so the worker keeps calling WeCom while
the state store is away. The token never appears in a log line or an error.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import TYPE_CHECKING, Final

import structlog
from redis.exceptions import RedisError

from worker.redis_lua import LuaScript
from worker.wecom.tokens import StoredToken

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from worker.redis_target import RedisConnection

__all__ = ["RedisTokenStore"]

log = structlog.get_logger("worker.wecom.redis_tokens")

_REDIS_ERRORS: Final = (RedisError, OSError, TimeoutError)

# Delete the token hash KEYS[1] only if it still holds the token ARGV[1]: a newer one stays.
_DISCARD_TOKEN = LuaScript(
    """
if redis.call('HGET', KEYS[1], 't') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
)
# Release the lock KEYS[1] only if this holder (ARGV[1]) still has it: after it expired and
# another replica took it, it is that replica's.
_UNLOCK = LuaScript(
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
)


class RedisTokenStore:
    """:class:`worker.wecom.tokens.TokenStore` on Redis, shared by every replica."""

    def __init__(
        self,
        connection: RedisConnection,
        *,
        prefix: str = "wecom:",
        lock_seconds: float = 15.0,
        poll_interval: float = 0.05,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Share tokens through ``connection`` (closed by its owner, not here).

        ``lock_seconds`` bounds one gettoken call (the client's timeout and a margin).
        """
        self._connection = connection
        self._prefix = prefix
        self._lock_ms = max(1, round(lock_seconds * 1000))
        self._poll = poll_interval
        self._clock = clock

    async def load(self, key: str) -> StoredToken | None:
        """The stored token, or None (also when Redis cannot be asked)."""
        try:
            return await self._load(key)
        except _REDIS_ERRORS as error:
            self._unreachable("load", key, error)
            return None

    async def save(self, key: str, token: StoredToken) -> None:
        """Share a fresh token until it stops being usable (nothing if Redis cannot be reached)."""
        try:
            await self._save(key, token)
        except _REDIS_ERRORS as error:
            self._unreachable("save", key, error)

    async def discard(self, key: str, access_token: str) -> None:
        """Forget the stored token if it is still ``access_token``."""
        try:
            async with self._connection.calls:
                await _DISCARD_TOKEN(
                    self._connection.client, [self._token_key(key)], [access_token]
                )
        except _REDIS_ERRORS as error:
            self._unreachable("discard", key, error)

    async def refresh(
        self,
        key: str,
        fetch: Callable[[], Awaitable[StoredToken]],
        usable: Callable[[StoredToken], bool],
    ) -> StoredToken:
        """The shared token if usable; else one replica fetches it while the others wait for it."""
        try:
            return await self._refresh(key, fetch, usable)
        except _REDIS_ERRORS as error:
            self._unreachable("refresh", key, error)
            return await fetch()

    async def _refresh(
        self,
        key: str,
        fetch: Callable[[], Awaitable[StoredToken]],
        usable: Callable[[StoredToken], bool],
    ) -> StoredToken:
        deadline = time.monotonic() + 2 * self._lock_ms / 1000
        while True:
            stored = await self._load(key)
            if stored is not None and usable(stored):
                return stored
            holder = secrets.token_hex(8)
            if await self._lock(key, holder):
                try:
                    stored = await self._load(key)  # saved while we asked for the lock
                    if stored is not None and usable(stored):
                        return stored
                    token = await fetch()
                    await self.save(key, token)
                    return token
                finally:
                    await self._unlock(key, holder)
            if time.monotonic() > deadline:  # the holder's gettoken is stuck: ask ourselves
                log.warning("wecom.token_wait_gave_up", key=key)
                return await fetch()
            await asyncio.sleep(self._poll)

    async def _load(self, key: str) -> StoredToken | None:
        async with self._connection.calls:
            token, until = await self._connection.client.hmget(self._token_key(key), ["t", "u"])
        if token is None or until is None:
            return None
        text = token.decode() if isinstance(token, bytes) else token
        return StoredToken(text, float(until))

    async def _save(self, key: str, token: StoredToken) -> None:
        ttl_ms = round((token.use_until - self._clock()) * 1000)
        if ttl_ms <= 0:
            return
        name = self._token_key(key)
        async with self._connection.calls, self._connection.client.pipeline() as pipe:
            pipe.hset(name, mapping={"t": token.access_token, "u": repr(token.use_until)})
            pipe.pexpire(name, ttl_ms)
            await pipe.execute()

    async def _lock(self, key: str, holder: str) -> bool:
        async with self._connection.calls:
            taken = await self._connection.client.set(
                self._lock_key(key), holder, nx=True, px=self._lock_ms
            )
        return bool(taken)

    async def _unlock(self, key: str, holder: str) -> None:
        try:
            async with self._connection.calls:
                await _UNLOCK(self._connection.client, [self._lock_key(key)], [holder])
        except _REDIS_ERRORS as error:  # the lock expires by itself
            self._unreachable("unlock", key, error)

    def _token_key(self, key: str) -> str:
        return f"{self._prefix}token:{{{key}}}"

    def _lock_key(self, key: str) -> str:
        return f"{self._prefix}token-lock:{{{key}}}"

    def _unreachable(self, what: str, key: str, error: BaseException) -> None:
        log.warning(
            "wecom.token_store_unreachable",
            action=what,
            key=key,
            store=self._connection.describe(),
            error=type(error).__name__,
            fallback="own gettoken" if what in {"refresh", "load"} else "none needed",
        )
