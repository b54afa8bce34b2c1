"""Hostile deliveries built from valid commands: the fuzz test's and ``bench/fuzz.py``'s inputs.

A valid command (a generic value, as the Structs encode it) is first broken at
the value level (a field of the wrong type, a huge or non-finite number, an
unknown field, deep nesting), then encoded as JSON or msgpack, then broken at
the byte level (truncated, bytes flipped or inserted, a slice repeated, invalid
UTF-8, a msgpack length header claiming gigabytes), then maybe compressed
(or its compressed stream damaged), under a content_type that may not match.
Every choice comes from one :class:`random.Random`, so a seed replays a case.
"""

from __future__ import annotations

import gzip
import math
import random
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import msgspec

from wecom_card_contracts import CommandInvalid, read_command
from worker.apps import App, AppRegistry
from worker.concurrency import CorpConcurrency
from worker.metrics import Metrics
from worker.pipeline import HeldClaims, Pipeline
from worker.ports import Delivery
from worker.ratelimit import LocalRateLimiter, parse_rate_limit
from worker.state.sqlite import SqliteStateStore
from worker.wecom.client import WeComClient
from worker.wecom.http import HttpOrigin
from worker.wecom.retry import RetryPolicy
from worker.wecom.tokens import TokenCache, create_session

MAX_BYTES = 64 * 1024
"""The size cap of the fuzz runs: small, so oversized inputs stay cheap to build."""
UNUSED_API = "http://127.0.0.1:9"  # a rejected command never reaches WeCom

Value = Any
Mutation = Callable[[bytes, random.Random], bytes]

STRANGE_VALUES: tuple[Value, ...] = (
    None,
    "",
    "x" * 300,
    "\u0000\ud7ff\ue000\U0010ffff",
    -1,
    0,
    2**63,
    -(2**63) - 1,
    1.5,
    -0.0,
    1e308,
    math.nan,
    math.inf,
    -math.inf,
    True,
    [],
    {},
    [None],
    {"": None},
    {"card_type": "vote_interaction"},
    b"\x00\xff",
)
"""Values of every JSON / msgpack type, at their edges, to put where they do not belong."""


@dataclass(frozen=True, slots=True)
class HostileDelivery:
    """A body with the AMQP properties it arrives with, and how it was made."""

    body: bytes
    content_type: str | None
    content_encoding: str | None
    recipe: tuple[str, ...]

    def delivery(self) -> Delivery:
        """The same as the pipeline receives it."""
        return Delivery(
            self.body, content_type=self.content_type, content_encoding=self.content_encoding
        )


def judge(hostile: HostileDelivery, max_bytes: int = MAX_BYTES) -> str:
    """``valid`` or ``invalid``; anything but a Command or a described refusal fails."""
    try:
        read_command(
            hostile.body,
            content_type=hostile.content_type,
            content_encoding=hostile.content_encoding,
            max_bytes=max_bytes,
        )
    except CommandInvalid as invalid:
        if not invalid.message or not (invalid.path is None or invalid.path.strip()):
            raise AssertionError(f"a refusal without words: {invalid!r} {hostile.recipe}") from None
        return "invalid"
    return "valid"


# Value-level mutations -------------------------------------------------------------------


def places(value: Value, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a node of a generic value, the root included."""
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(places(item, (*path, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(places(item, (*path, index)))
    return found


def replaced(value: Value, path: tuple[Any, ...], new: Value) -> Value:
    """``value`` with the node at ``path`` replaced by ``new`` (a copy along the path)."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: replaced(value[head], rest, new)}
    copy = list(value)
    copy[head] = replaced(copy[head], rest, new)
    return copy


def nested(depth: int) -> Value:
    """A list nested ``depth`` deep, built without recursion."""
    inner: Value = []
    for _ in range(depth):
        inner = [inner]
    return inner


def break_value(value: Value, rng: random.Random, recipe: list[str]) -> Value:
    """Zero to three value-level breakages of a valid command."""
    for _ in range(rng.choice((0, 0, 1, 1, 2, 3))):
        path = rng.choice(places(value))
        kind = rng.randrange(5)
        if kind == 0:
            recipe.append(f"value {path}")
            value = replaced(value, path, rng.choice(STRANGE_VALUES))
        elif kind == 1:
            recipe.append(f"nest {path}")
            value = replaced(value, path, nested(rng.choice((10, 100, 200))))
        elif not isinstance(value, dict):
            continue
        elif kind == 2:
            recipe.append("unknown field")
            value = {**value, rng.choice(("commandId", "task_id", "x" * 40)): 1}
        elif kind == 3 and isinstance(value.get("request"), dict):
            recipe.append("userids")
            userids = ["u"] * rng.choice((1001, 20_000))
            value = {**value, "request": {**value["request"], "userids": userids}}
        else:
            recipe.append("issued_at")
            value = {**value, "code_issued_at": rng.choice((math.nan, -math.inf, -1.0, 1e300))}
    return value


# Byte-level mutations --------------------------------------------------------------------


def truncate(body: bytes, rng: random.Random) -> bytes:
    """Cut the body short."""
    return body[: rng.randrange(len(body) + 1)]


def flip(body: bytes, rng: random.Random) -> bytes:
    """Overwrite a few bytes with random ones."""
    data = bytearray(body)
    for _ in range(rng.randint(1, 8)):
        if data:
            data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def insert(body: bytes, rng: random.Random) -> bytes:
    """Insert random bytes somewhere."""
    at = rng.randrange(len(body) + 1)
    return body[:at] + rng.randbytes(rng.randint(1, 16)) + body[at:]


def repeat(body: bytes, rng: random.Random) -> bytes:
    """Repeat a slice of the body many times."""
    if not body:
        return body
    start = rng.randrange(len(body))
    end = min(len(body), start + rng.randint(1, 32))
    return body[:end] + body[start:end] * rng.randint(2, 5000) + body[end:]


def bad_utf8(body: bytes, rng: random.Random) -> bytes:
    """Put bytes that are not UTF-8 (a lone continuation, a surrogate, an overlong form) inside."""
    at = rng.randrange(len(body) + 1)
    return body[:at] + rng.choice((b"\xff", b"\x80", b"\xed\xa0\x80", b"\xc0\xaf")) + body[at:]


HUGE_HEADERS = (
    b"\xdd\xff\xff\xff\xff",  # array32 of 4 billion items
    b"\xdf\xff\xff\xff\xff",  # map32 of 4 billion pairs
    b"\xdb\xff\xff\xff\xf0",  # str32 of 4 GiB
    b"\xc6\xff\xff\xff\xff",  # bin32 of 4 GiB
    b"\xc9\xff\xff\xff\xff\x01",  # ext32 of 4 GiB
    b"\xdc\xff\xff",  # array16 of 65535 items
)


def huge_length(body: bytes, rng: random.Random) -> bytes:
    """Splice in a msgpack header claiming gigabytes, or a JSON number of a million digits."""
    at = rng.randrange(len(body) + 1)
    if rng.random() < 0.7:
        return body[:at] + rng.choice(HUGE_HEADERS) + body[at:]
    return body[:at] + b"1" * rng.choice((400, 20_000)) + b"e99999" + body[at:]


BYTE_MUTATIONS: tuple[Mutation, ...] = (truncate, flip, insert, repeat, bad_utf8, huge_length)

CONTENT_TYPES = {
    "json": ("application/json", None, "application/json; charset=utf-8"),
    "msgpack": ("application/msgpack", "application/msgpack; charset=binary"),
}
OTHER_TYPES = ("text/plain", "application/xml", "application/x-msgpack", "")


def hostile_delivery(command: Value, rng: random.Random) -> HostileDelivery:
    """One hostile delivery made from the generic value of a valid command."""
    recipe: list[str] = []
    value = break_value(command, rng, recipe)
    fmt = rng.choice(("json", "msgpack"))
    try:
        body = msgspec.json.encode(value) if fmt == "json" else msgspec.msgpack.encode(value)
    except (TypeError, ValueError, OverflowError):  # NaN in JSON, bytes, ints past 64 bits
        fmt = "msgpack"
        body = msgspec.msgpack.encode(value) if _msgpack_fits(value) else b"\xc1"
    recipe.append(fmt)
    for _ in range(rng.choice((0, 1, 1, 2, 3))):
        mutation = rng.choice(BYTE_MUTATIONS)
        recipe.append(mutation.__name__)
        body = mutation(body, rng)
    content_type = rng.choice(CONTENT_TYPES[fmt])
    if rng.random() < 0.08:
        content_type = rng.choice(
            (*OTHER_TYPES, *CONTENT_TYPES["msgpack" if fmt == "json" else "json"])
        )
    body, encoding = compress(body, rng, recipe)
    return HostileDelivery(body, content_type, encoding, tuple(recipe))


def _msgpack_fits(value: Value) -> bool:
    try:
        msgspec.msgpack.encode(value)
    except (TypeError, ValueError, OverflowError):
        return False
    return True


def compress(body: bytes, rng: random.Random, recipe: list[str]) -> tuple[bytes, str | None]:
    """Maybe gzip or deflate the body, maybe damage the stream, maybe make it a bomb."""
    roll = rng.random()
    if roll < 0.7:
        return body, rng.choice((None, None, "identity", ""))
    encoding = rng.choice(("gzip", "deflate", "br", "gzip, deflate"))
    recipe.append(encoding)
    if encoding not in {"gzip", "deflate"}:
        return body, encoding
    if roll < 0.75:
        recipe.append("bomb")
        body = body + b" " * (MAX_BYTES * rng.choice((2, 50)))
    packed = gzip.compress(body, 1) if encoding == "gzip" else zlib.compress(body, 1)
    if roll > 0.9:
        mutation = rng.choice((truncate, flip, insert))
        recipe.append(f"{mutation.__name__} compressed")
        packed = mutation(packed, rng)
    return packed, encoding


@asynccontextmanager
async def rejecting_pipeline(max_bytes: int = MAX_BYTES) -> AsyncIterator[Pipeline]:
    """A pipeline on real parts (SQLite store, WeCom client) for deliveries that end rejected.

    Its WeCom API address is closed: use it only for deliveries read_command refuses.
    """
    with TemporaryDirectory() as state_dir:
        store = await SqliteStateStore.open(
            str(Path(state_dir) / "state.db"), owner="hostile", lease_seconds=5
        )
        session = create_session()
        origin = HttpOrigin(UNUSED_API, max_connections=1)
        metrics = Metrics()
        client = WeComClient(
            origin,
            tokens=TokenCache(session, UNUSED_API, metrics),
            limiter=LocalRateLimiter(parse_rate_limit("10/s")),
            concurrency=CorpConcurrency(1),
            metrics=metrics,
            policy=RetryPolicy(budget=1.0, base_delay=0.01, max_delay=0.05),
        )
        try:
            yield Pipeline(
                apps=AppRegistry([App("ww-hostile", 1000002, "hostile-secret")]),
                store=store,
                caller=client,
                claims=HeldClaims(),
                max_message_bytes=max_bytes,
                max_limiter_wait=0.1,
            )
        finally:
            await origin.close()
            await session.close()
            await store.close()
