"""The worker killed at every point of a command's path: after the restart, one definite result.

Each case starts a worker with ``WECOM_TEST_FAULT_POINT`` set, publishes one command, waits for
the worker to SIGKILL itself at that point, starts a worker without the fault on the same state
file, and reads every result the command got. The promise checked: the code is accepted by WeCom
at most once, exactly one result is not a replay (any others are the same outcome replayed), the
status is ``ok`` unless WeCom may have been reached before the crash (then ``indeterminate`` is
allowed), and the command queue is empty at the end (acked, not lost). A crash between recording
and publishing leaves only the replay to be published: then every result is ``replayed``.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.e2e import Stack, accepted, wait_for
from tests.worker_process import Upstream, command
from wecom_card_contracts import Result, decode_result
from worker.faultpoints import POINTS

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

# Points after which WeCom may have received the request: indeterminate is an honest answer there.
MAY_HAVE_REACHED_WECOM = frozenset({"request_written", "after_answer"})


async def all_results(up: Upstream, quiet: float = 2.0) -> list[Result]:
    """Every result on the result queue, reading until none came for ``quiet`` seconds."""
    results: list[Result] = []
    while True:
        try:
            messages = await up.take("WECOM_RESULT_QUEUE", 1, timeout=quiet if results else 30)
        except TimeoutError:
            return results
        results.extend(decode_result(message.body) for message in messages)


async def queue_depth(up: Upstream, key: str) -> int:
    """Messages ready in one of the test's queues."""
    assert up.channel is not None
    queue = await up.channel.declare_queue(up.queues[key], passive=True)
    return int(queue.declaration_result.message_count or 0)


@pytest.mark.parametrize("point", POINTS)
async def test_a_crash_at_each_point_ends_in_one_definite_result(stack: Stack, point: str) -> None:
    """SIGKILL at ``point``, restart: one non-replayed result, the code used at most once."""
    crashing = await stack.worker(WECOM_TEST_FAULT_POINT=point)
    async with stack.upstream() as up:
        await up.publish(command(f"fp-{point}", f"rc-{point}"))
        process = crashing.process
        assert process is not None
        await wait_for(lambda: process.poll() is not None, timeout=30)
        await stack.worker()
        results = await all_results(up)
        await asyncio.sleep(0.5)  # the last ack
        assert await queue_depth(up, "WECOM_COMMAND_QUEUE") == 0
    assert process.returncode == -9  # it was the fault point, not something else
    # One outcome (the same status and finish time), sent fresh at most once, else replayed.
    assert results
    assert len({(r.status, r.finished_at) for r in results}) == 1, results
    assert sum(not r.replayed for r in results) <= 1
    allowed = {"ok", "indeterminate"} if point in MAY_HAVE_REACHED_WECOM else {"ok"}
    assert results[0].status in allowed
    assert accepted(stack.sim, f"rc-{point}") <= 1
    if results[0].status == "ok":
        assert accepted(stack.sim, f"rc-{point}") == 1


async def test_a_command_that_always_hits_a_bug_is_parked_in_the_dead_letter_queue(
    stack: Stack,
) -> None:
    """An unexpected error on every delivery: requeued with growing pauses, then dead-lettered."""
    worker = await stack.worker(WECOM_TEST_FAULT_POINT="after_decode:raise")
    async with stack.upstream() as up:
        await up.publish(command("buggy", "rc-buggy"))
        [dead] = await up.take("WECOM_DEAD_LETTER_QUEUE", 1, timeout=60)
        assert await queue_depth(up, "WECOM_COMMAND_QUEUE") == 0
    assert dead.headers["x-wecom-error-code"] == "internal_error"
    assert worker.logs().count("command requeued after an unexpected error") == 4
    assert stack.sim.state.code_stats("rc-buggy").calls == 0
