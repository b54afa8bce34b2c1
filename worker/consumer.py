"""Deliveries in, results out: runs the pipeline per delivery, publishes, then acks.

Order per command: pipeline (which records the outcome in the state store) ->
dead-letter copy and result published with confirms -> ack. A crash anywhere
before the ack means redelivery; the redelivered command finds its stored
outcome and the result is published again with ``replayed: true``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import Counter, Histogram

from worker.amqp import Broker, Returned
from worker.errors import StoreUnavailable
from worker.pipeline import Defer, Delivery, Pipeline, Reply

if TYPE_CHECKING:
    from aiormq.abc import DeliveredMessage

    from worker.metrics import Metrics

log = structlog.get_logger("worker.consumer")

MAX_HEADER_TEXT = 2000
STORE_RETRY_DELAY = 2.0


class CommandConsumer:
    """Handles every delivery of the command queue in its own task."""

    def __init__(self, broker: Broker, pipeline: Pipeline, metrics: Metrics) -> None:
        self.broker = broker
        self.pipeline = pipeline
        self.metrics = metrics
        self.in_flight: set[asyncio.Task[Any]] = set()
        self.store_failing = False
        self._by_status: dict[str, tuple[Counter, Histogram]] = {}
        # Read at scrape time: no per-command cost.
        metrics.in_flight.set_function(lambda: len(self.in_flight))

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

    async def on_message(self, message: DeliveredMessage) -> None:
        """aiormq's consumer callback: hand the delivery to a task of ours and return.

        aiormq cancels its delivery tasks when the channel closes; ours must not
        be: a command whose channel died mid-call still finishes (records its
        outcome, publishes its result on the restored channel), so its
        redelivery finds the stored outcome instead of an abandoned claim.
        """
        task = asyncio.create_task(self.handle(message))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)

    async def handle(self, message: DeliveredMessage) -> None:
        """One delivery, start to ack."""
        structlog.contextvars.clear_contextvars()
        started = time.monotonic()
        try:
            await self.process(message, started)
        except asyncio.CancelledError:
            log.warning("command interrupted before its ack; the broker will redeliver it")
            raise
        except Exception:
            log.exception("unexpected error; command requeued")
            await asyncio.sleep(1.0)
            await self.broker.nack(message)

    async def process(self, message: DeliveredMessage, started: float) -> None:
        """Pipeline, publish, ack; a state store failure requeues instead."""
        properties = message.header.properties
        delivery = Delivery(
            body=message.body,
            content_type=properties.content_type,
            content_encoding=properties.content_encoding,
            reply_to=properties.reply_to,
            correlation_id=properties.correlation_id,
            headers=properties.headers or {},
            received_at=time.time(),
        )
        try:
            disposition = await self.pipeline.process(delivery)
            self.store_failing = False
        except StoreUnavailable as error:
            # Without the claim recorded nothing may be sent or acked: back off, requeue.
            self.store_failing = True
            self.metrics.store_errors.inc()
            log.error("state store unavailable; command requeued", error=str(error))
            await asyncio.sleep(STORE_RETRY_DELAY)
            await self.broker.nack(message)
            return
        if isinstance(disposition, Defer):
            await self.defer(delivery, disposition)
            await self.broker.ack(message)
            self.metrics.deferred.inc()
            log.info(
                "command deferred to the delay queue",
                delay_s=round(disposition.delay, 3),
                reason=disposition.reason,
            )
            return
        if disposition.dead_letter is None:
            await self.publish_result(delivery, disposition)
        else:
            await asyncio.gather(
                self.publish_result(delivery, disposition), self.dead_letter(delivery, disposition)
            )
        await self.broker.ack(message)
        self.finished(disposition, started)

    def finished(self, reply: Reply, started: float) -> None:
        """Metrics and the one log line per command."""
        result = reply.result
        elapsed = time.monotonic() - started
        counter, duration = self.by_status(result.status)
        counter.inc()
        duration.observe(elapsed)
        if result.invalid_users:
            self.metrics.invalid_users.inc(len(result.invalid_users))
        log.info(
            "command finished",
            status=result.status,
            errcode=result.errcode,
            attempts=result.attempts,
            replayed=result.replayed,
            error=result.error.code if result.error else None,
            path=result.error.path if result.error else None,
            duration_ms=round(elapsed * 1000, 2),
        )

    async def publish_result(self, delivery: Delivery, reply: Reply) -> None:
        """To ``reply_to`` when given, else the result queue; unroutable replies fall back."""
        target = delivery.reply_to
        correlation_id = reply.result.correlation_id
        if target:
            try:
                await self.broker.publish(
                    target,
                    reply.body,
                    content_type=reply.content_type,
                    correlation_id=correlation_id,
                )
            except Returned:
                self.metrics.unroutable_results.inc()
                log.warning(
                    "reply_to queue does not exist; result sent to the result queue",
                    reply_to=target,
                )
            else:
                return
        headers = {"x-unroutable-reply-to": target} if target else None
        await self.to_result_queue(reply, correlation_id, headers)

    async def to_result_queue(
        self, reply: Reply, correlation_id: str | None, headers: dict[str, Any] | None
    ) -> None:
        """Publish on the result queue; if someone deleted it, declare it again first."""
        queue = self.broker.topology.result_queue
        for attempt in range(2):
            try:
                await self.broker.publish(
                    queue,
                    reply.body,
                    content_type=reply.content_type,
                    correlation_id=correlation_id,
                    headers=headers,
                )
            except Returned:
                if attempt:
                    raise
                log.warning("the result queue was gone; declaring it again", queue=queue)
                await self.broker.declare()
            else:
                return

    async def dead_letter(self, delivery: Delivery, reply: Reply) -> None:
        """The original bytes and properties, with the reason in headers."""
        assert reply.dead_letter is not None
        reason = reply.dead_letter
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
        await self.republish(self.broker.topology.dead_letter_queue, delivery, headers)
        self.metrics.dead_lettered.inc()

    async def defer(self, delivery: Delivery, defer: Defer) -> None:
        """The original command to the delay queue; it expires back into the command queue."""
        headers = copied_headers(delivery)
        count = headers.get("x-wecom-deferrals", 0)
        headers["x-wecom-deferrals"] = (count if isinstance(count, int) else 0) + 1
        headers["x-wecom-deferred-reason"] = defer.reason[:MAX_HEADER_TEXT]
        await self.republish(
            self.broker.topology.delay_queue, delivery, headers, expiration=max(defer.delay, 0.001)
        )

    async def republish(
        self,
        queue: str,
        delivery: Delivery,
        headers: dict[str, Any],
        expiration: float | None = None,
    ) -> None:
        """The original command, bytes and properties, to another queue (confirmed)."""
        await self.broker.publish(
            queue,
            delivery.body,
            content_type=delivery.content_type,
            content_encoding=delivery.content_encoding,
            correlation_id=delivery.correlation_id,
            reply_to=delivery.reply_to,
            headers=headers,
            expiration=expiration,
        )

    async def drain(self, grace: float) -> int:
        """Wait up to ``grace`` s for in-flight commands, cancel the rest; how many were cut."""
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
