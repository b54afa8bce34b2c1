"""RabbitMQ: topology, the consumer, confirmed publishes and acks.

aio-pika owns the connection: a robust connection reconnects with backoff
after the broker restarts and restores the channel, its QoS and the declared
command queue. The hot path (deliveries, result publishes, acks) talks to
aio-pika's underlying aiormq channel directly: that skips two message objects
and a task per command, which is most of the client-side cost of AMQP.

The known traps are handled here so the rest of the worker never sees them:
an ack on a channel that died is dropped (the broker redelivers), a publish is
bounded by a timeout and retried on the restored channel, and a consumer that
is gone (after a reconnect, or a broker-sent ``basic.cancel`` because its
queue was deleted) is noticed within a second and consumed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, cast

import aio_pika
import aiormq
import structlog
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec

from worker.acks import ChannelAcks
from worker.errors import BrokerError

log = structlog.get_logger("worker.amqp")

MAX_CORRELATION_ID_BYTES = 255
PERSISTENT = 2
WATCH_INTERVAL = 1.0

# Errors after which a publish is tried again on the (restored) channel.
RETRYABLE_PUBLISH = (
    aiormq.exceptions.DeliveryError,  # a nack, e.g. a quorum queue without quorum
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelClosed,
    TimeoutError,
    RuntimeError,
    ConnectionError,
)
STALE_CHANNEL = (
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelClosed,
    RuntimeError,
    ConnectionError,
)


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


MessageHandler = Callable[[DeliveredMessage], Coroutine[Any, Any, None]]


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
        self.consumer_tag: str | None = None
        self._consumer_channel: aiormq.abc.AbstractChannel | None = None
        self._acks: dict[aiormq.abc.AbstractChannel, ChannelAcks] = {}
        self._handler: MessageHandler | None = None
        self._consuming = False
        self._wake = asyncio.Event()
        self._watchdog: asyncio.Task[None] | None = None
        self._message_ids = itertools.count(1)

    async def connect(self) -> None:
        """Connect (retrying with backoff until the broker answers) and declare the topology."""
        delay = 0.5
        while True:
            try:
                self.connection = await aio_pika.connect_robust(
                    self.url,
                    client_properties={"connection_name": self.connection_name},
                    reconnect_interval=1.0,
                    fail_fast="true",
                )
                break
            except (OSError, aiormq.exceptions.AMQPError, TimeoutError) as error:
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
        naming the queue and the setting to change. Each declaration uses a
        channel of its own so such a refusal never closes the working channel.
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
        # Declared on the robust channel too, so a reconnect re-declares it.
        await self.channel.declare_queue(
            t.command_queue, durable=True, arguments=t.durable_arguments()
        )

    async def consume(self, handler: MessageHandler) -> None:
        """Start consuming commands and keep consuming (see :meth:`_watch`)."""
        self._handler = handler
        self._consuming = True
        await self._start_consumer()
        self._watchdog = asyncio.create_task(self._watch(), name="amqp-consumer-watchdog")

    async def _start_consumer(self) -> None:
        assert self.channel is not None
        assert self._handler is not None
        channel = await self.channel.get_underlay_channel()
        for stale in [c for c in self._acks if c is not channel]:
            await self._acks.pop(stale).close()
        if channel not in self._acks:
            self._acks[channel] = ChannelAcks(channel)
        ok = await channel.basic_consume(
            self.topology.command_queue, self._on_delivery, no_ack=False
        )
        self.consumer_tag = ok.consumer_tag
        self._consumer_channel = channel
        log.info("consuming", queue=self.topology.command_queue, consumer_tag=self.consumer_tag)

    async def _on_delivery(self, message: DeliveredMessage) -> None:
        acks = self._acks.get(message.channel)
        tag = getattr(message.delivery, "delivery_tag", None)
        if acks is not None and tag is not None:
            acks.delivered(tag)
        assert self._handler is not None
        await self._handler(message)

    async def ack(self, message: DeliveredMessage) -> bool:
        """Ack a delivery (coalesced with its neighbours); False if its channel is gone.

        ``False`` means the broker will redeliver it, which replays the stored
        outcome, so nothing is lost.
        """
        acks = self._acks.get(message.channel)
        tag = getattr(message.delivery, "delivery_tag", None)
        if acks is None or tag is None or not acks.ack(tag):
            log.info("ack dropped: the channel closed; the broker will redeliver")
            return False
        return True

    async def nack(self, message: DeliveredMessage, *, requeue: bool = True) -> bool:
        """Give a delivery back to the queue now; False if its channel is gone."""
        acks = self._acks.get(message.channel)
        tag = getattr(message.delivery, "delivery_tag", None)
        try:
            if acks is None or tag is None or not await acks.nack(tag, requeue=requeue):
                raise aiormq.exceptions.ChannelInvalidStateError("channel closed")
        except STALE_CHANNEL as error:
            log.info(
                "nack dropped: the channel closed; the broker will redeliver",
                error=type(error).__name__,
            )
            return False
        return True

    @property
    def consumer_attached(self) -> bool:
        """True while our consumer is registered on an open channel."""
        channel = self._consumer_channel
        return (
            channel is not None
            and not channel.is_closed
            and self.consumer_tag is not None
            and self.consumer_tag in getattr(channel, "consumers", {})
        )

    @property
    def connected(self) -> bool:
        """True while the connection is open."""
        return self.connection is not None and not self.connection.is_closed

    async def _watch(self) -> None:
        """Every second (or at once after a reconnect): consume again if our consumer is gone."""
        while self._consuming:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), WATCH_INTERVAL)
            self._wake.clear()
            if not self._consuming or self.consumer_attached or not self.connected:
                continue
            log.warning("consumer not attached; declaring the queue and consuming again")
            try:
                await self.declare()
                await self._start_consumer()
            except BrokerError:
                raise
            except (aiormq.exceptions.AMQPError, TimeoutError, RuntimeError) as error:
                log.warning(
                    "re-consume failed, will retry", error=type(error).__name__, detail=str(error)
                )

    def _on_reconnect(self, *_: Any) -> None:
        log.info("broker reconnected")
        self._wake.set()

    async def stop_consuming(self) -> None:
        """Cancel the consumer: no new deliveries; in-flight ones can still be acked."""
        self._consuming = False
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watchdog
        channel = self._consumer_channel
        if channel is not None and not channel.is_closed and self.consumer_tag is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(channel.basic_cancel(self.consumer_tag), 5.0)
        self.consumer_tag = None
        self._consumer_channel = None

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
        mandatory: bool = True,
    ) -> None:
        """Publish on the default exchange and wait for the broker's confirm.

        Raises :class:`Returned` when a mandatory message had no queue. Each try is
        bounded by the publish timeout; after a connection loss the publish is
        retried once the robust connection has restored the channel.
        """
        if correlation_id is not None and len(correlation_id.encode()) > MAX_CORRELATION_ID_BYTES:
            correlation_id = None
        properties = spec.Basic.Properties(
            content_type=content_type,
            content_encoding=content_encoding,
            correlation_id=correlation_id,
            headers=dict(headers) if headers else None,
            reply_to=reply_to,
            expiration=str(max(int(expiration * 1000), 1)) if expiration is not None else None,
            message_id=str(next(self._message_ids)),
            delivery_mode=PERSISTENT,
        )
        delay = 0.2
        while True:
            try:
                await self._publish_once(body, routing_key, properties, mandatory=mandatory)
            except aiormq.exceptions.PublishError:
                raise Returned(routing_key) from None
            except RETRYABLE_PUBLISH as error:
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
        self, body: bytes, routing_key: str, properties: spec.Basic.Properties, *, mandatory: bool
    ) -> None:
        if self.channel is None:
            raise aiormq.exceptions.ChannelInvalidStateError("no channel yet")
        # The concrete aiormq.Channel: its basic_publish can skip waiting for the socket drain.
        channel = cast("aiormq.Channel", await self.channel.get_underlay_channel())
        await channel.basic_publish(
            body,
            routing_key=routing_key,
            properties=properties,
            mandatory=mandatory,
            timeout=self.publish_timeout,
            wait=False,  # the broker's confirm is what counts, not the socket drain
        )

    async def close(self) -> None:
        """Send the last acks, close the channel and the connection."""
        await self.stop_consuming()
        for acks in self._acks.values():
            await acks.close()
        self._acks.clear()
        if self.connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.connection.close(), 10.0)
