"""AMQP 0-9-1 frames of the hot path, built and read with one ``struct`` call each.

pamqp reads and writes any frame with a generic loop (a type lookup and a
dispatch per field, an object per frame); a worker's steady traffic is four
shapes only: deliveries and confirms coming in, publishes and acks going out.
Those are done here by hand; everything else (the handshake, channel and
consumer methods, content-header properties) still goes through pamqp, so the
bytes on the wire are the same as before.

:class:`FrameSplitter` cuts the byte stream into frames without copying whole
frames that arrived whole.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

from pamqp import commands as spec
from pamqp import frame as pamqp_frame
from pamqp.base import Frame
from pamqp.header import ContentHeader

FRAME_METHOD: Final = 1
FRAME_HEADER: Final = 2
FRAME_BODY: Final = 3
FRAME_HEARTBEAT: Final = 8
FRAME_END: Final = 0xCE
FRAME_END_BYTE: Final = b"\xce"
FRAME_HEAD_SIZE: Final = 7  # type, channel, size
FRAME_OVERHEAD: Final = FRAME_HEAD_SIZE + 1  # and the end octet
MAX_SHORT_STR: Final = 255
PROTOCOL_HEADER: Final = b"AMQP\x00\x00\x09\x01"
HEARTBEAT: Final = b"\x08\x00\x00\x00\x00\x00\x00\xce"

BASIC: Final = 60
DELIVER: Final = (BASIC << 16) | 60
ACK: Final = (BASIC << 16) | 80
NACK: Final = (BASIC << 16) | 120
RETURN: Final = (BASIC << 16) | 50

_FRAME_HEAD: Final = struct.Struct(">BHI")
_METHOD_ID: Final = struct.Struct(">I")
_U64: Final = struct.Struct(">Q")
_ACK_FRAME: Final = struct.Struct(">BHIHHQBB")  # method frame of basic.ack / basic.nack
_PUBLISH_HEAD: Final = struct.Struct(">BHIHHHB")  # frame head, class, method, ticket, exchange ""
_HEADER_HEAD: Final = struct.Struct(">BHIHHQ")  # frame head, class, weight, body size
_BODY_HEAD: Final = struct.Struct(">BHI")


class FrameError(Exception):
    """The broker sent bytes that are not an AMQP frame."""


def method_id(payload: bytes) -> int:
    """Class and method of a method frame's payload, as one number (class << 16 | method)."""
    return int(_METHOD_ID.unpack_from(payload)[0])


def decode_method(channel: int, payload: bytes) -> Frame:
    """A method frame of any kind, read by pamqp."""
    raw = _FRAME_HEAD.pack(FRAME_METHOD, channel, len(payload)) + payload + FRAME_END_BYTE
    return pamqp_frame.unmarshal(raw)[2]  # type: ignore[return-value]


def encode_method(channel: int, method: Frame) -> bytes:
    """A method frame of any kind, written by pamqp."""
    return pamqp_frame.marshal(method, channel)


def delivery_tag(payload: bytes) -> int:
    """The delivery tag of a ``basic.deliver`` (after its consumer tag); the rest is not needed."""
    return int(_U64.unpack_from(payload, 5 + payload[4])[0])


def decode_confirm(payload: bytes) -> tuple[int, bool]:
    """``basic.ack`` / ``basic.nack`` from the broker: (delivery tag, multiple)."""
    return _U64.unpack_from(payload, 4)[0], bool(payload[12] & 1)


def returned_to(payload: bytes) -> str:
    """The routing key of a ``basic.return`` (after its reply code, reply text and exchange)."""
    offset = 7 + payload[6]  # past the reply code and the reply text
    offset += 1 + payload[offset]  # past the exchange
    return payload[offset + 1 : offset + 1 + payload[offset]].decode()


def decode_header(payload: bytes) -> tuple[int, spec.Basic.Properties]:
    """A content header: (body size, properties)."""
    header = ContentHeader()
    header.unmarshal(payload)
    return header.body_size, header.properties


def ack_frame(channel: int, delivery_tag: int, *, multiple: bool) -> bytes:
    """``basic.ack``."""
    return _ACK_FRAME.pack(FRAME_METHOD, channel, 13, BASIC, 80, delivery_tag, multiple, FRAME_END)


def nack_frame(channel: int, delivery_tag: int, *, requeue: bool) -> bytes:
    """``basic.nack`` of one delivery."""
    bits = 2 if requeue else 0  # multiple=0, requeue=bit 1
    return _ACK_FRAME.pack(FRAME_METHOD, channel, 13, BASIC, 120, delivery_tag, bits, FRAME_END)


def publish_frames(
    channel: int,
    routing_key: bytes,
    properties: bytes,
    body: bytes,
    *,
    mandatory: bool,
    frame_max: int,
) -> bytes:
    """``basic.publish`` on the default exchange, its content header and body frames, as one write.

    ``routing_key`` is the encoded queue name (at most 255 bytes), ``properties``
    the marshalled property flags and values; the body is split into frames of
    at most ``frame_max`` bytes.
    """
    method_size = 2 + 2 + 2 + 1 + 1 + len(routing_key) + 1
    parts = [
        _PUBLISH_HEAD.pack(FRAME_METHOD, channel, method_size, BASIC, 40, 0, 0),
        bytes((len(routing_key),)),
        routing_key,
        b"\x01\xce" if mandatory else b"\x00\xce",
        _HEADER_HEAD.pack(FRAME_HEADER, channel, 12 + len(properties), BASIC, 0, len(body)),
        properties,
        FRAME_END_BYTE,
    ]
    room = frame_max - FRAME_OVERHEAD
    for start in range(0, len(body), room):
        chunk = body[start : start + room]
        parts += (_BODY_HEAD.pack(FRAME_BODY, channel, len(chunk)), chunk, FRAME_END_BYTE)
    return b"".join(parts)


FrameSink = Callable[[int, int, bytes], None]


class FrameSplitter:
    """Cuts received bytes into frames and hands each to ``sink(type, channel, payload)``."""

    __slots__ = ("_buffer", "_sink", "max_size")

    def __init__(self, sink: FrameSink, max_size: int) -> None:
        self._sink = sink
        self._buffer = b""
        self.max_size = max_size  # frame_max once tuned; a bigger frame is a protocol error

    def feed(self, data: bytes) -> None:
        """Hand every whole frame in ``data`` (after what was left over) to the sink."""
        if self._buffer:
            data = self._buffer + data
        size = len(data)
        offset = 0
        unpack = _FRAME_HEAD.unpack_from
        sink = self._sink
        while size - offset >= FRAME_HEAD_SIZE:
            kind, channel, length = unpack(data, offset)
            if length > self.max_size:
                raise FrameError(f"a frame of {length} bytes is over frame_max {self.max_size}")
            end = offset + FRAME_HEAD_SIZE + length
            if end >= size:
                break
            if data[end] != FRAME_END:
                raise FrameError(f"frame type {kind} on channel {channel} does not end with 0xCE")
            sink(kind, channel, data[offset + FRAME_HEAD_SIZE : end])
            offset = end + 1
        self._buffer = data[offset:] if offset < size else b""
