"""Script batches packed by hand: the bytes redis-py would send, and a real Redis's replies."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import NoScriptError

from worker.redis_batch import ScriptBatcher, pack_commands
from worker.redis_lua import LuaScript
from worker.redis_target import connect_redis, parse_redis_url

COMMANDS: list[tuple[Any, ...]] = [
    ("EVALSHA", "0" * 40, 2, "k:é", b"\x00\xff", 0, -7, 2**62, 1.5, 1e-300, ""),
    ("WAIT", 1, 1000),
    ("PING",),
]


def test_commands_are_packed_as_redis_py_packs_them() -> None:
    """Given str, bytes, int and float arguments, then the bytes are redis-py's, byte for byte."""
    expected = b"".join(b"".join(Connection().pack_command(*command)) for command in COMMANDS)
    assert pack_commands(COMMANDS) == expected


def test_a_bool_is_refused_as_redis_py_refuses_it() -> None:
    """Given a bool argument, then TypeError (True would otherwise go as b'True')."""
    with pytest.raises(TypeError, match="bool"):
        pack_commands([("SET", "k", True)])


async def test_an_error_reply_fails_its_call_alone_and_unknown_scripts_are_loaded(
    fresh_redis_url: str,
) -> None:
    """Given a batch where one script fails, then its caller gets the error and the others
    their replies; scripts Redis forgot (SCRIPT FLUSH) are loaded and sent again."""
    connection = await connect_redis(
        parse_redis_url(fresh_redis_url), password=None, socket_timeout=1.0
    )
    echo = LuaScript("return ARGV[1]")
    broken = LuaScript("return redis.call('INCR', KEYS[1])")  # on a string: an error reply
    try:
        await connection.client.set("text", "abc")
        await connection.client.script_flush()
        batcher = ScriptBatcher(connection, "test")
        replies = await asyncio.gather(
            batcher.run(echo, "a", ["one"], "echo"),
            batcher.run(broken, "text", [], "increment"),
            batcher.run(echo, "b", [2], "echo"),
            return_exceptions=True,
        )
        assert replies[0] == b"one"
        assert replies[2] == b"2"
        assert "cannot increment" in str(replies[1])
        assert not isinstance(replies[1], NoScriptError)
    finally:
        await connection.close()
