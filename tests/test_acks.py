"""Coalesced acks against a real broker: never ack what is unfinished, never swallow a nack."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import aiormq
import pytest
from aiormq.abc import DeliveredMessage

from worker.acks import STRAGGLER_DELAY, ChannelAcks, Settle


@pytest.fixture
async def channel(amqp_url: str) -> AsyncIterator[aiormq.Channel]:
    """A raw aiormq channel on the test broker."""
    connection = await aiormq.connect(amqp_url)
    channel = await connection.channel()
    try:
        yield channel  # type: ignore[misc]
    finally:
        await connection.close()


async def fill(
    channel: aiormq.abc.AbstractChannel, queue: str, count: int
) -> list[DeliveredMessage]:
    """Declare ``queue``, publish ``count`` messages and consume them all (unacked)."""
    await channel.queue_declare(queue)
    for i in range(count):
        await channel.basic_publish(str(i).encode(), routing_key=queue)
    got: list[DeliveredMessage] = []
    done = asyncio.Event()

    async def on_message(message: DeliveredMessage) -> None:
        got.append(message)
        if len(got) == count:
            done.set()

    await channel.basic_qos(prefetch_count=100)
    await channel.basic_consume(queue, on_message)
    await asyncio.wait_for(done.wait(), 10)
    return got


async def unacked(amqp_url: str, queue: str) -> int:
    """Messages a fresh channel can still get from ``queue`` (after the first channel closes)."""
    connection = await aiormq.connect(amqp_url)
    try:
        channel = await connection.channel()
        ok = await channel.queue_declare(queue, passive=True)
        return int(ok.message_count or 0)
    finally:
        await connection.close()


def tag(message: DeliveredMessage) -> int:
    """The delivery tag."""
    return int(getattr(message.delivery, "delivery_tag", 0))


async def test_only_the_finished_head_is_acked_at_once(
    channel: aiormq.Channel, queue_prefix: str
) -> None:
    """Finishing 1 and 3 of 1..3 acks 1 at once and 3 after the straggler delay; 2 stays out."""
    messages = await fill(channel, f"{queue_prefix}acks", 3)
    acks = ChannelAcks(channel)
    for message in messages:
        acks.delivered(tag(message))
    acks.settle(tag(messages[0]), Settle.ACK)
    acks.settle(tag(messages[2]), Settle.ACK)
    await asyncio.sleep(STRAGGLER_DELAY / 4)
    assert acks.outstanding[0] == tag(messages[1])
    await asyncio.sleep(STRAGGLER_DELAY * 4)
    assert [t for t in acks.outstanding if t not in acks.written] == [tag(messages[1])]
    assert acks.finished == {}
    await acks.close()


async def test_nacked_delivery_is_not_covered_by_a_later_multiple_ack(
    channel: aiormq.Channel, queue_prefix: str, amqp_url: str
) -> None:
    """Nack 2 of 1..3, finish the others: 2 comes back to the queue, 1 and 3 are gone."""
    queue = f"{queue_prefix}nack"
    messages = await fill(channel, queue, 3)
    acks = ChannelAcks(channel)
    for message in messages:
        acks.delivered(tag(message))
    acks.settle(tag(messages[1]), Settle.REQUEUE)
    acks.settle(tag(messages[0]), Settle.ACK)
    acks.settle(tag(messages[2]), Settle.ACK)
    await asyncio.sleep(STRAGGLER_DELAY * 4)
    await acks.close()
    await channel.close()
    assert await unacked(amqp_url, queue) == 1


async def test_unfinished_deliveries_return_when_the_channel_closes(
    channel: aiormq.Channel, queue_prefix: str, amqp_url: str
) -> None:
    """Acked ones stay acked; the unfinished one is redelivered after the channel closes."""
    queue = f"{queue_prefix}close"
    messages = await fill(channel, queue, 4)
    acks = ChannelAcks(channel)
    for message in messages:
        acks.delivered(tag(message))
    for message in messages[:3]:
        acks.settle(tag(message), Settle.ACK)
    await acks.close()
    await channel.close()
    assert await unacked(amqp_url, queue) == 1
    assert acks.settle(tag(messages[3]), Settle.ACK) is False


class WireOrderChannel:
    """A stand-in for an aiormq channel whose frames may overtake each other.

    aiormq writes frames through a bounded queue that does not keep the order of concurrent
    writers: each call here waits a random moment before its frame reaches the "wire", as a
    writer blocked on a full queue would. ``wire`` is the order the broker sees.
    """

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.is_closed = False
        self.wire: list[tuple[str, int, bool]] = []

    async def _write(self, frame: tuple[str, int, bool]) -> None:
        await asyncio.sleep(self.rng.random() / 2000)
        self.wire.append(frame)

    async def basic_ack(self, tag: int, *, multiple: bool = False) -> None:
        """A basic.ack frame."""
        await self._write(("ack", tag, multiple))

    async def basic_nack(self, tag: int, *, requeue: bool = True) -> None:
        """A basic.nack frame."""
        await self._write(("nack", tag, requeue))


def broker_verdict(delivered: int, wire: list[tuple[str, int, bool]]) -> tuple[set[int], set[int]]:
    """Replay frames as RabbitMQ would: (acked, nacked); an unknown tag closes the channel (406)."""
    unsettled = set(range(1, delivered + 1))
    acked: set[int] = set()
    nacked: set[int] = set()
    for kind, tag, flag in wire:
        if kind == "ack" and flag:
            covered = {t for t in unsettled if t <= tag}
            unsettled -= covered
            acked |= covered
            continue
        if tag not in unsettled:
            raise AssertionError(f"406 PRECONDITION_FAILED - unknown delivery tag {tag}")
        unsettled.discard(tag)
        (acked if kind == "ack" else nacked).add(tag)
    return acked, nacked


@pytest.mark.parametrize("seed", range(40))
async def test_a_nack_is_never_overtaken_by_a_multiple_ack_covering_it(seed: int) -> None:
    """20 deliveries settled concurrently, some nacked: no frame order lets an ack cover a nack."""
    rng = random.Random(seed)
    channel = WireOrderChannel(rng)
    acks = ChannelAcks(channel)
    for tag in range(1, 21):
        acks.delivered(tag)
    wanted = {tag: rng.random() < 0.3 for tag in range(1, 21)}  # True: nack

    async def finish(tag: int) -> None:
        await asyncio.sleep(rng.random() / 200)
        acks.settle(tag, Settle.REQUEUE if wanted[tag] else Settle.ACK)

    await asyncio.gather(*(finish(tag) for tag in wanted))
    await asyncio.sleep(STRAGGLER_DELAY * 3)
    await acks.close()
    acked, nacked = broker_verdict(20, channel.wire)
    assert nacked == {tag for tag, nack in wanted.items() if nack}
    assert acked == {tag for tag, nack in wanted.items() if not nack}
