"""The SQLite state store against real database files: single use, leases, durability, failures."""

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
from worker.ports import AlreadyUsed, Busy, Claimed, CodeKey, Replay, StateStore
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


# --- claim: each state ----------------------------------------------------------------------


async def test_absent_code_is_claimed_not_spent(store: SqliteStateStore, db_path: str) -> None:
    """A code never seen is claimed, with nothing sent before, and recorded as claimed."""
    assert await store.claim(KEY, "a") == Claimed(maybe_spent=False)
    assert rows(db_path) == [(KEY.corp_id, KEY.response_code, "claimed", "a", 0, 0)]


async def test_same_code_in_another_corp_is_another_record(store: SqliteStateStore) -> None:
    """The unit of single use is (corp_id, response_code), not the code alone."""
    await store.claim(KEY, "a")
    assert await store.claim(CodeKey("ww-other", KEY.response_code), "b") == FRESH


async def test_done_same_command_replays_stored_result(store: SqliteStateStore) -> None:
    """A command that finished gets its stored result back, spent or not."""
    await store.claim(KEY, "a")
    await store.complete(KEY, "a", RESULT_A, spent=True)
    assert await store.claim(KEY, "a") == Replay(RESULT_A)
    other = CodeKey(KEY.corp_id, "code-2")
    await store.claim(other, "b")
    await store.complete(other, "b", RESULT_B, spent=False)
    assert await store.claim(other, "b") == Replay(RESULT_B)


async def test_code_spent_by_another_command_is_already_used(store: SqliteStateStore) -> None:
    """A second command on a spent code learns which command used it first."""
    await store.claim(KEY, "first")
    await store.complete(KEY, "first", RESULT_A, spent=True)
    assert await store.claim(KEY, "second") == AlreadyUsed("first")
    assert await store.claim(KEY, "third") == AlreadyUsed("first")


async def test_unspent_outcome_lets_another_command_take_the_code(
    store: SqliteStateStore, db_path: str
) -> None:
    """A command that failed without spending the code leaves it to the next command."""
    await store.claim(KEY, "a")
    await store.complete(KEY, "a", RESULT_A, spent=False)
    assert await store.claim(KEY, "b") == Claimed(maybe_spent=False)
    assert rows(db_path)[0][2:4] == ("claimed", "b")


async def test_live_lease_of_another_command_is_busy(store: SqliteStateStore, clock: Clock) -> None:
    """While a holder's lease runs, another command is told who holds it and until when."""
    start = clock.now
    await store.claim(KEY, "a")
    clock.advance(LEASE - 1)
    assert await store.claim(KEY, "b") == Busy("a", start + LEASE)


async def test_second_delivery_of_same_command_is_busy(store: SqliteStateStore) -> None:
    """Another delivery of a command still being processed waits instead of calling again."""
    await store.claim(KEY, "a")
    outcome = await store.claim(KEY, "a")
    assert isinstance(outcome, Busy)
    assert outcome.command_id == "a"


@pytest.mark.parametrize("claimer", ["a", "b"])
async def test_expired_lease_is_taken_over_as_maybe_spent(
    store: SqliteStateStore, clock: Clock, db_path: str, claimer: str
) -> None:
    """A claim whose holder died mid-call is taken over, flagged as possibly sent."""
    await store.claim(KEY, "a")
    clock.advance(LEASE + 0.001)
    assert await store.claim(KEY, claimer) == Claimed(maybe_spent=True)
    assert rows(db_path)[0][2:5] == ("claimed", claimer, 1)
    assert isinstance(await store.claim(KEY, "c"), Busy)  # the new holder has a fresh lease


@pytest.mark.parametrize("maybe_spent", [False, True])
async def test_release_keeps_maybe_spent_flag(
    store: SqliteStateStore, db_path: str, maybe_spent: bool
) -> None:
    """A released code goes to the next claimer with the flag given at release."""
    await store.claim(KEY, "a")
    await store.release(KEY, "a", maybe_spent=maybe_spent)
    assert rows(db_path)[0][2:5] == ("released", "a", int(maybe_spent))
    assert await store.claim(KEY, "b") == Claimed(maybe_spent=maybe_spent)


async def test_released_command_takes_its_code_back(store: SqliteStateStore) -> None:
    """A deferred command coming back from the delay queue claims its released code again."""
    await store.claim(KEY, "a")
    await store.release(KEY, "a", maybe_spent=False)
    assert await store.claim(KEY, "a") == Claimed(maybe_spent=False)


async def test_release_never_forgets_an_earlier_holder_may_have_sent(
    store: SqliteStateStore, clock: Clock
) -> None:
    """A holder that took over a maybe-spent code and sent nothing still releases it as maybe spent."""
    await store.claim(KEY, "a")
    clock.advance(LEASE + 1)
    assert await store.claim(KEY, "b") == Claimed(maybe_spent=True)
    await store.release(KEY, "b", maybe_spent=False)
    assert await store.claim(KEY, "c") == Claimed(maybe_spent=True)


async def test_release_by_a_command_not_holding_the_code_changes_nothing(
    store: SqliteStateStore, db_path: str
) -> None:
    """Only the holder can release: another command's release leaves the claim in place."""
    await store.claim(KEY, "a")
    await store.release(KEY, "b", maybe_spent=True)
    assert rows(db_path)[0][2:5] == ("claimed", "a", 0)
    assert isinstance(await store.claim(KEY, "b"), Busy)


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


# --- complete -------------------------------------------------------------------------------


async def test_complete_records_outcome_and_spent_flag(
    store: SqliteStateStore, db_path: str
) -> None:
    """Completion turns the claim into a done record holding the result and the spent flag."""
    await store.claim(KEY, "a")
    await store.complete(KEY, "a", RESULT_A, spent=True)
    assert rows(db_path) == [(KEY.corp_id, KEY.response_code, "done", "a", 1, 1)]


async def test_complete_without_a_record_writes_it(store: SqliteStateStore) -> None:
    """An outcome whose claim vanished is still written: it is what happened at WeCom."""
    await store.complete(KEY, "a", RESULT_A, spent=True)
    assert await store.claim(KEY, "b") == AlreadyUsed("a")


async def test_spent_outcome_of_another_command_is_never_overwritten(
    store: SqliteStateStore,
) -> None:
    """The first command that spent the code stays recorded, whatever completes later."""
    await store.claim(KEY, "a")
    await store.complete(KEY, "a", RESULT_A, spent=True)
    await store.complete(KEY, "b", RESULT_B, spent=True)
    await store.complete(KEY, "b", RESULT_B, spent=False)
    await store.complete(KEY, "a", RESULT_B, spent=False)
    assert await store.claim(KEY, "a") == Replay(RESULT_A)
    assert await store.claim(KEY, "c") == AlreadyUsed("a")


async def test_spent_outcome_after_a_lost_claim_is_recorded(
    store: SqliteStateStore, clock: Clock
) -> None:
    """A holder whose lease ran out but who spent the code records it over the new holder's claim."""
    await store.claim(KEY, "a")
    clock.advance(LEASE + 1)
    assert await store.claim(KEY, "b") == Claimed(maybe_spent=True)
    await store.complete(KEY, "a", RESULT_A, spent=True)
    await store.complete(KEY, "b", RESULT_B, spent=True)  # b's 60140, too late to matter
    assert await store.claim(KEY, "c") == AlreadyUsed("a")
    assert await store.claim(KEY, "a") == Replay(RESULT_A)


async def test_unspent_outcome_does_not_displace_another_live_claim(
    store: SqliteStateStore, clock: Clock
) -> None:
    """A late holder that did not spend the code cannot free it while the new holder works."""
    await store.claim(KEY, "a")
    clock.advance(LEASE + 1)
    await store.claim(KEY, "b")
    await store.complete(KEY, "a", RESULT_A, spent=False)
    assert isinstance(await store.claim(KEY, "c"), Busy)
    await store.complete(KEY, "b", RESULT_B, spent=False)
    assert await store.claim(KEY, "b") == Replay(RESULT_B)


async def test_unspent_outcome_keeps_what_an_earlier_holder_may_have_sent(
    store: SqliteStateStore, clock: Clock
) -> None:
    """After a maybe-spent takeover ends unspent, the next command still hears 'maybe spent'."""
    await store.claim(KEY, "a")
    clock.advance(LEASE + 1)
    await store.claim(KEY, "b")
    await store.complete(KEY, "b", RESULT_B, spent=False)
    assert await store.claim(KEY, "c") == Claimed(maybe_spent=True)


# --- renew ----------------------------------------------------------------------------------


async def test_renew_extends_the_lease(store: SqliteStateStore, clock: Clock) -> None:
    """A renewed claim stays busy past its first lease and counts nothing re-created."""
    await store.claim(KEY, "a")
    clock.advance(LEASE * 0.75)
    assert await store.renew([(KEY, "a")]) == 0
    clock.advance(LEASE * 0.75)
    assert await store.claim(KEY, "b") == Busy("a", clock.now - LEASE * 0.75 + LEASE)


async def test_renew_recreates_a_vanished_claim(
    store: SqliteStateStore, clock: Clock, db_path: str
) -> None:
    """A claim deleted behind the store's back comes back on renewal, counted once."""
    other = CodeKey(KEY.corp_id, "code-2")
    await store.claim(KEY, "a")
    await store.claim(other, "b")
    execute(db_path, f"DELETE FROM codes WHERE response_code = '{KEY.response_code}'")
    assert await store.renew([(KEY, "a"), (other, "b")]) == 1
    assert await store.claim(KEY, "c") == Busy("a", clock.now + LEASE)


async def test_renew_leaves_records_it_does_not_hold(
    store: SqliteStateStore, clock: Clock, db_path: str
) -> None:
    """Renewal neither steals a code another command holds nor revives a finished one."""
    await store.claim(KEY, "a")
    clock.advance(LEASE + 1)
    await store.claim(KEY, "b")
    done = CodeKey(KEY.corp_id, "code-2")
    await store.claim(done, "a")
    await store.complete(done, "a", RESULT_A, spent=True)
    assert await store.renew([(KEY, "a"), (done, "a")]) == 0
    assert sorted(r[2:4] for r in rows(db_path)) == [("claimed", "b"), ("done", "a")]
    assert await store.renew([]) == 0


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


async def test_concurrent_claims_of_one_code_give_exactly_one_holder(
    store: SqliteStateStore,
) -> None:
    """500 tasks racing for the same code: one wins, every other one is told it is busy."""
    outcomes = await asyncio.gather(*(store.claim(KEY, f"cmd-{i}") for i in range(500)))
    winners = [o for o in outcomes if isinstance(o, Claimed)]
    assert winners == [Claimed(maybe_spent=False)]
    assert sum(isinstance(o, Busy) for o in outcomes) == 499


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


async def test_cancelled_caller_does_not_hold_up_others(store: SqliteStateStore) -> None:
    """A caller cancelled while its claim is queued leaves the calls queued with it answered."""
    cancelled = asyncio.ensure_future(store.claim(KEY, "a"))
    other = asyncio.ensure_future(store.claim(CodeKey(KEY.corp_id, "code-2"), "b"))
    await asyncio.sleep(0)  # both are queued, likely in one batch
    cancelled.cancel()
    assert await asyncio.wait_for(other, 5) == FRESH
    assert cancelled.cancelled()
    assert isinstance(await store.claim(CodeKey(KEY.corp_id, "code-3"), "c"), Claimed)


# --- failures -------------------------------------------------------------------------------


async def test_ping_answers_on_a_healthy_database(store: SqliteStateStore) -> None:
    """A readable and writable database answers a ping."""
    await store.ping()


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


async def test_closed_store_refuses_calls(open_store: Opener) -> None:
    """After close, calls fail with StoreUnavailable instead of hanging."""
    store = await open_store()
    await store.close()
    await store.close()  # twice is harmless
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.claim(KEY, "a")


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
