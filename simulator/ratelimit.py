"""Per-corp call limits in fixed windows aligned to the clock.

WeCom limits calls per corp and API (10,000 a minute and 150,000 an hour) and,
once a limit is hit, answers 45009 until that window is over. The simulator
counts calls in fixed windows aligned to the clock: a `/min` window runs from
second :00 to :59 of each minute, a `/h` window from minute :00 to :59 of each
hour (Unix time, so UTC). A call is allowed only when every window still has
room; an allowed call counts in every window, a refused call in none. So a corp
that filled a window stays blocked until that window rolls over.

The spec syntax is the worker's `WECOM_RATE_LIMIT`: `N/s`, `N/min` or `N/h`
joined by commas, e.g. `10000/min,150000/h`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Sequence

_UNIT_SECONDS: Final = {"s": 1, "min": 60, "h": 3600}


@dataclass(frozen=True, slots=True)
class RateWindow:
    """At most `limit` calls per corp in each fixed window of `seconds`."""

    limit: int
    seconds: int

    def __str__(self) -> str:
        unit = {v: k for k, v in _UNIT_SECONDS.items()}.get(self.seconds, f"{self.seconds}s")
        return f"{self.limit}/{unit}"


def parse_rate_limit(spec: str) -> tuple[RateWindow, ...]:
    """Parse `N/s`, `N/min`, `N/h` entries joined by commas; an empty spec means no limit.

    Raises ValueError naming the first entry that is not of that form.
    """
    windows: list[RateWindow] = []
    for raw in spec.split(","):
        entry = raw.strip()
        if not entry:
            continue
        count, sep, unit = entry.partition("/")
        seconds = _UNIT_SECONDS.get(unit.strip())
        if not sep or seconds is None or not count.strip().isdigit() or int(count) < 1:
            raise ValueError(
                f"rate limit entry {entry!r} is not N/s, N/min or N/h with N a positive integer"
            )
        windows.append(RateWindow(limit=int(count), seconds=seconds))
    return tuple(windows)


class FixedWindowLimiter:
    """Counts calls per corp in every configured window; see the module docstring."""

    def __init__(self, windows: Sequence[RateWindow]) -> None:
        """Limit calls by every window in `windows` (none: every call is allowed)."""
        self._windows = tuple(windows)
        # (corp_id, index into windows) -> [window start, calls counted in it]
        self._counts: dict[tuple[str, int], list[int]] = {}

    def allow(self, corp_id: str, now: float) -> bool:
        """Count one call of `corp_id` at `now` and say whether it is within every limit."""
        if not self._windows:
            return True
        slots: list[list[int]] = []
        for index, window in enumerate(self._windows):
            start = int(now // window.seconds) * window.seconds
            slot = self._counts.get((corp_id, index))
            if slot is None or slot[0] != start:
                slot = [start, 0]
                self._counts[(corp_id, index)] = slot
            if slot[1] >= window.limit:
                return False
            slots.append(slot)
        for slot in slots:
            slot[1] += 1
        return True

    def clear(self) -> None:
        """Forget every count."""
        self._counts.clear()
