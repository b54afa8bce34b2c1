"""How long and how often the client retries: a time budget and capped exponential backoff."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

_MAX_EXPONENT: Final = 60  # 2.0**60 already dwarfs any cap; beyond it float powers overflow


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retry for at most ``budget`` seconds per command; back off exponentially with full jitter.

    The n-th retry (from 0) waits a uniform draw in ``[0, min(max_delay,
    base_delay * 2**n))``: full jitter, so callers that failed together do not
    come back together. ``busy_tries`` bounds the calls answered -1 (system busy).
    """

    budget: float = 30.0
    base_delay: float = 0.1
    max_delay: float = 5.0
    busy_tries: int = 3

    def __post_init__(self) -> None:
        """Refuse values no retry loop could follow."""
        if self.budget <= 0 or self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError("need budget > 0 and 0 <= base_delay <= max_delay")
        if self.busy_tries < 1:
            raise ValueError("busy_tries must be at least 1")

    def backoff(self, retry: int, draw: float) -> float:
        """The wait before retry number ``retry`` (0-based), for ``draw`` uniform in [0, 1)."""
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** min(retry, _MAX_EXPONENT))
        return draw * ceiling
