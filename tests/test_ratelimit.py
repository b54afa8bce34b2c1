"""The rate limiter: WECOM_RATE_LIMIT parsing, GCRA arithmetic, the sliding-window bound, the limiter."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.errors import SettingsError
from worker.ports import Slot, TooLong
from worker.ratelimit import MICROS, LocalRateLimiter, Schedule, Window, parse_rate_limit

T = TypeVar("T")

WALL_OFFSET = 1_764_000_000.0  # Unix seconds at the fake monotonic clock's zero


@dataclass
class FakeClock:
    """A monotonic and a wall clock in whole microseconds; sleeping advances them."""

    now: int = 1_000 * MICROS
    sleeps: list[float] = field(default_factory=list)

    def monotonic(self) -> float:
        """Monotonic seconds."""
        return self.now / MICROS

    def time(self) -> float:
        """Unix seconds."""
        return WALL_OFFSET + self.now / MICROS

    async def sleep(self, seconds: float) -> None:
        """Record the sleep and jump to its end, without suspending."""
        self.sleeps.append(seconds)
        self.now += round(seconds * MICROS)

    def advance(self, seconds: float) -> None:
        """Let time pass."""
        self.now += round(seconds * MICROS)


def limiter_on(clock: FakeClock, windows: Sequence[Window]) -> LocalRateLimiter:
    """A limiter timed by ``clock``."""
    return LocalRateLimiter(
        windows, clock=clock.monotonic, wall_clock=clock.time, sleep=clock.sleep
    )


def run_now(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that must finish without ever suspending; fail if it suspends."""
    try:
        coro.send(None)
    except StopIteration as finished:
        return finished.value  # type: ignore[no-any-return]
    coro.close()
    raise AssertionError("the coroutine suspended")


def most_in_any_interval(times: Sequence[int], length: int) -> int:
    """The most of ``times`` inside one closed interval ``[a, a + length]``, for any ``a``."""
    ordered = sorted(times)
    most, first = 0, 0
    for last, time in enumerate(ordered):
        while time - ordered[first] > length:
            first += 1
        most = max(most, last - first + 1)
    return most


def span(window: Window) -> int:
    """The window's period plus its slack, in microseconds: the interval the bound covers."""
    return window.period * MICROS + round(window.slack * MICROS)


def greedy_grants(windows: Sequence[Window], count: int, start: int = 0) -> list[int]:
    """The slots ``count`` callers get when each asks as soon as the previous one got a slot."""
    schedule = Schedule(windows, start)
    grants = []
    now = start
    for _ in range(count):
        now = schedule.next_slot(now)
        schedule.take(now)
        grants.append(now)
    return grants


# --- parsing ----------------------------------------------------------------------------------


def test_parses_the_contract_default() -> None:
    """``10000/min,150000/h`` is two windows with WeCom's published limits."""
    windows = parse_rate_limit("10000/min,150000/h")
    assert [(w.limit, w.period) for w in windows] == [(10000, 60), (150000, 3600)]
    assert [str(w) for w in windows] == ["10000/min", "150000/h"]


def test_parses_every_unit_and_spaces() -> None:
    """``s``, ``min`` and ``h`` are understood, with spaces around entries and the slash."""
    windows = parse_rate_limit(" 5 / s ,  300/min,9000 /h ")
    assert [(w.limit, w.period) for w in windows] == [(5, 1), (300, 60), (9000, 3600)]


def test_parsed_windows_get_the_default_burst_and_slack() -> None:
    """A parsed window bursts a tenth of its limit (at least one) and adds min(1 s, P/10) of slack."""
    minute, second = parse_rate_limit("10000/min,5/s")
    assert (minute.burst, minute.slack) == (1000, 1.0)
    assert (second.burst, second.slack) == (1, 0.1)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "0/min",
        "00/h",
        "10/day",
        "10/m",
        "10/MIN",
        "abc",
        "10",
        "/min",
        "-5/min",
        "+5/min",
        "1.5/s",
        "1e3/min",
        "10 per min",
        "١٠/min",
        "10/min,",
        ",10/min",
        "10/min;150000/h",
        "10/min,20/min",
        "10/min, 150000/h, 1/min",
        "2000000/s",
    ],
)
def test_rejects_malformed_values_naming_the_setting(text: str) -> None:
    """Each malformed value raises SettingsError for the setting, with an example of a valid one."""
    with pytest.raises(SettingsError) as caught:
        parse_rate_limit(text)
    assert caught.value.name == "WECOM_RATE_LIMIT"
    assert "10000/min,150000/h" in caught.value.problem
    assert str(caught.value).startswith("WECOM_RATE_LIMIT: ")


def test_error_names_the_setting_it_is_given() -> None:
    """The setting's name is the caller's (the simulator or a test can reuse the parser)."""
    with pytest.raises(SettingsError) as caught:
        parse_rate_limit("10/fortnight", setting="SIM_RATE_LIMIT")
    assert caught.value.name == "SIM_RATE_LIMIT"
    assert "'10/fortnight'" in caught.value.problem


def test_duplicate_period_names_both_entries() -> None:
    """Two limits for one period are refused and both are named."""
    with pytest.raises(SettingsError) as caught:
        parse_rate_limit("10/min, 20/min")
    assert "10/min" in caught.value.problem
    assert "20/min" in caught.value.problem


# --- the window's GCRA parameters -------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "period", "burst", "slack"),
    [
        (10000, 60, 1000, 1.0),
        (150000, 3600, 15000, 1.0),
        (1, 1, 1, 0.0),
        (7, 3, 7, 0.5),
        (3, 60, 2, 0),
    ],
)
def test_interval_is_the_smallest_that_keeps_the_bound(
    limit: int, period: int, burst: int, slack: float
) -> None:
    """(N-B+1) intervals exceed P+slack, and one microsecond less would not: no rate is wasted."""
    window = Window(limit, period, burst=burst, slack=slack)
    steps = limit - burst + 1
    assert steps * window.interval > span(window)
    assert steps * (window.interval - 1) <= span(window)
    assert window.tolerance == (burst - 1) * window.interval


@pytest.mark.parametrize(
    "kwargs",
    [
        {"limit": 0, "period": 60},
        {"limit": 10, "period": 0},
        {"limit": 10, "period": 60, "burst": 0},
        {"limit": 10, "period": 60, "burst": 11},
        {"limit": 10, "period": 60, "slack": -1.0},
    ],
)
def test_window_refuses_impossible_parameters(kwargs: dict[str, Any]) -> None:
    """A window that could not be enforced is a programming error: ValueError."""
    with pytest.raises(ValueError, match="need limit"):
        Window(**kwargs)


# --- GCRA arithmetic against a fake clock ------------------------------------------------------


def test_burst_passes_at_once_then_the_steady_rate() -> None:
    """After an idle spell B slots are free now; later slots come one interval apart."""
    window = Window(10, 1, burst=3, slack=0)
    grants = greedy_grants([window], 6, start=5 * MICROS)
    assert grants[:3] == [5 * MICROS] * 3
    assert [b - a for a, b in itertools.pairwise(grants[2:])] == [window.interval] * 3
    assert grants[3] == 5 * MICROS + window.interval


def test_the_bound_is_reached_exactly_without_slack() -> None:
    """With no slack, eager callers get exactly N slots in the closed interval [0, P], not one more."""
    window = Window(10, 1, burst=3, slack=0)
    grants = greedy_grants([window], 40)
    assert sum(1 for g in grants if g <= MICROS) == 10
    assert most_in_any_interval(grants, MICROS) == 10


def test_slack_keeps_the_bound_over_a_longer_interval() -> None:
    """With slack, no interval of P + slack holds more than N slots."""
    window = Window(10, 1, burst=3, slack=0.25)
    grants = greedy_grants([window], 60)
    assert most_in_any_interval(grants, 1_250_000) == 10
    assert most_in_any_interval(grants, MICROS) < 10


def test_a_quiet_spell_refills_the_burst() -> None:
    """Idle for a whole period, the corp gets its full burst back, and never more."""
    window = Window(10, 1, burst=3, slack=0)
    schedule = Schedule([window], 0)
    for _ in range(10):
        schedule.take(schedule.next_slot(0))
    later = 100 * MICROS
    free_now = 0
    while schedule.next_slot(later) == later:
        schedule.take(later)
        free_now += 1
    assert free_now == 3


def test_two_windows_are_both_enforced() -> None:
    """A short and a long window: every slot conforms to both, and each binds in turn."""
    per_second = Window(5, 1, burst=5, slack=0)
    per_ten_seconds = Window(8, 10, burst=2, slack=0)
    grants = greedy_grants([per_second, per_ten_seconds], 30)
    assert most_in_any_interval(grants, MICROS) <= 5
    assert most_in_any_interval(grants, 10 * MICROS) == 8
    assert grants[:2] == [0, 0]  # the burst is the smaller of the two
    assert grants[2] == per_ten_seconds.interval  # the long window sets the pace


def test_next_slot_does_not_reserve() -> None:
    """Asking for the next slot twice gives the same answer; only take() moves it."""
    schedule = Schedule([Window(2, 1, burst=1, slack=0)], 0)
    schedule.take(schedule.next_slot(0))
    assert schedule.next_slot(0) == schedule.next_slot(0) > 0


def test_block_moves_the_next_slot_past_it() -> None:
    """A block makes the next slot its end, even with the burst unused; an earlier block is ignored."""
    schedule = Schedule([Window(10, 1)], 0)
    schedule.block(30 * MICROS)
    schedule.block(20 * MICROS)
    assert schedule.next_slot(0) == 30 * MICROS
    assert schedule.next_slot(31 * MICROS) == 31 * MICROS


windows_strategy = st.lists(
    st.builds(
        lambda limit, period, burst_share, slack: Window(
            limit, period, burst=max(1, round(limit * burst_share)), slack=slack
        ),
        limit=st.integers(3, 50),
        period=st.integers(1, 60),
        burst_share=st.floats(0, 1),
        slack=st.sampled_from([0.0, 0.001, 0.5, 1.0]),
    ),
    min_size=1,
    max_size=3,
)


@st.composite
def gaps(draw: st.DrawFn, windows: Sequence[Window]) -> int:
    """Microseconds between two requests, often zero or near the windows' scale."""
    interval = max(w.interval for w in windows)
    period = max(w.period for w in windows) * MICROS
    return draw(
        st.one_of(
            st.just(0),
            st.integers(0, 2 * interval),
            st.integers(0, period),
            st.sampled_from([1, interval - 1, interval, interval + 1, period]),
        )
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Window], list[tuple[int, int, int | None]]]:
    """Windows, and requests as (gap before it, max wait, block end or None) in microseconds."""
    windows = draw(windows_strategy)
    period = max(w.period for w in windows) * MICROS
    requests = draw(
        st.lists(
            st.tuples(
                gaps(windows),
                st.one_of(st.just(period * 100), st.integers(0, period)),
                st.one_of(st.none(), st.none(), st.integers(0, 2 * period)),
            ),
            min_size=1,
            max_size=300,
        )
    )
    return windows, requests


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_no_interval_of_any_window_ever_holds_more_than_its_limit(
    scenario: tuple[list[Window], list[tuple[int, int, int | None]]],
) -> None:
    """For any request times, max waits and blocks, no closed sliding interval of P holds over N slots."""
    windows, requests = scenario
    now = 0
    schedule = Schedule(windows, now)
    grants = []
    for gap, max_wait, block in requests:
        now += gap
        if block is not None:
            schedule.block(now + block)
        slot = schedule.next_slot(now)
        assert slot >= now
        if slot - now <= max_wait:
            schedule.take(slot)
            grants.append(slot)
    for window in windows:
        assert most_in_any_interval(grants, span(window)) <= window.limit


# --- the limiter ------------------------------------------------------------------------------


def warmed_up(clock: FakeClock, windows: Sequence[Window]) -> LocalRateLimiter:
    """A limiter that has seen its corp and then stayed quiet a whole period: burst available."""
    limiter = limiter_on(clock, windows)
    run_now(limiter.acquire("corp", max_wait=0))
    clock.advance(max(window.period + window.slack for window in windows))
    return limiter


def test_a_new_limiter_paces_from_the_first_call_instead_of_bursting() -> None:
    """A restarted process cannot know what it sent before: its burst starts spent."""
    clock = FakeClock()
    window = Window(10, 1, burst=3)
    limiter = limiter_on(clock, [window])
    assert run_now(limiter.acquire("corp", max_wait=0)) == Slot(waited=0.0)
    assert run_now(limiter.acquire("corp", max_wait=0)) == TooLong(wait=window.interval / MICROS)


def test_a_free_slot_is_granted_without_suspending_or_sleeping() -> None:
    """The hot path returns a zero wait without yielding to the event loop."""
    clock = FakeClock()
    limiter = warmed_up(clock, [Window(10, 1, burst=3)])
    for _ in range(3):
        assert run_now(limiter.acquire("corp", max_wait=0)) == Slot(waited=0.0)
    assert clock.sleeps == []


def test_after_the_burst_acquire_sleeps_until_its_slot() -> None:
    """The next caller sleeps exactly until its slot and reports the wait."""
    clock = FakeClock()
    window = Window(10, 1, burst=3)
    limiter = warmed_up(clock, [window])
    for _ in range(3):
        run_now(limiter.acquire("corp", max_wait=0))
    start = clock.now
    assert run_now(limiter.acquire("corp", max_wait=5)) == Slot(waited=window.interval / MICROS)
    assert clock.sleeps == [window.interval / MICROS]
    assert clock.now == start + window.interval


def test_too_long_reserves_nothing() -> None:
    """A refused caller is told the wait, and the slot it was refused is still the next one."""
    clock = FakeClock()
    window = Window(2, 60, burst=1)
    limiter = limiter_on(clock, [window])
    run_now(limiter.acquire("corp", max_wait=0))
    refused = [run_now(limiter.acquire("corp", max_wait=1)) for _ in range(3)]
    assert refused == [TooLong(wait=window.interval / MICROS)] * 3
    assert clock.sleeps == []
    assert run_now(limiter.acquire("corp", max_wait=3600)) == Slot(waited=window.interval / MICROS)


def test_block_pushes_the_next_slot_past_until() -> None:
    """After a 45009 block until a Unix time, the next slot is at that time, not before."""
    clock = FakeClock()
    limiter = limiter_on(clock, [Window(10000, 60)])
    run_now(limiter.block("corp", until=clock.time() + 30))
    assert run_now(limiter.acquire("corp", max_wait=10)) == TooLong(wait=30.0)
    assert run_now(limiter.acquire("corp", max_wait=60)) == Slot(waited=30.0)
    assert clock.time() == pytest.approx(WALL_OFFSET + 1030)


def test_a_block_in_the_past_changes_nothing() -> None:
    """A block that already ended leaves the slot free now."""
    clock = FakeClock()
    limiter = limiter_on(clock, [Window(10000, 60)])
    run_now(limiter.block("corp", until=clock.time() - 5))
    assert run_now(limiter.acquire("corp", max_wait=0)) == Slot(waited=0.0)


def test_corps_are_independent() -> None:
    """One corp's spent burst and block leave another corp's slots free."""
    clock = FakeClock()
    limiter = limiter_on(clock, [Window(10, 1, burst=2)])
    run_now(limiter.acquire("busy", max_wait=0))
    run_now(limiter.acquire("busy", max_wait=0))
    run_now(limiter.block("blocked", until=clock.time() + 60))
    assert isinstance(run_now(limiter.acquire("busy", max_wait=0)), TooLong)
    assert isinstance(run_now(limiter.acquire("blocked", max_wait=0)), TooLong)
    assert run_now(limiter.acquire("idle", max_wait=0)) == Slot(waited=0.0)


def test_a_limiter_needs_a_window() -> None:
    """A limiter with no window would limit nothing: refused."""
    with pytest.raises(ValueError, match="window"):
        LocalRateLimiter([])


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_limiter_grants_stay_inside_every_window(
    scenario: tuple[list[Window], list[tuple[int, int, int | None]]],
) -> None:
    """Through the limiter's clock and sleep, the times calls proceed obey every window's limit."""
    windows, requests = scenario
    clock = FakeClock()
    limiter = limiter_on(clock, windows)
    proceeded = []
    for gap, max_wait, block in requests:
        clock.now += gap
        if block is not None:
            run_now(limiter.block("corp", until=clock.time() + block / MICROS))
        outcome = run_now(limiter.acquire("corp", max_wait=max_wait / MICROS))
        if isinstance(outcome, Slot):
            proceeded.append(clock.now)
        else:
            assert outcome.wait > max_wait / MICROS
    for window in windows:
        assert most_in_any_interval(proceeded, span(window)) <= window.limit


class GatedSleep:
    """A sleep that lasts until the test says so; the fake clock jumps when it ends."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.gate = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        """Wait for the gate, then advance the clock by ``seconds``."""
        await self.gate.wait()
        self.clock.advance(seconds)


async def test_waiters_are_served_in_order_without_a_herd() -> None:
    """Concurrent callers reserve successive slots in the order they asked."""
    clock = FakeClock()
    window = Window(10, 1, burst=1)
    sleep = GatedSleep(clock)
    limiter = LocalRateLimiter([window], clock=clock.monotonic, wall_clock=clock.time, sleep=sleep)
    await limiter.acquire("corp", max_wait=0)
    tasks = [asyncio.create_task(limiter.acquire("corp", max_wait=60)) for _ in range(4)]
    await asyncio.sleep(0)
    sleep.gate.set()
    results = await asyncio.gather(*tasks)
    assert results == [Slot(waited=(i + 1) * window.interval / MICROS) for i in range(4)]


async def test_a_cancelled_waiter_loses_its_slot() -> None:
    """Cancelling a waiting caller does not give its slot to the next: the next slot is later."""
    clock = FakeClock()
    window = Window(10, 1, burst=1)
    sleep = GatedSleep(clock)
    limiter = LocalRateLimiter([window], clock=clock.monotonic, wall_clock=clock.time, sleep=sleep)
    await limiter.acquire("corp", max_wait=0)
    waiting = asyncio.create_task(limiter.acquire("corp", max_wait=60))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await limiter.acquire("corp", max_wait=0.1) == TooLong(wait=2 * window.interval / MICROS)
