"""Script calls of many tasks sent to Redis together: one pipeline per turn of the event loop.

redis-py spends about 100 µs of CPU on each command it sends alone (pool, retry,
timeouts, packing, parsing) and a fraction of that on each command of a
pipeline. So, like the SQLite store's group commit, the calls made while a
batch is being sent wait and go together in the next one: under load one round
trip carries hundreds of scripts; a lone call goes out at once. Each script is
still atomic on its own; a pipeline is not a transaction and needs none.

A call marked ``replicated`` is followed by ``WAIT n`` in the same pipeline, on
the same connection (``WAIT`` counts the replicas that acknowledged every write
of its connection so far): one ``WAIT`` covers the whole batch.

On one Redis (standalone or Sentinel's master) the batch is packed here, as one
write of RESP commands, and the replies read off one pooled connection: redis-py's
pipeline spends more CPU packing and bookkeeping than the scripts take to run. A
cluster's batch goes through redis-py's cluster pipeline, which routes by slot.

A call whose caller was cancelled before its batch left is not sent. A failure
of the round trip fails every call of the batch with
:class:`~worker.errors.StoreUnavailable`; a script error fails its call alone.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError

from worker.errors import StoreUnavailable

if TYPE_CHECKING:
    from redis.asyncio.connection import ConnectionPool

    from worker.redis_lua import LuaScript
    from worker.redis_target import RedisConnection

__all__ = ["ScriptBatcher"]

_REDIS_ERRORS: Final = (RedisError, OSError, TimeoutError)


@dataclass(slots=True)
class _Call:
    script: LuaScript
    keys: tuple[str, ...]  # one key, or keys sharing a slot
    args: list[Any]
    what: str
    replicated: bool
    future: asyncio.Future[tuple[Any, int]]


class ScriptBatcher:
    """Runs :class:`~worker.redis_lua.LuaScript` calls of one key (or one slot's keys), batched."""

    def __init__(
        self,
        connection: RedisConnection,
        owner: str,
        *,
        wait_replicas: int = 0,
        wait_ms: int = 1000,
        limit: int = 512,
    ) -> None:
        """Send through ``connection``; ``owner`` names the user in errors ("redis state store")."""
        self._connection = connection
        self._owner = owner
        self._wait_replicas = wait_replicas
        self._wait_ms = wait_ms
        self._limit = limit
        self._queue: list[_Call] = []
        self._sender: asyncio.Task[None] | None = None

    async def run(
        self, script: LuaScript, key: str | tuple[str, ...], args: list[Any], what: str
    ) -> Any:
        """The script's reply; several keys must share a hash slot (Redis Cluster)."""
        reply, _ = await self._submit(script, key, args, what, replicated=False)
        return reply

    async def run_replicated(
        self, script: LuaScript, key: str | tuple[str, ...], args: list[Any], what: str
    ) -> tuple[Any, int]:
        """The script's reply and how many replicas acknowledged it within the wait."""
        return await self._submit(script, key, args, what, replicated=True)

    def _submit(
        self,
        script: LuaScript,
        key: str | tuple[str, ...],
        args: list[Any],
        what: str,
        *,
        replicated: bool,
    ) -> asyncio.Future[tuple[Any, int]]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Any, int]] = loop.create_future()
        keys = (key,) if isinstance(key, str) else key
        self._queue.append(_Call(script, keys, args, what, replicated, future))
        if self._sender is None:
            self._sender = loop.create_task(self._send_all(), name="redis script batches")
        return future

    async def _send_all(self) -> None:
        try:
            while self._queue:
                batch = [call for call in self._queue[: self._limit] if not call.future.done()]
                del self._queue[: self._limit]
                if batch:
                    await self._send(batch)
        finally:
            self._sender = None

    async def _send(self, batch: list[_Call]) -> None:
        try:
            async with self._connection.calls:
                replies, acked = await self._pipeline(batch)
                missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
                if missing:  # a restarted or failed-over Redis: load the scripts, send those again
                    for script in {id(batch[i].script): batch[i].script for i in missing}.values():
                        await self._connection.client.script_load(script.source)
                    again, acked = await self._pipeline([batch[i] for i in missing])
                    for i, reply in zip(missing, again, strict=True):
                        replies[i] = reply
        except _REDIS_ERRORS as error:
            for call in batch:
                _fail(call, self._unavailable(call.what, error))
            return
        for call, reply in zip(batch, replies, strict=True):
            if isinstance(reply, Exception):
                _fail(call, self._unavailable(call.what, reply))
            elif not call.future.done():  # its caller was cancelled meanwhile
                call.future.set_result((reply, acked))

    async def _pipeline(self, batch: list[_Call]) -> tuple[list[Any], int]:
        """One round trip: every call's reply, and the replicas' acknowledgements (or 0)."""
        replicated = self._wait_replicas > 0 and any(call.replicated for call in batch)
        commands: list[tuple[Any, ...]] = [
            ("EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args) for call in batch
        ]
        if replicated:
            commands.append(("WAIT", self._wait_replicas, self._wait_ms))
        pool: ConnectionPool | None = getattr(self._connection.client, "connection_pool", None)
        if pool is not None:
            replies = await _round_trip(pool, commands)
        else:  # a cluster: its pipeline routes each script to its slot's node
            async with self._connection.client.pipeline(transaction=False) as pipe:
                for command in commands:
                    pipe.execute_command(*command)
                replies = await pipe.execute(raise_on_error=False)
        if not replicated:
            return replies, 0
        acked = replies.pop()
        if isinstance(acked, Exception):
            raise acked
        return replies, int(acked)

    def _unavailable(self, what: str, error: BaseException) -> StoreUnavailable:
        message = str(error)
        detail = f"{type(error).__name__}: {message}" if message else type(error).__name__
        return StoreUnavailable(
            f"{self._owner} {self._connection.describe()}: cannot {what}: {detail}"
        )


async def _round_trip(pool: ConnectionPool, commands: list[tuple[Any, ...]]) -> list[Any]:
    """Send ``commands`` in one write on a pooled connection; each reply, or its error reply.

    A connection that turns out to be broken is dropped and the batch sent once more on
    a fresh one (as the client's own retry does); any other failure drops the connection,
    whose replies can no longer be matched to their commands.
    """
    packed = pack_commands(commands)
    for attempt in (1, 2):
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await connection.send_packed_command(packed, check_health=False)
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await connection.read_response())
                except ResponseError as error:  # an error reply: this command's, the rest follow
                    replies.append(error)
        except RedisConnectionError:
            await connection.disconnect()
            if attempt == 2:  # the second try failed too
                raise
        except BaseException:
            await connection.disconnect()
            raise
        else:
            return replies
        finally:
            await pool.release(connection)
    raise AssertionError("unreachable")  # pragma: no cover


def pack_commands(commands: list[tuple[Any, ...]]) -> bytes:
    """Commands as RESP arrays of bulk strings, as redis-py encodes their arguments."""
    parts: list[bytes] = []
    for command in commands:
        parts.append(b"*%d\r\n" % len(command))
        for value in command:
            raw = _encode(value)
            parts += (b"$%d\r\n" % len(raw), raw, b"\r\n")
    return b"".join(parts)


def _encode(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool):
        raise TypeError("a bool is not a Redis argument: send 0 or 1")
    if isinstance(value, int):
        return b"%d" % value
    if isinstance(value, float):
        return repr(value).encode()
    raise TypeError(f"{type(value).__name__} is not a Redis argument")


def _fail(call: _Call, error: BaseException) -> None:
    if not call.future.done():  # its caller was cancelled meanwhile
        call.future.set_exception(error)
