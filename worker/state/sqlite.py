"""The SQLite state store: single use of response codes for ONE worker replica.

One record per (corp_id, response_code) in a ``WITHOUT ROWID`` table. A single
writer thread owns the ``sqlite3`` connection; the async methods queue an
operation and await its future. The thread takes everything queued (up to
``batch_limit`` operations), runs it in one ``BEGIN IMMEDIATE`` … ``COMMIT``
(group commit: one fsync for the whole batch) and hands the answers back to the
event loop in one ``call_soon_threadsafe``. The event loop never waits on SQLite.

Every operation writes at most one statement's worth of change, and a failing
statement leaves nothing behind, so an operation that fails inside a batch
fails only its own future; when SQLite rolls the whole transaction back (disk
full, I/O error) or the COMMIT fails, every operation of the batch fails with
:class:`~worker.errors.StoreUnavailable`.

The replay window: a ``done`` record keeps its full Result for
``replay_window_seconds``; then the background purge passes move it to the
``kept`` table as its kept outcome (:mod:`worker.state.compact`, ~35 bytes
keyed by a 12-byte digest of the code). A code is in ``codes`` or in ``kept``,
never both; every operation looks in ``kept`` too (one indexed read). A claim
treats a done record past the window as kept even before a pass moved it.

A ``<path>.lock`` file beside the database holds an exclusive ``flock`` for the
store's lifetime: one process per database. That is what lets :meth:`open`
treat every ``claimed`` record it finds as the orphan of a dead process and
expire its lease at once.

Durability: WAL with ``synchronous=FULL`` by default. ``NORMAL`` is allowed and
is much faster, but in WAL mode it may lose the last transactions on power loss
or a kernel crash (never on a process crash): a lost claim means a code that may
be sent twice. :meth:`SqliteStateStore.report` names every such weakness.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import math
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import structlog

from worker.errors import StoreLocked, StoreUnavailable
from worker.ports import (
    AlreadyUsed,
    Busy,
    Claimed,
    ClaimOutcome,
    CodeKey,
    Replay,
    StoreReport,
)
from worker.state.compact import code_digest, decide_kept, pack_kept, unpack_kept

__all__ = ["SqliteStateStore"]

_log = structlog.get_logger(__name__)

SCHEMA_VERSION: Final = 2  # 2: kept outcomes (an older worker would not see them)
SYNCHRONOUS_LEVELS: Final = ("OFF", "NORMAL", "FULL", "EXTRA")  # PRAGMA synchronous 0..3
VOLATILE_FILESYSTEMS: Final = {
    "tmpfs": "tmpfs (a tmpfs volume does not outlive the pod)",
    "ramfs": "ramfs (memory, lost when the pod goes)",
    "overlay": "the container's overlay filesystem (lost when the container is replaced)",
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS codes (
    corp_id       TEXT    NOT NULL,
    response_code TEXT    NOT NULL,
    state         TEXT    NOT NULL CHECK (state IN ('claimed', 'done', 'released')),
    command_id    TEXT    NOT NULL,
    owner         TEXT,             -- claimed: the holding process
    lease_until   REAL,             -- claimed: Unix seconds
    maybe_spent   INTEGER NOT NULL, -- the code may have been sent by some holder so far
    spent         INTEGER NOT NULL, -- done: command_id used the code
    result        BLOB,             -- done: the Result, JSON
    expires_at    REAL    NOT NULL, -- last change + retention
    PRIMARY KEY (corp_id, response_code)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS codes_expires_at ON codes (expires_at);
CREATE TABLE IF NOT EXISTS kept (
    code_digest BLOB    PRIMARY KEY, -- compact.code_digest(corp_id, response_code)
    outcome     BLOB    NOT NULL,    -- compact.pack_kept: flags, status, errcode, first command
    expires_at  INTEGER NOT NULL     -- Unix seconds, as codes.expires_at
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kept_expires_at ON kept (expires_at);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
"""

# Hot path, step 1: insert-if-absent. A conflict changes nothing.
_INSERT_CLAIM = """
INSERT INTO codes (corp_id, response_code, state, command_id, owner, lease_until,
                   maybe_spent, spent, result, expires_at)
VALUES (?, ?, 'claimed', ?, ?, ?, ?, 0, NULL, ?)
ON CONFLICT DO NOTHING
"""
_SELECT = """
SELECT state, command_id, lease_until, maybe_spent, spent, result, expires_at
FROM codes WHERE corp_id = ? AND response_code = ?
"""
# Step 2, once the caller may take a record that exists (released, done unspent, lease expired,
# or past its retention and not purged yet).
_TAKE_CLAIM = """
UPDATE codes SET state = 'claimed', command_id = ?, owner = ?, lease_until = ?, maybe_spent = ?,
                 spent = 0, result = NULL, expires_at = ?
WHERE corp_id = ? AND response_code = ?
"""
# The outcome of a call is what happened at WeCom, so it is written even when this command no
# longer holds the code (its lease ran out and another holder took over), with two exceptions:
# a live `done` record whose code was spent is final (the first definite outcome wins, for the
# replays of that command too), and an unspent outcome never displaces another command's
# live claim or release (that holder may still send the code). "Live" = not past retention.
# ?1 corp_id, ?2 response_code, ?3 command_id, ?4 spent, ?5 result, ?6 expires_at, ?7 now,
# ?8 maybe_spent of a new record (spent, or what its kept outcome said)
_COMPLETE = """
INSERT INTO codes (corp_id, response_code, state, command_id, owner, lease_until,
                   maybe_spent, spent, result, expires_at)
VALUES (?1, ?2, 'done', ?3, NULL, NULL, ?8, ?4, ?5, ?6)
ON CONFLICT (corp_id, response_code) DO UPDATE SET
    state = 'done', command_id = excluded.command_id, owner = NULL, lease_until = NULL,
    maybe_spent = CASE WHEN codes.expires_at > ?7 THEN codes.maybe_spent | excluded.spent
                       ELSE excluded.spent END,
    spent = excluded.spent, result = excluded.result, expires_at = excluded.expires_at
WHERE codes.expires_at <= ?7
   OR (NOT (codes.state = 'done' AND codes.spent)
       AND (excluded.spent OR codes.command_id = excluded.command_id OR codes.state = 'done'))
"""
# Only the holder releases; the flag is OR-ed so that what an earlier holder may have sent is
# never forgotten by a holder that itself sent nothing.
_RELEASE = """
UPDATE codes SET state = 'released', owner = NULL, lease_until = NULL,
                 maybe_spent = maybe_spent | ?, expires_at = ?
WHERE corp_id = ? AND response_code = ? AND state = 'claimed' AND command_id = ? AND owner = ?
"""
_RENEW = """
UPDATE codes SET lease_until = ?, expires_at = ?
WHERE corp_id = ? AND response_code = ? AND state = 'claimed' AND command_id = ? AND owner = ?
"""
# A renewal that finds its record gone (or past retention) re-creates the claim.
# ?1 corp_id, ?2 response_code, ?3 command_id, ?4 owner, ?5 lease_until, ?6 expires_at, ?7 now
_RECREATE_CLAIM = """
INSERT INTO codes (corp_id, response_code, state, command_id, owner, lease_until,
                   maybe_spent, spent, result, expires_at)
VALUES (?1, ?2, 'claimed', ?3, ?4, ?5, 0, 0, NULL, ?6)
ON CONFLICT (corp_id, response_code) DO UPDATE SET
    state = 'claimed', command_id = excluded.command_id, owner = excluded.owner,
    lease_until = excluded.lease_until, maybe_spent = 0, spent = 0, result = NULL,
    expires_at = excluded.expires_at
WHERE codes.expires_at <= ?7
"""
_PURGE = """
DELETE FROM codes WHERE (corp_id, response_code) IN (
    SELECT corp_id, response_code FROM codes WHERE expires_at <= ? LIMIT ?
)
"""
# The kept outcome of a code: a done record past the replay window shrinks to it
# (compact.py). Codes and kept never hold the same code at once: taking a kept code
# over, or completing over it, deletes it.
_SELECT_KEPT = "SELECT outcome FROM kept WHERE code_digest = ? AND expires_at > ?"
_DELETE_KEPT = "DELETE FROM kept WHERE code_digest = ?"
_PURGE_KEPT = """
DELETE FROM kept WHERE code_digest IN (
    SELECT code_digest FROM kept WHERE expires_at <= ? LIMIT ?
)
"""
# Done records whose replay window has passed: last change <= now - window.
_DUE_FOR_KEEPING = """
SELECT corp_id, response_code, command_id, maybe_spent, spent, result, expires_at
FROM codes WHERE expires_at <= ? AND state = 'done' LIMIT ?
"""
_PUT_KEPT = "INSERT OR REPLACE INTO kept (code_digest, outcome, expires_at) VALUES (?, ?, ?)"
_DELETE_CODE = "DELETE FROM codes WHERE corp_id = ? AND response_code = ?"
_EXPIRE_ORPHANS = "UPDATE codes SET lease_until = ? WHERE state = 'claimed' AND lease_until > ?"
_PUT_META = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"

T = TypeVar("T")
_Work = Callable[[sqlite3.Connection, float], Any]


@dataclass(slots=True)
class _Op:
    """One queued operation: what to run in the writer thread, and who waits for it."""

    work: _Work
    future: asyncio.Future[Any]
    what: str  # for error messages: "claim a response_code", ...


_CLOSE: Final = object()  # queued by close(): finish what is queued, then stop


class SqliteStateStore:
    """:class:`worker.ports.StateStore` on one SQLite file, for one worker process.

    Open it with :meth:`open`; ``close()`` it when done.
    """

    def __init__(
        self,
        path: str,
        *,
        owner: str,
        lease_seconds: float,
        retention_seconds: float,
        replay_window_seconds: float,
        synchronous: str,
        clock: Callable[[], float],
        purge_interval: float,
        purge_batch: int,
        batch_limit: int,
    ) -> None:
        """Hold the settings; :meth:`open` is what starts the store."""
        level = synchronous.upper()
        if level not in SYNCHRONOUS_LEVELS:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS_LEVELS)}")
        if lease_seconds <= 0 or retention_seconds <= 0 or replay_window_seconds <= 0:
            raise ValueError(
                "lease_seconds, retention_seconds and replay_window_seconds must be positive"
            )
        self._file = Path(path).absolute()  # immune to a later chdir
        self.path = str(self._file)
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.retention_seconds = retention_seconds
        self.replay_window_seconds = replay_window_seconds
        self.synchronous = level
        self._clock = clock
        self._purge_interval = purge_interval
        self._purge_batch = purge_batch
        self._batch_limit = batch_limit
        self._queue: queue.SimpleQueue[_Op | object] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock_fd = -1
        self._file_id: tuple[int, int] = (0, 0)
        self._orphans_at_open = 0
        self._next_purge = 0.0  # time.monotonic() of the next purge step

    @classmethod
    async def open(
        cls,
        path: str,
        *,
        owner: str,
        lease_seconds: float = 60.0,
        retention_seconds: float = 73 * 3600.0,
        replay_window_seconds: float = 3600.0,
        synchronous: str = "FULL",
        clock: Callable[[], float] = time.time,
        purge_interval: float = 600.0,
        purge_batch: int = 500,
        batch_limit: int = 512,
    ) -> SqliteStateStore:
        """Lock, open (creating it if needed) and prepare the database at ``path``.

        ``owner`` is this process's random id, stored with its claims. Claims left
        by an earlier process get their leases expired at once; records past
        retention are purged in the background, starting now, and done records
        past ``replay_window_seconds`` shrink to their kept outcome in the same
        passes (a claim reads one past the window as kept, shrunk or not). Raises
        :class:`StoreLocked` when another process has the file and
        :class:`StoreUnavailable` when it cannot be opened.
        """
        store = cls(
            path,
            owner=owner,
            lease_seconds=lease_seconds,
            retention_seconds=retention_seconds,
            replay_window_seconds=replay_window_seconds,
            synchronous=synchronous,
            clock=clock,
            purge_interval=purge_interval,
            purge_batch=purge_batch,
            batch_limit=batch_limit,
        )
        loop = asyncio.get_running_loop()
        store._loop = loop
        started: asyncio.Future[None] = loop.create_future()
        store._thread = threading.Thread(
            target=store._run, args=(started,), name="sqlite-state-writer", daemon=True
        )
        store._thread.start()
        try:
            await started
        except BaseException:  # it failed to open, or open() was cancelled: stop the thread
            store._closed = True
            store._queue.put(_CLOSE)
            await asyncio.to_thread(store._thread.join)
            raise
        return store

    # --- the StateStore protocol ----------------------------------------------------------

    async def claim(self, key: CodeKey, command_id: str) -> ClaimOutcome:
        """Atomically take the code for ``command_id`` or say who has it."""
        return await self._submit(
            lambda conn, now: self._claim(conn, now, key, command_id), "claim a response_code"
        )

    async def complete(self, key: CodeKey, command_id: str, result: bytes, *, spent: bool) -> None:
        """Record the outcome (the Result as JSON); ``spent`` false lets another command retry.

        Written even when this command lost its claim, except over another
        record whose code was spent (that outcome is final) and, for an unspent
        outcome, over another command's live claim or release.
        """

        def work(conn: sqlite3.Connection, now: float) -> None:
            maybe_spent = spent
            digest = code_digest(key.corp_id, key.response_code)
            kept = conn.execute(_SELECT_KEPT, (digest, now)).fetchone()
            if kept is not None:
                earlier = unpack_kept(kept[0])
                if earlier.spent:  # final, as a done record whose code was spent
                    return
                conn.execute(_DELETE_KEPT, (digest,))
                maybe_spent = spent or earlier.maybe_spent
            conn.execute(
                _COMPLETE,
                (
                    key.corp_id,
                    key.response_code,
                    command_id,
                    int(spent),
                    result,
                    now + self.retention_seconds,
                    now,
                    int(maybe_spent),
                ),
            )

        await self._submit(work, "record an outcome")

    async def release(self, key: CodeKey, command_id: str, *, maybe_spent: bool) -> None:
        """Give the code back (the call was deferred); remember if it may have been sent.

        Only a claim this command holds in this process is released. The stored
        flag is the OR of ``maybe_spent`` and what was known before the claim.
        """

        def work(conn: sqlite3.Connection, now: float) -> None:
            conn.execute(
                _RELEASE,
                (
                    int(maybe_spent),
                    now + self.retention_seconds,
                    key.corp_id,
                    key.response_code,
                    command_id,
                    self.owner,
                ),
            )

        await self._submit(work, "release a response_code")

    async def renew(self, claims: list[tuple[CodeKey, str]]) -> int:
        """Extend the leases of claims this process holds; returns how many had to be re-created.

        A claim whose record is gone is written again as held by this process;
        one that another command holds or finished is left alone.
        """
        if not claims:
            return 0
        held = list(claims)  # the caller may change its list while the batch waits
        return await self._submit(lambda conn, now: self._renew(conn, now, held), "renew leases")

    async def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the database file can be read and written."""

        def work(conn: sqlite3.Connection, now: float) -> None:
            conn.execute("SELECT count(*) FROM meta").fetchone()
            conn.execute(_PUT_META, ("last_ping", repr(now)))

        await self._submit(work, "answer a ping")

    async def report(self) -> StoreReport:
        """Journal mode, synchronous level, path and filesystem, and what in them is not durable."""
        return await self._submit(lambda conn, _: self._report(conn), "read its settings")

    async def close(self) -> None:
        """Finish every queued operation, close the database and release the lock."""
        if self._closed or self._loop is None or self._thread is None:
            return
        self._closed = True
        self._queue.put(_CLOSE)  # after every operation queued so far
        await asyncio.to_thread(self._thread.join)

    # --- beyond the protocol ----------------------------------------------------------------

    async def purge_expired(self) -> int:
        """Delete every record past its retention now (in small batches); returns how many."""
        total = 0
        while True:
            deleted: int = await self._submit(self._purge_step, "purge expired records")
            total += deleted
            if deleted < self._purge_batch:
                return total

    async def keep_due(self) -> int:
        """Shrink every done record past the replay window now (in small batches); how many."""
        total = 0
        while True:
            kept: int = await self._submit(self._keep_step, "shrink done records")
            total += kept
            if kept < self._purge_batch:
                return total

    # --- event loop side --------------------------------------------------------------------

    async def _submit(self, work: Callable[[sqlite3.Connection, float], T], what: str) -> T:
        """Queue ``work`` for the writer thread and wait for its answer."""
        if self._closed or self._loop is None:
            raise StoreUnavailable(f"sqlite state store {self.path} is closed")
        future: asyncio.Future[T] = self._loop.create_future()
        self._queue.put(_Op(work, future, what))
        return await future

    @staticmethod
    def _settle(answers: list[tuple[asyncio.Future[Any], BaseException | None, Any]]) -> None:
        """Resolve the futures of one batch (runs on the event loop)."""
        for future, error, value in answers:
            if future.done():  # the caller was cancelled
                continue
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)

    def _post(self, answers: list[tuple[asyncio.Future[Any], BaseException | None, Any]]) -> None:
        """Hand answers to the event loop from the writer thread."""
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(self._settle, answers)

    # --- writer thread ----------------------------------------------------------------------

    def _run(self, started: asyncio.Future[None]) -> None:
        """The writer thread: open, then serve batches until close."""
        try:
            conn = self._start()
        except (StoreLocked, StoreUnavailable) as error:
            self._post([(started, error, None)])
            return
        except Exception as error:  # noqa: BLE001 - e.g. OSError: reported, never a traceback
            failure = StoreUnavailable(f"sqlite state store {self.path}: cannot open: {error}")
            self._post([(started, failure, None)])
            return
        self._post([(started, None, None)])
        try:
            self._serve(conn)
        finally:
            self._stop(conn)

    def _start(self) -> sqlite3.Connection:
        """Take the lock, connect, set the pragmas, create the schema, expire orphans."""
        self._lock()
        try:
            return self._connect()
        except BaseException:
            self._unlock()
            raise

    def _lock(self) -> None:
        """Take ``<path>.lock`` exclusively, or say which process has it."""
        lock_path = f"{self.path}.lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as error:
            raise StoreUnavailable(
                f"sqlite state store {self.path}: cannot create its lock file: {error.strerror}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise StoreLocked(
                f"sqlite state store {self.path} is used by another worker process "
                f"(pid {holder}); the sqlite state store serves one replica; "
                "use redis:// for several"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _unlock(self) -> None:
        """Release the lock file (closing it drops the flock)."""
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _connect(self) -> sqlite3.Connection:
        """Open the database and bring it to a state ready for claims."""
        try:
            conn = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as error:
            raise StoreUnavailable(
                f"sqlite state store {self.path}: cannot open: {error}"
            ) from None
        try:
            self._prepare(conn)
        except sqlite3.Error as error:
            conn.close()
            raise StoreUnavailable(
                f"sqlite state store {self.path}: cannot prepare the database: {error}"
            ) from None
        except BaseException:
            conn.close()
            raise
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Pragmas, schema, orphaned claims; the first purge is due at once."""
        conn.execute("PRAGMA journal_mode = WAL").fetchone()
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")  # validated in __init__
        conn.execute("PRAGMA busy_timeout = 5000")  # an operator's sqlite3 shell may read
        conn.execute("PRAGMA temp_store = MEMORY")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreUnavailable(
                f"sqlite state store {self.path}: written by a newer worker "
                f"(schema {version}, this one knows {SCHEMA_VERSION})"
            )
        stat = self._file.stat()
        self._file_id = (stat.st_dev, stat.st_ino)
        now = self._clock()
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            # The flock says no other process is alive: every claim is a dead process's orphan.
            self._orphans_at_open = conn.execute(_EXPIRE_ORPHANS, (now, now)).rowcount
            conn.execute(_PUT_META, ("opened", f"{self.owner} pid {os.getpid()} at {now!r}"))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._next_purge = time.monotonic()
        if self._orphans_at_open:
            _log.warning(
                "sqlite_state_orphaned_claims", path=self.path, claims=self._orphans_at_open
            )

    def _stop(self, conn: sqlite3.Connection) -> None:
        """Close the database, then the lock, then fail whatever is still queued."""
        with contextlib.suppress(sqlite3.Error):
            conn.close()
        self._unlock()
        leftover: list[tuple[asyncio.Future[Any], BaseException | None, Any]] = []
        closed = StoreUnavailable(f"sqlite state store {self.path} is closed")
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Op):
                leftover.append((item.future, closed, None))
        if leftover:
            self._post(leftover)

    def _serve(self, conn: sqlite3.Connection) -> None:
        """Take batches off the queue until the close marker; purge in between."""
        get = self._queue.get
        get_nowait = self._queue.get_nowait
        while True:
            wait = self._next_purge - time.monotonic()
            try:
                item = get(timeout=wait) if wait > 0 else get_nowait()
            except queue.Empty:
                self._purge_in_background(conn)
                continue
            batch: list[_Op] = []
            stop = False
            while True:
                if isinstance(item, _Op):
                    batch.append(item)
                else:
                    stop = True
                    break
                if len(batch) >= self._batch_limit:
                    break
                try:
                    item = get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._post(self._run_batch(conn, batch))
            if stop:
                return
            if time.monotonic() >= self._next_purge:
                self._purge_in_background(conn)

    def _run_batch(
        self, conn: sqlite3.Connection, batch: list[_Op]
    ) -> list[tuple[asyncio.Future[Any], BaseException | None, Any]]:
        """Run a batch in one transaction; the answer for each operation."""
        answers: list[tuple[asyncio.Future[Any], BaseException | None, Any]] = []
        try:
            self._check_file()
            conn.execute("BEGIN IMMEDIATE")
        except (sqlite3.Error, StoreUnavailable) as error:
            failure = self._unavailable(error, "start a transaction")
            return [(op.future, failure, None) for op in batch]
        now = self._clock()
        for op in batch:
            if op.future.cancelled():  # nobody waits; do not claim behind a caller's back
                continue
            try:
                answers.append((op.future, None, op.work(conn, now)))
            except sqlite3.Error as error:
                failure = self._unavailable(error, op.what)
                if not conn.in_transaction:  # SQLite rolled the whole batch back
                    return [(o.future, failure, None) for o in batch]
                answers.append((op.future, failure, None))
            except Exception as error:  # noqa: BLE001 - a caller's bad value fails its op alone
                answers.append((op.future, error, None))
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as error:
            failure = self._unavailable(error, "commit")
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            return [(op.future, failure, None) for op in batch]
        return answers

    def _check_file(self) -> None:
        """Refuse to write into a database file that was deleted or replaced while open."""
        try:
            stat = self._file.stat()
        except OSError as error:
            raise StoreUnavailable(
                f"sqlite state store {self.path}: the database file is gone ({error.strerror})"
            ) from None
        if (stat.st_dev, stat.st_ino) != self._file_id:
            raise StoreUnavailable(
                f"sqlite state store {self.path}: the database file was replaced while in use"
            )

    def _unavailable(self, error: BaseException, what: str) -> StoreUnavailable:
        """The error an operation's caller sees: what failed and why, in one line."""
        if isinstance(error, StoreUnavailable):
            return error
        failure = StoreUnavailable(f"sqlite state store {self.path}: cannot {what}: {error}")
        failure.__cause__ = error
        return failure

    def _purge_in_background(self, conn: sqlite3.Connection) -> None:
        """One purge batch in its own short transaction; the next one soon if more are left."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            now = self._clock()
            done = max(self._purge_step(conn, now), self._keep_step(conn, now))
            conn.execute("COMMIT")
        except sqlite3.Error as error:
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            _log.warning("sqlite_state_purge_failed", path=self.path, error=str(error))
            done = 0
        more = done >= self._purge_batch
        self._next_purge = time.monotonic() + (0.0 if more else self._purge_interval)

    def _purge_step(self, conn: sqlite3.Connection, now: float) -> int:
        """Delete up to ``purge_batch`` records and kept outcomes past retention; count them."""
        deleted = conn.execute(_PURGE, (now, self._purge_batch)).rowcount
        return deleted + conn.execute(_PURGE_KEPT, (now, self._purge_batch)).rowcount

    def _keep_step(self, conn: sqlite3.Connection, now: float) -> int:
        """Shrink up to ``purge_batch`` done records past the replay window to kept outcomes."""
        due = now + self.retention_seconds - self.replay_window_seconds
        rows = conn.execute(_DUE_FOR_KEEPING, (due, self._purge_batch)).fetchall()
        for corp_id, code, command_id, maybe_spent, spent, result, expires_at in rows:
            outcome = pack_kept(
                result or b"",
                command_id,
                spent=bool(spent),
                maybe_spent=bool(maybe_spent),
                finished_at=expires_at - self.retention_seconds,
            )
            conn.execute(_PUT_KEPT, (code_digest(corp_id, code), outcome, math.ceil(expires_at)))
            conn.execute(_DELETE_CODE, (corp_id, code))
        return len(rows)

    # --- operations (writer thread, inside the batch transaction) ---------------------------

    def _claim(
        self, conn: sqlite3.Connection, now: float, key: CodeKey, command_id: str
    ) -> ClaimOutcome:
        """Insert-if-absent; otherwise decide from the record found and take it if allowed."""
        lease_until = now + self.lease_seconds
        expires_at = now + self.retention_seconds
        corp_id, code = key.corp_id, key.response_code
        digest = code_digest(corp_id, code)
        kept = conn.execute(_SELECT_KEPT, (digest, now)).fetchone()
        if kept is not None:
            outcome = decide_kept(kept[0], key, command_id, self.replay_window_seconds)
            if not isinstance(outcome, Claimed):
                return outcome
            conn.execute(_DELETE_KEPT, (digest,))
            conn.execute(_DELETE_CODE, (corp_id, code))  # none expected: kept replaced it
            conn.execute(
                _INSERT_CLAIM,
                (
                    corp_id,
                    code,
                    command_id,
                    self.owner,
                    lease_until,
                    int(outcome.maybe_spent),
                    expires_at,
                ),
            )
            return outcome
        inserted = conn.execute(
            _INSERT_CLAIM, (corp_id, code, command_id, self.owner, lease_until, 0, expires_at)
        ).rowcount
        if inserted:
            return _FRESH
        row = conn.execute(_SELECT, (corp_id, code)).fetchone()
        late = self._decide_late(row, key, command_id, now)
        outcome = decide_claim(row, command_id, now) if late is None else late
        if isinstance(outcome, Claimed):
            conn.execute(
                _TAKE_CLAIM,
                (
                    command_id,
                    self.owner,
                    lease_until,
                    int(outcome.maybe_spent),
                    expires_at,
                    corp_id,
                    code,
                ),
            )
        return outcome

    def _decide_late(
        self,
        row: tuple[str, str, float | None, int, int, bytes | None, float],
        key: CodeKey,
        command_id: str,
        now: float,
    ) -> ClaimOutcome | None:
        """A live done record past the replay window answers as its kept outcome would; else None.

        The background pass may not have shrunk it yet: the answer must not depend on when
        that pass runs.
        """
        state, holder, _, maybe_spent, spent, result, expires_at = row
        finished = expires_at - self.retention_seconds
        if state != "done" or expires_at <= now or finished + self.replay_window_seconds > now:
            return None
        outcome = pack_kept(
            result or b"",
            holder,
            spent=bool(spent),
            maybe_spent=bool(maybe_spent),
            finished_at=finished,
        )
        return decide_kept(outcome, key, command_id, self.replay_window_seconds)

    def _renew(
        self, conn: sqlite3.Connection, now: float, claims: Iterable[tuple[CodeKey, str]]
    ) -> int:
        """Extend each lease held; re-create the claims whose record is gone."""
        lease_until = now + self.lease_seconds
        expires_at = now + self.retention_seconds
        recreated = 0
        for key, command_id in claims:
            corp_id, code = key.corp_id, key.response_code
            renewed = conn.execute(
                _RENEW, (lease_until, expires_at, corp_id, code, command_id, self.owner)
            ).rowcount
            if (
                not renewed
                and not conn.execute(_SELECT_KEPT, (code_digest(corp_id, code), now)).fetchone()
            ):  # a kept outcome is a finished code: never claimed again this way
                recreated += conn.execute(
                    _RECREATE_CLAIM,
                    (corp_id, code, command_id, self.owner, lease_until, expires_at, now),
                ).rowcount
        if recreated:
            _log.warning("sqlite_state_claims_recreated", path=self.path, claims=recreated)
        return recreated

    def _report(self, conn: sqlite3.Connection) -> StoreReport:
        """What the database runs with, and what in it would break the single-use promise."""
        journal_mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
        level = int(conn.execute("PRAGMA synchronous").fetchone()[0])
        synchronous = SYNCHRONOUS_LEVELS[level] if 0 <= level < len(SYNCHRONOUS_LEVELS) else "?"
        real = os.path.realpath(self.path)
        try:
            with open("/proc/mounts", encoding="utf-8") as mounts:  # noqa: PTH123
                filesystem = filesystem_of(real, mounts.read())
        except OSError:
            filesystem = "unknown"
        problems: list[str] = []
        if journal_mode != "wal":
            problems.append(f"journal_mode is {journal_mode}, not wal")
        if synchronous in {"OFF", "NORMAL"}:
            problems.append(
                f"synchronous is {synchronous}: claims committed just before a power loss or "
                "kernel crash may be lost, and their codes sent again (FULL prevents it)"
            )
        if filesystem in VOLATILE_FILESYSTEMS:
            problems.append(
                f"{real} is on {VOLATILE_FILESYSTEMS[filesystem]}: "
                "put it on a persistent volume or used codes are forgotten"
            )
        return StoreReport(
            backend="sqlite",
            durable=not problems,
            details={
                "path": real,
                "journal_mode": journal_mode,
                "synchronous": synchronous,
                "filesystem": filesystem,
                "orphaned_claims_at_open": str(self._orphans_at_open),
            },
            problems=tuple(problems),
        )


_FRESH: Final = Claimed(maybe_spent=False)


def decide_claim(
    row: tuple[str, str, float | None, int, int, bytes | None, float] | None,
    command_id: str,
    now: float,
) -> ClaimOutcome:
    """What a claim by ``command_id`` gets, given the record found (``_SELECT``'s columns).

    A :class:`Claimed` answer means the caller takes the record over.
    """
    if row is None:
        return _FRESH
    state, holder, lease_until, maybe_spent, spent, result, expires_at = row
    if expires_at <= now:  # past retention, not purged yet: as good as absent
        return _FRESH
    if state == "done":
        if holder == command_id:
            return Replay(result or b"")
        if spent:
            return AlreadyUsed(holder)
        return Claimed(maybe_spent=bool(maybe_spent))  # the earlier command did not spend it
    if state == "released":
        return Claimed(maybe_spent=bool(maybe_spent))
    if lease_until is not None and lease_until > now:
        return Busy(holder, lease_until)
    return Claimed(maybe_spent=True)  # its holder died mid-call: the code may be spent


def filesystem_of(path: str, mounts: str) -> str:
    """The type of the filesystem holding ``path`` (absolute, resolved), from /proc/mounts text."""
    best, fstype = "", "unknown"
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = _unescape_mount(fields[1])
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):  # the later of two equal mounts shadows
            best, fstype = point, fields[2]
    return fstype


def _unescape_mount(field: str) -> str:
    r"""/proc/mounts writes space, tab, newline and backslash as octal escapes (``\040``)."""
    if "\\" not in field:
        return field
    return field.encode().decode("unicode_escape").encode("latin-1").decode()
