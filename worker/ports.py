"""The small interfaces the pipeline talks to, and the values that cross them.

The pipeline (:mod:`worker.pipeline`) is written against these Protocols only;
the adapters (SQLite or Redis state store, in-process or Redis rate limiter,
the aiohttp WeCom client) implement them. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol


@dataclass(frozen=True, slots=True)
class CodeKey:
    """One response_code of one corp: the unit of single use."""

    corp_id: str
    response_code: str


# --- state store ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claimed:
    """The caller now holds the code and must call WeCom.

    ``maybe_spent`` is true when an earlier holder may already have sent the code
    (its lease ran out mid-call, or it released the code after an unanswered
    call): a 60140 answer then means ``indeterminate``, not ``failed``.
    """

    maybe_spent: bool


@dataclass(frozen=True, slots=True)
class Replay:
    """This very command finished before: re-send its stored result."""

    result: bytes  # the stored Result, JSON


@dataclass(frozen=True, slots=True)
class AlreadyUsed:
    """Another command spent this code."""

    command_id: str


@dataclass(frozen=True, slots=True)
class Busy:
    """Another holder (or another delivery of this command) has a live lease: wait and ask again."""

    command_id: str
    lease_until: float  # Unix seconds


ClaimOutcome = Claimed | Replay | AlreadyUsed | Busy


@dataclass(frozen=True, slots=True)
class StoreReport:
    """What the store says about its own durability, reported at start-up."""

    backend: str  # "sqlite" / "redis"
    durable: bool
    details: dict[str, str]
    problems: tuple[str, ...]


class StateStore(Protocol):
    """Where used codes and outcomes are kept (CONTRACT.md WECOM_STATE_URL).

    A record per :class:`CodeKey` goes ``claimed`` (command_id, owner, lease) ->
    ``done`` (stored result, whether the code was spent), or back to
    ``released`` when a call was refused before it could spend the code.
    Records expire 72 h plus a margin after their last change.
    """

    async def claim(self, key: CodeKey, command_id: str) -> ClaimOutcome:
        """Atomically take the code for ``command_id`` or say who has it."""
        ...

    async def complete(self, key: CodeKey, command_id: str, result: bytes, *, spent: bool) -> None:
        """Record the outcome (the Result as JSON); ``spent`` false lets another command retry."""
        ...

    async def release(self, key: CodeKey, command_id: str, *, maybe_spent: bool) -> None:
        """Give the code back (the call was deferred); remember if it may have been sent."""
        ...

    async def renew(self, claims: list[tuple[CodeKey, str]]) -> int:
        """Extend the leases of claims this process holds; returns how many had to be re-created."""
        ...

    async def ping(self) -> None:
        """Raise :class:`worker.errors.StoreUnavailable` unless the store answers."""
        ...

    async def report(self) -> StoreReport:
        """The store's durability settings as found."""
        ...

    async def close(self) -> None:
        """Flush and close."""
        ...


# --- rate limiter -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Slot:
    """A granted call slot: how long the caller waited for it."""

    waited: float


@dataclass(frozen=True, slots=True)
class TooLong:
    """No slot within the allowed wait: the earliest slot is ``wait`` seconds away."""

    wait: float


class RateLimiter(Protocol):
    """Calls of update_template_card per corp, inside every configured window."""

    async def acquire(self, corp_id: str, max_wait: float) -> Slot | TooLong:
        """Wait for a slot up to ``max_wait`` seconds; never reserve one further away."""
        ...

    async def block(self, corp_id: str, until: float) -> None:
        """WeCom answered 45009: no slot for this corp before ``until`` (Unix seconds)."""
        ...


# --- WeCom call -------------------------------------------------------------------------------

CallStatus = Literal["ok", "partial", "failed", "indeterminate", "deferred"]
CallErrorCode = Literal["wecom_error", "retries_exhausted", "outcome_unknown"]


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """How one command's update_template_card call(s) ended.

    ``spent``: the code is, or may be, used up at WeCom (store it as spent so no
    other command tries it). ``maybe_spent``: some attempt may have reached WeCom
    without an answer (what a deferral must remember). ``defer_until``: for
    ``deferred``, the earliest time (Unix seconds) a call could be made again.
    """

    status: CallStatus
    attempts: int
    errcode: int | None = None
    errmsg: str | None = None
    invalid_users: tuple[str, ...] = ()
    error_code: CallErrorCode | None = None
    error_message: str | None = None
    spent: bool = False
    maybe_spent: bool = False
    defer_until: float | None = None
