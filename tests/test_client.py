"""The publisher client against the real broker and the real worker process."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest

from tests.publisher_stack import PublisherStack, publisher_stack
from wecom_card_contracts import (
    ButtonReplacement,
    Command,
    CommandInvalid,
    UpdateTemplateCardRequest,
    decode_result,
)
from wecom_card_contracts.client import CardUpdateClient, CommandNotRouted, ResultTimeout

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from wecom_card_contracts import BodyFormat

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture
async def stack(amqp_url: str, tmp_path: Path, queue_prefix: str) -> AsyncIterator[PublisherStack]:
    """Simulator, broker and (once started) a worker on this test's queues."""
    async with publisher_stack(amqp_url, tmp_path, queue_prefix) as stack:
        yield stack


def button_command(stack: PublisherStack, command_id: str, code: str) -> Command:
    """A valid button update, built in code the way a publisher would."""
    return Command(
        command_id=command_id,
        request=UpdateTemplateCardRequest(
            agentid=stack.agentid,
            response_code=code,
            userids=["zhangsan", "invalid-li"],
            button=ButtonReplacement(replace_name="已批准"),
        ),
    )


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_update_returns_the_typed_result(stack: PublisherStack, encoding: BodyFormat) -> None:
    """Given a worker, update() sends with direct reply-to and returns the command's Result."""
    await stack.worker()
    command = button_command(stack, f"upd-{encoding}", f"rc-upd-{encoding}")
    async with await CardUpdateClient.connect(
        stack.amqp_url, command_queue=stack.command_queue
    ) as client:
        result = await client.update(command, timeout=30, encoding=encoding)
    assert (result.command_id, result.status, result.replayed) == (
        command.command_id,
        "partial",
        False,
    )
    assert result.invalid_users == ["invalid-li"]
    assert stack.sim.state.code_stats(command.request.response_code).accepted == 1


async def test_publish_is_confirmed_and_the_result_reaches_the_result_queue(
    stack: PublisherStack,
) -> None:
    """publish() (gzip, msgpack) returns once confirmed; the worker answers on the result queue."""
    await stack.worker()
    command = button_command(stack, "pub-1", "rc-pub-1")
    async with await CardUpdateClient.connect(
        stack.amqp_url, command_queue=stack.command_queue
    ) as client:
        await client.publish(command, encoding="msgpack", compression="gzip", correlation_id="c-1")
    async with stack.upstream() as up:
        [message] = await up.take("WECOM_RESULT_QUEUE", 1)
    assert message.content_type == "application/msgpack"
    result = decode_result(message.body, "msgpack")
    assert (result.command_id, result.correlation_id, result.status) == ("pub-1", "c-1", "partial")


async def test_publish_to_a_missing_queue_raises_instead_of_vanishing(
    stack: PublisherStack,
) -> None:
    """Given no command queue, the mandatory publish comes back and the client says so."""
    command = button_command(stack, "nowhere", "rc-nowhere")
    async with await CardUpdateClient.connect(
        stack.amqp_url, command_queue=f"{stack.prefix}no-such-queue"
    ) as client:
        with pytest.raises(CommandNotRouted, match="no queue named"):
            await client.publish(command)


async def test_publish_refuses_an_invalid_command_before_sending(stack: PublisherStack) -> None:
    """A command that breaks a rule raises CommandInvalid with its path; nothing is sent."""
    command = button_command(stack, "bad", "rc-bad")
    command.request.button = ButtonReplacement(replace_name="")
    async with await CardUpdateClient.connect(
        stack.amqp_url, command_queue=f"{stack.prefix}no-such-queue"
    ) as client:
        with pytest.raises(CommandInvalid) as raised:
            await client.publish(command)
    assert raised.value.path == "request.button.replace_name"


async def test_timeout_explains_and_a_resend_gets_the_stored_result(
    stack: PublisherStack,
) -> None:
    """No worker yet: ResultTimeout says re-send; once it runs, the re-send is replayed, one call."""
    command = button_command(stack, "late", "rc-late")
    async with stack.upstream():
        pass  # the queues exist, so the command waits in the command queue
    async with await CardUpdateClient.connect(
        stack.amqp_url, command_queue=stack.command_queue
    ) as client:
        with pytest.raises(ResultTimeout) as raised:
            await client.update(command, timeout=0.3, resends=1)
        message = str(raised.value)
        assert raised.value.sends == 2
        assert "may still be carried out" in message
        assert "same command_id" in message
        assert "replayed: true" in message
        await stack.worker()
        while stack.sim.state.code_stats("rc-late").accepted == 0:  # the first send is carried out
            await asyncio.sleep(0.05)
        result = await client.update(command, timeout=30)
    assert (result.command_id, result.status, result.replayed) == ("late", "partial", True)
    assert stack.sim.state.code_stats("rc-late").calls == 1
    assert result.finished_at <= time.time()
