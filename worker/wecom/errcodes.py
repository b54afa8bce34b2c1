"""What an update_template_card answer means for the call: pure classification, no I/O.

DESIGN.md's errcode table, one :class:`Action` per row. Each action says
whether WeCom used the response_code before answering so (``spends_code``):

| errcode | action | code spent? |
| --- | --- | --- |
| 0 | ``SUCCESS``: ``ok`` / ``partial`` by ``invaliduser`` | yes |
| -1 | ``SYSTEM_BUSY``: retry with backoff, at most 3 tries | maybe |
| 40014, 42001, 40001 | ``REFRESH_TOKEN``: new token, retry once | no (authentication) |
| 45009 | ``FREQUENCY_LIMIT``: block the corp's limiter, retry after | no (rate limit) |
| 45033 | ``CONCURRENCY_LIMIT``: back off, lower the corp's concurrency | no (rate limit) |
| 60140 | ``CODE_INVALID``: ``failed``; ``indeterminate`` after a lost answer | yes (used/expired) |
| 301002 | ``CONFIG_ERROR``: ``failed`` | no (authorisation) |
| 60020 | ``IP_NOT_TRUSTED``: ``failed``, readiness reports it | no (source address) |
| anything else | ``REQUEST_ERROR``: ``failed`` with errcode and errmsg | no (request refused) |
"""

from __future__ import annotations

import enum
import math
from typing import Final

OK: Final = 0
SYSTEM_BUSY: Final = -1
INVALID_CREDENTIAL: Final = 40001
INVALID_ACCESS_TOKEN: Final = 40014
ACCESS_TOKEN_EXPIRED: Final = 42001
FREQUENCY_LIMIT: Final = 45009
CONCURRENCY_LIMIT: Final = 45033
IP_NOT_TRUSTED: Final = 60020
INVALID_RESPONSE_CODE: Final = 60140
ANOTHER_AGENT: Final = 301002

# "Right after" a minute block: a 45009 this soon after the block ended cannot come from a
# minute window that has just opened, so the hour window is the full one.
HOUR_ESCALATION_GRACE: Final = 5.0


class Action(enum.Enum):
    """What the client does with an update_template_card answer."""

    SUCCESS = enum.auto()
    SYSTEM_BUSY = enum.auto()
    REFRESH_TOKEN = enum.auto()
    FREQUENCY_LIMIT = enum.auto()
    CONCURRENCY_LIMIT = enum.auto()
    CODE_INVALID = enum.auto()
    CONFIG_ERROR = enum.auto()
    IP_NOT_TRUSTED = enum.auto()
    REQUEST_ERROR = enum.auto()

    @property
    def spends_code(self) -> bool:
        """Whether WeCom answers so only after using the code (``SYSTEM_BUSY``: it may have)."""
        return self in _SPENDING


_SPENDING: Final = frozenset({Action.SUCCESS, Action.SYSTEM_BUSY, Action.CODE_INVALID})

_ACTIONS: Final[dict[int, Action]] = {
    OK: Action.SUCCESS,
    SYSTEM_BUSY: Action.SYSTEM_BUSY,
    INVALID_CREDENTIAL: Action.REFRESH_TOKEN,
    INVALID_ACCESS_TOKEN: Action.REFRESH_TOKEN,
    ACCESS_TOKEN_EXPIRED: Action.REFRESH_TOKEN,
    FREQUENCY_LIMIT: Action.FREQUENCY_LIMIT,
    CONCURRENCY_LIMIT: Action.CONCURRENCY_LIMIT,
    INVALID_RESPONSE_CODE: Action.CODE_INVALID,
    ANOTHER_AGENT: Action.CONFIG_ERROR,
    IP_NOT_TRUSTED: Action.IP_NOT_TRUSTED,
}


def classify(errcode: int) -> Action:
    """The action for an update_template_card ``errcode`` (unknown codes: ``REQUEST_ERROR``)."""
    return _ACTIONS.get(errcode, Action.REQUEST_ERROR)


def gettoken_retryable(errcode: int) -> bool:
    """Whether a failed gettoken answer may succeed when asked again (only -1, system busy)."""
    return errcode == SYSTEM_BUSY


def frequency_block_until(
    now: float, last_minute_block: float | None, grace: float = HOUR_ESCALATION_GRACE
) -> float:
    """When a corp answered 45009 at ``now`` (Unix seconds) may call again.

    WeCom blocks for the rest of the window that overflowed and does not say
    which: assume the minute (until the next minute boundary) unless
    ``last_minute_block``, the end of the minute block set before, ended less
    than ``grace`` seconds ago; then a fresh minute cannot be full and the
    block runs to the next hour boundary. Guessing the minute when it was the
    hour costs one more refused call per minute; the reverse would idle the
    corp for up to an hour, hence the narrow grace.
    """
    if last_minute_block is not None and last_minute_block <= now < last_minute_block + grace:
        return _next_boundary(now, 3600.0)
    return _next_boundary(now, 60.0)


def _next_boundary(now: float, window: float) -> float:
    """The first multiple of ``window`` strictly after ``now``."""
    return (math.floor(now / window) + 1) * window
