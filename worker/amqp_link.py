"""The hot path's own AMQP connection: deliveries in, confirmed publishes and acks out.

aio-pika's robust connection keeps the topology (declarations, start-up
refusals); this second connection carries the steady traffic with as little
work per message as AMQP allows: one :class:`asyncio.Protocol`, frames cut
and built by :mod:`worker.amqp_wire`, a delivery handed to its consumer from
``data_received`` (no task, no queue, no message object), a publish confirmed
through one future, frames (publishes, acks) written in the order they were
asked for, all of one event-loop turn in one ``transport.write``.

One :class:`AmqpLink` is one TCP connection with one channel (prefetch, publisher
confirms). It does not reconnect: when the broker closes it or the socket
dies, every unconfirmed publish fails with :class:`LinkGone`, the channel is
closed for good (its acks are refused, so a stale tag never reaches a newer
channel) and the owner opens a new link (:class:`worker.amqp.Broker` does,
from its watchdog).

The URL is aio-pika's: ``amqp://`` or ``amqps://``, ``heartbeat``,
``cafile``, ``capath``, ``certfile``, ``keyfile``, ``no_verify_ssl`` query
parameters.
"""

from __future__ import annotations

import asyncio
import contextlib
import platform
import ssl
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import structlog
from pamqp import commands as spec
from pamqp.base import Frame

from worker import amqp_wire as wire
from worker.errors import Unroutable

log = structlog.get_logger("worker.amqp")

CHANNEL: Final = 1
DEFAULT_HEARTBEAT: Final = 60
HANDSHAKE_TIMEOUT: Final = 10.0
RPC_TIMEOUT: Final = 10.0
SILENT_BEATS: Final = 4  # half-intervals without a byte from the broker before it counts as dead
CLIENT_FRAME_MAX: Final = 131072
REPLY_SUCCESS: Final = 200

M = TypeVar("M", bound=Frame)


class LinkGone(ConnectionError):
    """The link's connection or channel closed; what was not confirmed may not have arrived."""


class PublishNacked(Exception):
    """The broker refused a publish (nack): a full queue with reject-publish, no quorum."""


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect, read from an AMQP URL."""

    host: str
    port: int
    username: str
    password: str
    vhost: str
    heartbeat: int
    tls: ssl.SSLContext | None

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        """Read ``url`` as aio-pika does (credentials, vhost, heartbeat, TLS options)."""
        parts = urlsplit(url)
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        secure = parts.scheme == "amqps"
        tls = None
        if secure:
            tls = ssl.create_default_context(
                ssl.Purpose.SERVER_AUTH, cafile=query.get("cafile"), capath=query.get("capath")
            )
            if query.get("certfile"):
                tls.load_cert_chain(query["certfile"], query.get("keyfile"))
            if query.get("no_verify_ssl", "0") != "0":
                tls.check_hostname = False
                tls.verify_mode = ssl.CERT_NONE
        path = parts.path
        return cls(
            host=parts.hostname or "localhost",
            port=parts.port or (5671 if secure else 5672),
            username=unquote(parts.username or "guest"),
            password=unquote(parts.password or "guest"),
            vhost=unquote(path[1:]) if len(path) > 1 else "/",
            heartbeat=int(query.get("heartbeat", DEFAULT_HEARTBEAT)),
            tls=tls,
        )


DeliveryCallback = Callable[["LinkChannel", int, spec.Basic.Properties, bytes], None]


class LinkChannel:
    """One opening of the link's channel: closed for good once it closes.

    Acks and nacks are written at once, in call order, so the order
    :class:`worker.acks.ChannelAcks` chooses is the order on the wire.
    """

    __slots__ = ("_link", "consumers", "is_closed", "number")

    def __init__(self, link: AmqpLink, number: int) -> None:
        self._link = link
        self.number = number
        self.is_closed = False
        self.consumers: set[str] = set()

    def _write(self, frame: bytes) -> None:
        if self.is_closed:
            raise LinkGone("the channel is closed")
        self._link.write(frame)

    async def basic_ack(self, delivery_tag: int, *, multiple: bool = False) -> None:
        """Ack one delivery, or every one up to it."""
        self._write(wire.ack_frame(self.number, delivery_tag, multiple=multiple))

    async def basic_nack(self, delivery_tag: int, *, requeue: bool = True) -> None:
        """Nack one delivery: back to the queue, or to its dead-letter exchange."""
        self._write(wire.nack_frame(self.number, delivery_tag, requeue=requeue))


class _Content:
    """A delivery or a return whose header and body frames are still coming."""

    __slots__ = ("chunks", "properties", "received", "size", "tag", "unroutable")

    def __init__(self, tag: int, unroutable: str | None) -> None:
        self.tag = tag
        self.unroutable = unroutable  # a return: the routing key it could not be routed by
        self.properties: spec.Basic.Properties | None = None
        self.size = 0
        self.received = 0
        self.chunks: list[bytes] = []


class AmqpLink(asyncio.Protocol):
    """One AMQP connection with one channel for deliveries, confirmed publishes and acks."""

    def __init__(
        self, endpoint: Endpoint, *, connection_name: str, on_delivery: DeliveryCallback
    ) -> None:
        """``on_delivery(channel, delivery_tag, properties, body)`` gets every delivery."""
        self.endpoint = endpoint
        self.on_delivery = on_delivery
        self.connection_name = connection_name
        self.channel = LinkChannel(self, CHANNEL)
        self.channel.is_closed = True  # until opened
        self.frame_max = CLIENT_FRAME_MAX
        self.closed = False
        self.close_reason = ""
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._outgoing: list[bytes] = []
        self._splitter = wire.FrameSplitter(self._frame, CLIENT_FRAME_MAX)
        self._waiter: tuple[tuple[type[Frame], ...], asyncio.Future[Frame]] | None = None
        self._rpc_lock = asyncio.Lock()
        self._unconfirmed: dict[int, tuple[asyncio.Future[None], tuple[bytes, str | None]]] = {}
        self._next_publish = 1
        self._content: _Content | None = None
        self._heard = True
        self._silent = 0
        self._heartbeat: asyncio.TimerHandle | None = None
        self._lost = self._loop.create_future()
        # Called when the link closes or the broker cancels a consumer: its owner acts at once.
        self.on_trouble: Callable[[], None] | None = None

    # --- opening ------------------------------------------------------------------------------

    async def open(self, *, prefetch: int) -> None:
        """Connect, log in, open the channel with confirms and ``prefetch``; raises on failure."""
        endpoint = self.endpoint
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):
            # Waiting for Start before connecting: it may arrive before this coroutine resumes.
            started: asyncio.Future[Frame] = self._loop.create_future()
            self._waiter = ((spec.Connection.Start,), started)
            await self._loop.create_connection(
                lambda: self,
                endpoint.host,
                endpoint.port,
                ssl=endpoint.tls,
                server_hostname=endpoint.host if endpoint.tls else None,
            )
            start = await started
            self._waiter = None
            if not isinstance(start, spec.Connection.Start):  # pragma: no cover - the waiter's type
                raise LinkGone("the broker did not start the handshake")
            if b"PLAIN" not in start.mechanisms.encode().split():
                raise LinkGone(f"the broker offers no PLAIN login ({start.mechanisms})")
            tune = await self._call(
                0,
                spec.Connection.StartOk(
                    client_properties=self._client_properties(),
                    mechanism="PLAIN",
                    response=f"\0{endpoint.username}\0{endpoint.password}",
                ),
                spec.Connection.Tune,
            )
            frame_max = min(tune.frame_max or CLIENT_FRAME_MAX, CLIENT_FRAME_MAX)
            heartbeat = _negotiate(tune.heartbeat, endpoint.heartbeat)
            self.write(
                wire.encode_method(
                    0,
                    spec.Connection.TuneOk(channel_max=1, frame_max=frame_max, heartbeat=heartbeat),
                )
            )
            self.frame_max = frame_max
            self._splitter.max_size = frame_max
            await self._call(
                0, spec.Connection.Open(virtual_host=endpoint.vhost), spec.Connection.OpenOk
            )
            if heartbeat:
                self._beat_every(heartbeat / 2)
            await self._call(CHANNEL, spec.Channel.Open(), spec.Channel.OpenOk)
            self.channel = LinkChannel(self, CHANNEL)
            await self._call(CHANNEL, spec.Confirm.Select(), spec.Confirm.SelectOk)
            await self._call(CHANNEL, spec.Basic.Qos(prefetch_count=prefetch), spec.Basic.QosOk)

    def _client_properties(self) -> dict[str, Any]:
        return {
            "product": "wecom-card-worker",
            "platform": f"Python {platform.python_version()}",
            "connection_name": self.connection_name,
            "capabilities": {
                "authentication_failure_close": True,
                "basic.nack": True,
                "connection.blocked": True,
                "consumer_cancel_notify": True,
                "publisher_confirms": True,
            },
        }

    async def consume(self, queue: str) -> str:
        """Start a consumer on ``queue`` (its deliveries go to ``on_delivery``); its tag."""
        tag = f"wecom-{uuid.uuid4().hex}"
        await self._call(
            CHANNEL, spec.Basic.Consume(queue=queue, consumer_tag=tag), spec.Basic.ConsumeOk
        )
        self.channel.consumers.add(tag)
        return tag

    async def cancel(self, consumer_tag: str) -> None:
        """Stop a consumer; deliveries already received can still be settled."""
        if self.channel.is_closed or consumer_tag not in self.channel.consumers:
            return
        await self._call(CHANNEL, spec.Basic.Cancel(consumer_tag=consumer_tag), spec.Basic.CancelOk)
        self.channel.consumers.discard(consumer_tag)

    async def close(self) -> None:
        """Close the connection politely (what is unconfirmed fails with :class:`LinkGone`)."""
        if self._transport is None or self.closed:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(RPC_TIMEOUT):
                await self._call(
                    0,
                    spec.Connection.Close(reply_code=REPLY_SUCCESS, reply_text="worker stopping"),
                    spec.Connection.CloseOk,
                )
        self._shut("closed by the worker")

    def abort(self, reason: str) -> None:
        """Drop the connection at once, without the closing handshake (it failed to open)."""
        self._fail(reason)

    async def wait_closed(self) -> None:
        """Until the connection is gone."""
        await asyncio.shield(self._lost)

    # --- publishing ---------------------------------------------------------------------------

    def publish(
        self,
        routing_key: str,
        properties: bytes,
        body: bytes,
        *,
        mandatory: bool,
        message_id: str | None = None,
    ) -> asyncio.Future[None]:
        """Write one publish on the default exchange; the future settles with the broker's confirm.

        It fails with :class:`Unroutable` (a mandatory message no queue took; pass
        its ``message_id`` to tell it from others to the same queue),
        :class:`PublishNacked` or :class:`LinkGone`.
        """
        if self.channel.is_closed:
            raise LinkGone(self.close_reason or "the channel is closed")
        key = routing_key.encode()
        if len(key) > wire.MAX_SHORT_STR:
            raise ValueError("a routing key is at most 255 bytes")
        future: asyncio.Future[None] = self._loop.create_future()
        number = self._next_publish
        self._next_publish = number + 1
        self._unconfirmed[number] = (future, (key, message_id))
        self.write(
            wire.publish_frames(
                CHANNEL, key, properties, body, mandatory=mandatory, frame_max=self.frame_max
            )
        )
        return future

    def write(self, data: bytes) -> None:
        """Send frames, in order, with everything else written in this turn of the event loop.

        Publishes and acks of many commands finish in the same turn; one
        ``send`` for all of them instead of one each.
        """
        if self._transport is None or self.closed:
            raise LinkGone(self.close_reason or "not connected")
        outgoing = self._outgoing
        if not outgoing:
            self._loop.call_soon(self._send_outgoing)
        outgoing.append(data)

    def _send_outgoing(self) -> None:
        outgoing = self._outgoing
        if not outgoing:
            return
        self._outgoing = []
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(outgoing[0] if len(outgoing) == 1 else b"".join(outgoing))

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        transport.write(wire.PROTOCOL_HEADER)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self._heard = True
        try:
            self._splitter.feed(data)
        except (wire.FrameError, ValueError, IndexError) as error:
            self._fail(f"the broker sent a malformed frame: {error}")

    def connection_lost(self, exc: Exception | None) -> None:
        reason = self.close_reason or (f"connection lost: {exc}" if exc else "connection closed")
        self._shut(reason)

    # --- incoming frames ----------------------------------------------------------------------

    def _frame(self, kind: int, channel: int, payload: bytes) -> None:
        if kind == wire.FRAME_METHOD:
            self._method_frame(channel, payload)
        elif kind == wire.FRAME_HEADER:
            self._header_frame(payload)
        elif kind == wire.FRAME_BODY:
            self._body_frame(payload)
        elif kind != wire.FRAME_HEARTBEAT:
            self._fail(f"a frame of unknown type {kind}")

    def _method_frame(self, channel: int, payload: bytes) -> None:
        method = wire.method_id(payload)
        if channel == CHANNEL:
            if method == wire.DELIVER:
                # Every delivery goes to on_delivery, whatever its consumer tag: its owner
                # must know every tag before it acks ``multiple`` (an unseen one would be acked).
                self._content = _Content(wire.delivery_tag(payload), None)
                return
            if method == wire.ACK:
                self._confirmed(*wire.decode_confirm(payload), None)
                return
            if method == wire.NACK:
                self._confirmed(*wire.decode_confirm(payload), PublishNacked())
                return
            if method == wire.RETURN:
                self._content = _Content(0, wire.returned_to(payload))
                return
        self._method(channel, wire.decode_method(channel, payload))

    def _header_frame(self, payload: bytes) -> None:
        content = self._content
        if content is None:
            self._fail("a content header without a delivery")
            return
        content.size, content.properties = wire.decode_header(payload)
        if content.size == 0:
            self._content_done(content, b"")

    def _body_frame(self, payload: bytes) -> None:
        content = self._content
        if content is None or content.properties is None:
            self._fail("a content body without a header")
            return
        if not content.chunks and len(payload) == content.size:
            self._content_done(content, payload)
            return
        content.chunks.append(payload)
        content.received += len(payload)
        if content.received >= content.size:
            self._content_done(content, b"".join(content.chunks))

    def _content_done(self, content: _Content, body: bytes) -> None:
        self._content = None
        properties = content.properties
        if properties is None:  # pragma: no cover - set before any body
            return
        if content.unroutable is not None:
            self._returned(content.unroutable, properties.message_id)
            return
        self.on_delivery(self.channel, content.tag, properties, body)

    def _returned(self, routing_key: str, message_id: str | None) -> None:
        """A mandatory publish had no queue: its confirm follows; fail it now."""
        key = (routing_key.encode(), message_id)
        for future, published in self._unconfirmed.values():
            if published == key and not future.done():
                future.set_exception(Unroutable(routing_key))
                return

    def _confirmed(self, tag: int, multiple: bool, error: Exception | None) -> None:
        unconfirmed = self._unconfirmed
        if multiple:
            numbers = []
            for number in unconfirmed:
                if number > tag:
                    break
                numbers.append(number)
        else:
            numbers = [tag]
        for number in numbers:
            entry = unconfirmed.pop(number, None)
            if entry is None or entry[0].done():
                continue
            if error is None:
                entry[0].set_result(None)
            else:
                entry[0].set_exception(error)

    def _method(self, channel: int, method: Frame) -> None:
        if isinstance(method, spec.Connection.Close):
            with contextlib.suppress(LinkGone):
                self.write(wire.encode_method(0, spec.Connection.CloseOk()))
            self._fail(f"the broker closed the connection: {method.reply_code} {method.reply_text}")
            return
        if isinstance(method, spec.Connection.Blocked):
            log.warning("the broker blocked publishing", reason=method.reason)
            return
        if isinstance(method, spec.Connection.Unblocked):
            log.info("the broker unblocked publishing")
            return
        if isinstance(method, spec.Channel.Close):
            with contextlib.suppress(LinkGone):
                self.write(wire.encode_method(channel, spec.Channel.CloseOk()))
            # The link's only channel: without it the link is no use; its owner opens another.
            self._fail(f"the broker closed the channel: {method.reply_code} {method.reply_text}")
            return
        if isinstance(method, spec.Basic.Cancel):
            self.channel.consumers.discard(method.consumer_tag)
            log.warning("consumer cancelled by the broker", consumer_tag=method.consumer_tag)
            if self.on_trouble is not None:
                self.on_trouble()
            if not method.nowait:
                with contextlib.suppress(LinkGone):
                    self.write(
                        wire.encode_method(channel, spec.Basic.CancelOk(method.consumer_tag))
                    )
            return
        if isinstance(method, spec.Channel.Flow):
            with contextlib.suppress(LinkGone):
                self.write(wire.encode_method(channel, spec.Channel.FlowOk(method.active)))
            return
        waiter = self._waiter
        if waiter is not None and isinstance(method, waiter[0]) and not waiter[1].done():
            waiter[1].set_result(method)
            return
        log.debug("unexpected AMQP method ignored", method=method.name)

    # --- requests and replies -----------------------------------------------------------------

    async def _call(self, channel: int, method: Frame, reply: type[M]) -> M:
        async with self._rpc_lock:
            future: asyncio.Future[Frame] = self._loop.create_future()
            self._waiter = ((reply,), future)
            try:
                self.write(wire.encode_method(channel, method))
                async with asyncio.timeout(RPC_TIMEOUT):
                    answer = await future
            finally:
                self._waiter = None
            return answer  # type: ignore[return-value]

    # --- ending -------------------------------------------------------------------------------

    def _channel_closed(self, reason: str) -> None:
        self.close_reason = reason
        self.channel.is_closed = True
        self.channel.consumers.clear()
        self._content = None
        gone = LinkGone(reason)
        for future, _ in self._unconfirmed.values():
            if not future.done():
                future.set_exception(gone)
        self._unconfirmed.clear()
        waiter = self._waiter
        if waiter is not None and not waiter[1].done():
            waiter[1].set_exception(LinkGone(reason))

    def _fail(self, reason: str) -> None:
        """Something the link cannot go on from: close the socket, fail what waits."""
        self.close_reason = self.close_reason or reason
        self._shut(self.close_reason)

    def _shut(self, reason: str) -> None:
        if self.closed:
            return
        self._send_outgoing()  # a CloseOk, acks of this turn
        self.closed = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        self._channel_closed(reason)
        if self._transport is not None:
            self._transport.close()
        if not self._lost.done():
            self._lost.set_result(None)
        if self.on_trouble is not None:
            self.on_trouble()

    def _beat_every(self, interval: float) -> None:
        def beat() -> None:
            if self.closed:
                return
            self._silent = 0 if self._heard else self._silent + 1
            self._heard = False
            if self._silent >= SILENT_BEATS:
                self._fail(f"no heartbeat from the broker for {self._silent * interval:g} s")
                return
            with contextlib.suppress(LinkGone):
                self.write(wire.HEARTBEAT)
            self._heartbeat = self._loop.call_later(interval, beat)

        self._heartbeat = self._loop.call_later(interval, beat)


def _negotiate(server: int, client: int) -> int:
    """The heartbeat interval: the smaller of two non-zero proposals; 0 only if both say 0."""
    if server and client:
        return min(server, client)
    return server or client
