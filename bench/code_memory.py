"""What remembering one response_code costs in each state store, before and after the replay window.

    .venv/bin/python bench/code_memory.py [--codes 100000] [--command-id uuid|short|long]
                                          [--per-hash 55]

Both stores get the same work: ``--codes`` codes claimed and completed (64 in
flight) with a realistic stored Result (~300 bytes), then time moves past the
replay window and each store does what it does there. Measured:

* **SQLite**: bytes of the pages (``dbstat``) of the ``codes`` table and its
  index before the window, and of the ``kept`` table and its index after the
  store shrank every record (``keep_due``, what its background pass does),
  divided by the number of codes. Pages are counted whole, so the B-tree's
  free space is in the figure.
* **Redis** (a server started here on loopback): growth of ``used_memory`` per
  code with every full record, then after the records are gone (what their
  TTL, the window, does; the bench deletes them), leaving the kept outcomes. Redis
  keeps them in small hashes per slot, split and 6 h; at WeCom's ceiling one
  hash holds ~55 codes (``--per-hash``), so the bench gives its codes hash
  tags that spread them over as many hashes as that rate fills; the per-hash
  overhead is then what it would be at the ceiling
  (small hashes per slot and 6 h); ``MEMORY USAGE`` of one full record and of one
  kept hash divided by its codes.

Then a capacity table for WeCom's ceiling of 10,000 calls per minute per corp:
one window of full records (1 h: 600,000) plus 72 h of kept outcomes
(43.2 million).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests/ is not an installed package

import redis  # noqa: E402 - after the path

from tests.services import RedisServer  # noqa: E402 - needs ROOT on sys.path
from wecom_card_contracts import Result, encode_result  # noqa: E402
from worker.ports import CodeKey, StateStore  # noqa: E402
from worker.redis_target import connect_redis, parse_redis_url  # noqa: E402
from worker.state.redis import KEPT_SPLIT, RedisStateStore, code_key, kept_base  # noqa: E402
from worker.state.sqlite import SqliteStateStore  # noqa: E402

CORP = "ww0123456789abcdef"
AGENT = 1000002
WINDOW = 3600.0
PER_MINUTE = 10_000
CODES_PER_WINDOW = PER_MINUTE * 60  # 1 h
CODES_PER_72H = PER_MINUTE * 60 * 72


def command_id(style: str, i: int) -> str:
    """A command id in the given style."""
    if style == "short":
        return f"order-{i}-approve"
    if style == "long":
        return f"tenant-7/approval-flow/{uuid.UUID(int=i)}/step-2"
    return str(uuid.UUID(int=i * 7919 + 1))


def response_code(i: int, tags: int) -> str:
    """A code of 43 characters like WeCom's, in one of ``tags`` hash slots."""
    return f"{{{i % tags}}}{i:012d}".rjust(43, "K")


def stored_result(cmd: str, code: str, now: float) -> bytes:
    """The Result the pipeline stores for an ``ok`` call."""
    return encode_result(
        Result(
            command_id=cmd,
            correlation_id=cmd,
            status="ok",
            agentid=AGENT,
            response_code=code,
            errcode=0,
            errmsg="ok",
            attempts=1,
            received_at=now,
            finished_at=now + 0.08,
        )
    )


async def fill(store: StateStore, codes: int, style: str, tags: int) -> int:
    """Claim and complete ``codes`` codes, 64 in flight; the mean stored Result size."""
    gate = asyncio.Semaphore(64)
    sizes = 0

    async def one(i: int) -> None:
        nonlocal sizes
        cmd, code = command_id(style, i), response_code(i, tags)
        result = stored_result(cmd, code, time.time())
        sizes += len(result)
        async with gate:
            await store.claim(CodeKey(CORP, code), cmd)
            await store.complete(CodeKey(CORP, code), cmd, result, spent=True)

    await asyncio.gather(*(one(i) for i in range(codes)))
    return sizes // codes


def table_bytes(path: str, names: tuple[str, ...]) -> int:
    """Bytes of the pages holding these tables and indexes."""
    with sqlite3.connect(path) as conn:
        marks = ",".join("?" * len(names))
        query = f"SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name IN ({marks})"
        return int(conn.execute(query, names).fetchone()[0])


async def sqlite_figures(codes: int, style: str, tags: int) -> tuple[float, float, int]:
    """Bytes per code with full records, then with kept outcomes; mean Result size."""
    shift = [0.0]

    def clock() -> float:
        return time.time() + shift[0]

    with tempfile.TemporaryDirectory() as directory:
        path = f"{directory}/state.sqlite3"
        store = await SqliteStateStore.open(
            path,
            owner="bench",
            synchronous="NORMAL",  # the size is the same; the bench runs faster
            clock=clock,
            purge_interval=3600.0,  # the bench shrinks when it wants to
            purge_batch=5000,
            replay_window_seconds=WINDOW,
        )
        result_size = await fill(store, codes, style, tags)
        full = table_bytes(path, ("codes", "codes_expires_at")) / codes
        shift[0] = WINDOW + 1
        shrunk = await store.keep_due()
        await store.close()
        assert shrunk == codes, f"shrank {shrunk} of {codes}"
        kept = table_bytes(path, ("kept", "kept_expires_at")) / codes
    return full, kept, result_size


async def redis_figures(codes: int, style: str, tags: int) -> tuple[float, float, int, float]:
    """used_memory per code with full records and with kept outcomes; MEMORY USAGE of each."""
    server = RedisServer()
    server.start()
    try:
        connection = await connect_redis(
            parse_redis_url(server.url), password=None, socket_timeout=5.0
        )
        store = await RedisStateStore.open(connection, owner="bench", replay_window_seconds=WINDOW)
        with redis.Redis.from_url(server.url) as client:
            memory: Callable[[], int] = lambda: int(client.info("memory")["used_memory"])  # noqa: E731
            before = memory()
            await fill(store, codes, style, tags)
            full = (memory() - before) / codes
            sample = CodeKey(CORP, response_code(0, tags))
            full_usage = int(client.memory_usage(code_key("wecom:", sample)) or 0)
            (bucket,) = client.keys(kept_base("wecom:", sample) + "*")
            kept_usage = int(client.memory_usage(bucket) or 0) / int(client.hlen(bucket))
            gone = 0
            for batch in batched(client.scan_iter(match="wecom:code:*", count=5000), 5000):
                gone += int(client.unlink(*batch))  # what the window's TTL does
            assert gone == codes, f"{gone} records of {codes}"
            kept = (memory() - before) / codes
        await store.close()
    finally:
        server.close()
    return full, kept, full_usage, kept_usage


def batched(names: object, size: int) -> list[list[bytes]]:
    """Key names in lists of ``size``."""
    out: list[list[bytes]] = [[]]
    for name in names:  # type: ignore[attr-defined]
        if len(out[-1]) == size:
            out.append([])
        out[-1].append(name)
    return [batch for batch in out if batch]


def capacity(full: float, kept: float) -> str:
    """Disk or memory for one corp at 10,000 calls/min: a window of full records + 72 h kept."""
    window, kept_72h = CODES_PER_WINDOW * full / 1e9, CODES_PER_72H * kept / 1e9
    return f"{window:.2f} + {kept_72h:.2f} = {window + kept_72h:.1f} GB"


async def main() -> None:
    """Print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--codes", type=int, default=100_000)
    parser.add_argument("--command-id", choices=("uuid", "short", "long"), default="uuid")
    parser.add_argument("--per-hash", type=int, default=55, help="codes per kept hash (Redis)")
    args = parser.parse_args()
    tags = max(1, args.codes // (args.per_hash * KEPT_SPLIT))
    s_full, s_kept, result_size = await sqlite_figures(args.codes, args.command_id, tags)
    r_full, r_kept, r_full_usage, r_kept_usage = await redis_figures(
        args.codes, args.command_id, tags
    )
    print(
        f"\n{args.codes} codes, command ids {args.command_id} "
        f"(e.g. {command_id(args.command_id, 1)!r}), stored Result {result_size} bytes, "
        f"response_code {len(response_code(0, tags))} characters, "
        f"{args.codes / (tags * KEPT_SPLIT):.0f} codes per kept hash in Redis"
    )
    print("\n| store | bytes / code, full record | bytes / code, kept outcome | how measured |")
    print("| --- | ---: | ---: | --- |")
    print(f"| SQLite | {s_full:.0f} | {s_kept:.0f} | dbstat pages of the table + its index |")
    print(
        f"| Redis | {r_full:.0f} | {r_kept:.0f} | used_memory growth "
        f"(MEMORY USAGE: {r_full_usage} of one full record, {r_kept_usage:.0f} per code of "
        "one kept hash) |"
    )
    print(
        f"\none corp at {PER_MINUTE:,} calls/min: {CODES_PER_WINDOW:,} full records "
        f"(1 h window) + {CODES_PER_72H:,} kept outcomes (72 h)"
    )
    print("\n| store | window + 72 h kept | without the window (all 72 h full) |")
    print("| --- | --- | --- |")
    for name, full, kept in (("SQLite (disk)", s_full, s_kept), ("Redis (memory)", r_full, r_kept)):
        print(f"| {name} | {capacity(full, kept)} | {CODES_PER_72H * full / 1e9:.1f} GB |")


if __name__ == "__main__":
    asyncio.run(main())
