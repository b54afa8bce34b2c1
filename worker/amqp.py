"""RabbitMQ: topology, the consumer, confirmed publishes, acks and the delay buckets.

aio-pika owns the topology: a robust connection declares the queues and the
delay buckets, reconnects with backoff after the broker restarts and declares
the command queue again. The hot path (deliveries, result publishes, acks)
runs on a second connection of its own, :class:`worker.amqp_link.AmqpLink`:
frames built and read by hand, a delivery handed over without a task or a
message object. Nothing of either leaves this module: the consumer gets a
:class:`~worker.ports.Delivery` whose ``handle`` only this module reads.

The known traps are handled here so the rest of the worker never sees them:
an ack on a channel that died is dropped (the broker redelivers), a publish is
bounded by a timeout and a number of tries, and a consumer that is gone (its
link closed, or a broker-sent ``basic.cancel`` because its queue was deleted)
is noticed at once (or within a second) and consumed again on a new link.

Results (:meth:`Broker.send_result`):

* a direct reply-to name (``amq.rabbitmq.reply-to.*``) is published to once,
  without ``mandatory``: RabbitMQ 3.x delivers such a publish *and* returns it
  as unroutable, so a fallback would deliver the result twice;
* any other ``reply_to`` is published ``mandatory``; a return (no such queue)
  or a queue that keeps refusing (nack: full, with ``reject-publish``) sends
  the result to the result queue with ``x-unroutable-reply-to`` and
  ``x-unroutable-reason``;
* the result queue is declared again if it was deleted.

Deferred commands wait in delay buckets: quorum queues with one fixed TTL each
(a quarter second times powers of four). Per-message TTLs expire only at the
head of a queue, so a short deferral would wait behind a long one; with one TTL
per queue the head is always the first to expire. A command is put in the
longest bucket not past its due time, comes back early, and is parked again
for the rest (see :mod:`worker.pipeline`): it is taken up at most a quarter
second late. Buckets dead-letter back to the command queue ``at-least-once``
(the broker re-publishes with confirms and keeps the message until the command
queue has it), which needs ``overflow=reject-publish``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, cast
from urllib.parse import unquote, urlsplit

import aio_pika
import aiormq
import structlog
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from pamqp import commands as spec

from worker.acks import ChannelAcks, Settle
from worker.amqp_link import AmqpLink, Endpoint, LinkChannel, LinkGone, PublishNacked
from worker.errors import BrokerError, PublishRefused, Unroutable
from worker.ports import Delivery, OutgoingResult, ResultRoute
from worker.redact import redact_url

log = structlog.get_logger("worker.amqp")

MAX_CORRELATION_ID_BYTES: Final = 255
MAX_SHORTSTR_BYTES: Final = 255
PERSISTENT: Final = 2
WATCH_INTERVAL: Final = 1.0
DIRECT_REPLY_TO: Final = "amq.rabbitmq.reply-to"
DELAY_BUCKETS: Final = (0.25, 1.0, 4.0, 16.0, 64.0, 256.0, 1024.0)  # seconds
REDECLARE_RESULT_QUEUE_TRIES: Final = 2

# A link that is closed or cannot be opened is tried again after these.
LINK_TROUBLE: Final = (LinkGone, OSError, TimeoutError)


def vhost_of(url: str) -> str:
    """The vhost an AMQP URL names (``/`` when its path is empty)."""
    path = urlsplit(url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def bucket_name(prefix: str, seconds: float) -> str:
    """``<prefix>.250ms``, ``<prefix>.4s``: the queue of one delay bucket."""
    if seconds < 1:
        return f"{prefix}.{round(seconds * 1000)}ms"
    return f"{prefix}.{round(seconds)}s"


@dataclass(frozen=True)
class Topology:
    """Queue names and kinds."""

    command_queue: str
    result_queue: str
    dead_letter_queue: str
    delay_queue: str  # the prefix of the delay buckets' names
    queue_type: str = "quorum"

    def durable_arguments(self) -> dict[str, Any]:
        """Arguments of the result and dead-letter queues."""
        return {"x-queue-type": self.queue_type}

    def command_arguments(self) -> dict[str, Any]:
        """The command queue: whatever a policy makes it drop goes to the dead-letter queue."""
        return {
            "x-queue-type": self.queue_type,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.dead_letter_queue,
        }

    def buckets(self) -> list[tuple[float, str]]:
        """(TTL in seconds, queue name) of every delay bucket, shortest first."""
        return [(ttl, bucket_name(self.delay_queue, ttl)) for ttl in DELAY_BUCKETS]

    def bucket_arguments(self, ttl: float) -> dict[str, Any]:
        """A delay bucket: expires into the command queue, at least once."""
        return {
            "x-queue-type": "quorum",
            "x-message-ttl": round(ttl * 1000),
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.command_queue,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }

    def bucket_for(self, delay: float) -> str:
        """The longest bucket not longer than ``delay`` (the shortest for a shorter delay)."""
        chosen = bucket_name(self.delay_queue, DELAY_BUCKETS[0])
        for ttl, name in self.buckets():
            if ttl <= delay:
                chosen = name
        return chosen


_FAST_FIELDS: Final = tuple(
    (name, flag, spec.Basic.Properties.amqp_type(name) == "octet")
    for name, flag in spec.Basic.Properties.flags.items()
    if spec.Basic.Properties.amqp_type(name) in {"shortstr", "octet"}
)


class ResultProperties(spec.Basic.Properties):
    """Properties of a result, marshalled in one pass.

    pamqp encodes properties with a generic loop (a type lookup and a dispatch
    per field); a result carries short strings and the delivery mode only, so
    this builds the same bytes with a fraction of the calls. Headers and
    timestamps (the fallback to the result queue) go through pamqp.
    """

    def marshal(self) -> bytes:
        """The property flags and values, byte for byte as pamqp writes them."""
        if self.headers or self.timestamp is not None:
            return super().marshal()
        flags = 0
        parts = []
        for name, flag, octet in _FAST_FIELDS:
            value = getattr(self, name)
            if value is None or value == "":
                continue
            flags |= flag
            if octet:
                parts.append(bytes((value,)))
                continue
            raw = value.encode()
            if len(raw) > MAX_SHORTSTR_BYTES:
                raise ValueError(f"{name} is longer than {MAX_SHORTSTR_BYTES} bytes")
            parts.append(bytes((len(raw),)) + raw)
        return flags.to_bytes(2, "big") + b"".join(parts)


class _Inbound:
    """The transport's handle of one delivery: its channel's acks, tag and original properties."""

    __slots__ = ("acks", "properties", "tag")

    def __init__(self, acks: ChannelAcks, tag: int, properties: spec.Basic.Properties) -> None:
        self.acks = acks
        self.tag = tag
        self.properties = properties


DeliveryHandler = Callable[[Delivery], None]


class Broker:
    """A robust connection for the topology and a link for deliveries, publishes and acks.

    Implements :class:`worker.ports.CommandTransport`.
    """

    def __init__(
        self,
        url: str,
        topology: Topology,
        *,
        prefetch: int,
        publish_timeout: float,
        connection_name: str,
        publish_tries: int = 3,
    ) -> None:
        self.url = url
        self.topology = topology
        self.prefetch = prefetch
        self.publish_timeout = publish_timeout
        self.publish_tries = publish_tries
        self.connection_name = connection_name
        self.connection: AbstractRobustConnection | None = None
        self.channel: AbstractRobustChannel | None = None
        self.consumer_tag: str | None = None
        self.link: AmqpLink | None = None
        self._link_opening: asyncio.Lock = asyncio.Lock()
        self._acks: dict[LinkChannel, ChannelAcks] = {}
        self._handler: DeliveryHandler | None = None
        self._consuming = False
        self._paused = False
        self._wake = asyncio.Event()
        self._watchdog: asyncio.Task[None] | None = None

    # --- connection and topology ---------------------------------------------------------------

    async def connect(self) -> None:
        """Connect and declare the topology.

        The broker not answering is retried with backoff until it does (it may
        be starting). A refusal that retrying cannot fix (wrong credentials, a
        missing vhost) raises :class:`BrokerError` naming ``WECOM_AMQP_URL``.
        """
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
            except (
                aiormq.exceptions.ProbableAuthenticationError,
                aiormq.exceptions.AuthenticationError,
            ) as error:
                raise BrokerError(
                    f"the broker at {redact_url(self.url)} refused the credentials "
                    f"(ACCESS_REFUSED: {error}); check the user and password"
                ) from None
            except (
                aiormq.exceptions.ConnectionNotAllowed,
                aiormq.exceptions.InvalidFrameError,  # Connection.Close instead of Open-Ok
            ) as error:
                if isinstance(error, aiormq.exceptions.InvalidFrameError) and (
                    "Connection.Close" not in str(error)
                ):
                    raise BrokerError(f"the broker's answer made no sense: {error}") from None
                raise BrokerError(
                    f"the broker at {redact_url(self.url)} refused to open vhost "
                    f"{vhost_of(self.url)!r}; check that the vhost exists and the user may use it"
                ) from None
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
        self.channel = await self.connection.channel(publisher_confirms=False)
        await self.declare()
        await self._open_link()
        log.info("broker connected", prefetch=self.prefetch)

    async def _open_link(self) -> AmqpLink:
        """The open link, or a new one (raises one of ``LINK_TROUBLE`` if it cannot open)."""
        async with self._link_opening:
            link = self.link
            if link is not None and not link.closed:
                return link
            link = AmqpLink(
                Endpoint.from_url(self.url),
                connection_name=f"{self.connection_name} (hot path)",
                on_delivery=self._on_delivery,
            )
            try:
                await link.open(prefetch=self.prefetch)
            except BaseException as error:
                link.abort(f"could not open: {type(error).__name__}")
                raise
            link.on_trouble = self._wake.set  # a lost link or consumer is replaced at once
            self.link = link
            return link

    async def declare(self) -> None:
        """Declare the three queues and the delay buckets; idempotent.

        A queue that exists with other arguments (e.g. classic instead of quorum)
        makes the broker close the channel; that becomes a :class:`BrokerError`
        naming the queue and the setting to change. Each declaration uses a
        channel of its own so such a refusal never closes the working channel.
        The command queue is the exception: one declared before it had a
        dead-letter exchange is used as it is, with a warning.
        """
        t = self.topology
        wanted = [
            (t.result_queue, t.durable_arguments()),
            (t.dead_letter_queue, t.durable_arguments()),
            *((name, t.bucket_arguments(ttl)) for ttl, name in t.buckets()),
        ]
        command_arguments = t.command_arguments()
        if not await self._declare_one(t.command_queue, command_arguments, strict=False):
            log.warning(
                "the command queue exists without a dead-letter exchange; messages a policy "
                "drops (delivery-limit, length limit) would be lost: give it a policy with "
                "dead-letter-routing-key set to the dead-letter queue, or re-create it",
                queue=t.command_queue,
                dead_letter_queue=t.dead_letter_queue,
            )
            command_arguments = t.durable_arguments()
        for name, arguments in wanted:
            await self._declare_one(name, arguments, strict=True)
        if self.channel is None:
            raise BrokerError("no channel: connect() first")
        # Declared on the robust channel too, so a reconnect re-declares it.
        await self.channel.declare_queue(t.command_queue, durable=True, arguments=command_arguments)

    async def _declare_one(self, name: str, arguments: dict[str, Any], *, strict: bool) -> bool:
        """Declare one queue on a channel of its own; False if it exists with other arguments."""
        if self.connection is None:
            raise BrokerError("no connection: connect() first")
        channel = await self.connection.channel()
        try:
            await channel.declare_queue(name, durable=True, arguments=arguments)
        except aiormq.exceptions.ChannelPreconditionFailed as error:
            if not strict:
                return False
            raise BrokerError(
                f"queue {name!r} exists with other arguments than {arguments} ({error}); "
                "set WECOM_QUEUE_TYPE to match it, or delete the queue",
                setting="WECOM_QUEUE_TYPE",
            ) from None
        finally:
            with contextlib.suppress(Exception):
                await channel.close()
        return True

    # --- consuming -----------------------------------------------------------------------------

    async def consume(self, handler: DeliveryHandler) -> None:
        """Start consuming commands and keep consuming (see :meth:`_watch`)."""
        self._handler = handler
        self._consuming = True
        await self._start_consumer()
        self._watchdog = asyncio.create_task(self._watch(), name="amqp-consumer-watchdog")

    async def _start_consumer(self) -> None:
        if self._handler is None:
            raise BrokerError("consume() before connect()")
        link = await self._open_link()
        channel = link.channel
        for stale in [c for c in self._acks if c is not channel]:
            await self._acks.pop(stale).close()
        if channel not in self._acks:
            self._acks[channel] = ChannelAcks(channel)
        self.consumer_tag = await link.consume(self.topology.command_queue)
        log.info("consuming", queue=self.topology.command_queue, consumer_tag=self.consumer_tag)

    def _on_delivery(
        self, channel: LinkChannel, tag: int, properties: spec.Basic.Properties, body: bytes
    ) -> None:
        acks = self._acks.get(channel)
        if acks is None or self._handler is None:  # pragma: no cover - consumed after both
            return
        acks.delivered(tag)
        self._handler(
            Delivery(
                body=body,
                content_type=properties.content_type,
                content_encoding=properties.content_encoding,
                reply_to=properties.reply_to,
                correlation_id=properties.correlation_id,
                headers=properties.headers or {},
                received_at=time.time(),
                handle=_Inbound(acks, tag, properties),
            )
        )

    def ack(self, delivery: Delivery) -> bool:
        """Ack a delivery (coalesced with its neighbours); False if its channel is gone.

        ``False`` means the broker will redeliver it, which replays the stored
        outcome, so nothing is lost.
        """
        inbound = cast("_Inbound", delivery.handle)
        if not inbound.acks.settle(inbound.tag, Settle.ACK):
            log.info("ack dropped: the channel closed; the broker will redeliver")
            return False
        return True

    async def requeue(self, delivery: Delivery) -> bool:
        """Give a delivery back to the queue; False if its channel is gone."""
        return self._nack(delivery, Settle.REQUEUE)

    async def reject(self, delivery: Delivery) -> bool:
        """Nack without requeue: the command queue's dead-letter exchange takes it to the DLQ."""
        return self._nack(delivery, Settle.REJECT)

    def _nack(self, delivery: Delivery, how: Settle) -> bool:
        inbound = cast("_Inbound", delivery.handle)
        if not inbound.acks.settle(inbound.tag, how):
            log.info("nack dropped: the channel closed; the broker will redeliver")
            return False
        return True

    def channel_open(self, delivery: Delivery) -> bool:
        """Whether the delivery's channel is still open (else the broker has it back)."""
        return cast("_Inbound", delivery.handle).acks.open

    async def pause(self) -> None:
        """Stop taking deliveries (those in hand can still be settled) until :meth:`resume`."""
        if self._paused:
            return
        self._paused = True
        log.warning("consuming paused")
        await self._cancel_consumer()

    async def resume(self) -> None:
        """Take deliveries again."""
        if not self._paused:
            return
        self._paused = False
        log.info("consuming resumed")
        self._wake.set()

    @property
    def consumer_attached(self) -> bool:
        """True while our consumer is registered on an open channel."""
        link = self.link
        return (
            link is not None
            and not link.channel.is_closed
            and self.consumer_tag is not None
            and self.consumer_tag in link.channel.consumers
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
            if not self._consuming or self._paused or self.consumer_attached or not self.connected:
                continue
            log.warning("consumer not attached; declaring the queue and consuming again")
            try:
                await self.declare()
                await self._start_consumer()
            except BrokerError:
                raise
            except (aiormq.exceptions.AMQPError, RuntimeError, *LINK_TROUBLE) as error:
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
        await self._cancel_consumer()

    async def _cancel_consumer(self) -> None:
        link = self.link
        if link is not None and self.consumer_tag is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(link.cancel(self.consumer_tag), 5.0)
        self.consumer_tag = None

    # --- publishing ----------------------------------------------------------------------------

    async def send_result(self, delivery: Delivery, result: OutgoingResult) -> ResultRoute:
        """To ``reply_to`` when given, else the result queue (see the module docstring)."""
        target = delivery.reply_to
        message_id = result.message_id
        if target and target.startswith(DIRECT_REPLY_TO):
            properties = self.properties(result.content_type, result.correlation_id, message_id)
            # Once, not mandatory; a requester that went away re-sends and gets a replay.
            with contextlib.suppress(PublishRefused):
                await self.publish(target, result.body, properties, mandatory=False, tries=1)
            return ResultRoute(queue=target)
        headers: dict[str, Any] | None = None
        reason = None
        if target:
            properties = self.properties(result.content_type, result.correlation_id, message_id)
            try:
                await self.publish(target, result.body, properties, mandatory=True)
            except Unroutable:
                reason = "no queue with that name"
            except PublishRefused as refused:
                reason = f"the queue refused the result: {refused.reason}"
            else:
                return ResultRoute(queue=target)
            headers = {"x-unroutable-reply-to": target, "x-unroutable-reason": reason}
            log.warning(
                "result sent to the result queue instead of reply_to",
                reply_to=target,
                reason=reason,
            )
        properties = self.properties(
            result.content_type, result.correlation_id, message_id, headers=headers
        )
        await self._to_result_queue(result.body, properties)
        return ResultRoute(queue=self.topology.result_queue, fallback_reason=reason)

    async def _to_result_queue(self, body: bytes, properties: spec.Basic.Properties) -> None:
        """Publish on the result queue; if someone deleted it, declare it again first."""
        queue = self.topology.result_queue
        for attempt in range(REDECLARE_RESULT_QUEUE_TRIES):
            try:
                await self.publish(queue, body, properties, mandatory=True)
            except Unroutable:
                if attempt + 1 == REDECLARE_RESULT_QUEUE_TRIES:
                    raise
                log.warning("the result queue was gone; declaring it again", queue=queue)
                await self._declare_one(queue, self.topology.durable_arguments(), strict=True)
            else:
                return

    async def dead_letter(self, delivery: Delivery, headers: Mapping[str, Any]) -> None:
        """The original command, bytes and properties, to the dead-letter queue."""
        await self._republish(self.topology.dead_letter_queue, delivery, headers)

    async def defer(self, delivery: Delivery, due_at: float, headers: Mapping[str, Any]) -> None:
        """The original command into the delay bucket for ``due_at`` (Unix seconds)."""
        queue = self.topology.bucket_for(due_at - time.time())
        await self._republish(queue, delivery, headers)

    async def _republish(self, queue: str, delivery: Delivery, headers: Mapping[str, Any]) -> None:
        original = cast("_Inbound", delivery.handle).properties
        properties = spec.Basic.Properties(
            content_type=original.content_type,
            content_encoding=original.content_encoding,
            correlation_id=original.correlation_id,
            reply_to=original.reply_to,
            message_id=original.message_id,
            timestamp=original.timestamp,
            message_type=original.message_type,
            app_id=original.app_id,
            priority=original.priority,
            headers=dict(headers),
            delivery_mode=PERSISTENT,
        )
        await self.publish(queue, delivery.body, properties, mandatory=True)

    @staticmethod
    def properties(
        content_type: str,
        correlation_id: str | None,
        message_id: str,
        *,
        headers: Mapping[str, Any] | None = None,
    ) -> spec.Basic.Properties:
        """Persistent properties of a result; an over-long correlation_id stays in the body only."""
        if correlation_id is not None and len(correlation_id.encode()) > MAX_CORRELATION_ID_BYTES:
            correlation_id = None
        return ResultProperties(
            content_type=content_type,
            correlation_id=correlation_id,
            message_id=message_id,
            headers=dict(headers) if headers else None,
            delivery_mode=PERSISTENT,
        )

    async def publish(
        self,
        routing_key: str,
        body: bytes,
        properties: spec.Basic.Properties,
        *,
        mandatory: bool,
        tries: int | None = None,
    ) -> None:
        """Publish on the default exchange and wait for the broker's confirm.

        Raises :class:`Unroutable` when a mandatory message had no queue, and
        :class:`PublishRefused` after ``tries`` (default: the broker's
        ``publish_tries``) without a confirm. Each try is bounded by the publish
        timeout; every try carries the same ``message_id``, so a copy that was
        confirmed late can be told from a new result.
        """
        if properties.message_id is None:
            properties.message_id = uuid.uuid4().hex
        tries = self.publish_tries if tries is None else tries
        delay = 0.2
        last = "not tried"
        for attempt in range(1, tries + 1):
            try:
                await self._publish_once(body, routing_key, properties, mandatory=mandatory)
            except Unroutable:
                raise
            except PublishNacked:
                last = "the broker refused it (nack)"
            except TimeoutError:
                last = f"no confirm within {self.publish_timeout:g} s"
            except LINK_TROUBLE as error:
                last = f"the channel was not usable ({type(error).__name__}: {error})"
            else:
                return
            if attempt < tries:
                log.warning(
                    "publish not confirmed, retrying",
                    routing_key=routing_key,
                    problem=last,
                    retry_in=delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        raise PublishRefused(routing_key, f"{last} ({tries} tries)")

    async def _publish_once(
        self, body: bytes, routing_key: str, properties: spec.Basic.Properties, *, mandatory: bool
    ) -> None:
        confirmed = None
        try:
            async with asyncio.timeout(self.publish_timeout):
                link = self.link
                if link is None or link.closed:
                    link = await self._open_link()
                confirmed = link.publish(
                    routing_key,
                    properties.marshal(),
                    body,
                    mandatory=mandatory,
                    message_id=properties.message_id,
                )
                await confirmed
        except TimeoutError:
            if confirmed is not None:
                confirmed.cancel()
            raise

    async def close(self) -> None:
        """Send the last acks, close the channel and the connection."""
        await self.stop_consuming()
        for acks in self._acks.values():
            await acks.close()
        self._acks.clear()
        if self.link is not None:
            await self.link.close()
        if self.connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.connection.close(), 10.0)
