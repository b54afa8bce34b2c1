"""The hot path's own AMQP connection: frames byte for byte as pamqp's, and a real broker's answers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import aiormq
import pytest
from pamqp import commands as spec
from pamqp import frame as pamqp_frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from worker import amqp_wire as wire
from worker.acks import ChannelAcks, Settle
from worker.amqp import ResultProperties
from worker.amqp_link import AmqpLink, Endpoint, LinkChannel, LinkGone, PublishNacked
from worker.errors import Unroutable

Received = tuple[LinkChannel, int, spec.Basic.Properties, bytes]


# --- frames -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mandatory", [True, False])
@pytest.mark.parametrize("size", [0, 1, 4088, 4089, 10_000])
def test_a_publish_is_the_frames_pamqp_writes(*, mandatory: bool, size: int) -> None:
    """Given a body of any size, when written, then it is pamqp's method, header and body frames."""
    # Given
    body = bytes(random.Random(size).randbytes(size))
    properties = ResultProperties(
        content_type="application/json", message_id="result-1", delivery_mode=2
    )
    frame_max = 4096
    # When
    written = wire.publish_frames(
        3, b"results", properties.marshal(), body, mandatory=mandatory, frame_max=frame_max
    )
    # Then
    expected = [
        pamqp_frame.marshal(
            spec.Basic.Publish(exchange="", routing_key="results", mandatory=mandatory), 3
        ),
        pamqp_frame.marshal(ContentHeader(body_size=size, properties=properties), 3),
    ]
    room = frame_max - 8
    expected += [
        pamqp_frame.marshal(ContentBody(body[i : i + room]), 3) for i in range(0, size, room)
    ]
    assert written == b"".join(expected)


@pytest.mark.parametrize("tag", [1, 255, 2**40])
def test_acks_and_nacks_are_the_frames_pamqp_writes(tag: int) -> None:
    """Given a delivery tag, when acked or nacked, then the bytes are pamqp's."""
    # Then
    for multiple in (True, False):
        assert wire.ack_frame(2, tag, multiple=multiple) == pamqp_frame.marshal(
            spec.Basic.Ack(delivery_tag=tag, multiple=multiple), 2
        )
    for requeue in (True, False):
        assert wire.nack_frame(2, tag, requeue=requeue) == pamqp_frame.marshal(
            spec.Basic.Nack(delivery_tag=tag, requeue=requeue), 2
        )


def payload_of(frame: bytes) -> bytes:
    """A marshalled frame's payload."""
    return frame[7:-1]


def test_deliveries_confirms_and_returns_read_as_pamqp_writes_them() -> None:
    """Given pamqp's frames for the hot methods, when read by hand, then what is used matches."""
    # Given
    deliver = spec.Basic.Deliver(
        consumer_tag="wecom-é1", delivery_tag=2**33 + 5, redelivered=True, routing_key="commands"
    )
    ack = spec.Basic.Ack(delivery_tag=77, multiple=True)
    nack = spec.Basic.Nack(delivery_tag=78, multiple=False)
    returned = spec.Basic.Return(
        reply_code=312, reply_text="NO_ROUTE", exchange="replies.x", routing_key="gone"
    )
    # Then
    assert wire.delivery_tag(payload_of(pamqp_frame.marshal(deliver, 1))) == 2**33 + 5
    assert wire.method_id(payload_of(pamqp_frame.marshal(deliver, 1))) == wire.DELIVER
    assert wire.decode_confirm(payload_of(pamqp_frame.marshal(ack, 1))) == (77, True)
    assert wire.decode_confirm(payload_of(pamqp_frame.marshal(nack, 1))) == (78, False)
    assert wire.returned_to(payload_of(pamqp_frame.marshal(returned, 1))) == "gone"


def test_the_splitter_finds_every_frame_however_the_bytes_are_cut() -> None:
    """Given frames cut at random places, when fed piece by piece, then each frame comes out once."""
    # Given
    frames = [
        pamqp_frame.marshal(spec.Basic.Ack(delivery_tag=i, multiple=False), 1) for i in range(50)
    ]
    frames.insert(10, wire.HEARTBEAT)
    frames.insert(20, pamqp_frame.marshal(ContentBody(b"x" * 3000), 1))
    stream = b"".join(frames)
    rng = random.Random(7)
    got: list[tuple[int, int, bytes]] = []
    splitter = wire.FrameSplitter(lambda *frame: got.append(frame), 131072)
    # When
    at = 0
    while at < len(stream):
        step = rng.randint(1, 40)
        splitter.feed(stream[at : at + step])
        at += step
    # Then
    assert [(kind, channel, payload) for kind, channel, payload in got] == [
        (frame[0], int.from_bytes(frame[1:3], "big"), payload_of(frame)) for frame in frames
    ]


def test_the_splitter_refuses_what_is_not_a_frame() -> None:
    """Given a frame without its end octet or bigger than frame_max, then FrameError says which."""
    splitter = wire.FrameSplitter(lambda *_: None, 100)
    broken = pamqp_frame.marshal(spec.Basic.Ack(delivery_tag=1), 1)[:-1] + b"\x00"
    with pytest.raises(wire.FrameError, match="does not end with 0xCE"):
        splitter.feed(broken)
    with pytest.raises(wire.FrameError, match="over frame_max 100"):
        wire.FrameSplitter(lambda *_: None, 100).feed(b"\x03\x00\x01\x00\x00\x10\x00" + b"x" * 8)


# --- a real broker ------------------------------------------------------------------------------


@pytest.fixture
async def link(amqp_url: str) -> AsyncIterator[tuple[AmqpLink, list[Received]]]:
    """An open link on the test broker and the deliveries it received."""
    received: list[Received] = []
    opened = AmqpLink(
        Endpoint.from_url(amqp_url),
        connection_name="test-link",
        on_delivery=lambda *delivery: received.append(delivery),
    )
    await opened.open(prefetch=10)
    try:
        yield opened, received
    finally:
        await opened.close()


@pytest.fixture
async def admin(amqp_url: str) -> AsyncIterator[aiormq.abc.AbstractChannel]:
    """A plain aiormq channel to declare and inspect queues."""
    connection = await aiormq.connect(amqp_url)
    try:
        yield await connection.channel()
    finally:
        await connection.close()


async def until(condition: object, timeout: float = 5.0) -> None:
    """Poll ``condition()`` until it is true."""
    async with asyncio.timeout(timeout):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.01)


async def test_a_publish_is_confirmed_then_delivered_with_its_properties(
    link: tuple[AmqpLink, list[Received]],
    admin: aiormq.abc.AbstractChannel,
    queue_prefix: str,
) -> None:
    """Given a queue, when a big body is published and consumed, then it comes back whole."""
    # Given
    opened, received = link
    queue = f"{queue_prefix}link"
    await admin.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    body = random.Random(1).randbytes(300_000)  # over frame_max: several body frames
    properties = spec.Basic.Properties(
        content_type="application/json",
        correlation_id="c-1",
        headers={"x-wecom-due-at-ms": 5},
        delivery_mode=2,
    )
    # When
    await opened.publish(queue, properties.marshal(), body, mandatory=True)
    await opened.consume(queue)
    await until(lambda: received)
    # Then
    channel, tag, got_properties, got_body = received[0]
    assert got_body == body
    assert got_properties.correlation_id == "c-1"
    assert got_properties.headers == {"x-wecom-due-at-ms": 5}
    await channel.basic_ack(tag)


async def test_a_mandatory_publish_to_no_queue_is_unroutable(
    link: tuple[AmqpLink, list[Received]],
) -> None:
    """Given no such queue, when published mandatory, then Unroutable; not mandatory: confirmed."""
    opened, _ = link
    props = spec.Basic.Properties(message_id="m-1").marshal()
    with pytest.raises(Unroutable):
        await opened.publish(
            "no-such-queue-anywhere", props, b"{}", mandatory=True, message_id="m-1"
        )
    await opened.publish("no-such-queue-anywhere", props, b"{}", mandatory=False)


async def test_a_queue_that_refuses_gives_a_nack(
    link: tuple[AmqpLink, list[Received]],
    admin: aiormq.abc.AbstractChannel,
    queue_prefix: str,
) -> None:
    """Given a full queue with reject-publish, when published to, then PublishNacked."""
    opened, _ = link
    queue = f"{queue_prefix}full"
    await admin.queue_declare(queue, arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
    with pytest.raises(PublishNacked):
        await opened.publish(queue, b"\x00\x00", b"{}", mandatory=True)


async def test_a_channel_the_broker_closes_fails_what_waits_and_refuses_later_acks(
    link: tuple[AmqpLink, list[Received]],
) -> None:
    """Given an ack of a tag never delivered, when the broker closes the channel, then the link
    closes with it (its only channel) and refuses acks and publishes."""
    # Given
    opened, _ = link
    channel = opened.channel
    # When
    await channel.basic_ack(999)  # the broker answers 406 PRECONDITION_FAILED
    await until(lambda: channel.is_closed)
    # Then
    assert "406" in opened.close_reason
    async with asyncio.timeout(5):
        await opened.wait_closed()
    assert opened.closed
    with pytest.raises(LinkGone):
        await channel.basic_ack(1)
    with pytest.raises(LinkGone):
        opened.publish("x", b"\x00\x00", b"", mandatory=False)


async def test_acks_settle_through_the_link_and_nothing_comes_back(
    link: tuple[AmqpLink, list[Received]],
    admin: aiormq.abc.AbstractChannel,
    queue_prefix: str,
) -> None:
    """Given 30 deliveries settled out of order (some requeued), then the queue keeps the requeued."""
    # Given
    opened, received = link
    queue = f"{queue_prefix}settle"
    await admin.queue_declare(queue)
    for i in range(30):
        await opened.publish(queue, b"\x00\x00", str(i).encode(), mandatory=True)
    await opened.consume(queue)
    await until(lambda: len(received) >= 10)  # prefetch 10
    acks = ChannelAcks(opened.channel)
    rng = random.Random(3)
    settled = 0
    requeued: set[bytes] = set()
    # When
    while settled < 30 + len(requeued):
        seen = settled
        await until(lambda seen=seen: len(received) > seen)
        batch = received[seen:]
        for _, tag, _, _ in batch:
            acks.delivered(tag)
        rng.shuffle(batch)
        for _, tag, _, body in batch:
            how = Settle.REQUEUE if body not in requeued and rng.random() < 0.1 else Settle.ACK
            if how is Settle.REQUEUE:
                requeued.add(body)
            acks.settle(tag, how)
        settled += len(batch)
    await acks.close()
    await opened.cancel(next(iter(opened.channel.consumers)))
    # Then
    ok = await admin.queue_declare(queue, passive=True)
    assert ok.message_count == 0
    assert requeued
    bodies = sorted(body for _, _, _, body in received)
    assert bodies == sorted([str(i).encode() for i in range(30)] + list(requeued))


async def test_wrong_credentials_are_refused_with_the_brokers_reason(amqp_url: str) -> None:
    """Given a wrong password, when the link opens, then LinkGone names ACCESS_REFUSED."""
    wrong = amqp_url.replace("guest:guest", "guest:wrong")
    opened = AmqpLink(Endpoint.from_url(wrong), connection_name="t", on_delivery=lambda *_: None)
    with pytest.raises(LinkGone, match="403"):
        await opened.open(prefetch=1)
    assert opened.closed


async def test_heartbeats_keep_an_idle_link_open(amqp_url: str) -> None:
    """Given a 1 s heartbeat, when idle for 4 s, then the broker kept the link (we beat in time)."""
    opened = AmqpLink(
        Endpoint.from_url(f"{amqp_url}?heartbeat=1"),
        connection_name="t",
        on_delivery=lambda *_: None,
    )
    await opened.open(prefetch=1)
    try:
        await asyncio.sleep(4)
        assert not opened.closed
        await opened.publish("no-such-queue-anywhere", b"\x00\x00", b"", mandatory=False)
    finally:
        await opened.close()
    assert opened.closed


def test_an_amqps_url_asks_for_tls_and_its_options() -> None:
    """Given aio-pika's URL options, when read, then host, vhost, heartbeat and TLS follow them."""
    endpoint = Endpoint.from_url(
        "amqps://u%40x:p%2Fw@mq.example:5999/v%2Fh?heartbeat=7&no_verify_ssl=1"
    )
    assert (endpoint.host, endpoint.port, endpoint.username, endpoint.password) == (
        "mq.example",
        5999,
        "u@x",
        "p/w",
    )
    assert (endpoint.vhost, endpoint.heartbeat) == ("v/h", 7)
    assert endpoint.tls is not None
    assert not endpoint.tls.check_hostname
    plain = Endpoint.from_url("amqp://127.0.0.1/")
    assert (plain.port, plain.vhost, plain.tls, plain.heartbeat) == (5672, "/", None, 60)


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (made by the openssl command)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


class Relay:
    """A listener on 127.0.0.1 that passes bytes both ways to a port, until told to go silent."""

    def __init__(self) -> None:
        self.port = 0
        self.silent = False
        self.writers: list[asyncio.StreamWriter] = []

    async def pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy one direction (dropping what comes while silent)."""
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if not self.silent:
                    writer.write(data)
                    await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def relay_to(port: int, tls: ssl.SSLContext | None = None) -> AsyncIterator[Relay]:
    """A :class:`Relay` to ``port`` (TLS on the listening side if ``tls``)."""
    relay = Relay()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.gather(
            relay.pipe(reader, upstream_writer), relay.pipe(upstream_reader, writer)
        )

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=tls)
    relay.port = server.sockets[0].getsockname()[1]
    try:
        yield relay
    finally:
        server.close()


def broker_port(amqp_url: str) -> int:
    """The port of the test broker."""
    port = urlsplit(amqp_url).port
    assert port is not None
    return port


async def test_a_broker_gone_silent_closes_the_link_after_a_few_heartbeats(amqp_url: str) -> None:
    """Given a 1 s heartbeat, when the broker's bytes stop coming, then the link closes by itself."""
    async with relay_to(broker_port(amqp_url)) as relay:
        opened = AmqpLink(
            Endpoint.from_url(f"amqp://guest:guest@127.0.0.1:{relay.port}/?heartbeat=1"),
            connection_name="t",
            on_delivery=lambda *_: None,
        )
        await opened.open(prefetch=1)
        relay.silent = True
        async with asyncio.timeout(5):
            await opened.wait_closed()
    assert "no heartbeat" in opened.close_reason


# asyncio's TLS listener leaks the socket of a handshake its client refused (the relay's, not ours).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_an_amqps_link_verifies_the_broker_and_carries_the_traffic(
    amqp_url: str, certificate: tuple[Path, Path]
) -> None:
    """Given a broker behind TLS, when the URL names its CA, then publishes are confirmed over TLS;
    without the CA the certificate is refused."""
    cert, key = certificate
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    async with relay_to(broker_port(amqp_url), tls) as relay:
        port = relay.port
        url = f"amqps://guest:guest@127.0.0.1:{port}/?cafile={cert}"
        opened = AmqpLink(Endpoint.from_url(url), connection_name="t", on_delivery=lambda *_: None)
        await opened.open(prefetch=1)
        try:
            await opened.publish("no-such-queue-anywhere", b"\x00\x00", b"{}", mandatory=False)
        finally:
            await opened.close()
        untrusted = AmqpLink(
            Endpoint.from_url(f"amqps://guest:guest@127.0.0.1:{port}/"),
            connection_name="t",
            on_delivery=lambda *_: None,
        )
        with pytest.raises(ssl.SSLCertVerificationError):
            await untrusted.open(prefetch=1)
        await asyncio.sleep(0.1)
    gc.collect()  # what the relay leaked goes now, under this test's filter, not in a later test
