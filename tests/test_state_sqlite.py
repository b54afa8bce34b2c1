"""The SQLite state store against real database files: records, locks, purge, durability, failures.

The behaviour every store shares (claim, complete, release, renew) is in test_state_store.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sqlite3
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from worker.errors import StoreLocked, StoreUnavailable
from worker.ports import AlreadyUsed, Claimed, CodeKey, Replay, StateStore
from worker.state.sqlite import SqliteStateStore, filesystem_of

LEASE = 60.0
RETENTION = 73 * 3600.0
KEY = CodeKey("ww0123456789abcdef", "code-1")
RESULT_A = b'{"command_id":"a","status":"ok"}'
RESULT_B = b'{"command_id":"b","status":"failed"}'
FRESH = Claimed(maybe_spent=False)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_764_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


Opener = Callable[..., Coroutine[Any, Any, SqliteStateStore]]


@pytest.fixture
def clock() -> Clock:
    """A fresh hand-moved clock."""
    return Clock()


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    """Where this test's database lives."""
    return str(tmp_path / "state.sqlite3")


@pytest.fixture
async def open_store(db_path: str, clock: Clock) -> AsyncIterator[Opener]:
    """Opens stores on this test's database (hand-moved clock by default); closes them all after."""
    opened: list[SqliteStateStore] = []

    async def opener(**overrides: Any) -> SqliteStateStore:
        options: dict[str, Any] = {"owner": "owner-1", "clock": clock, **overrides}
        path = options.pop("path", db_path)
        store = await SqliteStateStore.open(path, **options)
        opened.append(store)
        return store

    yield opener
    for store in opened:
        await store.close()


@pytest.fixture
async def store(open_store: Opener) -> SqliteStateStore:
    """An open store on this test's database."""
    return await open_store()


def rows(db_path: str) -> list[tuple[Any, ...]]:
    """Every record, read through a connection of its own."""
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        return conn.execute(
            "SELECT corp_id, response_code, state, command_id, maybe_spent, spent FROM codes"
        ).fetchall()


def replace_by_directory(db_path: str) -> None:
    """Swap the database file for a directory of the same name."""
    Path(db_path).unlink()
    Path(db_path).mkdir()


def delete(db_path: str) -> None:
    """Delete the database file."""
    Path(db_path).unlink()


def execute(db_path: str, sql: str) -> None:
    """Change the database behind the store's back, as an operator's shell would."""
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute(sql)


# --- records as written ---------------------------------------------------------------------


async def test_records_hold_state_holder_and_flags(store: SqliteStateStore, db_path: str) -> None:
    """Claim, release and completion are written as the row's state, holder and spent flags."""
    await store.claim(KEY, "a")
    assert rows(db_path) == [(KEY.corp_id, KEY.response_code, "claimed", "a", 0, 0)]
    await store.release(KEY, "a", maybe_spent=True)
    assert rows(db_path)[0][2:6] == ("released", "a", 1, 0)
    await store.claim(KEY, "b")
    await store.complete(KEY, "b", RESULT_B, spent=True)
    assert rows(db_path)[0][2:6] == ("done", "b", 1, 1)


async def test_release_of_an_orphan_from_another_owner_changes_nothing(
    open_store: Opener, db_path: str
) -> None:
    """A claim left by an earlier process is not this process's to release."""
    first = await open_store(owner="owner-1")
    await first.claim(KEY, "a")
    await first.close()
    second = await open_store(owner="owner-2")
    await second.release(KEY, "a", maybe_spent=False)
    assert rows(db_path)[0][2:4] == ("claimed", "a")


# --- retention ------------------------------------------------------------------------------


async def test_purge_removes_records_past_retention(
    open_store: Opener, clock: Clock, db_path: str
) -> None:
    """Records older than the retention are deleted (in batches); younger ones stay."""
    store = await open_store(purge_batch=7)
    for i in range(20):
        key = CodeKey(KEY.corp_id, f"old-{i}")
        await store.claim(key, f"c{i}")
        await store.complete(key, f"c{i}", RESULT_A, spent=True)
    clock.advance(RETENTION - 10)
    await store.claim(KEY, "young")
    clock.advance(10)
    assert await store.purge_expired() == 20
    assert [r[1:4] for r in rows(db_path)] == [(KEY.response_code, "claimed", "young")]


async def test_record_past_retention_counts_as_absent_before_purge(
    store: SqliteStateStore, clock: Clock
) -> None:
    """A code whose record outlived retention is fresh again even if no purge ran yet."""
    await store.claim(KEY, "a")
    await store.complete(KEY, "a", RESULT_A, spent=True)
    clock.advance(RETENTION)
    assert await store.claim(KEY, "b") == Claimed(maybe_spent=False)


async def test_purge_runs_at_open(open_store: Opener, clock: Clock, db_path: str) -> None:
    """Opening a database purges what expired while no worker ran."""
    first = await open_store()
    await first.complete(KEY, "a", RESULT_A, spent=True)
    await first.close()
    clock.advance(RETENTION + 1)
    await open_store()
    for _ in range(200):
        if not rows(db_path):
            break
        await asyncio.sleep(0.01)
    assert rows(db_path) == []


def kept_rows(db_path: str) -> list[tuple[bytes, int]]:
    """Every kept outcome (digest left out) and its expiry."""
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        return conn.execute("SELECT outcome, expires_at FROM kept").fetchall()


# --- the replay window ----------------------------------------------------------------------


async def test_done_records_shrink_after_the_window_and_go_after_retention(
    open_store: Opener, clock: Clock, db_path: str
) -> None:
    """Past the window a done record becomes a kept outcome of a few dozen bytes; it expires with the retention."""
    store = await open_store(purge_batch=7, replay_window_seconds=600.0)
    for i in range(20):
        key = CodeKey(KEY.corp_id, f"old-{i}")
        await store.claim(key, f"c{i}")
        await store.complete(key, f"c{i}", RESULT_A, spent=True)
    await store.claim(KEY, "held")
    clock.advance(599)
    assert await store.keep_due() == 0
    clock.advance(2)
    assert await store.keep_due() == 20
    assert [r[1:4] for r in rows(db_path)] == [(KEY.response_code, "claimed", "held")]
    kept = kept_rows(db_path)
    assert len(kept) == 20
    assert all(len(outcome) <= 17 + 4 for outcome, _ in kept)  # 17 bytes + "=c<i>"
    assert await store.claim(CodeKey(KEY.corp_id, "old-3"), "other") == AlreadyUsed("c3")
    clock.advance(RETENTION - 600)
    assert await store.purge_expired() == 21  # the kept outcomes and the forgotten claim
    assert kept_rows(db_path) == []
    assert await store.claim(CodeKey(KEY.corp_id, "old-3"), "other") == FRESH


async def test_the_background_pass_shrinks_done_records(
    open_store: Opener, clock: Clock, db_path: str
) -> None:
    """The purge pass that runs on its own also shrinks what the window left behind."""
    store = await open_store(purge_interval=0.02, replay_window_seconds=600.0)
    await store.claim(KEY, "a")
    await store.complete(KEY, "a", RESULT_A, spent=True)
    clock.advance(601)
    for _ in range(300):
        if kept_rows(db_path):
            break
        await asyncio.sleep(0.01)
    assert rows(db_path) == []
    assert len(kept_rows(db_path)) == 1


async def test_a_database_of_schema_1_is_upgraded(open_store: Opener, db_path: str) -> None:
    """A database an older worker wrote gains the kept table and schema 2 (older workers refuse it)."""
    first = await open_store()
    await first.complete(KEY, "a", RESULT_A, spent=True)
    await first.close()
    execute(db_path, "DROP TABLE kept")
    execute(db_path, "PRAGMA user_version = 1")
    store = await open_store()
    assert await store.claim(KEY, "b") == AlreadyUsed("a")
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (2,)
    assert kept_rows(db_path) == []


# --- one process per database, restarts ----------------------------------------------------


async def test_second_opener_in_same_process_is_locked_out(
    store: SqliteStateStore, open_store: Opener
) -> None:
    """Two stores on one file would break single use: the second is refused with a clear reason."""
    with pytest.raises(StoreLocked) as caught:
        await open_store(owner="owner-2")
    message = str(caught.value)
    assert f"pid {os.getpid()}" in message
    assert "one replica" in message
    assert "redis://" in message
    assert await store.claim(KEY, "a") == FRESH  # the first store is unharmed


async def test_reopen_after_close_sees_the_data(open_store: Opener, db_path: str) -> None:
    """Outcomes outlive the process: a new store on the same file replays and refuses them."""
    first = await open_store(owner="owner-1")
    await first.claim(KEY, "a")
    await first.complete(KEY, "a", RESULT_A, spent=True)
    await first.close()
    second: StateStore = await open_store(owner="owner-2")  # mypy: it is a StateStore
    assert await second.claim(KEY, "a") == Replay(RESULT_A)
    assert await second.claim(KEY, "b") == AlreadyUsed("a")


async def test_orphaned_claim_of_a_killed_process_is_taken_over_at_once(db_path: str) -> None:
    """A worker SIGKILLed mid-call locks others out while alive; after it dies its claim is maybe spent."""
    script = (
        "import asyncio, sys\n"
        "from worker.ports import CodeKey\n"
        "from worker.state.sqlite import SqliteStateStore\n"
        "async def main():\n"
        "    store = await SqliteStateStore.open(sys.argv[1], owner='doomed')\n"
        f"    await store.claim(CodeKey({KEY.corp_id!r}, {KEY.response_code!r}), 'a')\n"
        "    print('claimed', flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, db_path, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 20)
        assert line == b"claimed\n"
        with pytest.raises(StoreLocked, match=f"pid {process.pid}"):
            await SqliteStateStore.open(db_path, owner="survivor")
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()
    store = await SqliteStateStore.open(db_path, owner="survivor")  # real clock: lease not over
    try:
        assert await store.claim(KEY, "b") == Claimed(maybe_spent=True)
        assert (await store.report()).details["orphaned_claims_at_open"] == "1"
    finally:
        await store.close()


# --- concurrency and batching ---------------------------------------------------------------


async def test_a_failing_operation_fails_alone(store: SqliteStateStore) -> None:
    """A value SQLite cannot store fails its own call; the others queued with it succeed."""
    keys = [CodeKey(KEY.corp_id, f"code-{i}") for i in range(50)]
    commands = [f"cmd-{i}" if i != 25 else "bad-\ud800" for i in range(50)]  # lone surrogate
    outcomes = await asyncio.gather(
        *(store.claim(key, command) for key, command in zip(keys, commands, strict=True)),
        return_exceptions=True,
    )
    assert isinstance(outcomes[25], UnicodeEncodeError)
    assert [o for i, o in enumerate(outcomes) if i != 25] == [FRESH] * 49


# --- failures -------------------------------------------------------------------------------


async def test_ping_fails_when_the_file_is_replaced_by_a_directory(
    store: SqliteStateStore, db_path: str
) -> None:
    """A database file swapped out underneath makes ping and claims fail with a clear message."""
    replace_by_directory(db_path)
    with pytest.raises(StoreUnavailable, match="replaced") as caught:
        await store.ping()
    assert "Traceback" not in str(caught.value)
    with pytest.raises(StoreUnavailable, match="replaced"):
        await store.claim(KEY, "a")


async def test_ping_fails_when_the_file_is_deleted(store: SqliteStateStore, db_path: str) -> None:
    """Writing on into a deleted file would forget every code at the next start: refuse."""
    delete(db_path)
    with pytest.raises(StoreUnavailable, match="gone"):
        await store.ping()


async def test_full_database_fails_writes_with_store_unavailable(
    store: SqliteStateStore,
) -> None:
    """A database that cannot grow fails claims with StoreUnavailable saying it is full."""

    def cap(conn: sqlite3.Connection, _: float) -> None:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")

    await store._submit(cap, "cap the database")
    keys = [CodeKey(KEY.corp_id, f"{i:04d}-{'x' * 200}") for i in range(2000)]
    outcomes = await asyncio.gather(
        *(store.claim(key, "a") for key in keys), return_exceptions=True
    )
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert failures
    assert all(isinstance(f, StoreUnavailable) for f in failures)
    assert "full" in str(failures[0])


async def test_open_fails_cleanly_where_no_file_can_be_made(tmp_path: Path) -> None:
    """A path in a missing directory is StoreUnavailable at open, not a crash later."""
    with pytest.raises(StoreUnavailable, match="lock file"):
        await SqliteStateStore.open(str(tmp_path / "missing" / "state.db"), owner="o")


async def test_close_drains_queued_operations(open_store: Opener, db_path: str) -> None:
    """Operations queued before close are committed, and the lock is free afterwards."""
    store = await open_store()
    keys = [CodeKey(KEY.corp_id, f"code-{i}") for i in range(100)]
    claims = [asyncio.ensure_future(store.claim(key, "a")) for key in keys]
    await asyncio.sleep(0)  # the claims are queued
    await store.close()
    assert all(c.result() == FRESH for c in claims)
    assert len(rows(db_path)) == 100
    reopened = await open_store(owner="owner-2")
    assert isinstance(await reopened.claim(keys[0], "b"), Claimed)


async def test_bad_synchronous_level_is_refused(db_path: str) -> None:
    """Only SQLite's own synchronous levels are accepted."""
    with pytest.raises(ValueError, match="synchronous"):
        await SqliteStateStore.open(db_path, owner="o", synchronous="SOMETIMES")


# --- report ---------------------------------------------------------------------------------


async def test_report_of_a_durable_setup(store: SqliteStateStore, db_path: str) -> None:
    """WAL with synchronous FULL on a disk filesystem is reported durable, with its settings."""
    report = await store.report()
    assert report.backend == "sqlite"
    assert report.details["journal_mode"] == "wal"
    assert report.details["synchronous"] == "FULL"
    assert report.details["path"] == db_path  # tmp_path is already resolved
    assert not any("synchronous" in p for p in report.problems)
    assert not any("journal_mode" in p for p in report.problems)
    assert report.durable == (not report.problems)


async def test_report_names_synchronous_normal_as_a_problem(open_store: Opener) -> None:
    """NORMAL is allowed but reported: a power loss may drop the last claims."""
    report = await (await open_store(synchronous="normal")).report()
    assert report.details["synchronous"] == "NORMAL"
    assert not report.durable
    assert any("synchronous is NORMAL" in p for p in report.problems)


@pytest.fixture
def shm_dir() -> Iterator[str]:
    """A scratch directory on tmpfs, removed afterwards."""
    if filesystem_of("/dev/shm", Path("/proc/mounts").read_text()) != "tmpfs":
        pytest.skip("/dev/shm is not tmpfs here")
    directory = tempfile.mkdtemp(dir="/dev/shm")
    yield directory
    shutil.rmtree(directory)


async def test_report_names_tmpfs_as_a_problem(shm_dir: str, open_store: Opener) -> None:
    """A database on tmpfs does not outlive the pod: reported as not durable."""
    report = await (await open_store(path=f"{shm_dir}/state.db")).report()
    assert not report.durable
    assert report.details["filesystem"] == "tmpfs"
    assert any("tmpfs" in p and "pod" in p for p in report.problems)


def test_filesystem_of_takes_the_deepest_and_latest_mount() -> None:
    """The mount holding a path is the longest matching mount point, the last one if repeated."""
    mounts = (
        "/dev/vda / ext4 rw 0 0\n"
        "tmpfs /data tmpfs rw 0 0\n"
        "/dev/vdb /data ext4 rw 0 0\n"
        "tmpfs /data/my\\040scratch tmpfs rw 0 0\n"
        "broken line\n"
    )
    assert filesystem_of("/data/state.db", mounts) == "ext4"
    assert filesystem_of("/data/my scratch/state.db", mounts) == "tmpfs"
    assert filesystem_of("/database/state.db", mounts) == "ext4"
    assert filesystem_of("/srv/x", "") == "unknown"
