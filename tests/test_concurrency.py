"""The adaptive per-corp limit of calls in flight (WeCom 45033)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from worker.concurrency import CorpConcurrency, CorpSlots


class Holders:
    """Tasks that take a corp's slot and keep it until released, in the order they were started."""

    def __init__(self, concurrency: CorpConcurrency, corp_id: str = "corp") -> None:
        self.concurrency = concurrency
        self.corp_id = corp_id
        self.entered: list[int] = []
        self.gates: list[asyncio.Event] = []
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, count: int) -> None:
        """Start ``count`` more holders."""
        for _ in range(count):
            number = len(self.tasks)
            gate = asyncio.Event()
            self.gates.append(gate)
            self.tasks.append(asyncio.create_task(self._hold(number, gate)))

    async def _hold(self, number: int, gate: asyncio.Event) -> None:
        async with self.concurrency.slot(self.corp_id):
            self.entered.append(number)
            await gate.wait()

    def inside(self) -> list[int]:
        """Holders inside their slot now."""
        return [n for n in self.entered if not self.tasks[n].done()]


async def settle() -> None:
    """Let every ready task run until all are blocked again."""
    for _ in range(5):
        await asyncio.sleep(0)


async def release(holders: Holders, *numbers: int) -> None:
    """Let these holders leave their slot, and the waiters move up."""
    for number in numbers:
        holders.gates[number].set()
    await settle()


def run_now(coro: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine that must finish without ever suspending; fail if it suspends."""
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    raise AssertionError("the coroutine suspended")


async def test_the_limit_is_enforced() -> None:
    """With a limit of 3, a fourth caller waits until one of the three leaves."""
    holders = Holders(CorpConcurrency(maximum=3))
    holders.start(5)
    await settle()
    assert holders.inside() == [0, 1, 2]
    await release(holders, 1)
    assert holders.inside() == [0, 2, 3]
    assert holders.concurrency.slot("corp").in_use == 3
    assert holders.concurrency.slot("corp").waiting == 1


async def test_a_free_slot_is_taken_without_suspending() -> None:
    """The hot path: a free slot and nobody waiting, entering and leaving never yield."""
    slots = CorpConcurrency(maximum=2).slot("corp")
    run_now(slots.__aenter__())
    assert slots.in_use == 1
    run_now(slots.__aexit__(None, None, None))
    assert slots.in_use == 0


async def test_waiters_are_served_first_come_first_served() -> None:
    """Callers waiting for a slot get it in the order they asked."""
    holders = Holders(CorpConcurrency(maximum=1))
    holders.start(1)
    await settle()
    holders.start(4)
    await settle()
    for number in range(4):
        await release(holders, number)
        assert holders.inside() == [number + 1]
    assert holders.entered == [0, 1, 2, 3, 4]


async def test_a_newcomer_does_not_jump_the_line() -> None:
    """A slot freed while others wait goes to the first waiter, not to a caller arriving later."""
    concurrency = CorpConcurrency(maximum=1)
    holders = Holders(concurrency)
    holders.start(2)
    await settle()
    slots = concurrency.slot("corp")
    holders.gates[0].set()
    await asyncio.sleep(0)  # holder 0 has left; holder 1 is handed the slot but has not run yet
    assert slots.in_use == 1
    late = asyncio.create_task(slots.__aenter__())
    await settle()
    assert holders.inside() == [1]
    assert not late.done()
    await release(holders, 1)
    assert late.done()
    await slots.__aexit__(None, None, None)


async def test_an_error_inside_gives_the_slot_back() -> None:
    """A call that raises still leaves its slot."""
    concurrency = CorpConcurrency(maximum=1)
    with pytest.raises(RuntimeError):
        async with concurrency.slot("corp"):
            raise RuntimeError
    assert concurrency.slot("corp").in_use == 0


async def test_congestion_halves_the_limit_down_to_one() -> None:
    """Each 45033 with the limit respected halves it, never below one."""
    concurrency = CorpConcurrency(maximum=10)
    limits = []
    for _ in range(5):
        concurrency.congested("corp")
        limits.append(concurrency.limit("corp"))
    assert limits == [5, 2, 1, 1, 1]


async def test_congestion_is_counted_once_per_round_of_calls() -> None:
    """45033s from calls started before the cut do not cut again; a 45033 after they left does."""
    concurrency = CorpConcurrency(maximum=8)
    holders = Holders(concurrency)
    holders.start(8)
    await settle()
    concurrency.congested("corp")
    concurrency.congested("corp")
    concurrency.congested("corp")
    assert concurrency.limit("corp") == 4
    await release(holders, 0, 1, 2, 3)
    concurrency.congested("corp")
    assert concurrency.limit("corp") == 2


async def test_a_lowered_limit_admits_no_one_until_calls_drain_below_it() -> None:
    """After a cut from 4 to 2 with 4 in flight, waiters enter only once fewer than 2 are in flight."""
    concurrency = CorpConcurrency(maximum=4)
    holders = Holders(concurrency)
    holders.start(6)
    await settle()
    concurrency.congested("corp")
    await release(holders, 0, 1)
    assert holders.inside() == [2, 3]
    await release(holders, 2)
    assert holders.inside() == [3, 4]


async def test_successes_raise_the_limit_slowly_up_to_the_maximum() -> None:
    """After a cut, the limit grows by one per ``limit`` successes and stops at the maximum."""
    concurrency = CorpConcurrency(maximum=4)
    concurrency.congested("corp")
    concurrency.congested("corp")
    assert concurrency.limit("corp") == 1
    seen = []
    for _ in range(1 + 2 + 3 + 10):
        concurrency.succeeded("corp")
        seen.append(concurrency.limit("corp"))
    assert seen[:6] == [2, 2, 3, 3, 3, 4]
    assert set(seen[6:]) == {4}


async def test_a_raised_limit_lets_a_waiter_in() -> None:
    """When successes raise the limit, the first waiter enters at once."""
    concurrency = CorpConcurrency(maximum=2)
    concurrency.congested("corp")
    holders = Holders(concurrency)
    holders.start(2)
    await settle()
    assert holders.inside() == [0]
    concurrency.succeeded("corp")
    await settle()
    assert holders.inside() == [0, 1]


async def test_a_cancelled_waiter_does_not_leak_a_slot() -> None:
    """A waiter cancelled in line leaves it: the slot goes to the next waiter, and the count stays right."""
    concurrency = CorpConcurrency(maximum=1)
    holders = Holders(concurrency)
    holders.start(3)
    await settle()
    holders.tasks[1].cancel()
    await settle()
    assert concurrency.slot("corp").waiting == 1
    await release(holders, 0)
    assert holders.inside() == [2]
    await release(holders, 2)
    slots = concurrency.slot("corp")
    assert (slots.in_use, slots.waiting) == (0, 0)


async def test_a_waiter_cancelled_as_its_slot_frees_passes_it_on() -> None:
    """Cancelled, and the slot freed before the waiter ran: the slot goes to the next waiter."""
    concurrency = CorpConcurrency(maximum=1)
    slots = concurrency.slot("corp")
    await slots.__aenter__()  # this test holds the only slot
    holders = Holders(concurrency)
    holders.start(2)
    await settle()
    holders.tasks[0].cancel()
    await slots.__aexit__(None, None, None)  # freed before holder 0 could leave the line
    await settle()
    assert holders.tasks[0].cancelled()
    assert holders.inside() == [1]
    await release(holders, 1)
    assert (slots.in_use, slots.waiting) == (0, 0)


async def test_a_waiter_cancelled_after_being_handed_the_slot_passes_it_on() -> None:
    """Handed the slot, then cancelled before it ran: it gives the slot to the next waiter."""
    concurrency = CorpConcurrency(maximum=1)
    slots = concurrency.slot("corp")
    await slots.__aenter__()
    holders = Holders(concurrency)
    holders.start(2)
    await settle()
    await slots.__aexit__(None, None, None)  # hands the slot to holder 0, which has not run yet
    holders.tasks[0].cancel()
    await settle()
    assert holders.tasks[0].cancelled()
    assert holders.inside() == [1]
    await release(holders, 1)
    assert (slots.in_use, slots.waiting) == (0, 0)


async def test_corps_are_independent() -> None:
    """A congested, full corp does not hold back another corp."""
    concurrency = CorpConcurrency(maximum=2)
    busy = Holders(concurrency, "busy")
    busy.start(3)
    await settle()
    concurrency.congested("busy")
    idle = Holders(concurrency, "idle")
    idle.start(2)
    await settle()
    assert idle.inside() == [0, 1]
    assert concurrency.limits() == {"busy": 1, "idle": 2}


def test_a_limit_below_one_is_refused() -> None:
    """WECOM_CONCURRENCY must allow at least one call."""
    with pytest.raises(ValueError, match="at least 1"):
        CorpConcurrency(maximum=0)


def test_limit_of_an_unseen_corp_is_the_maximum() -> None:
    """Metrics can ask for any corp; one never seen is at the maximum and not stored."""
    concurrency = CorpConcurrency(maximum=7)
    assert concurrency.limit("new") == 7
    assert concurrency.limits() == {}
    assert isinstance(concurrency.slot("new"), CorpSlots)
