"""RabbitMQ: topology, the consumer, confirmed publishes and acks (aio-pika).

A robust connection reconnects with backoff after the broker restarts and
restores the channel, its QoS and the consumer. The known traps are handled
here so the rest of the worker never sees them: an ack on a channel that died
is dropped (the broker redelivers), a publish is bounded by a timeout and
retried, and a consumer the broker cancelled (``basic.cancel``, e.g. its queue
was deleted) is noticed by a watchdog and consumed again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
import structlog
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustQueue,
    DeliveryMode,
)

from worker.errors import BrokerError

log = structlog.get_logger("worker.amqp")

MAX_CORRELATION_ID_BYTES = 255
CONSUMER_GRACE_CHECKS = 5  # seconds aio-pika gets to restore a cancelled consumer itself


@dataclass(frozen=True)
class Topology:
    """Queue names and kinds."""

    command_queue: str
    result_queue: str
    dead_letter_queue: str
    delay_queue: str
    queue_type: str = "quorum"

    def durable_arguments(self) -> dict[str, Any]:
        """Arguments of the three contract queues."""
        return {"x-queue-type": self.queue_type}

    def delay_arguments(self) -> dict[str, Any]:
        """The delay queue: messages expire (per-message TTL) back into the command queue."""
        return {
            "x-queue-type": "classic",
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.command_queue,
        }


class Returned(Exception):
    """The broker returned a mandatory publish: no queue has that name."""


MessageHandler = Callable[[AbstractIncomingMessage], Awaitable[None]]


class Broker:
    """One robust connection with one channel (publisher confirms on) for everything."""

    def __init__(
        self,
        url: str,
        topology: Topology,
        *,
        prefetch: int,
        publish_timeout: float,
        connection_name: str,
    ) -> None:
        self.url = url
        self.topology = topology
        self.prefetch = prefetch
        self.publish_timeout = publish_timeout
        self.connection_name = connection_name
        self.connection: AbstractRobustConnection | None = None
        self.channel: AbstractRobustChannel | None = None
        self.queue: AbstractRobustQueue | None = None
        self.consumer_tag: str | None = None
        self._handler: MessageHandler | None = None
        self._consuming = False
        self._attached = False
        self._watchdog: asyncio.Task[None] | None = None

    async def connect(self, *, attempts_log_every: int = 1) -> None:
        """Connect (retrying with backoff until the broker answers) and declare the topology."""
        delay = 0.5
        attempt = 0
        while True:
            attempt += 1
            try:
                self.connection = await aio_pika.connect_robust(
                    self.url,
                    client_properties={"connection_name": self.connection_name},
                    reconnect_interval=1.0,
                    fail_fast="true",
                )
                break
            except (OSError, aiormq.exceptions.AMQPError, TimeoutError) as error:
                if attempt % attempts_log_every == 0:
                    log.warning(
                        "broker unreachable, retrying",
                        error=type(error).__name__,
                        detail=str(error),
                        retry_in=delay,
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        self.connection.reconnect_callbacks.add(self._on_reconnect)
        self.channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        await self.channel.set_qos(prefetch_count=self.prefetch)
        await self.declare()
        log.info("broker connected", prefetch=self.prefetch)

    async def declare(self) -> None:
        """Declare the three queues and the delay queue; idempotent.

        A queue that exists with other arguments (e.g. classic instead of quorum)
        makes the broker close the channel; that becomes a :class:`BrokerError`
        naming the queue and the setting to change.
        """
        assert self.connection is not None
        t = self.topology
        wanted = [
            (t.command_queue, t.durable_arguments()),
            (t.result_queue, t.durable_arguments()),
            (t.dead_letter_queue, t.durable_arguments()),
            (t.delay_queue, t.delay_arguments()),
        ]
        for name, arguments in wanted:
            channel = await self.connection.channel()
            try:
                await channel.declare_queue(name, durable=True, arguments=arguments)
            except aiormq.exceptions.ChannelPreconditionFailed as error:
                raise BrokerError(
                    f"queue {name!r} exists with other arguments than {arguments} ({error}); "
                    "set WECOM_QUEUE_TYPE to match it, or delete the queue"
                ) from None
            finally:
                with contextlib.suppress(Exception):
                    await channel.close()
        assert self.channel is not None
        self.queue = await self.channel.declare_queue(
            t.command_queue, durable=True, arguments=t.durable_arguments()
        )

    async def consume(self, handler: MessageHandler) -> None:
        """Start consuming commands and keep consuming: a watchdog re-consumes after a cancel."""
        self._handler = handler
        self._consuming = True
        await self._start_consumer()
        self._watchdog = asyncio.create_task(self._watch(), name="amqp-consumer-watchdog")

    async def _start_consumer(self) -> None:
        assert self.queue is not None
        assert self._handler is not None
        self.consumer_tag = await self.queue.consume(self._handler, no_ack=False)
        self._attached = True
        log.info("consuming", queue=self.topology.command_queue, consumer_tag=self.consumer_tag)

    @property
    def consumer_attached(self) -> bool:
        """True while our consumer is registered on an open channel (checked every second)."""
        return self._attached and self.channel is not None and not self.channel.is_closed

    async def _check_consumer(self) -> bool:
        channel = self.channel
        if channel is None or channel.is_closed or self.consumer_tag is None:
            return False
        try:
            underlying = await asyncio.wait_for(channel.get_underlay_channel(), 1.0)
        except (RuntimeError, aiormq.exceptions.AMQPError, TimeoutError):
            return False
        consumers = getattr(underlying, "consumers", {})  # aiormq.Channel's registry
        return self.consumer_tag in consumers

    @property
    def connected(self) -> bool:
        """True while the connection is open."""
        return self.connection is not None and not self.connection.is_closed

    async def _watch(self) -> None:
        """Every second: is our consumer attached? If it stays gone, consume again.

        aio-pika restores a consumer the broker cancelled by itself; this is the
        safety net for when that does not happen within a few seconds.
        """
        missing = 0
        while self._consuming:
            await asyncio.sleep(1.0)
            if not self._consuming:
                break
            self._attached = await self._check_consumer()
            if self._attached or not self.connected:
                missing = 0
                continue
            missing += 1
            if missing < CONSUMER_GRACE_CHECKS:
                continue
            log.warning("consumer gone; declaring and consuming again", seconds=missing)
            try:
                await self.declare()
                await self._start_consumer()
            except (aiormq.exceptions.AMQPError, TimeoutError, RuntimeError) as error:
                log.warning(
                    "re-consume failed, will retry", error=type(error).__name__, detail=str(error)
                )

    def _on_reconnect(self, *_: Any) -> None:
        log.info("broker reconnected; channel and consumer restored")

    async def stop_consuming(self) -> None:
        """Cancel the consumer: no new deliveries; in-flight ones can still be acked."""
        self._consuming = False
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        if self.queue is not None and self.consumer_tag is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.queue.cancel(self.consumer_tag), 5.0)
        self.consumer_tag = None
        self._attached = False

    async def publish(
        self,
        routing_key: str,
        body: bytes,
        *,
        content_type: str | None = None,
        correlation_id: str | None = None,
        headers: Mapping[str, Any] | None = None,
        reply_to: str | None = None,
        content_encoding: str | None = None,
        expiration: float | None = None,
        message_id: str | None = None,
        mandatory: bool = True,
    ) -> None:
        """Publish on the default exchange and wait for the broker's confirm.

        Raises :class:`Returned` when a mandatory message had no queue. Each try is
        bounded by the publish timeout; after a connection loss the publish is
        retried once the robust connection is back.
        """
        if (
            correlation_id is not None
            and len(correlation_id.encode("utf-8")) > MAX_CORRELATION_ID_BYTES
        ):
            correlation_id = None
        message = aio_pika.Message(
            body,
            content_type=content_type,
            content_encoding=content_encoding,
            correlation_id=correlation_id,
            headers=dict(headers) if headers else None,
            reply_to=reply_to,
            expiration=expiration,
            message_id=message_id,
            delivery_mode=DeliveryMode.PERSISTENT,
        )
        delay = 0.2
        while True:
            try:
                await self._publish_once(message, routing_key, mandatory=mandatory)
            except aiormq.exceptions.PublishError:
                raise Returned(routing_key) from None
            except (
                aiormq.exceptions.DeliveryError,  # a nack, e.g. a quorum queue without quorum
                aiormq.exceptions.ChannelInvalidStateError,
                aiormq.exceptions.AMQPConnectionError,
                aiormq.exceptions.ChannelClosed,
                TimeoutError,
                RuntimeError,
                ConnectionError,
            ) as error:
                log.warning(
                    "publish not confirmed, retrying",
                    routing_key=routing_key,
                    error=type(error).__name__,
                    retry_in=delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            else:
                return

    async def _publish_once(
        self, message: aio_pika.Message, routing_key: str, *, mandatory: bool
    ) -> None:
        channel = self.channel
        if channel is None:
            raise aiormq.exceptions.ChannelInvalidStateError("no channel yet")
        await channel.default_exchange.publish(
            message, routing_key=routing_key, mandatory=mandatory, timeout=self.publish_timeout
        )

    async def close(self) -> None:
        """Close the channel and the connection."""
        await self.stop_consuming()
        if self.connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.connection.close(), 10.0)


async def settle(message: AbstractIncomingMessage, *, ack: bool, requeue: bool = True) -> bool:
    """Ack (or nack with requeue) a delivery; a stale one after a reconnect is dropped.

    Returns whether the broker got it. ``False`` means the channel the message
    came on is gone: the broker will redeliver it, which replays the stored
    outcome, so nothing is lost.
    """
    try:
        if ack:
            await message.ack()
        else:
            await message.nack(requeue=requeue)
    except (
        aiormq.exceptions.ChannelInvalidStateError,
        aiormq.exceptions.AMQPConnectionError,
        aiormq.exceptions.ChannelClosed,
        aio_pika.exceptions.MessageProcessError,
        RuntimeError,
        ConnectionError,
    ) as error:
        log.info(
            "ack dropped: the channel closed; the broker will redeliver", error=type(error).__name__
        )
        return False
    return True
