"""Acks of one consumer channel, coalesced into ``multiple=True`` frames where that is safe.

A ``basic.ack`` with ``multiple=True`` acknowledges every outstanding delivery
up to its tag. It is sent only for the contiguous run of finished deliveries
at the head of the channel's outstanding tags, so it never acknowledges a
command that is still in flight. A finished delivery stuck behind a slow one
(a command retrying for seconds) is acked on its own after a short delay, so a
slow command never holds the prefetch window shut. A nack is written at once
and leaves the outstanding list first, so no later multiple ack covers it.

Frames leave through the channel's write queue in the order they are made,
which is what keeps the nack-before-covering-ack order.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque

import aiormq
import structlog

log = structlog.get_logger("worker.acks")

STRAGGLER_DELAY = 0.02  # seconds a finished delivery may wait behind an unfinished one


class ChannelAcks:
    """Outstanding deliveries of one aiormq channel and the task that acks them."""

    def __init__(self, channel: aiormq.abc.AbstractChannel) -> None:
        self.channel = channel
        self.outstanding: deque[int] = deque()
        self.finished: dict[int, float] = {}
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._flush_forever(), name="amqp-acks")

    def delivered(self, tag: int) -> None:
        """A delivery arrived (tags arrive in ascending order on a channel)."""
        self.outstanding.append(tag)

    def ack(self, tag: int) -> bool:
        """The delivery's result is confirmed: ack it soon. False if the channel is gone."""
        if self.channel.is_closed:
            return False
        self.finished[tag] = time.monotonic()
        self._wake.set()
        return True

    async def nack(self, tag: int, *, requeue: bool) -> bool:
        """Give a delivery back now. False if the channel is gone."""
        if self.channel.is_closed:
            return False
        with contextlib.suppress(ValueError):
            self.outstanding.remove(tag)
        self.finished.pop(tag, None)
        await self.channel.basic_nack(tag, requeue=requeue)
        return True

    async def _flush_forever(self) -> None:
        while not self.channel.is_closed:
            timeout = STRAGGLER_DELAY if self.finished else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            try:
                await self.flush()
            except (aiormq.exceptions.AMQPError, RuntimeError, ConnectionError) as error:
                # The channel died: the broker redelivers whatever was not acked.
                log.info("acks dropped: the channel closed", error=type(error).__name__)
                return

    async def flush(self) -> None:
        """Ack the finished head of the outstanding tags at once, and stragglers that waited."""
        outstanding, finished = self.outstanding, self.finished
        last = None
        while outstanding and outstanding[0] in finished:
            last = outstanding.popleft()
            del finished[last]
        if last is not None:
            await self.channel.basic_ack(last, multiple=True)
        if not finished:
            return
        due = time.monotonic() - STRAGGLER_DELAY
        for tag in [t for t, at in finished.items() if at <= due]:
            del finished[tag]
            with contextlib.suppress(ValueError):
                outstanding.remove(tag)
            await self.channel.basic_ack(tag)

    async def close(self) -> None:
        """Send what is finished and stop."""
        if not self.channel.is_closed:
            with contextlib.suppress(aiormq.exceptions.AMQPError, RuntimeError, ConnectionError):
                await self.flush()
                # Whatever still waits behind an unfinished delivery goes one by one.
                for tag in list(self.finished):
                    await self.channel.basic_ack(tag)
                self.finished.clear()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
