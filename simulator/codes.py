"""response_code bookkeeping: every code is valid exactly once.

The simulator does not issue codes (it has no send-message API): any code it
has not seen is valid, the first call that succeeds with it spends it, and
later calls answer 60140. Codes marked expired through the control API answer
60140 without ever being spent. Codes are keyed by their text alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator.records import CodeStats, CodeStatus


@dataclass(slots=True)
class _CodeEntry:
    calls: int = 0
    accepted: int = 0
    status: CodeStatus = "unused"


class CodeBook:
    """Per-code call counts and status since the last reset."""

    def __init__(self) -> None:
        """Start knowing no code."""
        self._entries: dict[str, _CodeEntry] = {}

    def _entry(self, code: str) -> _CodeEntry:
        entry = self._entries.get(code)
        if entry is None:
            entry = self._entries[code] = _CodeEntry()
        return entry

    def count_call(self, code: str) -> None:
        """Note that an update call carried `code`."""
        self._entry(code).calls += 1

    def spend(self, code: str) -> bool:
        """Spend `code` if it is unused and say whether it was."""
        entry = self._entry(code)
        if entry.status != "unused":
            return False
        entry.status = "used"
        entry.accepted += 1
        return True

    def expire(self, code: str) -> None:
        """Make `code` answer 60140 from now on (a spent code stays `used`)."""
        entry = self._entry(code)
        if entry.status == "unused":
            entry.status = "expired"

    def stats(self, code: str) -> CodeStats:
        """Return the counts and status of `code` (zeros for a code never seen)."""
        entry = self._entries.get(code) or _CodeEntry()
        return CodeStats(
            response_code=code, calls=entry.calls, accepted=entry.accepted, status=entry.status
        )

    def clear(self) -> None:
        """Forget every code."""
        self._entries.clear()
