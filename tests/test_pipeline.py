"""The pipeline without RabbitMQ: real SQLite store, real WeCom client, the simulator on port 0."""

from __future__ import annotations

import asyncio
import gzip
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest

from simulator import App as SimApp
from simulator import Fault, RunningSimulator, SimulatorConfig, run_simulator
from wecom_card_contracts import decode_result
from worker.apps import App, AppRegistry
from worker.concurrency import CorpConcurrency
from worker.errors import StoreUnavailable
from worker.metrics import Metrics
from worker.pipeline import Defer, HeldClaims, Pipeline, Reply
from worker.ports import CodeKey, Delivery
from worker.ratelimit import LocalRateLimiter, parse_rate_limit
from worker.state.sqlite import SqliteStateStore
from worker.wecom.client import WeComClient
from worker.wecom.http import HttpOrigin
from worker.wecom.retry import RetryPolicy
from worker.wecom.tokens import TokenCache, create_session

CORP, AGENT, SECRET = "ww-pipe", 1000002, "pipe-secret"


@dataclass
class Rig:
    """A pipeline wired to real parts."""

    pipeline: Pipeline
    store: SqliteStateStore
    sim: RunningSimulator
    claims: HeldClaims


@pytest.fixture
async def rig(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    """Pipeline + SQLite store + WeCom client + simulator (``@pytest.mark.rate_limit("1/s")``)."""
    marker = request.node.get_closest_marker("rate_limit")
    rate = str(marker.args[0]) if marker else "100/s"
    config = SimulatorConfig(apps=(SimApp(CORP, AGENT, SECRET),))
    async with run_simulator(config) as sim:
        store = await SqliteStateStore.open(
            str(tmp_path / "state.db"), owner="test", lease_seconds=5
        )
        session = create_session()
        origin = HttpOrigin(sim.url, max_connections=8)
        metrics = Metrics()
        client = WeComClient(
            origin,
            tokens=TokenCache(session, sim.url, metrics),
            limiter=LocalRateLimiter(parse_rate_limit(rate)),
            concurrency=CorpConcurrency(8),
            metrics=metrics,
            policy=RetryPolicy(budget=1.0, base_delay=0.01, max_delay=0.05),
        )
        claims = HeldClaims()
        pipeline = Pipeline(
            apps=AppRegistry([App(CORP, AGENT, SECRET)]),
            store=store,
            caller=client,
            claims=claims,
            max_message_bytes=4096,
            max_limiter_wait=0.2,
            busy_poll=0.02,
        )
        try:
            yield Rig(pipeline, store, sim, claims)
        finally:
            await origin.close()
            await session.close()
            await store.close()


def body(command_id: str, code: str, **extra: object) -> bytes:
    """A button-mode command."""
    request = {"agentid": AGENT, "response_code": code, "button": {"replace_name": "done"}}
    return msgspec.json.encode({"command_id": command_id, "request": request, **extra})


async def reply(rig: Rig, delivery: Delivery) -> Reply:
    """Process a delivery that must end in a reply."""
    disposition = await rig.pipeline.process(delivery)
    assert isinstance(disposition, Reply)
    return disposition


async def test_ok_result_is_recorded_and_claim_dropped(rig: Rig) -> None:
    """A command is sent once; its result is stored and no claim stays held."""
    out = await reply(rig, Delivery(body("c1", "rc1"), correlation_id="corr"))
    assert (out.result.status, out.result.correlation_id, out.result.attempts) == ("ok", "corr", 1)
    assert out.content_type == "application/json"
    assert rig.claims.snapshot() == []
    again = await reply(rig, Delivery(body("c1", "rc1")))
    assert again.result.replayed
    assert rig.sim.state.code_stats("rc1").calls == 1


async def test_oversized_message_is_rejected_without_decoding(rig: Rig) -> None:
    """A body over WECOM_MAX_MESSAGE_BYTES is rejected and dead-lettered; nothing is sent."""
    big = body("big", "rc-big", padding="x" * 5000)
    out = await reply(rig, Delivery(big))
    assert out.result.status == "rejected"
    assert out.result.error is not None
    assert "at most 4096" in out.result.error.message
    assert out.dead_letter is not None
    assert rig.sim.state.code_stats("rc-big").calls == 0


async def test_gzip_body_is_decoded_and_bombs_are_refused(rig: Rig) -> None:
    """content_encoding gzip works; a body that inflates past the limit is rejected."""
    out = await reply(rig, Delivery(gzip.compress(body("gz", "rc-gz")), content_encoding="gzip"))
    assert out.result.status == "ok"
    bomb = gzip.compress(body("bomb", "rc-bomb", padding="x" * 100_000))
    rejected = await reply(rig, Delivery(bomb, content_encoding="gzip"))
    assert rejected.result.error is not None
    assert "larger than 4096" in rejected.result.error.message
    odd = await reply(rig, Delivery(body("br", "rc-br"), content_encoding="br"))
    assert odd.result.error is not None
    assert "content_encoding 'br'" in odd.result.error.message


async def test_msgpack_command_gets_a_msgpack_result(rig: Rig) -> None:
    """The result uses its command's encoding."""
    packed = msgspec.msgpack.encode(msgspec.json.decode(body("mp", "rc-mp")))
    out = await reply(rig, Delivery(packed, content_type="application/msgpack"))
    assert out.content_type == "application/msgpack"
    assert decode_result(out.body, "msgpack").status == "ok"


async def test_unsupported_content_type_is_answered_in_json(rig: Rig) -> None:
    """text/plain: rejected, answered in JSON, command_id read when possible."""
    out = await reply(rig, Delivery(body("tp", "rc-tp"), content_type="text/plain"))
    assert out.content_type == "application/json"
    assert (out.result.status, out.result.command_id) == ("rejected", "tp")


async def test_same_code_from_two_commands_at_once_is_sent_once(rig: Rig) -> None:
    """Two commands race for one code: one ok, one duplicate naming the other."""
    first, second = await asyncio.gather(
        reply(rig, Delivery(body("a", "rc-race"))), reply(rig, Delivery(body("b", "rc-race")))
    )
    statuses = sorted([first.result.status, second.result.status])
    assert statuses == ["duplicate", "ok"]
    assert rig.sim.state.code_stats("rc-race").calls == 1


async def test_failed_without_spending_lets_another_command_use_the_code(rig: Rig) -> None:
    """A refusal that did not use the code (40058) leaves it to a later command."""
    rig.sim.state.add_faults(Fault(kind="errcode", errcode=40058, response_code="rc-retry"))
    failed = await reply(rig, Delivery(body("f1", "rc-retry")))
    assert failed.result.status == "failed"
    later = await reply(rig, Delivery(body("f2", "rc-retry")))
    assert later.result.status == "ok"


@pytest.mark.rate_limit("2/s")
async def test_no_slot_soon_enough_defers_and_releases_the_claim(rig: Rig) -> None:
    """With the limiter saturated, the command is deferred and its code is free again."""
    outcomes = [await rig.pipeline.process(Delivery(body(f"d{i}", f"rc-d{i}"))) for i in range(4)]
    deferred = [o for o in outcomes if isinstance(o, Defer)]
    assert deferred
    assert all(0 < d.due_at - time.time() < 5 for d in deferred)
    assert rig.claims.snapshot() == []
    await asyncio.sleep(max(d.due_at for d in deferred) - time.time() + 0.1)
    index = next(i for i, o in enumerate(outcomes) if isinstance(o, Defer))
    retried = await reply(rig, Delivery(body(f"d{index}", f"rc-d{index}")))
    assert retried.result.status == "ok"


async def test_store_failure_raises_so_nothing_is_acked(rig: Rig, tmp_path: Path) -> None:
    """With the database file gone the pipeline raises StoreUnavailable instead of answering."""
    (tmp_path / "state.db").unlink()
    with pytest.raises(StoreUnavailable):
        await rig.pipeline.process(Delivery(body("s1", "rc-s1")))
    assert rig.sim.state.code_stats("rc-s1").calls == 0


async def test_expired_code_is_not_sent(rig: Rig) -> None:
    """Older than 72 h: expired, never sent."""
    out = await reply(
        rig, Delivery(body("old", "rc-old", code_issued_at=time.time() - 72 * 3600 - 5))
    )
    assert out.result.status == "expired"
    assert rig.sim.state.code_stats("rc-old").calls == 0
    fresh = await reply(
        rig, Delivery(body("new", "rc-new", code_issued_at=time.time() - 71 * 3600))
    )
    assert fresh.result.status == "ok"


async def test_interrupted_call_gives_the_code_back_as_possibly_spent(rig: Rig) -> None:
    """Cancelled mid-call: the redelivery need not wait for the lease and ends indeterminate."""
    rig.sim.state.add_faults(Fault(kind="slow_answer", delay_ms=500, response_code="rc-int"))
    first = asyncio.create_task(rig.pipeline.process(Delivery(body("int", "rc-int"))))
    while rig.sim.state.in_flight == 0:
        await asyncio.sleep(0.01)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    while rig.sim.state.code_stats("rc-int").accepted == 0:
        await asyncio.sleep(0.01)
    started = time.monotonic()
    again = await reply(rig, Delivery(body("int", "rc-int")))
    assert time.monotonic() - started < 2  # the lease is 5 s: it was released, not waited out
    assert again.result.status == "indeterminate"
    assert rig.sim.state.code_stats("rc-int").accepted == 1


class FlakyComplete:
    """The real SQLite store, except that recording outcomes fails or stalls as told."""

    def __init__(self, store: SqliteStateStore, *, failures: int = 0, stall: float = 0.0) -> None:
        self.store = store
        self.failures = failures
        self.stall = stall
        self.completes = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)

    async def complete(self, key: CodeKey, command_id: str, result: bytes, *, spent: bool) -> None:
        """Fail the first ``failures`` calls; wait ``stall`` s before each write."""
        self.completes += 1
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("database is locked (injected)")
        await asyncio.sleep(self.stall)
        await self.store.complete(key, command_id, result, spent=spent)


async def test_an_answer_that_fails_to_record_once_is_recorded_not_resent(rig: Rig) -> None:
    """Recording ok fails once: it is retried, the result is ok, a redelivery replays it."""
    flaky = FlakyComplete(rig.store, failures=1)
    rig.pipeline.store = flaky  # type: ignore[assignment]
    out = await reply(rig, Delivery(body("rec1", "rc-rec1")))
    assert out.result.status == "ok"
    assert flaky.completes == 2
    again = await reply(rig, Delivery(body("rec1", "rc-rec1")))
    assert (again.result.status, again.result.replayed) == ("ok", True)
    assert rig.sim.state.code_stats("rc-rec1").calls == 1


async def test_a_cancellation_while_recording_does_not_drop_the_answer(rig: Rig) -> None:
    """Cancelled (shutdown) while the ok is being written: it is still recorded, never re-sent."""
    flaky = FlakyComplete(rig.store, stall=0.3)
    rig.pipeline.store = flaky  # type: ignore[assignment]
    task = asyncio.create_task(rig.pipeline.process(Delivery(body("rec2", "rc-rec2"))))
    while flaky.completes == 0:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await rig.pipeline.wait_recorded(5.0) == 0
    rig.pipeline.store = rig.store
    again = await reply(rig, Delivery(body("rec2", "rc-rec2")))
    assert (again.result.status, again.result.replayed) == ("ok", True)
    assert rig.sim.state.code_stats("rc-rec2").calls == 1


async def test_a_redelivery_waits_for_its_first_delivery_in_the_same_process(
    rig: Rig, tmp_path: Path
) -> None:
    """A claim held here is never taken over, whatever its lease says: one call, then a replay."""
    rig.sim.state.add_faults(Fault(kind="slow_answer", delay_ms=300, response_code="rc-self"))
    first = asyncio.create_task(reply(rig, Delivery(body("self", "rc-self"))))
    while rig.sim.state.in_flight == 0:
        await asyncio.sleep(0.01)
    key = CodeKey(CORP, "rc-self")
    # A stalled loop or a clock jump: in the store the lease has run out while the call is on.
    with sqlite3.connect(tmp_path / "state.db") as conn:
        conn.execute("UPDATE codes SET lease_until = 0 WHERE response_code = 'rc-self'")
    second = await reply(rig, Delivery(body("self", "rc-self")))
    assert rig.claims.holder(key) is None
    assert (await first).result.status == "ok"
    assert (second.result.status, second.result.replayed) == ("ok", True)
    assert rig.sim.state.code_stats("rc-self").calls == 1


async def test_a_deferred_command_back_early_is_parked_again_without_a_claim(rig: Rig) -> None:
    """Due in 2 s: deferred again at once, the code untouched; due now: sent."""
    due = time.time() + 2
    headers = {"x-wecom-due-at-ms": int(due * 1000), "x-wecom-first-seen-ms": int(due * 1000)}
    early = await rig.pipeline.process(Delivery(body("early", "rc-early"), headers=headers))
    assert isinstance(early, Defer)
    assert early.due_at == pytest.approx(due, abs=0.001)
    assert rig.sim.state.code_stats("rc-early").calls == 0
    assert rig.claims.snapshot() == []


async def test_a_command_deferred_for_72_hours_without_code_issued_at_expires(rig: Rig) -> None:
    """No code_issued_at, first seen 73 h ago: expired, not deferred forever."""
    first_seen = int((time.time() - 73 * 3600) * 1000)
    headers = {"x-wecom-first-seen-ms": first_seen, "x-wecom-due-at-ms": first_seen}
    out = await reply(rig, Delivery(body("old-defer", "rc-od"), headers=headers))
    assert out.result.status == "expired"
    assert out.result.error is not None
    assert "first received" in out.result.error.message
    assert rig.sim.state.code_stats("rc-od").calls == 0


async def test_replay_after_the_window_keeps_status_and_errcode(rig: Rig) -> None:
    """A command redelivered after the replay window gets its status and errcode, marked replayed."""
    rig.store.replay_window_seconds = 0.05  # read at each claim; the worker's is an hour
    first = await reply(rig, Delivery(body("late", "rc-late")))
    assert first.result.status == "ok"
    await asyncio.sleep(0.1)
    again = await reply(rig, Delivery(body("late", "rc-late"), correlation_id="corr-late"))
    result = again.result
    assert (result.status, result.errcode, result.replayed) == ("ok", 0, True)
    assert (result.command_id, result.correlation_id) == ("late", "corr-late")
    assert result.invalid_users == []
    assert result.errmsg is not None
    assert "no longer kept" in result.errmsg
    other = await reply(rig, Delivery(body("other", "rc-late")))
    assert other.result.status == "duplicate"
    assert other.result.error is not None
    assert "'late'" in other.result.error.message
    assert rig.sim.state.code_stats("rc-late").calls == 1


class VanishingClaims:
    """The real SQLite store, except that the claim is gone (as from a Redis restarted empty)
    when the pipeline renews it before the call; records what renew answered and when."""

    def __init__(self, store: SqliteStateStore, db_path: Path, sim: RunningSimulator) -> None:
        self.store = store
        self.db_path = db_path
        self.sim = sim
        self.renewals: list[tuple[int, int]] = []  # (recreated, calls the simulator had seen)

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)

    async def renew(self, claims: list[tuple[CodeKey, str]]) -> int:
        """Delete the claims first, then renew them through the real store."""
        with sqlite3.connect(self.db_path) as conn:
            for key, _ in claims:
                conn.execute(
                    "DELETE FROM codes WHERE corp_id = ? AND response_code = ?",
                    (key.corp_id, key.response_code),
                )
        recreated = await self.store.renew(claims)
        self.renewals.append((recreated, self.sim.state.call_count))
        return recreated


@pytest.mark.rate_limit("1/s")
async def test_a_claim_gone_while_waiting_for_a_slot_is_written_again_before_the_call(
    rig: Rig, tmp_path: Path
) -> None:
    """A command that waited ~1 s for its slot renews its claim first; a vanished claim is
    written again before the request goes out, and the command ends ok."""
    rig.pipeline.max_limiter_wait = 5.0
    first = await reply(rig, Delivery(body("w1", "rc-w1")))
    calls_before = rig.sim.state.call_count
    spy = VanishingClaims(rig.store, tmp_path / "state.db", rig.sim)
    rig.pipeline.store = spy  # type: ignore[assignment]
    second = await reply(rig, Delivery(body("w2", "rc-w2")))
    assert (first.result.status, second.result.status) == ("ok", "ok")
    assert spy.renewals == [(1, calls_before)]  # re-created, before the simulator saw the call
    assert rig.sim.state.code_stats("rc-w2").calls == 1
