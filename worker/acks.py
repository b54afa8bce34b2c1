"""Acks and nacks of one consumer channel, written by one task in the order that keeps them safe.

A ``basic.ack`` with ``multiple=True`` acknowledges every outstanding delivery
up to its tag. It is sent only for the contiguous run of acked deliveries at
the head of the channel's outstanding tags, so it never covers a command that
is still in flight or one that is to be nacked. A finished delivery stuck
behind a slow one (a command retrying for seconds) is settled on its own after
a short delay, so a slow command never holds the prefetch window shut.

Every frame (ack or nack) is written by the one flushing task, awaiting each
write before the next. A channel whose writes could be reordered between
concurrent writers (aiormq's write queue does that) would otherwise let a nack
written by the caller's task be overtaken by a multiple ack covering its tag:
the broker would ack that delivery and then close the channel over the nack's
unknown tag (406).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections import deque
from typing import Protocol

import structlog

log = structlog.get_logger("worker.acks")

STRAGGLER_DELAY = 0.02  # seconds a finished delivery may wait behind an unfinished one


class Settle(enum.Enum):
    """What to tell the broker about one delivery."""

    ACK = "ack"
    REQUEUE = "requeue"  # nack, back to the queue
    REJECT = "reject"  # nack without requeue: the queue's dead-letter exchange takes it


CHANNEL_GONE = (RuntimeError, ConnectionError)


class AckChannel(Protocol):
    """What settling needs of a channel (:class:`worker.amqp_link.LinkChannel`)."""

    @property
    def is_closed(self) -> bool:
        """True once the channel closed: its deliveries go back to the queue."""
        ...

    async def basic_ack(self, delivery_tag: int, *, multiple: bool = False) -> None:
        """Ack one delivery, or every one up to it."""
        ...

    async def basic_nack(self, delivery_tag: int, *, requeue: bool = True) -> None:
        """Nack one delivery."""
        ...


class ChannelAcks:
    """Outstanding deliveries of one channel and the task that settles them."""

    def __init__(self, channel: AckChannel) -> None:
        self.channel = channel
        self.outstanding: deque[int] = deque()
        # Settled, not yet written; insertion order is settle order, so oldest first.
        self.finished: dict[int, tuple[Settle, float]] = {}
        # Written on their own while still in ``outstanding``: dropped when they reach its head.
        self.written: set[int] = set()
        self._wake = asyncio.Event()
        self._closing = False
        self._task = asyncio.create_task(self._flush_forever(), name="amqp-acks")

    @property
    def open(self) -> bool:
        """False once the channel closed (its deliveries come back to the queue)."""
        return not self.channel.is_closed

    def delivered(self, tag: int) -> None:
        """A delivery arrived (tags arrive in ascending order on a channel)."""
        self.outstanding.append(tag)

    def settle(self, tag: int, how: Settle) -> bool:
        """Ack or nack the delivery soon, in a safe order. False if the channel is gone."""
        if self.channel.is_closed:
            return False
        self.finished[tag] = (how, time.monotonic())
        self._wake.set()
        return True

    async def _flush_forever(self) -> None:
        while not self.channel.is_closed:
            # asyncio.timeout, not wait_for: no task and no extra future per wake-up.
            if self.finished:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(STRAGGLER_DELAY):
                        await self._wake.wait()
            else:
                await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush(everything=self._closing)
            except CHANNEL_GONE as error:
                # The channel died: the broker redelivers whatever was not acked.
                log.info("acks dropped: the channel closed", error=type(error).__name__)
                return
            if self._closing:
                return

    async def flush(self, *, everything: bool = False) -> None:
        """Settle the finished head of the outstanding tags, and stragglers that waited.

        ``everything``: stragglers too, however briefly they waited (closing).
        """
        await self._flush_head()
        if self.finished:
            await self._flush_stragglers(everything=everything)

    async def _flush_head(self) -> None:
        """The contiguous finished run at the head: acks coalesced, each nack in its place."""
        outstanding, finished, written, channel = (
            self.outstanding,
            self.finished,
            self.written,
            self.channel,
        )
        last_ack = None
        while outstanding:
            tag = outstanding[0]
            if tag in written:
                outstanding.popleft()
                written.discard(tag)
                continue
            settled = finished.get(tag)
            if settled is None:
                break
            if settled[0] is not Settle.ACK:
                if last_ack is not None:  # the acks before it go first, and cannot cover it
                    await channel.basic_ack(last_ack, multiple=True)
                    last_ack = None
                await channel.basic_nack(tag, requeue=settled[0] is Settle.REQUEUE)
            else:
                last_ack = tag
            outstanding.popleft()
            del finished[tag]
        if last_ack is not None:
            await channel.basic_ack(last_ack, multiple=True)

    async def _flush_stragglers(self, *, everything: bool) -> None:
        """Finished deliveries stuck behind an unfinished one for a while: one frame each.

        ``finished`` is in settle order, so the scan stops at the first that has
        not waited long enough; a written tag leaves ``outstanding`` when it
        reaches the head (no O(n) removal from the middle of a long deque).
        """
        due = float("inf") if everything else time.monotonic() - STRAGGLER_DELAY
        stragglers = []
        for tag, (how, at) in self.finished.items():
            if at > due:
                break
            stragglers.append((tag, how))
        for tag, how in stragglers:
            del self.finished[tag]
            self.written.add(tag)
            if how is Settle.ACK:
                await self.channel.basic_ack(tag)
            else:
                await self.channel.basic_nack(tag, requeue=how is Settle.REQUEUE)

    async def close(self, grace: float = 5.0) -> None:
        """Send what is settled (by the flushing task, so never twice) and stop."""
        self._closing = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
