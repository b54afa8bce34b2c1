"""The worker as a process against a real RabbitMQ and the WeCom simulator: every status, and
what happens across redeliveries, crashes, broker restarts and shutdowns."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from simulator import App as SimApp
from simulator import Fault, SimulatorConfig, run_simulator
from tests.e2e import Stack, accepted, wait_for, wait_for_log, wait_for_queue
from tests.services import RabbitMQNode
from tests.worker_process import AGENT, CORP, SECRET, WorkerProcess, command
from wecom_card_contracts import decode_result

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


async def test_every_status_and_error_code_is_produced(stack: Stack) -> None:
    """ok, partial, rejected (both codes), expired, duplicate, failed (both codes), indeterminate."""
    sim = stack.sim
    sim.state.add_faults(
        Fault(kind="errcode", errcode=40058, errmsg="invalid parameter", response_code="rc-bad"),
        Fault(kind="http_500", count=1000, response_code="rc-500"),
        Fault(kind="lost_answer", response_code="rc-lost"),
    )
    await stack.worker(WECOM_RETRY_BUDGET="1.5")
    async with stack.upstream() as up:
        await up.publish(command("ok", "rc-ok"))
        await up.publish(command("partial", "rc-partial", userids=["zhangsan", "Invalid-Li"]))
        await up.publish(command("invalid", "rc-x", replace_name=""))
        await up.publish({**command("other-app", "rc-y"), "corp_id": "ww-unknown"})
        await up.publish(command("expired", "rc-old", code_issued_at=time.time() - 73 * 3600))
        await up.publish(command("wecom-error", "rc-bad"))
        await up.publish(command("exhausted", "rc-500"))
        await up.publish(command("lost", "rc-lost"))
        results = await up.results(8)
        await up.publish(command("again", "rc-ok"))
        results.update(await up.results(1))
    seen = {cid: (r.status, r.error.code if r.error else None) for cid, r in results.items()}
    assert seen == {
        "ok": ("ok", None),
        "partial": ("partial", None),
        "invalid": ("rejected", "invalid_command"),
        "other-app": ("rejected", "unknown_app"),
        "expired": ("expired", "expired_code"),
        "wecom-error": ("failed", "wecom_error"),
        "exhausted": ("failed", "retries_exhausted"),
        "lost": ("indeterminate", "outcome_unknown"),
        "again": ("duplicate", "code_already_used"),
    }
    assert results["partial"].invalid_users == ["invalid-li"]
    assert results["invalid"].error is not None
    assert results["invalid"].error.path == "request.button.replace_name"
    assert results["wecom-error"].errcode == 40058
    assert results["again"].error is not None
    assert "'ok'" in results["again"].error.message
    assert results["lost"].attempts == 2
    assert accepted(sim, "rc-lost") == 1
    assert accepted(sim, "rc-ok") == 1
    assert sim.state.code_stats("rc-x").calls == 0
    assert sim.state.code_stats("rc-old").calls == 0


async def test_redelivered_command_replays_its_stored_result(stack: Stack) -> None:
    """The same command twice: one call to WeCom, the second result is the first, replayed."""
    await stack.worker()
    async with stack.upstream() as up:
        await up.publish(command("twice", "rc-twice"), correlation_id="first")
        first = (await up.results(1))["twice"]
        await up.publish(command("twice", "rc-twice"), correlation_id="second")
        second = (await up.results(1))["twice"]
    assert (first.status, first.replayed, first.correlation_id) == ("ok", False, "first")
    assert (second.status, second.replayed, second.correlation_id) == ("ok", True, "second")
    assert second.finished_at == first.finished_at
    assert stack.sim.state.code_stats("rc-twice").calls == 1


async def test_reply_to_correlation_id_and_msgpack(stack: Stack) -> None:
    """Results go to reply_to with the command's correlation_id, in the command's encoding."""
    await stack.worker()
    async with stack.upstream() as up:
        assert up.channel is not None
        replies = await up.channel.declare_queue(exclusive=True)
        body = msgspec.msgpack.encode(command("mp", "rc-mp"))
        await up.publish(
            body, content_type="application/msgpack", reply_to=replies.name, correlation_id="corr-1"
        )
        await up.publish(
            command("json", "rc-json"),
            content_type="application/json; charset=utf-8",
            reply_to=replies.name,
        )
        messages = await up.take(replies.name, 2)
    by_type = {m.content_type: m for m in messages}
    packed = by_type["application/msgpack"]
    result = decode_result(packed.body, "msgpack")
    assert (result.command_id, result.status, result.correlation_id) == ("mp", "ok", "corr-1")
    assert packed.correlation_id == "corr-1"
    plain = decode_result(by_type["application/json"].body)
    assert (plain.command_id, plain.correlation_id) == ("json", "json")
    assert by_type["application/json"].correlation_id == "json"


async def test_correlation_id_over_255_bytes_is_in_the_body_only(stack: Stack) -> None:
    """A command_id of 100 Chinese characters (300 bytes) cannot be the AMQP property."""
    await stack.worker()
    command_id = "审" * 100
    async with stack.upstream() as up:
        await up.publish(command(command_id, "rc-long"))
        [message] = await up.take("WECOM_RESULT_QUEUE", 1)
    result = decode_result(message.body)
    assert (result.command_id, result.correlation_id, result.status) == (
        command_id,
        command_id,
        "ok",
    )
    assert message.correlation_id is None


async def test_missing_reply_to_queue_falls_back_to_the_result_queue(stack: Stack) -> None:
    """A result for a reply_to queue that does not exist lands on the result queue, marked."""
    await stack.worker()
    async with stack.upstream() as up:
        await up.publish(command("lost-reply", "rc-lr"), reply_to=f"{stack.prefix}no-such-queue")
        [message] = await up.take("WECOM_RESULT_QUEUE", 1)
    assert message.headers["x-unroutable-reply-to"] == f"{stack.prefix}no-such-queue"
    assert decode_result(message.body).status == "ok"


async def test_deleted_result_queue_is_declared_again(stack: Stack) -> None:
    """Someone deletes the result queue: the worker declares it again and the result lands."""
    worker = await stack.worker()
    async with stack.upstream() as up:
        assert up.channel is not None
        await up.channel.queue_delete(f"{stack.prefix}results")
        await up.publish(command("after-delete", "rc-ad"))
        await wait_for_queue(stack.amqp_url, f"{stack.prefix}results")
        results = await up.results(1)
    assert results["after-delete"].status == "ok"
    assert "the result queue was gone" in worker.logs()


async def test_invalid_command_is_dead_lettered_with_its_reason(stack: Stack) -> None:
    """The original bytes and properties go to the dead-letter queue, the reason in headers."""
    await stack.worker()
    bad = msgspec.json.encode({"command_id": "bad-1", "request": {"agentid": "1000002"}})
    async with stack.upstream() as up:
        await up.publish(bad, correlation_id="c-bad")
        await up.publish(b"\x00not json", content_type="text/plain")
        [dead_1, dead_2] = sorted(await up.take("WECOM_DEAD_LETTER_QUEUE", 2), key=lambda m: m.body)
        results = await up.results(2)
    assert dead_2.body == bad
    assert dead_2.correlation_id == "c-bad"
    assert dead_2.headers["x-wecom-error-code"] == "invalid_command"
    assert dead_2.headers["x-wecom-error-path"] == "request"
    assert dead_2.headers["x-wecom-command-id"] == "bad-1"
    assert dead_1.body == b"\x00not json"
    unnamed = next(r for cid, r in results.items() if cid.startswith("<none"))
    assert unnamed.command_id is None
    assert unnamed.error is not None
    assert "text/plain" in unnamed.error.message
    assert results["bad-1"].error is not None
    assert results["bad-1"].error.path == "request"


async def test_secrets_and_tokens_never_appear_in_logs_results_or_metrics(stack: Stack) -> None:
    """Neither the app secret nor any access token shows up anywhere the worker writes."""
    worker = await stack.worker()
    async with stack.upstream() as up:
        await up.publish(command("s1", "rc-s1"))
        await up.publish(command("s2", "rc-s2", userids=["invalid-x"]))
        messages = await up.take("WECOM_RESULT_QUEUE", 2)
    _, metrics = worker.get("/metrics")
    assert worker.terminate() == 0
    # Within its lifetime the simulator hands out the same token again: the one the worker used.
    token = json.loads(stack.sim.state.gettoken(CORP, SECRET).body)["access_token"]
    written = worker.logs() + metrics + "".join(m.body.decode() for m in messages)
    assert len(token) >= 16
    assert token not in written
    assert SECRET not in written
    assert "access_token=" not in written


async def test_sigterm_finishes_calls_in_flight_and_exits_zero(stack: Stack) -> None:
    """SIGTERM mid-backlog: in-flight calls finish and are acked, the rest stay queued, exit 0."""
    stack.sim.state.set_standing_faults(type(stack.sim.state.standing_faults)(latency_ms=800.0))
    worker = await stack.worker(WECOM_PREFETCH="5", WECOM_CONCURRENCY="5")
    async with stack.upstream() as up:
        for i in range(20):
            await up.publish(command(f"t{i}", f"rc-t{i}"))
        await wait_for(lambda: stack.sim.state.in_flight >= 5)
        code = await asyncio.to_thread(worker.terminate)
        assert code == 0
        results = await up.results(5, timeout=5)
        left = await up.take("WECOM_COMMAND_QUEUE", 15, timeout=10)
    assert all(r.status == "ok" for r in results.values())
    left_ids = {msgspec.json.decode(m.body)["command_id"] for m in left}
    assert left_ids.isdisjoint(results)
    assert len(left_ids | set(results)) == 20
    assert "stopped" in worker.logs()


async def test_sigkill_mid_call_then_restart_never_sends_a_code_twice_without_saying_so(
    stack: Stack,
) -> None:
    """Killed while WeCom holds the call: after restart the command ends indeterminate, not ok twice."""
    stack.sim.state.add_faults(Fault(kind="slow_answer", delay_ms=3000, response_code="rc-kill"))
    worker = await stack.worker()
    async with stack.upstream() as up:
        await up.publish(command("killed", "rc-kill"))
        await wait_for(lambda: stack.sim.state.in_flight >= 1)
        worker.kill()
        await wait_for(lambda: accepted(stack.sim, "rc-kill") == 1, timeout=10)
        await stack.worker()
        results = await up.results(1)
    result = results["killed"]
    assert result.status == "indeterminate"
    assert result.error is not None
    assert result.error.code == "outcome_unknown"
    assert accepted(stack.sim, "rc-kill") == 1


async def test_broker_restart_mid_backlog_loses_nothing(
    rabbitmq: RabbitMQNode, tmp_path: Path, queue_prefix: str
) -> None:
    """300 commands, the broker restarted halfway: 300 results, every code accepted once."""
    config = SimulatorConfig(apps=(SimApp(CORP, AGENT, SECRET),), latency_ms=5.0)
    async with run_simulator(config) as sim:
        stack = Stack(sim=sim, amqp_url=rabbitmq.url, tmp=tmp_path, prefix=queue_prefix)
        try:
            await stack.worker(WECOM_PREFETCH="20", WECOM_CONCURRENCY="20")
            async with stack.upstream() as up:
                for i in range(300):
                    await up.publish(command(f"b{i}", f"rc-b{i}"))
            await wait_for(lambda: sim.state.call_count >= 60, timeout=60)
            await asyncio.to_thread(rabbitmq.restart)
            results: dict[str, Any] = {}
            async with stack.upstream() as up:
                # A command whose ack was lost in the restart is redelivered: its result comes
                # again, replayed. Read until every command has one.
                deadline = time.monotonic() + 120
                while len(results) < 300 and time.monotonic() < deadline:
                    for message in await up.take("WECOM_RESULT_QUEUE", 1, timeout=120):
                        result = decode_result(message.body)
                        results.setdefault(str(result.command_id), result)
        finally:
            for worker in stack.workers:
                worker.close()
        assert set(results) == {f"b{i}" for i in range(300)}
        assert all(r.status == "ok" for r in results.values())
        assert max(accepted(sim, f"rc-b{i}") for i in range(300)) == 1


async def test_consumer_cancelled_by_the_broker_is_restored(stack: Stack) -> None:
    """The command queue deleted under the worker: the queue comes back, consumed, and work goes on."""
    worker = await stack.worker()
    queue = f"{stack.prefix}commands"
    async with stack.upstream() as up:
        assert up.channel is not None
        await up.channel.queue_delete(queue)
        assert "cancelled by the broker" in await wait_for_log(worker, "cancelled by the broker")
        await wait_for_queue(stack.amqp_url, queue)
        await wait_for(worker.ready, timeout=15)
        await up.publish(command("after-cancel", "rc-ac"))
        results = await up.results(1)
    assert results["after-cancel"].status == "ok"


async def test_rate_limited_commands_go_through_the_delay_queue(stack: Stack) -> None:
    """No slot within WECOM_MAX_LIMITER_WAIT: the command waits in the delay queue, then succeeds."""
    worker = await stack.worker(WECOM_RATE_LIMIT="1/s", WECOM_MAX_LIMITER_WAIT="0.1")
    async with stack.upstream() as up:
        for i in range(3):
            await up.publish(command(f"d{i}", f"rc-d{i}"))
        results = await up.results(3, timeout=30)
    assert {r.status for r in results.values()} == {"ok"}
    _, metrics = worker.get("/metrics")
    deferred = [
        line for line in metrics.splitlines() if line.startswith("wecom_commands_deferred_total")
    ]
    assert deferred
    assert float(deferred[0].split()[-1]) >= 1


async def test_metrics_health_and_readiness(stack: Stack) -> None:
    """/metrics counts commands by status; /healthz and /readyz answer."""
    worker = await stack.worker()
    async with stack.upstream() as up:
        await up.publish(command("m1", "rc-m1"))
        await up.results(1)
    status, metrics = worker.get("/metrics")
    assert status == 200
    assert 'wecom_commands_total{status="ok"} 1.0' in metrics
    assert 'wecom_api_calls_total{corp_id="ww-e2e-corp",errcode="0"} 1.0' in metrics
    assert "wecom_broker_connected 1.0" in metrics
    assert "wecom_state_store_durable 1.0" in metrics
    assert worker.get("/healthz")[0] == 200
    status, body = worker.get("/readyz")
    assert status == 200
    assert json.loads(body)["checks"] == {"broker": True, "consumer": True, "state_store": True}


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"WECOM_RATE_LIMIT": "ten per minute"}, "WECOM_RATE_LIMIT"),
        ({"WECOM_PREFETCH": "-1"}, "WECOM_PREFETCH"),
        ({"WECOM_STATE_URL": "postgres://x"}, "WECOM_STATE_URL"),
        ({"WECOM_SECRET_FILE": "/nonexistent/secret"}, "WECOM_SECRET_FILE"),
        ({"WECOM_CORP_ID": ""}, "WECOM_CORP_ID"),
    ],
)
def test_bad_setting_stops_start_up_with_one_line(
    tmp_path: Path, env: dict[str, str], name: str
) -> None:
    """A bad setting: exit 2, one line naming it, no traceback."""
    worker = WorkerProcess("amqp://guest:guest@127.0.0.1:1/", "http://127.0.0.1:1", tmp_path, "x.")
    full = worker.env()
    if "WECOM_SECRET_FILE" in env:
        full.pop("WECOM_SECRET")
    full.update(env)
    done = subprocess.run(
        [sys.executable, "-m", "worker", "run"],
        env=full,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert name in lines[0]
    assert "Traceback" not in done.stderr + done.stdout


def test_second_worker_on_the_same_sqlite_file_is_refused(tmp_path: Path) -> None:
    """The SQLite store serves one replica: a second process on the same file exits 2, saying so."""
    from worker.state.sqlite import SqliteStateStore  # noqa: PLC0415

    async def hold_then_start() -> subprocess.CompletedProcess[str]:
        store = await SqliteStateStore.open(str(tmp_path / "state" / "state.sqlite3"), owner="t")
        try:
            worker = WorkerProcess(
                "amqp://guest:guest@127.0.0.1:1/", "http://127.0.0.1:1", tmp_path / "state", "x."
            )
            return await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "worker", "run"],
                env=worker.env(),
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        finally:
            await store.close()

    (tmp_path / "state").mkdir()
    done = asyncio.run(hold_then_start())
    assert done.returncode == 2
    assert "another worker process" in done.stderr


def test_sigterm_before_the_broker_answers_exits_zero(tmp_path: Path) -> None:
    """A worker still waiting for its broker stops cleanly on SIGTERM."""
    worker = WorkerProcess("amqp://guest:guest@127.0.0.1:9/", "http://127.0.0.1:1", tmp_path, "x.")
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "worker", "run"], env=worker.env(), stdout=out, stderr=out
        )
    deadline = time.monotonic() + 30
    while "broker unreachable" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    assert "stopped" in log.read_text()


async def test_unreachable_state_store_means_no_ack_and_not_ready(stack: Stack) -> None:
    """The SQLite file gone: not sent, not answered, back in the queue once; consuming paused."""
    worker = await stack.worker()
    (stack.tmp / "state" / "state.sqlite3").unlink()
    async with stack.upstream() as up:
        await up.publish(command("no-store", "rc-ns"))
        await wait_for(lambda: worker.get("/readyz")[0] == 503, timeout=15)
        with pytest.raises(TimeoutError):
            await up.results(1, timeout=3)
    assert stack.sim.state.code_stats("rc-ns").calls == 0
    logs = worker.logs()
    assert "state store unavailable; command requeued" in logs
    # Paused, not spinning: the command went back once and was not taken again meanwhile.
    assert "consuming paused" in logs
    assert logs.count("state store unavailable; command requeued") == 1
    worker.kill()
    async with stack.upstream() as up:
        [message] = await up.take("WECOM_COMMAND_QUEUE", 1, timeout=10)
    assert msgspec.json.decode(message.body)["command_id"] == "no-store"


async def test_a_replay_after_the_replay_window_keeps_only_status_and_errcode(stack: Stack) -> None:
    """WECOM_REPLAY_WINDOW=1: a re-send 2 s later is replayed with its status and errcode only."""
    await stack.worker(WECOM_REPLAY_WINDOW="1")
    async with stack.upstream() as up:
        await up.publish(command("window", "rc-window", userids=["ok-user", "invalid-u"]))
        first = (await up.results(1))["window"]
        await asyncio.sleep(2)
        await up.publish(command("window", "rc-window", userids=["ok-user", "invalid-u"]))
        late = (await up.results(1))["window"]
    assert (first.status, first.invalid_users, first.replayed) == ("partial", ["invalid-u"], False)
    assert (late.status, late.errcode, late.replayed) == ("partial", 0, True)
    assert late.invalid_users == []
    assert late.errmsg is not None
    assert "no longer kept" in late.errmsg
    assert stack.sim.state.code_stats("rc-window").calls == 1
