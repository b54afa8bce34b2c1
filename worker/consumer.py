"""Deliveries in, results out: runs the pipeline per delivery, publishes, then acks.

Order per command: pipeline (which records the outcome in the state store) ->
dead-letter copy and result published with confirms -> ack. A crash anywhere
before the ack means redelivery; the redelivered command finds its stored
outcome and the result is published again with ``replayed: true``.

When something fails, the delivery is never dropped and never spun on:

* the state store fails: consuming pauses (the deliveries in hand go back to
  the queue, where other replicas may take them) until the service's store
  probe gets an answer again;
* a result cannot be confirmed: it is tried again, with backoff, for as long as
  the delivery's channel lives (after that the broker has the command back);
* anything unexpected (a bug): the delivery goes back to the queue after a
  growing pause, and after a few such failures it is moved to the dead-letter
  queue with ``x-wecom-error-code: internal_error`` instead of looping forever.

At most ``max_active`` commands are worked on at once (four per place in
flight); further deliveries of a large prefetch wait here unstarted, costing
their bytes only, and go straight back to the queue at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any, Final, Protocol

import structlog

from worker.errors import PublishError, StoreUnavailable
from worker.pipeline import DUE_AT_HEADER, FIRST_SEEN_HEADER, Defer, Pipeline, Reply
from worker.ports import CommandTransport, Delivery, OutgoingResult

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram

    from worker.metrics import Metrics

log = structlog.get_logger("worker.consumer")

MAX_HEADER_TEXT: Final = 2000
MAX_UNEXPECTED_FAILURES: Final = 5  # deliveries of one command that hit a bug before it is parked
UNEXPECTED_PAUSE_FIRST: Final = 0.5
UNEXPECTED_PAUSE_MAX: Final = 30.0
REMEMBERED_FAILURES: Final = 10_000
PUBLISH_RETRY_MAX: Final = 30.0


class Transport(CommandTransport, Protocol):
    """The transport, plus whether a delivery's channel still lives."""

    def channel_open(self, delivery: Delivery) -> bool:
        """False once the broker has the delivery back (its channel closed)."""
        ...


class CommandConsumer:
    """Handles every delivery of the command queue in its own task."""

    def __init__(
        self, transport: Transport, pipeline: Pipeline, metrics: Metrics, *, max_active: int = 256
    ) -> None:
        """``max_active``: commands worked on at once; further deliveries wait their turn here."""
        self.transport = transport
        self.pipeline = pipeline
        self.metrics = metrics
        self.max_active = max_active
        self.in_flight: set[asyncio.Task[Any]] = set()
        self.waiting: deque[Delivery] = deque()
        self.store_failing = False
        self._failures: OrderedDict[bytes, int] = OrderedDict()
        self._by_status: dict[str, tuple[Counter, Histogram]] = {}
        # Read at scrape time: no per-command cost.
        metrics.in_flight.set_function(lambda: len(self.in_flight) + len(self.waiting))

    def by_status(self, status: str) -> tuple[Counter, Histogram]:
        """The labelled metric children of one status, looked up once."""
        children = self._by_status.get(status)
        if children is None:
            children = (
                self.metrics.commands.labels(status),
                self.metrics.command_duration.labels(status),
            )
            self._by_status[status] = children
        return children

    def on_delivery(self, delivery: Delivery) -> None:
        """The transport's callback: handle the delivery in a task of ours and return.

        aiormq cancels its delivery tasks when the channel closes; ours must not
        be: a command whose channel died mid-call still finishes (records its
        outcome, publishes its result on the restored channel), so its
        redelivery finds the stored outcome instead of an abandoned claim.
        """
        if len(self.in_flight) >= self.max_active:
            # A large prefetch must not start thousands of commands at once: their retry
            # budgets would run out in the queue for a place in flight, all together.
            self.waiting.append(delivery)
            return
        self._start(delivery)

    def _start(self, delivery: Delivery) -> None:
        task = asyncio.create_task(self.handle(delivery))
        self.in_flight.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self.in_flight.discard(task)
        if self.waiting and len(self.in_flight) < self.max_active:
            self._start(self.waiting.popleft())

    async def handle(self, delivery: Delivery) -> None:
        """One delivery, start to ack."""
        structlog.contextvars.clear_contextvars()
        started = time.monotonic()
        try:
            await self.process(delivery, started)
        except asyncio.CancelledError:
            log.warning("command interrupted before its ack; the broker will redeliver it")
            raise
        except StoreUnavailable as error:
            # Without the claim recorded nothing may be sent or acked: pause, give it back.
            self.metrics.store_errors.inc()
            log.error("state store unavailable; command requeued", error=str(error))
            await self.store_failed()
            await self.transport.requeue(delivery)
        except PublishError as error:
            log.warning(
                "the result could not be published and the channel is gone; "
                "the broker will redeliver the command",
                error=str(error),
            )
        except Exception:
            failures = self.count_failure(delivery)
            log.exception("unexpected error", failures=failures)
            await self.unexpected(delivery, failures)

    async def process(self, delivery: Delivery, started: float) -> None:
        """Pipeline, publish, ack."""
        disposition = await self.pipeline.process(delivery)
        if isinstance(disposition, Defer):
            await self.defer(delivery, disposition)
            self.transport.ack(delivery)
            self.metrics.deferred.inc()
            log.info(
                "command deferred",
                delay_s=round(disposition.due_at - time.time(), 3),
                reason=disposition.reason,
            )
            return
        if disposition.dead_letter is None:
            await self.publish_result(delivery, disposition)
        else:
            await asyncio.gather(
                self.publish_result(delivery, disposition), self.dead_letter(delivery, disposition)
            )
        fault = self.pipeline.fault
        if fault is not None:
            fault("after_publish")
            fault("before_ack")
        self.transport.ack(delivery)
        self.finished(disposition, started)

    def finished(self, reply: Reply, started: float) -> None:
        """Metrics and the one log line per command."""
        result = reply.result
        elapsed = time.monotonic() - started
        counter, duration = self.by_status(result.status)
        counter.inc()
        duration.observe(elapsed)
        log.info(
            "command finished",
            command_id=result.command_id,
            status=result.status,
            errcode=result.errcode,
            attempts=result.attempts,
            replayed=result.replayed,
            error=result.error.code if result.error else None,
            path=result.error.path if result.error else None,
            duration_ms=round(elapsed * 1000, 2),
        )

    async def publish_result(self, delivery: Delivery, reply: Reply) -> None:
        """Publish the result until the broker confirms it, for as long as the delivery lives."""
        outgoing = OutgoingResult(
            body=reply.body,
            content_type=reply.content_type,
            correlation_id=reply.result.correlation_id,
            message_id=reply.message_id or f"result-{uuid.uuid4().hex}",
        )
        delay = 1.0
        while True:
            try:
                route = await self.transport.send_result(delivery, outgoing)
            except PublishError as error:
                if not self.transport.channel_open(delivery):
                    raise
                log.warning("result not confirmed; trying again", error=str(error), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, PUBLISH_RETRY_MAX)
            else:
                if route.fallback_reason is not None:
                    self.metrics.unroutable_results.inc()
                return

    async def dead_letter(self, delivery: Delivery, reply: Reply) -> None:
        """The original bytes and properties, with the reason in headers."""
        reason = reply.dead_letter
        if reason is None:  # pragma: no cover - only called for dead letters
            return
        headers = copied_headers(delivery)
        headers.update(
            {
                "x-wecom-error-code": reason.code,
                "x-wecom-error-message": reason.message[:MAX_HEADER_TEXT],
                "x-wecom-error-path": reason.path or "",
                "x-wecom-command-id": reply.result.command_id or "",
                "x-wecom-rejected-at-ms": int(reply.result.finished_at * 1000),
            }
        )
        await self.transport.dead_letter(delivery, headers)
        self.metrics.dead_lettered.inc()

    async def defer(self, delivery: Delivery, defer: Defer) -> None:
        """The original command to a delay bucket; it comes back to the command queue."""
        headers = copied_headers(delivery)
        count = headers.get("x-wecom-deferrals", 0)
        headers["x-wecom-deferrals"] = (count if isinstance(count, int) else 0) + 1
        headers["x-wecom-deferred-reason"] = defer.reason[:MAX_HEADER_TEXT]
        headers[DUE_AT_HEADER] = int(defer.due_at * 1000)
        headers[FIRST_SEEN_HEADER] = int(defer.first_seen * 1000)
        await self.transport.defer(delivery, defer.due_at, headers)

    async def store_failed(self) -> None:
        """Pause consuming until the state store answers again (see :meth:`store_answers`)."""
        if not self.store_failing:
            self.store_failing = True
            await self.transport.pause()

    async def store_answers(self) -> None:
        """The service's store probe got an answer: resume if a store failure paused consuming."""
        if self.store_failing:
            self.store_failing = False
            log.info("state store answers again; resuming")
            await self.transport.resume()

    async def unexpected(self, delivery: Delivery, failures: int) -> None:
        """A bug: requeue after a growing pause; park the command after a few failures."""
        if failures >= MAX_UNEXPECTED_FAILURES:
            log.error("command moved to the dead-letter queue after repeated unexpected errors")
            headers = copied_headers(delivery)
            headers.update(
                {
                    "x-wecom-error-code": "internal_error",
                    "x-wecom-error-message": (
                        f"the worker failed on this command {failures} times; see its logs"
                    ),
                }
            )
            try:
                await self.transport.dead_letter(delivery, headers)
            except PublishError:
                await self.transport.reject(delivery)  # the queue's dead-letter exchange
            else:
                self.transport.ack(delivery)
                self.metrics.dead_lettered.inc()
            return
        pause = min(UNEXPECTED_PAUSE_FIRST * 2.0 ** (failures - 1), UNEXPECTED_PAUSE_MAX)
        log.warning("command requeued after an unexpected error", retry_in=pause)
        await asyncio.sleep(pause)
        await self.transport.requeue(delivery)

    def count_failure(self, delivery: Delivery) -> int:
        """How many deliveries of this command failed unexpectedly, this one included.

        Quorum queues count deliveries in ``x-delivery-count``; otherwise the
        worker counts by a digest of the body (remembering the last few thousand).
        """
        key = hashlib.blake2b(delivery.body, digest_size=16).digest()
        failures = self._failures.pop(key, 0) + 1
        self._failures[key] = failures
        while len(self._failures) > REMEMBERED_FAILURES:
            self._failures.popitem(last=False)
        counted = delivery.headers.get("x-delivery-count")
        if isinstance(counted, int) and not isinstance(counted, bool):
            failures = max(failures, counted + 1)
        return failures

    async def drain(self, grace: float) -> int:
        """Wait up to ``grace`` s for in-flight commands, cancel the rest; how many were cut."""
        while self.waiting:  # not started: straight back to the queue
            await self.transport.requeue(self.waiting.popleft())
        if not self.in_flight:
            return 0
        _, pending = await asyncio.wait(set(self.in_flight), timeout=grace)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        return len(pending)


BROKER_HEADERS = frozenset(
    {
        "x-delivery-count",
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
    }
)


def copied_headers(delivery: Delivery) -> dict[str, Any]:
    """The command's own headers, without those the broker adds on delivery."""
    return {k: v for k, v in delivery.headers.items() if k not in BROKER_HEADERS}
