"""Calls per corp inside every configured window: GCRA that never exceeds a window, even sliding.

WeCom allows N calls per corp in a window of P seconds (10,000 a minute and
150,000 an hour) and, once a window is exceeded, refuses the corp with 45009
for the rest of it: up to an hour. So the limiter must be strictly safe.

GCRA keeps one number per window, the theoretical arrival time (TAT). A call at
``t`` conforms when ``t >= TAT - tolerance``; granting it sets
``TAT = max(TAT, t) + interval``. Textbook GCRA (``interval = P/N``,
``tolerance = P - interval``) lets almost 2N calls into one sliding window of P
after a burst. Here, with a burst of B calls:

    interval  = (P + slack) // (N - B + 1) + 1      (integer microseconds)
    tolerance = (B - 1) * interval

Any k granted calls are at least ``(k - B) * interval`` apart, first to last,
and ``(N - B + 1) * interval > P + slack``; so no closed interval of length
``P + slack`` (sliding, not only clock-aligned) holds more than N calls.

Trade-off of B: after a quiet spell B calls go at once; the sustained rate is
about ``(N - B + 1) / (P + slack)``. The default ``B = max(1, N // 10)`` keeps
90 % of the published rate and lets 1,000 of 10000/min through at once. ``slack``
(default ``min(1 s, P / 10)``) covers the spread of network latency between the
limiter and WeCom's counter: a call granted earlier may arrive later.

Time is integer microseconds in the arithmetic: no rounding, so the bound holds
exactly, and the same numbers are exact in a Redis Lua script (doubles hold
integers up to 2**53; Unix time in microseconds is about 2**51). State per corp
is one TAT per window plus ``blocked_until``, which a Lua script can keep as is.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from worker.errors import SettingsError
from worker.ports import Slot, TooLong

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

MICROS: Final = 1_000_000
EXAMPLE: Final = "10000/min,150000/h"
_PERIODS: Final = {"s": 1, "min": 60, "h": 3600}
_UNITS: Final = {seconds: unit for unit, seconds in _PERIODS.items()}
_ENTRY: Final = re.compile(r"([0-9]+)\s*/\s*(s|min|h)")
_NO_WAIT: Final = Slot(waited=0.0)


@dataclass(frozen=True, slots=True, init=False)
class Window:
    """At most ``limit`` calls in any ``period`` seconds, bursts of up to ``burst`` at once.

    ``interval`` and ``tolerance`` are the GCRA parameters in microseconds (see
    the module docstring); ``slack`` seconds are added to the period.
    """

    limit: int
    period: int
    burst: int
    slack: float
    interval: int
    tolerance: int

    def __init__(
        self, limit: int, period: int, *, burst: int | None = None, slack: float | None = None
    ) -> None:
        """Build the window and its GCRA parameters.

        ``burst`` defaults to ``max(1, limit // 10)``; ``slack`` (seconds) to
        ``min(1, period / 10)``.
        """
        burst = max(1, limit // 10) if burst is None else burst
        slack = min(1.0, period / 10) if slack is None else slack
        if limit < 1 or period < 1 or not 1 <= burst <= limit or slack < 0:
            raise ValueError(
                f"need limit >= 1, period >= 1, 1 <= burst <= limit, slack >= 0; got "
                f"limit={limit}, period={period}, burst={burst}, slack={slack}"
            )
        span = period * MICROS + round(slack * MICROS)
        interval = span // (limit - burst + 1) + 1
        object.__setattr__(self, "limit", limit)
        object.__setattr__(self, "period", period)
        object.__setattr__(self, "burst", burst)
        object.__setattr__(self, "slack", slack)
        object.__setattr__(self, "interval", interval)
        object.__setattr__(self, "tolerance", (burst - 1) * interval)

    def __str__(self) -> str:
        """The window as written in WECOM_RATE_LIMIT, e.g. ``10000/min``."""
        unit = _UNITS.get(self.period)
        return f"{self.limit}/{unit}" if unit else f"{self.limit}/{self.period}s"


def parse_rate_limit(text: str, setting: str = "WECOM_RATE_LIMIT") -> tuple[Window, ...]:
    """Parse ``N/s``, ``N/min``, ``N/h`` joined by commas; every window is enforced.

    Raises :class:`SettingsError` naming ``setting`` for an empty value, an entry
    not of that form, N below 1, or two limits for one period.
    """
    if not text.strip():
        raise SettingsError(
            setting,
            f"is empty; give one or more N/s, N/min or N/h joined by commas, e.g. {EXAMPLE}",
        )
    windows: dict[int, Window] = {}
    for raw in text.split(","):
        entry = raw.strip()
        match = _ENTRY.fullmatch(entry)
        if match is None:
            raise SettingsError(
                setting,
                f"{entry!r} is not N/s, N/min or N/h with N a whole number, e.g. {EXAMPLE}",
            )
        limit, period = int(match[1]), _PERIODS[match[2]]
        if limit < 1:
            raise SettingsError(
                setting, f"{entry!r} allows no call at all: N must be at least 1, e.g. {EXAMPLE}"
            )
        if limit > period * MICROS:
            raise SettingsError(
                setting, f"{entry!r} is more than one call a microsecond; e.g. {EXAMPLE}"
            )
        if period in windows:
            raise SettingsError(
                setting,
                f"two limits per {match[2]} ({windows[period]} and {entry}); "
                f"give one per period, e.g. {EXAMPLE}",
            )
        windows[period] = Window(limit, period)
    return tuple(windows.values())


class Schedule:
    """The GCRA state of one corp over every window; times are integer microseconds.

    No clock inside: every method takes the time, so a fake clock (or a Redis
    script reading ``TIME``) drives the same arithmetic.
    """

    __slots__ = ("blocked_until", "tats", "windows")

    def __init__(self, windows: Sequence[Window], now: int, *, burst_used: bool = False) -> None:
        """Start with every window idle at ``now``: a full burst is available.

        ``burst_used``: start as if the burst had just been spent, so calls are
        paced from the first one on (what a limiter that forgot its past must assume).
        """
        self.windows = tuple(windows)
        if burst_used:
            self.tats = [now + window.tolerance for window in self.windows]
        else:
            self.tats = [now] * len(self.windows)
        self.blocked_until = now

    def next_slot(self, now: int) -> int:
        """The earliest time at or after ``now`` that conforms to every window and the block."""
        slot = max(now, self.blocked_until)
        for window, tat in zip(self.windows, self.tats, strict=True):
            slot = max(slot, tat - window.tolerance)
        return slot

    def take(self, slot: int) -> None:
        """Reserve ``slot``, which must be at or after ``next_slot`` of the current state."""
        tats = self.tats
        for index, window in enumerate(self.windows):
            tat = tats[index]
            tats[index] = max(slot, tat) + window.interval

    def block(self, until: int) -> None:
        """Grant nothing before ``until`` (WeCom answered 45009)."""
        self.blocked_until = max(self.blocked_until, until)


class LocalRateLimiter:
    """The :class:`worker.ports.RateLimiter` of one process: a :class:`Schedule` per corp.

    Time is the monotonic ``clock`` (by default the event loop's own clock), so a
    step of the wall clock can neither open nor close the gates; only
    :meth:`block`, which WeCom times in Unix seconds, reads ``wall_clock`` to
    convert. ``acquire`` reserves its slot before sleeping, so callers are served
    in order and do not wake together; a cancelled waiter's slot is lost, which
    errs on the safe side.
    """

    def __init__(
        self,
        windows: Sequence[Window],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        """Enforce every window in ``windows`` per corp.

        ``clock`` (monotonic seconds), ``wall_clock`` (Unix seconds) and ``sleep``
        are replaced in tests by a fake clock whose sleep advances it.
        """
        if not windows:
            raise ValueError("at least one window is needed")
        self._windows = tuple(windows)
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._schedules: dict[str, Schedule] = {}

    @property
    def windows(self) -> tuple[Window, ...]:
        """The windows enforced for every corp."""
        return self._windows

    def _schedule(self, corp_id: str, now: int) -> Schedule:
        schedule = self._schedules.get(corp_id)
        if schedule is None:
            # A new process cannot know what the one before it sent (a crash loop would
            # refill the burst at every restart): the first calls are paced, not a burst.
            schedule = self._schedules[corp_id] = Schedule(self._windows, now, burst_used=True)
        return schedule

    async def acquire(self, corp_id: str, max_wait: float) -> Slot | TooLong:
        """Take the corp's next slot and wait for it, unless it is more than ``max_wait`` s away.

        A slot free now returns at once, without yielding to the event loop. A
        slot too far away returns :class:`TooLong` and reserves nothing.
        """
        now = round(self._clock() * MICROS)
        schedule = self._schedules.get(corp_id) or self._schedule(corp_id, now)
        slot = schedule.next_slot(now)
        wait = slot - now
        if wait == 0:
            schedule.take(slot)
            return _NO_WAIT
        if wait > max_wait * MICROS:
            return TooLong(wait=wait / MICROS)
        schedule.take(slot)
        await self._sleep(wait / MICROS)
        return Slot(waited=wait / MICROS)

    async def block(self, corp_id: str, until: float) -> None:
        """Grant this corp no slot before ``until`` (Unix seconds): WeCom answered 45009."""
        now = round(self._clock() * MICROS)
        ahead = math.ceil((until - self._wall_clock()) * MICROS)
        self._schedule(corp_id, now).block(now + ahead)
