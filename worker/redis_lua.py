"""A Lua script run on Redis by its SHA1, sent in full only when the server does not know it.

Every adapter on Redis does each operation as one script: one round trip, atomic,
timed by the server's ``TIME``. Each script touches exactly one key (or keys that
share a hash tag), so it runs on Redis Cluster too: the client routes it to the
node holding that slot.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from redis.exceptions import NoScriptError

if TYPE_CHECKING:
    from worker.redis_target import RedisClient

__all__ = ["LUA_NOW", "LuaScript"]

LUA_NOW = """
local function server_now(shift)
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2]) + tonumber(shift)
end
local function int(x) return string.format('%.0f', x) end
"""
"""Lua prelude: ``server_now(shift)`` is the server's clock in integer microseconds (plus a
shift, 0 except in tests), ``int(x)`` writes a number as an integer (never ``1e+15``)."""


class LuaScript:
    """A script with its SHA1: ``await script(client, keys, args)``."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        """Hold ``source`` (with :data:`LUA_NOW` prepended by the caller when it needs time)."""
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, client: RedisClient, keys: list[str], args: list[Any]) -> Any:
        """Run the script; a server that has not seen it yet (restart, failover) gets its text."""
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *args)
