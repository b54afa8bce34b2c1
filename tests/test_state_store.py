"""The behaviour every state store must have, run against each one: SQLite and a real Redis.

Time is moved by hand: the SQLite store reads a fake clock, the Redis store the server's
``TIME`` plus a shift the test sets. Store-specific matters (files, locks, purge, Redis
durability and faults) are in ``test_state_sqlite.py`` and ``test_state_redis.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest
import redis

from wecom_card_contracts import Result, ResultError, decode_result, encode_result
from worker.errors import StoreUnavailable
from worker.ports import AlreadyUsed, Busy, Claimed, ClaimOutcome, CodeKey, Replay, StateStore
from worker.redis_target import connect_redis, parse_redis_url
from worker.state.redis import RedisStateStore, code_key
from worker.state.sqlite import SqliteStateStore

LEASE = 60.0
WINDOW = 3600.0
KEY = CodeKey("ww0123456789abcdef", "code-1")
RESULT_A = b'{"command_id":"a","status":"ok"}'
RESULT_B = b'{"command_id":"b","status":"failed"}'
FRESH = Claimed(maybe_spent=False)


@dataclass
class Harness:
    """One kind of store, opened on an empty database, and the means to move its time."""

    open: Callable[[str], Awaitable[StateStore]]  # owner -> a new store on the same data
    forget: Callable[[CodeKey], None]  # delete a record behind the store's back
    now: Callable[[], Awaitable[float]]  # the store's clock, Unix seconds
    advance: Callable[[float], None]
    shrink: Callable[[StateStore], Awaitable[None]]  # do what the store does after the window


def sqlite_harness(tmp_path: Path, shift: list[float]) -> Harness:
    """SQLite stores on one file, read through a clock that the harness moves."""
    db_path = str(tmp_path / "state.sqlite3")

    def clock() -> float:
        return 1_764_000_000.0 + shift[0]

    async def open_store(owner: str) -> StateStore:
        return await SqliteStateStore.open(
            db_path, owner=owner, lease_seconds=LEASE, replay_window_seconds=WINDOW, clock=clock
        )

    def forget(key: CodeKey) -> None:
        with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
            conn.execute("DELETE FROM codes WHERE response_code = ?", (key.response_code,))

    async def now() -> float:
        return clock()

    async def shrink(store: StateStore) -> None:
        assert isinstance(store, SqliteStateStore)
        await store.keep_due()  # what the background pass does

    return Harness(open_store, forget, now, lambda _: None, shrink)


def redis_harness(url: str, shift: list[float]) -> Harness:
    """Redis stores on one database, timed by the server's clock plus the harness's shift."""

    async def open_store(owner: str) -> StateStore:
        connection = await connect_redis(parse_redis_url(url), password=None, socket_timeout=2.0)
        return await RedisStateStore.open(
            connection,
            owner=owner,
            lease_seconds=LEASE,
            replay_window_seconds=WINDOW,
            time_shift=lambda: shift[0],
        )

    def forget(key: CodeKey) -> None:
        with redis.Redis.from_url(url) as client:
            client.delete(code_key("wecom:", key))

    async def now() -> float:
        with redis.Redis.from_url(url) as client:
            seconds, micros = client.time()
        server_now: float = seconds + micros / 1e6
        return server_now + shift[0]

    async def shrink(_: StateStore) -> None:
        with redis.Redis.from_url(url) as client:  # the done records' TTL (the window) ran out
            for name in client.scan_iter(match="wecom:code:*"):
                client.delete(name)

    return Harness(open_store, forget, now, lambda _: None, shrink)


@pytest.fixture(params=["sqlite", "redis"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    """A harness for each store; every store it opened is closed after the test."""
    shift = [0.0]
    if request.param == "sqlite":
        made = sqlite_harness(tmp_path, shift)
    else:
        made = redis_harness(request.getfixturevalue("fresh_redis_url"), shift)
    opened: list[StateStore] = []

    async def open_store(owner: str) -> StateStore:
        store = await made.open(owner)
        opened.append(store)
        return store

    def advance(seconds: float) -> None:
        shift[0] += seconds

    yield Harness(open_store, made.forget, made.now, advance, made.shrink)
    for store in opened:
        await store.close()


def assert_busy(outcome: ClaimOutcome, command_id: str, lease_until: float) -> None:
    """``outcome`` says ``command_id`` holds the code until about ``lease_until``."""
    assert isinstance(outcome, Busy)
    assert outcome.command_id == command_id
    assert outcome.lease_until == pytest.approx(lease_until, abs=0.5)  # Redis: its own clock


@pytest.fixture
async def store(harness: Harness) -> StateStore:
    """An open store on this test's empty data."""
    return await harness.open("owner-1")


# --- claim: each state ----------------------------------------------------------------------


async def test_absent_code_is_claimed_not_spent(store: StateStore) -> None:
    """A code never seen is claimed, with nothing sent before."""
    assert await store.claim(KEY, "a") == Claimed(maybe_spent=False)


async def test_same_code_in_another_corp_is_another_record(store: StateStore) -> None:
    """The unit of single use is (corp_id, response_code), not the code alone."""
    await store.claim(KEY, "a")
    assert await store.claim(CodeKey("ww-other", KEY.response_code), "b") == FRESH


async def test_corp_and_code_never_run_together(store: StateStore) -> None:
    """("a:b", "c") and ("a", "b:c") are two records, whatever separator a store uses."""
    await store.claim(CodeKey("a:b", "c"), "x")
    assert await store.claim(CodeKey("a", "b:c"), "y") == FRESH


async def test_done_same_command_replays_stored_result(store: StateStore) -> None:
    """A command that finished gets its stored result back, spent or not."""
    await store.claim(KEY, "a")
    await store.complete(KEY, "a", RESULT_A, spent=True)
    assert await store.claim(KEY, "a") == Replay(RESULT_A)
    other = CodeKey(KEY.corp_id, "code-2")
    await store.claim(other, "b")
    await store.complete(other, "b", RESULT_B, spent=False)
    assert await store.claim(other, "b") == Replay(RESULT_B)


async def test_code_spent_by_another_command_is_already_used(store: StateStore) -> None:
    """A second command on a spent code learns which command used it first."""
    await store.claim(KEY, "first")
    await store.complete(KEY, "first", RESULT_A, spent=True)
    assert await store.claim(KEY, "second") == AlreadyUsed("first")
    assert await store.claim(KEY, "third") == AlreadyUsed("first")


async def test_unspent_outcome_lets_another_command_take_the_code(store: StateStore) -> None:
    """A command that failed without spending the code leaves it to the next command."""
    await store.claim(KEY, "a")
    await store.complete(KEY, "a", RESULT_A, spent=False)
    assert await store.claim(KEY, "b") == Claimed(maybe_spent=False)
    assert isinstance(await store.claim(KEY, "c"), Busy)  # b holds it now


async def test_live_lease_of_another_command_is_busy(store: StateStore, harness: Harness) -> None:
    """While a holder's lease runs, another command is told who holds it and until when."""
    start = await harness.now()
    await store.claim(KEY, "a")
    harness.advance(LEASE - 1)
    assert_busy(await store.claim(KEY, "b"), "a", start + LEASE)


async def test_second_delivery_of_same_command_is_busy(store: StateStore) -> None:
    """Another delivery of a command still being processed waits instead of calling again."""
    await store.claim(KEY, "a")
    outcome = await store.claim(KEY, "a")
    assert isinstance(outcome, Busy)
    assert outcome.command_id == "a"


@pytest.mark.parametrize("claimer", ["a", "b"])
async def test_expired_lease_is_taken_over_as_maybe_spent(
    store: StateStore, harness: Harness, claimer: str
) -> None:
    """A claim whose holder died mid-call is taken over, flagged as possibly sent."""
    await store.claim(KEY, "a")
    harness.advance(LEASE + 0.001)
    assert await store.claim(KEY, claimer) == Claimed(maybe_spent=True)
    assert isinstance(await store.claim(KEY, "c"), Busy)  # the new holder has a fresh lease


@pytest.mark.parametrize("maybe_spent", [False, True])
async def test_release_keeps_maybe_spent_flag(store: StateStore, maybe_spent: bool) -> None:
    """A released code goes to the next claimer with the flag given at release."""
    await store.claim(KEY, "a")
    await store.release(KEY, "a", maybe_spent=maybe_spent)
    assert await store.claim(KEY, "b") == Claimed(maybe_spent=maybe_spent)


async def test_released_command_takes_its_code_back(store: StateStore) -> None:
    """A deferred command coming back from the delay queue claims its released code again."""
    await store.claim(KEY, "a")
    await store.release(KEY, "a", maybe_spent=False)
    assert await store.claim(KEY, "a") == Claimed(maybe_spent=False)


async def test_release_never_forgets_an_earlier_holder_may_have_sent(
    store: StateStore, harness: Harness
) -> None:
    """A holder that took over a maybe-spent code and sent nothing still releases it as maybe spent."""
    await store.claim(KEY, "a")
    harness.advance(LEASE + 1)
    assert await store.claim(KEY, "b") == Claimed(maybe_spent=True)
    await store.release(KEY, "b", maybe_spent=False)
    assert await store.claim(KEY, "c") == Claimed(maybe_spent=True)


async def test_release_by_a_command_not_holding_the_code_changes_nothing(
    store: StateStore,
) -> None:
    """Only the holder can release: another command's release leaves the claim in place."""
    await store.claim(KEY, "a")
    await store.release(KEY, "b", maybe_spent=True)
    outcome = await store.claim(KEY, "b")
    assert isinstance(outcome, Busy)
    assert outcome.command_id == "a"


# --- complete -------------------------------------------------------------------------------


async def test_complete_without_a_record_writes_it(store: StateStore) -> None:
    """An outcome whose claim vanished is still written: it is what happened at WeCom."""
    await store.complete(KEY, "a", RESULT_A, spent=True)
    assert await store.claim(KEY, "b") == AlreadyUsed("a")


async def test_spent_outcome_of_another_command_is_never_overwritten(store: StateStore) -> None:
    """The first command that spent the code stays recorded, whatever completes later."""
    await store.claim(KEY, "a")
    await store.complete(KEY, "a", RESULT_A, spent=True)
    await store.complete(KEY, "b", RESULT_B, spent=True)
    await store.complete(KEY, "b", RESULT_B, spent=False)
    await store.complete(KEY, "a", RESULT_B, spent=False)
    assert await store.claim(KEY, "a") == Replay(RESULT_A)
    assert await store.claim(KEY, "c") == AlreadyUsed("a")


async def test_spent_outcome_after_a_lost_claim_is_recorded(
    store: StateStore, harness: Harness
) -> None:
    """A holder whose lease ran out but who spent the code records it over the new holder's claim."""
    await store.claim(KEY, "a")
    harness.advance(LEASE + 1)
    assert await store.claim(KEY, "b") == Claimed(maybe_spent=True)
    await store.complete(KEY, "a", RESULT_A, spent=True)
    await store.complete(KEY, "b", RESULT_B, spent=True)  # b's 60140, too late to matter
    assert await store.claim(KEY, "c") == AlreadyUsed("a")
    assert await store.claim(KEY, "a") == Replay(RESULT_A)


async def test_unspent_outcome_does_not_displace_another_live_claim(
    store: StateStore, harness: Harness
) -> None:
    """A late holder that did not spend the code cannot free it while the new holder works."""
    await store.claim(KEY, "a")
    harness.advance(LEASE + 1)
    await store.claim(KEY, "b")
    await store.complete(KEY, "a", RESULT_A, spent=False)
    assert isinstance(await store.claim(KEY, "c"), Busy)
    await store.complete(KEY, "b", RESULT_B, spent=False)
    assert await store.claim(KEY, "b") == Replay(RESULT_B)


async def test_unspent_outcome_does_not_displace_another_release(store: StateStore) -> None:
    """A late unspent outcome of another command leaves a released record as it is."""
    await store.claim(KEY, "a")
    await store.release(KEY, "a", maybe_spent=True)
    await store.complete(KEY, "b", RESULT_B, spent=False)
    assert await store.claim(KEY, "c") == Claimed(maybe_spent=True)


async def test_unspent_outcome_keeps_what_an_earlier_holder_may_have_sent(
    store: StateStore, harness: Harness
) -> None:
    """After a maybe-spent takeover ends unspent, the next command still hears 'maybe spent'."""
    await store.claim(KEY, "a")
    harness.advance(LEASE + 1)
    await store.claim(KEY, "b")
    await store.complete(KEY, "b", RESULT_B, spent=False)
    assert await store.claim(KEY, "c") == Claimed(maybe_spent=True)


# --- renew ----------------------------------------------------------------------------------


async def test_renew_extends_the_lease(store: StateStore, harness: Harness) -> None:
    """A renewed claim stays busy past its first lease and counts nothing re-created."""
    await store.claim(KEY, "a")
    harness.advance(LEASE * 0.75)
    renewed_at = await harness.now()
    assert await store.renew([(KEY, "a")]) == 0
    harness.advance(LEASE * 0.75)
    assert_busy(await store.claim(KEY, "b"), "a", renewed_at + LEASE)


async def test_renew_recreates_a_vanished_claim(store: StateStore, harness: Harness) -> None:
    """A claim deleted behind the store's back comes back on renewal, counted once."""
    other = CodeKey(KEY.corp_id, "code-2")
    await store.claim(KEY, "a")
    await store.claim(other, "b")
    harness.forget(KEY)
    assert await store.renew([(KEY, "a"), (other, "b")]) == 1
    assert_busy(await store.claim(KEY, "c"), "a", await harness.now() + LEASE)
    await store.complete(KEY, "a", RESULT_A, spent=True)  # the holder can still finish
    assert await store.claim(KEY, "a") == Replay(RESULT_A)


async def test_renew_leaves_records_it_does_not_hold(store: StateStore, harness: Harness) -> None:
    """Renewal neither steals a code another command holds nor revives a finished one."""
    await store.claim(KEY, "a")
    harness.advance(LEASE + 1)
    await store.claim(KEY, "b")
    done = CodeKey(KEY.corp_id, "code-2")
    await store.claim(done, "a")
    await store.complete(done, "a", RESULT_A, spent=True)
    assert await store.renew([(KEY, "a"), (done, "a")]) == 0
    held = await store.claim(KEY, "c")
    assert isinstance(held, Busy)
    assert held.command_id == "b"
    assert await store.claim(done, "a") == Replay(RESULT_A)
    assert await store.renew([]) == 0


# --- concurrency, health ------------------------------------------------------------------


async def test_concurrent_claims_of_one_code_give_exactly_one_holder(store: StateStore) -> None:
    """500 tasks racing for the same code: one wins, every other one is told it is busy."""
    outcomes = await asyncio.gather(*(store.claim(KEY, f"cmd-{i}") for i in range(500)))
    winners = [o for o in outcomes if isinstance(o, Claimed)]
    assert winners == [Claimed(maybe_spent=False)]
    assert sum(isinstance(o, Busy) for o in outcomes) == 499


async def test_cancelled_caller_does_not_hold_up_others(store: StateStore) -> None:
    """A caller cancelled while its claim waits to be sent leaves the calls sent with it answered."""
    cancelled = asyncio.ensure_future(store.claim(KEY, "a"))
    other = asyncio.ensure_future(store.claim(CodeKey(KEY.corp_id, "code-2"), "b"))
    await asyncio.sleep(0)  # both are queued, likely in one batch
    cancelled.cancel()
    assert await asyncio.wait_for(other, 5) == FRESH
    assert cancelled.cancelled()
    assert isinstance(await store.claim(CodeKey(KEY.corp_id, "code-3"), "c"), Claimed)


async def test_ping_answers_on_a_healthy_store(store: StateStore) -> None:
    """A store that can be read and written answers a ping."""
    await store.ping()


async def test_closed_store_refuses_calls(harness: Harness) -> None:
    """After close, calls fail with StoreUnavailable instead of hanging."""
    store = await harness.open("owner-1")
    await store.close()
    await store.close()  # twice is harmless
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.claim(KEY, "a")


# --- the replay window ----------------------------------------------------------------------

PARTIAL = Result(
    command_id="a",
    correlation_id="corr-a",
    status="partial",
    agentid=1000002,
    response_code=KEY.response_code,
    errcode=0,
    errmsg="ok",
    invalid_users=["userid2"],
    attempts=2,
    received_at=1_764_000_001.25,
    finished_at=1_764_000_001.5,
)
EXHAUSTED = msgspec.structs.replace(
    PARTIAL,
    status="failed",
    errcode=-1,
    errmsg="system busy",
    invalid_users=[],
    error=ResultError(code="retries_exhausted", message="WeCom kept answering -1"),
)


async def past_the_window(harness: Harness, store: StateStore, *, shrunk: bool) -> None:
    """Move the store's time past the replay window; ``shrunk``: as after the store's own pass."""
    harness.advance(WINDOW + 1)
    if shrunk:
        await harness.shrink(store)


def late_replay_of(outcome: ClaimOutcome) -> Result:
    """The Result a late replay re-sends."""
    assert isinstance(outcome, Replay)
    return decode_result(outcome.result)


async def test_full_result_replays_within_the_window(store: StateStore, harness: Harness) -> None:
    """Until the window ends, a redelivered command gets its whole stored result back."""
    stored = encode_result(PARTIAL)
    await store.claim(KEY, "a")
    await store.complete(KEY, "a", stored, spent=True)
    harness.advance(WINDOW - 5)
    assert await store.claim(KEY, "a") == Replay(stored)


@pytest.mark.parametrize("shrunk", [False, True])
async def test_after_the_window_a_replay_keeps_status_and_errcode(
    store: StateStore, harness: Harness, shrunk: bool
) -> None:
    """Past the window the replay has the status, errcode and attempts, no details, and says so."""
    await store.claim(KEY, "a")
    await store.complete(KEY, "a", encode_result(PARTIAL), spent=True)
    await past_the_window(harness, store, shrunk=shrunk)
    late = late_replay_of(await store.claim(KEY, "a"))
    assert (late.command_id, late.status, late.errcode) == ("a", "partial", 0)
    assert (late.response_code, late.attempts, late.error) == (KEY.response_code, 2, None)
    assert late.invalid_users == []
    assert late.errmsg is not None
    assert late.errmsg.startswith("ok (details of this result are no longer kept")
    assert (late.received_at, late.finished_at) == (PARTIAL.received_at, PARTIAL.finished_at)
    assert late_replay_of(await store.claim(KEY, "a")) == late  # and again, the same


@pytest.mark.parametrize("shrunk", [False, True])
async def test_after_the_window_a_failure_keeps_its_error_code(
    store: StateStore, harness: Harness, shrunk: bool
) -> None:
    """A failed outcome replays past the window with its errcode and error.code, not its texts."""
    await store.claim(KEY, "a")
    await store.complete(KEY, "a", encode_result(EXHAUSTED), spent=False)
    await past_the_window(harness, store, shrunk=shrunk)
    late = late_replay_of(await store.claim(KEY, "a"))
    assert (late.status, late.errcode) == ("failed", -1)
    assert late.error is not None
    assert late.error.code == "retries_exhausted"
    assert "no longer kept" in late.error.message
    assert late.errmsg is not None
    assert "no longer kept" in late.errmsg


@pytest.mark.parametrize("shrunk", [False, True])
@pytest.mark.parametrize(
    ("first", "named"),
    [
        ("order-42-approve", "order-42-approve"),
        ("0f8fad5b-d9cb-469f-a165-70867728950e", "0f8fad5b-d9cb-469f-a165-70867728950e"),
        ("approval/" + "x" * 60, "approval/xxxxxxx…"),
    ],
)
async def test_after_the_window_a_duplicate_names_the_first_command(
    store: StateStore, harness: Harness, shrunk: bool, first: str, named: str
) -> None:
    """Another command still hears who spent the code: a short id or a UUID exactly, a long one by its start."""
    await store.claim(KEY, first)
    await store.complete(KEY, first, encode_result(PARTIAL), spent=True)
    await past_the_window(harness, store, shrunk=shrunk)
    assert await store.claim(KEY, "second") == AlreadyUsed(named)
    assert late_replay_of(await store.claim(KEY, first)).command_id == first


@pytest.mark.parametrize("shrunk", [False, True])
async def test_after_the_window_a_spent_code_is_never_claimable(
    store: StateStore, harness: Harness, shrunk: bool
) -> None:
    """Neither a renewal, nor a late outcome of another command, nor a long wait frees a spent code."""
    await store.claim(KEY, "a")
    await store.complete(KEY, "a", encode_result(PARTIAL), spent=True)
    await past_the_window(harness, store, shrunk=shrunk)
    assert await store.renew([(KEY, "b")]) == 0
    await store.complete(KEY, "b", RESULT_B, spent=True)
    await store.complete(KEY, "b", RESULT_B, spent=False)
    await store.release(KEY, "b", maybe_spent=False)
    harness.advance(70 * 3600)  # still inside the 73 h retention
    assert await store.claim(KEY, "c") == AlreadyUsed("a")
    assert late_replay_of(await store.claim(KEY, "a")).status == "partial"


@pytest.mark.parametrize("shrunk", [False, True])
@pytest.mark.parametrize("maybe_spent", [False, True])
async def test_after_the_window_an_unspent_code_goes_to_the_next_command(
    store: StateStore, harness: Harness, shrunk: bool, maybe_spent: bool
) -> None:
    """A code its command did not spend is taken by the next one, with what may have been sent."""
    await store.claim(KEY, "a")
    if maybe_spent:  # a's lease ran out mid-call: a may have sent it
        harness.advance(LEASE + 1)
        await store.claim(KEY, "b")
        await store.complete(KEY, "b", RESULT_B, spent=False)
    else:
        await store.complete(KEY, "a", encode_result(EXHAUSTED), spent=False)
    await past_the_window(harness, store, shrunk=shrunk)
    assert await store.claim(KEY, "c") == Claimed(maybe_spent=maybe_spent)
    assert isinstance(await store.claim(KEY, "d"), Busy)  # c holds it now
    await store.complete(KEY, "c", encode_result(PARTIAL), spent=True)
    assert await store.claim(KEY, "d") == AlreadyUsed("c")
    assert await store.claim(KEY, "c") == Replay(encode_result(PARTIAL))  # a new window


@pytest.mark.parametrize("shrunk", [False, True])
async def test_after_the_window_an_unspent_code_can_be_recorded_over(
    store: StateStore, harness: Harness, shrunk: bool
) -> None:
    """An outcome recorded without a claim over an unspent kept code replaces it, flags carried."""
    await store.claim(KEY, "a")
    harness.advance(LEASE + 1)
    await store.claim(KEY, "b")
    await store.complete(KEY, "b", RESULT_B, spent=False)
    await past_the_window(harness, store, shrunk=shrunk)
    await store.complete(KEY, "a", RESULT_A, spent=False)
    assert await store.claim(KEY, "a") == Replay(RESULT_A)
    assert await store.claim(KEY, "c") == Claimed(maybe_spent=True)
