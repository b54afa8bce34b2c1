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
import gzip
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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
    decode_command,
    decode_result,
    encode_request,
    encode_result,
    peek_command_id,
)
from worker.apps import App, AppRegistry, UnknownApp
from worker.ports import (
    AlreadyUsed,
    Busy,
    CallOutcome,
    Claimed,
    CodeKey,
    Replay,
    StateStore,
)

log = structlog.get_logger("worker.pipeline")

MSGPACK_TYPES = frozenset({"application/msgpack"})
JSON_TYPES = frozenset({"application/json"})
IDENTITY_ENCODINGS = frozenset({"", "identity"})


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the pipeline needs of one AMQP delivery."""

    body: bytes
    content_type: str | None = None
    content_encoding: str | None = None
    reply_to: str | None = None
    correlation_id: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    received_at: float = 0.0


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


@dataclass(frozen=True, slots=True)
class Defer:
    """No rate-limit slot soon enough: park the command in the delay queue, then ack."""

    delay: float  # seconds
    reason: str


Disposition = Reply | Defer


class CardCaller(Protocol):
    """The WeCom side of the pipeline (:class:`worker.wecom.client.WeComClient`)."""

    async def update_template_card(
        self, app: App, body: bytes, *, maybe_spent: bool, max_limiter_wait: float
    ) -> CallOutcome:
        """Call update_template_card with retries; see :class:`CallOutcome`."""
        ...


class ClaimTracker(Protocol):
    """Claims held right now, for lease renewal."""

    def hold(self, key: CodeKey, command_id: str) -> None:
        """A claim was taken."""
        ...

    def drop(self, key: CodeKey) -> None:
        """The claim was completed or released."""
        ...


class HeldClaims:
    """The claims this process holds, renewed by :mod:`worker.service` every lease/3."""

    def __init__(self) -> None:
        self._held: dict[CodeKey, str] = {}

    def hold(self, key: CodeKey, command_id: str) -> None:
        """A claim was taken."""
        self._held[key] = command_id

    def drop(self, key: CodeKey) -> None:
        """The claim was completed or released."""
        self._held.pop(key, None)

    def snapshot(self) -> list[tuple[CodeKey, str]]:
        """Every claim held now."""
        return list(self._held.items())


class BodyRejected(Exception):
    """The delivery's bytes cannot be read as a command at all."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


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
    ) -> None:
        self.apps = apps
        self.store = store
        self.caller = caller
        self.claims = claims
        self.max_message_bytes = max_message_bytes
        self.max_limiter_wait = max_limiter_wait
        self.clock = clock
        self.busy_poll = busy_poll
        self._releases: set[asyncio.Future[None]] = set()

    async def process(self, delivery: Delivery) -> Disposition:
        """The disposition of one delivery. Raises only when the state store fails."""
        received_at = delivery.received_at or self.clock()
        fmt: BodyFormat = "json"
        try:
            fmt = body_format(delivery.content_type)
            body = self.plain_body(delivery)
        except BodyRejected as rejected:
            return self.rejected(
                delivery,
                received_at=received_at,
                fmt=fmt,
                command_id=None,
                code="invalid_command",
                message=rejected.message,
                path=None,
            )
        try:
            command = decode_command(body, fmt)
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
        issued_at = command.code_issued_at
        if issued_at is not None and self.clock() - issued_at > CODE_LIFETIME_SECONDS:
            age_hours = (self.clock() - issued_at) / 3600
            return self.refusal(
                delivery,
                fmt,
                command,
                received_at=received_at,
                status="expired",
                error=ResultError(
                    code="expired_code",
                    message=f"response_code was issued {age_hours:.1f} h ago; "
                    "WeCom accepts it for 72 h",
                    path="code_issued_at",
                ),
            )
        return await self.claim_and_call(delivery, fmt, command, app, received_at)

    def plain_body(self, delivery: Delivery) -> bytes:
        """The body, size-checked and decompressed when its content_encoding says so."""
        body = delivery.body
        if len(body) > self.max_message_bytes:
            raise BodyRejected(
                f"the message is {len(body)} bytes; "
                f"the worker accepts at most {self.max_message_bytes}"
            )
        encoding = (delivery.content_encoding or "").strip().lower()
        if encoding in IDENTITY_ENCODINGS:
            return body
        if encoding not in {"gzip", "deflate"}:
            raise BodyRejected(
                f"content_encoding {delivery.content_encoding!r} is not supported; "
                "send the body uncompressed, or gzip / deflate"
            )
        try:
            inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
            plain = inflater.decompress(body, self.max_message_bytes + 1)
        except (zlib.error, gzip.BadGzipFile) as error:
            raise BodyRejected(f"the body is not valid {encoding}: {error}") from None
        if len(plain) > self.max_message_bytes or inflater.unconsumed_tail:
            raise BodyRejected(
                f"the decompressed message is larger than {self.max_message_bytes} bytes"
            )
        return plain

    async def claim_and_call(
        self, delivery: Delivery, fmt: BodyFormat, command: Command, app: App, received_at: float
    ) -> Disposition:
        """Single use of the code, then the call, then the outcome recorded."""
        request = command.request
        key = CodeKey(app.corp_id, request.response_code)
        command_id = command.command_id
        delay = self.busy_poll
        while True:
            outcome = await self.store.claim(key, command_id)
            match outcome:
                case Claimed(maybe_spent=maybe_spent):
                    break
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
                case Busy(lease_until=lease_until):
                    wait = min(delay, max(lease_until - self.clock(), 0.0) + 0.01)
                    await asyncio.sleep(wait)
                    delay = min(delay * 2, 2.0)
        self.claims.hold(key, command_id)
        settled = False
        try:
            call = await self.caller.update_template_card(
                app,
                encode_request(request),
                maybe_spent=maybe_spent,
                max_limiter_wait=self.max_limiter_wait,
            )
            if call.status == "deferred":
                await self.store.release(key, command_id, maybe_spent=call.maybe_spent)
                settled = True
                wait = max((call.defer_until or self.clock()) - self.clock(), 0.0)
                return Defer(delay=wait, reason=call.error_message or "rate limit")
            result = self.call_result(delivery, command, received_at, call)
            await self.store.complete(key, command_id, encode_result(result), spent=call.spent)
            settled = True
        finally:
            self.claims.drop(key)
            if not settled:
                self.abandon(key, command_id)
        return self.reply(fmt, result)

    def abandon(self, key: CodeKey, command_id: str) -> None:
        """Interrupted mid-call (shutdown, a bug): give the code back as possibly spent.

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
        self, delivery: Delivery, command: Command, received_at: float, call: CallOutcome
    ) -> Result:
        """The result of a command whose code was sent (or tried) at WeCom."""
        error = None
        if call.error_code is not None:
            error = ResultError(code=call.error_code, message=call.error_message or call.error_code)
        status: Status = "failed" if call.status == "deferred" else call.status
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
        if command_id is None and code == "invalid_command":
            command_id = peek_command_id(delivery.body, fmt)
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


def body_format(content_type: str | None) -> BodyFormat:
    """``json`` or ``msgpack`` from a content_type; parameters such as charset are ignored."""
    if content_type is None:
        return "json"
    media = content_type.split(";", 1)[0].strip().lower()
    if media in JSON_TYPES or media == "":
        return "json"
    if media in MSGPACK_TYPES:
        return "msgpack"
    raise BodyRejected(
        f"content_type {content_type!r} is not supported; "
        "send application/json or application/msgpack"
    )
