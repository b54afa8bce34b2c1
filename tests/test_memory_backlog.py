"""Memory under a deep backlog: 100,000 commands at the largest prefetch, RSS bounded and flat.

The worker holds at most ``WECOM_PREFETCH`` deliveries, so its memory depends on the prefetch,
not on how long the queue is. The test fills the command queue with 100,000 commands, starts a
worker with prefetch 65,535 (AMQP's maximum), samples the worker's resident set every half
second until every command has its result, and checks that the last third of the run needs no
more memory than the first third (plus a little for allocator slack): no growth per command.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import aiormq
import msgspec
import pytest

from tests.e2e import Stack
from tests.worker_process import WorkerProcess, command, queue_topology
from worker.amqp import Topology

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

BACKLOG = 100_000
PREFETCH = 65_535
BATCH = 2_000
SLACK_MIB = 16.0


def rss_mib(pid: int) -> float:
    """The process's resident set (VmRSS) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


async def fill(url: str, topology: Topology, count: int) -> None:
    """Publish ``count`` commands with confirms, ``BATCH`` at a time."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        for name, arguments in (
            (topology.command_queue, topology.command_arguments()),
            (topology.result_queue, topology.durable_arguments()),
        ):
            await channel.queue_declare(name, durable=True, arguments=arguments)
        properties = aiormq.spec.Basic.Properties(content_type="application/json", delivery_mode=2)
        for first in range(0, count, BATCH):
            await asyncio.gather(
                *(
                    channel.basic_publish(
                        msgspec.json.encode(command(f"mem-{i}", f"rc-mem-{i}")),
                        routing_key=topology.command_queue,
                        properties=properties,
                    )
                    for i in range(first, min(first + BATCH, count))
                )
            )
    finally:
        await connection.close()


async def depth(url: str, queue: str) -> int:
    """Messages ready in ``queue``."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        declared = await channel.queue_declare(queue, passive=True)
        return int(declared.message_count or 0)
    finally:
        await connection.close()


async def test_rss_stays_flat_through_a_100k_backlog_at_the_largest_prefetch(
    stack: Stack, record_property: Callable[[str, object], None]
) -> None:
    """100,000 commands, prefetch 65,535: every result arrives and memory does not grow."""
    queues = WorkerProcess(stack.amqp_url, "", stack.tmp, stack.prefix).queues
    topology = queue_topology(queues)
    await fill(stack.amqp_url, topology, BACKLOG)
    worker = await stack.worker(
        WECOM_PREFETCH=str(PREFETCH),
        WECOM_LOG_LEVEL="warning",
        WECOM_RATE_LIMIT="100000000/h",
        WECOM_RETRY_BUDGET="30",
    )
    assert worker.process is not None
    pid = worker.process.pid
    samples: list[float] = []
    deadline = time.monotonic() + 480
    while (done := await depth(stack.amqp_url, topology.result_queue)) < BACKLOG:
        assert time.monotonic() < deadline, f"{done} of {BACKLOG} results"
        samples.append(rss_mib(pid))
        await asyncio.sleep(0.5)
    assert await depth(stack.amqp_url, topology.command_queue) == 0
    third = max(len(samples) // 3, 1)
    first, last = max(samples[:third]), max(samples[-third:])
    record_property("worker_rss_peak_mib", round(max(samples), 1))
    record_property("worker_rss_first_third_mib", round(first, 1))
    record_property("worker_rss_last_third_mib", round(last, 1))
    assert last <= first + SLACK_MIB, f"RSS grew: first third {first:.1f} MiB, last {last:.1f}"
    assert stack.sim.state.call_count >= BACKLOG
