"""One command's path, from delivered bytes to what must be published before the ack.

``decode -> expired? -> claim response_code -> call WeCom (limiter, token,
retries) -> record outcome`` as plain async functions over typed values. The
pipeline knows RabbitMQ only as a :class:`Delivery` (bytes and a few
properties) and answers with a :class:`Disposition`; the transport publishes
that, confirmed, and acks. Every delivery ends in a disposition or an
exception that leaves it unacked (state store unreachable): nothing is lost.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
import structlog

from wecom_card_contracts import (
    CODE_LIFETIME_SECONDS,
    BodyFormat,
    Command,
    CommandInvalid,
    ErrorCode,
    Result,
    ResultError,
    Status,
    decode_result,
    encode_request,
    encode_result,
    media_format,
    read_command,
)
from worker.apps import App, AppRegistry
from worker.errors import StoreUnavailable, UnknownApp
from worker.ports import (
    AlreadyUsed,
    Answered,
    Busy,
    CallOutcome,
    Claimed,
    CodeKey,
    Deferred,
    Delivery,
    FinalCall,
    NotSent,
    Replay,
    StateStore,
    Unsettled,
)

log = structlog.get_logger("worker.pipeline")

FIRST_SEEN_HEADER = "x-wecom-first-seen-ms"  # when the worker first received a deferred command
DUE_AT_HEADER = "x-wecom-due-at-ms"  # when a deferred command may be called again
DUE_TOLERANCE = 0.05  # seconds early a deferred command may be taken up
RECORD_RETRY_FIRST = 0.1
RECORD_RETRY_MAX = 5.0


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """The original command, for the dead-letter queue, with why it was rejected."""

    code: ErrorCode
    message: str
    path: str | None


@dataclass(frozen=True, slots=True)
class Reply:
    """Publish ``body`` (the encoded result) to the reply queue, then ack."""

    result: Result
    body: bytes
    content_type: str
    dead_letter: DeadLetter | None = None

    @property
    def message_id(self) -> str | None:
        """The result's AMQP message_id, the same for every publish of this command's result.

        A digest of the command_id (at most 128 characters, up to 512 bytes, too
        long for the property): a consumer that sees one twice can drop it. None
        when the command_id could not be read (the transport makes one per delivery).
        """
        command_id = self.result.command_id
        if command_id is None:
            return None
        return "result-" + hashlib.blake2b(command_id.encode(), digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class Defer:
    """No rate-limit slot soon enough: park the command until ``due_at``, then ack.

    ``first_seen``: when the worker first received this command (carried in its
    headers across deferrals), so a command without ``code_issued_at`` still
    expires 72 h after it was first seen.
    """

    due_at: float  # Unix seconds
    reason: str
    first_seen: float


Disposition = Reply | Defer


class CardCaller(Protocol):
    """The WeCom side of the pipeline (:class:`worker.wecom.client.WeComClient`)."""

    async def update_template_card(
        self,
        app: App,
        body: bytes,
        *,
        maybe_spent: bool,
        max_limiter_wait: float,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> CallOutcome:
        """Call update_template_card with retries; see :class:`CallOutcome`."""
        ...


class ClaimTracker(Protocol):
    """Claims held right now, for lease renewal."""

    def hold(self, key: CodeKey, command_id: str) -> None:
        """A claim was taken."""
        ...

    def drop(self, key: CodeKey, command_id: str) -> None:
        """The claim was completed or released."""
        ...

    def holder(self, key: CodeKey) -> str | None:
        """The command of this process that holds ``key``, if any."""
        ...


class HeldClaims:
    """The claims this process holds, renewed by the service every lease/3.

    Also the process's own word on who holds a code: a redelivery of a command
    whose first delivery is still being worked on here waits for it, whatever
    the store's lease says (a stalled event loop or a clock jump can make a
    lease look expired while its holder is alive in this very process).
    """

    def __init__(self) -> None:
        self._held: dict[CodeKey, str] = {}

    def hold(self, key: CodeKey, command_id: str) -> None:
        """A claim was taken."""
        self._held[key] = command_id

    def drop(self, key: CodeKey, command_id: str) -> None:
        """The claim of ``command_id`` was completed or released (another's stays)."""
        if self._held.get(key) == command_id:
            del self._held[key]

    def holder(self, key: CodeKey) -> str | None:
        """The command of this process that holds ``key``, if any."""
        return self._held.get(key)

    def snapshot(self) -> list[tuple[CodeKey, str]]:
        """Every claim held now."""
        return list(self._held.items())


class Pipeline:
    """Turns deliveries into dispositions. One instance serves every delivery concurrently."""

    def __init__(
        self,
        *,
        apps: AppRegistry,
        store: StateStore,
        caller: CardCaller,
        claims: ClaimTracker,
        max_message_bytes: int,
        max_limiter_wait: float,
        clock: Callable[[], float] = time.time,
        busy_poll: float = 0.25,
        fault: Callable[[str], None] | None = None,
    ) -> None:
        self.apps = apps
        self.store = store
        self.caller = caller
        self.claims = claims
        self.max_message_bytes = max_message_bytes
        self.max_limiter_wait = max_limiter_wait
        self.clock = clock
        self.busy_poll = busy_poll
        self.fault = fault  # test-only: worker.faultpoints
        self._releases: set[asyncio.Future[None]] = set()
        self._recording: set[asyncio.Future[None]] = set()

    async def process(self, delivery: Delivery) -> Disposition:
        """The disposition of one delivery. Raises only when the state store fails."""
        received_at = delivery.received_at or self.clock()
        fmt: BodyFormat = media_format(delivery.content_type) or "json"
        try:
            command = read_command(
                delivery.body,
                content_type=delivery.content_type,
                content_encoding=delivery.content_encoding,
                max_bytes=self.max_message_bytes,
                now=self.clock(),
            )
        except CommandInvalid as invalid:
            return self.rejected(
                delivery,
                received_at=received_at,
                fmt=fmt,
                command_id=invalid.command_id,
                code="invalid_command",
                message=invalid.summary,
                path=invalid.path,
            )
        structlog.contextvars.bind_contextvars(command_id=command.command_id)
        if self.fault is not None:
            self.fault("after_decode")
        request = command.request
        try:
            app = self.apps.resolve(command.corp_id, request.agentid)
        except UnknownApp as unknown:
            path = (
                "corp_id"
                if command.corp_id is not None and command.corp_id not in self.apps.corp_ids
                else "request.agentid"
            )
            return self.rejected(
                delivery,
                received_at=received_at,
                fmt=fmt,
                command_id=command.command_id,
                code="unknown_app",
                message=str(unknown),
                path=path,
                command=command,
            )
        structlog.contextvars.bind_contextvars(corp_id=app.corp_id, agentid=app.agentid)
        first_seen = header_seconds(delivery.headers, FIRST_SEEN_HEADER) or received_at
        expired = self.expiry(delivery, fmt, command, received_at, first_seen)
        if expired is not None:
            return expired
        due_at = header_seconds(delivery.headers, DUE_AT_HEADER)
        if due_at is not None and due_at - self.clock() > DUE_TOLERANCE:
            # Back early from a delay bucket: wait out the rest without touching the code.
            return Defer(due_at=due_at, reason="waiting for its due time", first_seen=first_seen)
        return await self.claim_and_call(
            delivery, fmt, command, app, received_at, first_seen=first_seen
        )

    def expiry(
        self,
        delivery: Delivery,
        fmt: BodyFormat,
        command: Command,
        received_at: float,
        first_seen: float,
    ) -> Reply | None:
        """``expired`` when the code is past its 72 h, else None.

        Without ``code_issued_at`` the code is at least as old as the command's
        first delivery here (``first_seen``), so a command deferred again and
        again still ends.
        """
        now = self.clock()
        issued_at = command.code_issued_at
        if issued_at is not None:
            age, path, what = now - issued_at, "code_issued_at", "response_code was issued"
        else:
            age, path, what = now - first_seen, None, "the command was first received"
        if age <= CODE_LIFETIME_SECONDS:
            return None
        return self.refusal(
            delivery,
            fmt,
            command,
            received_at=received_at,
            status="expired",
            error=ResultError(
                code="expired_code",
                message=f"{what} {age / 3600:.1f} h ago; WeCom accepts a response_code for 72 h",
                path=path,
            ),
        )

    async def claim_and_call(
        self,
        delivery: Delivery,
        fmt: BodyFormat,
        command: Command,
        app: App,
        received_at: float,
        *,
        first_seen: float,
    ) -> Disposition:
        """Single use of the code, then the call, then the outcome recorded."""
        request = command.request
        key = CodeKey(app.corp_id, request.response_code)
        command_id = command.command_id
        claimed = await self.claim(key, command_id)
        match claimed:
            case Claimed(maybe_spent=maybe_spent):
                pass
            case Replay(result=stored):
                return self.replay(delivery, fmt, stored)
            case AlreadyUsed(command_id=first):
                return self.refusal(
                    delivery,
                    fmt,
                    command,
                    received_at=received_at,
                    status="duplicate",
                    error=ResultError(
                        code="code_already_used",
                        message=f"this response_code was already used by command {first!r}",
                        path="request.response_code",
                    ),
                )
        self.claims.hold(key, command_id)
        settled = False
        try:
            if self.fault is not None:
                self.fault("after_claim")
            call = await self.caller.update_template_card(
                app,
                encode_request(request),
                maybe_spent=maybe_spent,
                max_limiter_wait=self.max_limiter_wait,
                before_send=lambda: self.reassert_claim(key, command_id),
            )
            if self.fault is not None:
                self.fault("after_answer")
            match call:
                case Deferred(until=until, reason=reason, maybe_spent=call_maybe_spent):
                    await self.store.release(key, command_id, maybe_spent=call_maybe_spent)
                    settled = True
                    return Defer(due_at=until, reason=reason, first_seen=first_seen)
                case Answered() | Unsettled() | NotSent():
                    result = self.call_result(delivery, command, received_at, call)
                    settled = True  # from here on the outcome is recorded, come what may
                    await self.record(key, command_id, result, spent=call.spent)
                    if self.fault is not None:
                        self.fault("after_record")
                    return self.reply(fmt, result)
        finally:
            if not settled:
                self.abandon(key, command_id)
            self.claims.drop(key, command_id)

    async def reassert_claim(self, key: CodeKey, command_id: str) -> None:
        """Before a first send that waited: renew the claim, writing it again if it vanished.

        A store that forgot the claim meanwhile (Redis restarted empty, a
        failover that lost it) would otherwise let another command take the
        code while this one sends it.
        """
        if await self.store.renew([(key, command_id)]):
            log.warning("the claim was gone before the call and was written again")

    async def claim(self, key: CodeKey, command_id: str) -> Claimed | Replay | AlreadyUsed:
        """Take the code, waiting while a live holder (here or in another replica) has it."""
        delay = self.busy_poll
        while True:
            if self.claims.holder(key) is None:
                outcome = await self.store.claim(key, command_id)
                if not isinstance(outcome, Busy):
                    return outcome
                wait = min(delay, max(outcome.lease_until - self.clock(), 0.0) + 0.01)
            else:  # held by a command still running in this process
                wait = delay
            await asyncio.sleep(wait)
            delay = min(delay * 2, 2.0)

    async def record(self, key: CodeKey, command_id: str, result: Result, *, spent: bool) -> None:
        """Record the outcome of a call, retrying until the store takes it.

        WeCom's answer is the only proof of what happened to the code: were it
        dropped, the redelivery would send the code again and turn an ``ok``
        into ``indeterminate``. So the write is retried for as long as it takes
        (the delivery stays unacked meanwhile) and runs in a task of its own
        that a cancellation of the command (shutdown) does not stop.
        """
        task = asyncio.ensure_future(self._record(key, command_id, encode_result(result), spent))
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)
        await asyncio.shield(task)

    async def _record(self, key: CodeKey, command_id: str, stored: bytes, spent: bool) -> None:
        delay = RECORD_RETRY_FIRST
        while True:
            try:
                await self.store.complete(key, command_id, stored, spent=spent)
            except StoreUnavailable as error:
                log.error(
                    "could not record the outcome of a call; retrying",
                    error=str(error),
                    retry_in=delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECORD_RETRY_MAX)
            else:
                return

    async def wait_recorded(self, grace: float) -> int:
        """Wait up to ``grace`` s for outcomes still being recorded; how many were not."""
        if not self._recording:
            return 0
        _, pending = await asyncio.wait(set(self._recording), timeout=grace)
        return len(pending)

    def abandon(self, key: CodeKey, command_id: str) -> None:
        """Interrupted before the call ended (shutdown, a bug): give the code back, maybe spent.

        Whoever claims it next (this command's redelivery, usually) need not wait
        for the lease to run out, and reads a 60140 as ``indeterminate``.
        """
        release = asyncio.ensure_future(self.store.release(key, command_id, maybe_spent=True))
        self._releases.add(release)
        release.add_done_callback(self._released)

    def _released(self, release: asyncio.Future[None]) -> None:
        self._releases.discard(release)
        if not release.cancelled() and release.exception() is not None:
            log.warning("could not release an abandoned claim", error=str(release.exception()))

    def call_result(
        self, delivery: Delivery, command: Command, received_at: float, call: FinalCall
    ) -> Result:
        """The result of a command whose code was sent (or tried) at WeCom."""
        error = None
        if call.error_code is not None:
            error = ResultError(code=call.error_code, message=call.error_message or call.error_code)
        status: Status = call.status
        return self.result(
            delivery,
            command,
            received_at,
            status,
            errcode=call.errcode,
            errmsg=call.errmsg,
            invalid_users=list(call.invalid_users),
            error=error,
            attempts=call.attempts,
        )

    def result(
        self,
        delivery: Delivery,
        command: Command,
        received_at: float,
        status: Status,
        **fields: Any,
    ) -> Result:
        """A result for a decoded command."""
        return Result(
            command_id=command.command_id,
            correlation_id=delivery.correlation_id or command.command_id,
            status=status,
            agentid=command.request.agentid,
            response_code=command.request.response_code,
            received_at=received_at,
            finished_at=self.clock(),
            **fields,
        )

    def refusal(
        self,
        delivery: Delivery,
        fmt: BodyFormat,
        command: Command,
        *,
        received_at: float,
        status: Status,
        error: ResultError,
    ) -> Reply:
        """A decoded command that ends before any call: expired or duplicate."""
        return self.reply(fmt, self.result(delivery, command, received_at, status, error=error))

    def rejected(
        self,
        delivery: Delivery,
        *,
        received_at: float,
        fmt: BodyFormat,
        command_id: str | None,
        code: ErrorCode,
        message: str,
        path: str | None,
        command: Command | None = None,
    ) -> Reply:
        """``rejected``: nothing was sent; the original goes to the dead-letter queue."""
        result = Result(
            command_id=command_id,
            correlation_id=delivery.correlation_id or command_id,
            status="rejected",
            agentid=command.request.agentid if command else None,
            response_code=command.request.response_code if command else None,
            error=ResultError(code=code, message=message, path=path),
            received_at=received_at,
            finished_at=self.clock(),
        )
        return self.reply(fmt, result, DeadLetter(code=code, message=message, path=path))

    def replay(self, delivery: Delivery, fmt: BodyFormat, stored: bytes) -> Reply:
        """The stored result of this very command, marked ``replayed``."""
        original = decode_result(stored)
        result = msgspec.structs.replace(
            original,
            replayed=True,
            correlation_id=delivery.correlation_id or original.command_id,
        )
        return self.reply(fmt, result)

    @staticmethod
    def reply(fmt: BodyFormat, result: Result, dead_letter: DeadLetter | None = None) -> Reply:
        """Encode a result as its command was encoded (JSON when that was unreadable)."""
        content_type = "application/msgpack" if fmt == "msgpack" else "application/json"
        return Reply(
            result=result,
            body=encode_result(result, fmt),
            content_type=content_type,
            dead_letter=dead_letter,
        )


def header_seconds(headers: Mapping[str, Any], name: str) -> float | None:
    """A header holding Unix milliseconds, as seconds; None when absent or not a number."""
    value = headers.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:  # noqa: PLR0124 - NaN
        return None
    return float(value) / 1000
