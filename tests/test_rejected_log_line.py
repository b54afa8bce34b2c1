"""The one log line of a rejected command names the command when its id could be read."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from tests.publisher_stack import PublisherStack, publisher_stack
from tests.worker_process import AGENT

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture
async def stack(amqp_url: str, tmp_path: Path, queue_prefix: str) -> AsyncIterator[PublisherStack]:
    """Simulator, broker and the worker's world."""
    async with publisher_stack(amqp_url, tmp_path, queue_prefix) as stack:
        yield stack


async def test_command_finished_of_a_rejected_command_carries_its_command_id(
    stack: PublisherStack,
) -> None:
    """Given an invalid command with a readable id, its "command finished" line names it."""
    worker = await stack.worker(WECOM_LOG_FORMAT="json")
    request = {"agentid": str(AGENT), "response_code": "rc-log", "button": {"replace_name": "x"}}
    async with stack.upstream() as up:
        await up.publish({"command_id": "logged-reject", "request": request})
        [result] = (await up.results(1)).values()
    assert result.status == "rejected"
    finished = [
        line
        for line in (
            json.loads(text) for text in worker.logs().splitlines() if text.startswith("{")
        )
        if line.get("event") == "command finished"
    ]
    assert [line.get("command_id") for line in finished] == ["logged-reject"]
