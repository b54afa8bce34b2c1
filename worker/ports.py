"""The small interfaces the pipeline talks to, and the values that cross them.

The pipeline (:mod:`worker.pipeline`) is written against these Protocols only;
the adapters (SQLite or Redis state store, in-process or Redis rate limiter,
the WeCom client) implement them. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol


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

AnsweredStatus = Literal["ok", "partial", "failed"]
NotSentErrorCode = Literal["wecom_error", "retries_exhausted"]


@dataclass(frozen=True, slots=True)
class Answered:
    """WeCom answered the last attempt: ``ok``, ``partial``, or a refusal (``failed``).

    ``spent``: the code is used up at WeCom (ok, partial, 60140 on a first call);
    a refusal that did not spend it (40058, say) lets another command use it.
    """

    status: AnsweredStatus
    attempts: int
    errcode: int | None
    errmsg: str | None
    spent: bool
    invalid_users: tuple[str, ...] = ()
    error_message: str | None = None  # failed: what WeCom refused
    maybe_spent: bool = False  # an earlier attempt may have reached WeCom unanswered

    @property
    def error_code(self) -> Literal["wecom_error"] | None:
        """``wecom_error`` for a refusal, else None."""
        return "wecom_error" if self.status == "failed" else None


@dataclass(frozen=True, slots=True)
class Unsettled:
    """Some attempt may have reached WeCom and nothing since settled whether it did."""

    attempts: int
    errcode: int | None
    errmsg: str | None
    error_message: str

    status: ClassVar[Literal["indeterminate"]] = "indeterminate"
    error_code: ClassVar[Literal["outcome_unknown"]] = "outcome_unknown"
    spent: ClassVar[bool] = True
    maybe_spent: ClassVar[bool] = True
    invalid_users: ClassVar[tuple[str, ...]] = ()


@dataclass(frozen=True, slots=True)
class NotSent:
    """``failed`` with the code certainly unused: gettoken refused, or the budget ran out first."""

    attempts: int
    errcode: int | None
    errmsg: str | None
    error_code: NotSentErrorCode
    error_message: str

    status: ClassVar[Literal["failed"]] = "failed"
    spent: ClassVar[bool] = False
    maybe_spent: ClassVar[bool] = False
    invalid_users: ClassVar[tuple[str, ...]] = ()


@dataclass(frozen=True, slots=True)
class Deferred:
    """No rate-limit or concurrency slot soon enough: hand the command back, code not spent.

    ``maybe_spent``: an earlier attempt may have reached WeCom (the release of the
    claim must remember it). ``until``: the earliest Unix time a call could go.
    """

    attempts: int
    until: float
    reason: str
    maybe_spent: bool
    errcode: int | None = None
    errmsg: str | None = None

    status: ClassVar[Literal["deferred"]] = "deferred"
    spent: ClassVar[bool] = False


FinalCall = Answered | Unsettled | NotSent
CallOutcome = Answered | Unsettled | NotSent | Deferred


# --- the broker -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the pipeline needs of one delivered command; ``handle`` is the transport's own.

    The pipeline never looks into ``handle``: it goes back to the transport,
    which alone knows how to ack or requeue that delivery.
    """

    body: bytes
    content_type: str | None = None
    content_encoding: str | None = None
    reply_to: str | None = None
    correlation_id: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    received_at: float = 0.0
    handle: object = None


@dataclass(frozen=True, slots=True)
class OutgoingResult:
    """An encoded result and the properties it is published with."""

    body: bytes
    content_type: str
    correlation_id: str | None
    message_id: str  # the same for every publish of this command's result: consumers dedupe on it


@dataclass(frozen=True, slots=True)
class ResultRoute:
    """Where a result went: ``reply_to``, or the result queue (and why, when not ``reply_to``)."""

    queue: str
    fallback_reason: str | None = None


class CommandTransport(Protocol):
    """The broker as the command consumer sees it (:class:`worker.amqp.Broker`).

    Every publish waits for the broker's confirm and raises
    :class:`worker.errors.PublishError` when it cannot get one; the delivery is
    then left unacked.
    """

    async def send_result(self, delivery: Delivery, result: OutgoingResult) -> ResultRoute:
        """To the delivery's ``reply_to`` if any, else (or when that refuses) the result queue."""
        ...

    async def dead_letter(self, delivery: Delivery, headers: Mapping[str, Any]) -> None:
        """The original command to the dead-letter queue with ``headers`` added."""
        ...

    async def defer(self, delivery: Delivery, due_at: float, headers: Mapping[str, Any]) -> None:
        """The original command back to the command queue at ``due_at`` (Unix seconds)."""
        ...

    def ack(self, delivery: Delivery) -> bool:
        """Done with it (sent soon, coalesced); False when its channel is gone (it comes back)."""
        ...

    async def requeue(self, delivery: Delivery) -> bool:
        """Give it back to the queue now; False when its channel is gone (it comes back anyway)."""
        ...

    async def reject(self, delivery: Delivery) -> bool:
        """Give up on it: the command queue's dead-letter exchange moves it to the DLQ."""
        ...

    async def pause(self) -> None:
        """Stop taking new deliveries (the state store is down)."""
        ...

    async def resume(self) -> None:
        """Take deliveries again."""
        ...
