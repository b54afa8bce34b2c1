"""The worker against a misbehaving or hostile broker side: every command ends with one result.

Direct reply-to (RabbitMQ 3.x returns such a publish as unroutable although it delivered it), a
reply queue that refuses every publish, delay buckets with deferrals of two corps, a memory
alarm that blocks publishers, the command queue's dead-letter exchange, and start-up refusals.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import aio_pika
import msgspec
import pytest

from simulator import App as SimApp
from simulator import SimulatorConfig, run_simulator
from tests.e2e import Stack, accepted, wait_for
from tests.services import LOOPBACK, RabbitMQNode, free_port
from tests.worker_process import AGENT, CORP, SECRET, WorkerProcess, command, queue_topology
from wecom_card_contracts import decode_result

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


async def test_direct_reply_to_gets_exactly_one_result(stack: Stack) -> None:
    """amq.rabbitmq.reply-to: the result arrives there once and nothing lands on the result queue."""
    await stack.worker()
    connection = await aio_pika.connect(stack.amqp_url)
    replies: list[bytes] = []
    async with connection:
        channel = await connection.channel()

        async def on_reply(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            replies.append(message.body)

        reply_queue = await channel.get_queue("amq.rabbitmq.reply-to", ensure=False)
        await reply_queue.consume(on_reply, no_ack=True)
        await channel.default_exchange.publish(
            aio_pika.Message(
                msgspec.json.encode(command("direct-once", "rc-direct-once")),
                reply_to="amq.rabbitmq.reply-to",
            ),
            routing_key=f"{stack.prefix}commands",
        )
        deadline = time.monotonic() + 30
        while not replies and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)  # a second copy would have come by now
    assert len(replies) == 1
    assert decode_result(replies[0]).status == "ok"
    async with stack.upstream() as up:
        with pytest.raises(TimeoutError):
            await up.take("WECOM_RESULT_QUEUE", 1, timeout=1)


async def test_a_reply_queue_that_refuses_falls_back_after_a_few_tries(stack: Stack) -> None:
    """reply_to is full with reject-publish: after bounded tries the result goes to the result
    queue, saying why, with a message_id derived from the command."""
    worker = await stack.worker()
    full = f"{stack.prefix}full-replies"
    async with stack.upstream() as up:
        assert up.channel is not None
        await up.channel.declare_queue(
            full, arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
        )
        await up.publish(command("refused", "rc-refused"), reply_to=full)
        [message] = await up.take("WECOM_RESULT_QUEUE", 1, timeout=30)
        with pytest.raises(TimeoutError):
            await up.take("WECOM_RESULT_QUEUE", 1, timeout=1)
        await up.publish(command("refused", "rc-refused"), reply_to=full)
        [replayed] = await up.take("WECOM_RESULT_QUEUE", 1, timeout=30)
    assert message.headers["x-unroutable-reply-to"] == full
    assert "refused" in str(message.headers["x-unroutable-reason"])
    assert decode_result(message.body).status == "ok"
    assert message.message_id is not None
    assert message.message_id.startswith("result-")
    assert replayed.message_id == message.message_id  # the same command's result: dedupable
    assert decode_result(replayed.body).replayed
    assert worker.logs().count("publish not confirmed, retrying") >= 2


async def test_a_short_deferral_does_not_wait_behind_a_long_one_of_another_corp(
    amqp_url: str, tmp_path: Path, queue_prefix: str
) -> None:
    """Corp A parked for 8 s, then corp B's second command deferred for ~0.5 s: B's comes back
    within a second of its due time, long before A's; A's comes back no earlier than its own."""
    corp_a, corp_b = "ww-corp-a", "ww-corp-b"
    apps_file = tmp_path / "apps.toml"
    apps_file.write_text(
        "".join(
            f'[[apps]]\ncorp_id = "{corp}"\nagentid = {AGENT}\nsecret = "{SECRET}"\n\n'
            for corp in (corp_a, corp_b)
        )
    )
    config = SimulatorConfig(apps=(SimApp(corp_a, AGENT, SECRET), SimApp(corp_b, AGENT, SECRET)))
    async with run_simulator(config) as sim:
        stack = Stack(sim=sim, amqp_url=amqp_url, tmp=tmp_path, prefix=queue_prefix)
        try:
            await stack.worker(
                WECOM_APPS_FILE=str(apps_file),
                WECOM_CORP_ID="",
                WECOM_AGENT_ID="",
                WECOM_SECRET="",
                WECOM_RATE_LIMIT="2/s",
                WECOM_MAX_LIMITER_WAIT="0.05",
            )
            async with stack.upstream() as up:
                assert up.channel is not None
                published = time.time()
                long_due = published + 8
                # As the worker parks a command it deferred: its due time in a header.
                await up.channel.default_exchange.publish(
                    aio_pika.Message(
                        msgspec.json.encode({**command("a-long", "rc-a"), "corp_id": corp_a}),
                        headers={"x-wecom-due-at-ms": int(long_due * 1000)},
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=f"{queue_prefix}commands",
                )
                await up.publish({**command("b-1", "rc-b1"), "corp_id": corp_b})
                await up.publish({**command("b-2", "rc-b2"), "corp_id": corp_b})
                finished: dict[str, float] = {}
                while len(finished) < 3:
                    for message in await up.take("WECOM_RESULT_QUEUE", 1, timeout=30):
                        result = decode_result(message.body)
                        assert result.status == "ok"
                        finished[str(result.command_id)] = time.time()
        finally:
            for worker in stack.workers:
                worker.close()
    assert finished["b-2"] - published < 3.0
    assert finished["b-2"] < finished["a-long"]
    assert finished["a-long"] >= long_due - 0.1
    assert finished["a-long"] - long_due < 2.0
    assert accepted(sim, "rc-a") == accepted(sim, "rc-b2") == 1


async def test_a_memory_alarm_blocks_publishes_and_nothing_is_lost(
    rabbitmq: RabbitMQNode, tmp_path: Path, queue_prefix: str
) -> None:
    """The broker blocks publishers for a few seconds: every command still ends with one result."""
    config = SimulatorConfig(apps=(SimApp(CORP, AGENT, SECRET),))
    async with run_simulator(config) as sim:
        stack = Stack(sim=sim, amqp_url=rabbitmq.url, tmp=tmp_path, prefix=queue_prefix)
        try:
            await stack.worker(WECOM_PUBLISH_TIMEOUT="1")
            async with stack.upstream() as up:
                for i in range(20):
                    await up.publish(command(f"mem-{i}", f"rc-mem-{i}"))
            await asyncio.to_thread(rabbitmq.ctl, "set_vm_memory_high_watermark", "0")
            try:
                await asyncio.sleep(4)
            finally:
                await asyncio.to_thread(rabbitmq.ctl, "set_vm_memory_high_watermark", "0.4")
            results: dict[str, bool] = {}
            async with stack.upstream() as up:
                deadline = time.monotonic() + 60
                while len(results) < 20 and time.monotonic() < deadline:
                    for message in await up.take("WECOM_RESULT_QUEUE", 1, timeout=60):
                        result = decode_result(message.body)
                        assert result.status == "ok"
                        results.setdefault(str(result.command_id), result.replayed)
        finally:
            for worker in stack.workers:
                worker.close()
    assert set(results) == {f"mem-{i}" for i in range(20)}
    assert max(accepted(sim, f"rc-mem-{i}") for i in range(20)) == 1


async def test_what_the_command_queue_drops_goes_to_the_dead_letter_queue(stack: Stack) -> None:
    """The command queue has a dead-letter exchange: a rejected message is moved, not lost."""
    worker = await stack.worker()
    assert worker.terminate() == 0
    async with stack.upstream() as up:
        assert up.channel is not None
        await up.publish(command("dropped", "rc-dropped"))
        queue = await up.channel.declare_queue(f"{stack.prefix}commands", passive=True)
        message = await queue.get(timeout=10)
        await message.reject(requeue=False)
        [dead] = await up.take("WECOM_DEAD_LETTER_QUEUE", 1, timeout=10)
    assert msgspec.json.decode(dead.body)["command_id"] == "dropped"


def start_and_fail(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a worker that must refuse to start; its completed process."""
    worker = WorkerProcess("", "http://127.0.0.1:1", tmp_path, "refuse.")
    full = worker.env()
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "worker", "run"],
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("change", "setting", "words"),
    [
        ("credentials", "WECOM_AMQP_URL", "refused the credentials"),
        ("vhost", "WECOM_AMQP_URL", "vhost"),
        ("port", "WECOM_HTTP_PORT", "cannot listen"),
    ],
)
def test_start_up_refusals_are_one_line_and_exit_2(
    amqp_url: str, tmp_path: Path, change: str, setting: str, words: str
) -> None:
    """Wrong credentials, a missing vhost, a port in use: one line naming the setting, exit 2."""
    url = amqp_url
    env: dict[str, str] = {}
    if change == "credentials":
        url = amqp_url.replace("guest:guest@", "guest:wrong-password@")
    elif change == "vhost":
        url = amqp_url.rstrip("/") + "/no-such-vhost"
    with socket.socket() as busy:
        busy.bind((LOOPBACK, free_port()))
        busy.listen()
        if change == "port":
            env["WECOM_HTTP_PORT"] = str(busy.getsockname()[1])
        done = start_and_fail(tmp_path, WECOM_AMQP_URL=url, **env)
    assert done.returncode == 2, done.stderr + done.stdout[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert setting in lines[0]
    assert words in lines[0]
    assert "wrong-password" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


async def test_delay_buckets_dead_letter_at_least_once(stack: Stack) -> None:
    """Each delay bucket is a quorum queue that moves expired commands back at least once."""
    await stack.worker()
    topology = queue_topology(WorkerProcess(stack.amqp_url, "", stack.tmp, stack.prefix).queues)
    connection = await aio_pika.connect(stack.amqp_url)
    async with connection:
        for ttl, name in topology.buckets():
            channel = await connection.channel()
            await channel.declare_queue(
                name, durable=True, arguments=topology.bucket_arguments(ttl)
            )
            weaker = {**topology.bucket_arguments(ttl), "x-dead-letter-strategy": "at-most-once"}
            channel = await connection.channel()
            with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
                await channel.declare_queue(name, durable=True, arguments=weaker)


def hot_path_connections(rabbitmq: RabbitMQNode) -> list[str]:
    """The Erlang pids of the workers' hot-path connections (named ``… (hot path)``)."""
    listing = rabbitmq.ctl("list_connections", "pid", "client_properties")
    return [line.split("\t", 1)[0] for line in listing.splitlines() if "(hot path)" in line]


async def test_a_hot_path_connection_the_broker_closes_is_replaced_and_nothing_is_lost(
    rabbitmq: RabbitMQNode, tmp_path: Path, queue_prefix: str
) -> None:
    """The broker closes the deliveries' connection with calls in flight: a new one is opened at
    once, every command ends `ok`, no code is sent twice, and work goes on."""
    config = SimulatorConfig(apps=(SimApp(CORP, AGENT, SECRET),), latency_ms=1000)
    async with run_simulator(config) as sim:
        stack = Stack(sim=sim, amqp_url=rabbitmq.url, tmp=tmp_path, prefix=queue_prefix)
        try:
            worker = await stack.worker()
            async with stack.upstream() as up:
                for i in range(20):
                    await up.publish(command(f"hot-{i}", f"rc-hot-{i}"))
                await asyncio.sleep(0.3)  # every call in flight, every delivery unacked
                (pid,) = await asyncio.to_thread(hot_path_connections, rabbitmq)
                await asyncio.to_thread(rabbitmq.ctl, "close_connection", pid, "test closes it")
                await wait_for(lambda: len(hot_path_connections(rabbitmq)) == 1, timeout=10)
                await wait_for(worker.ready, timeout=10)
                await up.publish(command("hot-after", "rc-hot-after"))
                results: dict[str, str] = {}
                replays = 0
                deadline = time.monotonic() + 60
                while (len(results) < 21 or not replays) and time.monotonic() < deadline:
                    for message in await up.take("WECOM_RESULT_QUEUE", 1, timeout=60):
                        result = decode_result(message.body)
                        results.setdefault(str(result.command_id), result.status)
                        replays += result.replayed
        finally:
            for started in stack.workers:
                started.close()
    assert results == {**{f"hot-{i}": "ok" for i in range(20)}, "hot-after": "ok"}
    # Acks that went to the closed channel: those commands came back and got their stored results.
    assert replays >= 1
    assert max(accepted(sim, f"rc-hot-{i}") for i in range(20)) == 1
