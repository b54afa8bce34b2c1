"""How many calls per corp may be in flight at once, lowered when WeCom says 45033.

WeCom answers 45033 ("too many concurrent calls") when a corp has too many calls
in flight. The limit per corp adapts like TCP's congestion window (AIMD): a
45033 halves it (at least 1), and it grows back by one after ``limit``
successes, up to the configured maximum (WECOM_CONCURRENCY).

Halving happens at most once per round of calls: calls started before the cut
report their 45033s later, and counting each of them would drive the limit to 1.
So a signal is ignored while more calls are in flight than the limit allows.

Waiters are served first come, first served. A call that finds a free slot and
nobody waiting takes it without yielding to the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import TracebackType


class CorpSlots:
    """The calls in flight of one corp; ``async with`` it to hold one of them."""

    __slots__ = ("_waiters", "in_use", "limit", "maximum", "successes")

    def __init__(self, maximum: int) -> None:
        """Start at the maximum, with nothing in flight."""
        self.maximum = maximum
        self.limit = maximum
        self.in_use = 0
        self.successes = 0  # since the limit last changed
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        """How many callers wait for a slot."""
        return len(self._waiters)

    @property
    def free(self) -> bool:
        """A slot can be taken now without waiting."""
        return self.in_use < self.limit

    async def __aenter__(self) -> None:
        """Take a slot (see :meth:`acquire`)."""
        await self.acquire()

    async def acquire(self) -> None:
        """Take a slot, waiting in line when none is free."""
        # A freed slot goes straight to the first waiter, so a free slot means nobody waits.
        if self.in_use < self.limit:
            self.in_use += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.cancelled():
                with contextlib.suppress(ValueError):  # _wake may have dropped it already
                    self._waiters.remove(waiter)
            else:  # the slot was handed over just before the cancellation: pass it on
                self.release()
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Give the slot back (see :meth:`release`)."""
        self.release()

    def release(self) -> None:
        """Give the slot back, to the first waiter if there is room."""
        self.in_use -= 1
        self._wake()

    def _wake(self) -> None:
        waiters = self._waiters
        while waiters and self.in_use < self.limit:
            waiter = waiters.popleft()
            if not waiter.done():  # a cancelled waiter that has not yet left the line
                self.in_use += 1
                waiter.set_result(None)

    def congested(self) -> None:
        """WeCom answered 45033: halve the limit, unless it was cut for calls still in flight."""
        if self.in_use > self.limit:
            return
        self.limit = max(1, self.limit // 2)
        self.successes = 0

    def succeeded(self) -> None:
        """A call went through: after ``limit`` of them the limit grows by one."""
        if self.limit >= self.maximum:
            return
        self.successes += 1
        if self.successes >= self.limit:
            self.successes = 0
            self.limit += 1
            self._wake()


class CorpConcurrency:
    """An adaptive limit of calls in flight for every corp; see the module docstring."""

    def __init__(self, maximum: int = 64) -> None:
        """Allow up to ``maximum`` calls in flight per corp (WECOM_CONCURRENCY)."""
        if maximum < 1:
            raise ValueError(f"maximum must be at least 1, got {maximum}")
        self.maximum = maximum
        self._corps: dict[str, CorpSlots] = {}

    def slot(self, corp_id: str) -> CorpSlots:
        """The corp's slots: ``async with concurrency.slot(corp_id): call()``."""
        slots = self._corps.get(corp_id)
        if slots is None:
            slots = self._corps[corp_id] = CorpSlots(self.maximum)
        return slots

    def congested(self, corp_id: str) -> None:
        """WeCom answered 45033 for this corp: halve its limit (once per round of calls)."""
        self.slot(corp_id).congested()

    def succeeded(self, corp_id: str) -> None:
        """A call of this corp went through: grow its limit slowly back to the maximum."""
        self.slot(corp_id).succeeded()

    def limit(self, corp_id: str) -> int:
        """The corp's current limit of calls in flight."""
        slots = self._corps.get(corp_id)
        return self.maximum if slots is None else slots.limit

    def limits(self) -> dict[str, int]:
        """The current limit of every corp seen so far, for metrics."""
        return {corp_id: slots.limit for corp_id, slots in self._corps.items()}
