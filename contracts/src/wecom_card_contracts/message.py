"""One delivered message to a :class:`Command`, or the reason it is refused.

Interim copy: the worker's own rules for a delivery (size cap, content types,
gzip / deflate) as the pipeline applies them today, behind the signature of
``read_command`` that the pipeline is moving to. When that ``read_command``
lands, it replaces this module whole; ``validate`` needs no other change.
"""

from __future__ import annotations

import zlib
from typing import Final

from wecom_card_contracts.codec import BodyFormat, decode_command, peek_command_id
from wecom_card_contracts.command import Command
from wecom_card_contracts.violations import CommandInvalid, Violation, ViolationKind

JSON_TYPE: Final = "application/json"
MSGPACK_TYPE: Final = "application/msgpack"
MEDIA_FORMATS: Final[dict[str, BodyFormat]] = {
    "": "json",
    JSON_TYPE: "json",
    MSGPACK_TYPE: "msgpack",
}
ZLIB_WBITS: Final = {"gzip": 31, "deflate": 15}
IDENTITY_ENCODINGS: Final = frozenset({"", "identity"})


def media_format(content_type: str | None) -> BodyFormat | None:
    """``json`` or ``msgpack`` for a content_type (parameters ignored); ``None`` if unsupported."""
    if content_type is None:
        return "json"
    return MEDIA_FORMATS.get(content_type.split(";", 1)[0].strip().lower())


def read_command(
    body: bytes,
    *,
    content_type: str | None,
    content_encoding: str | None,
    max_bytes: int,
    now: float | None = None,  # noqa: ARG001 - part of the signature the pipeline moves to
) -> Command:
    """The command in a delivered body, judged as the worker judges it; else CommandInvalid."""
    fmt = media_format(content_type)
    if fmt is None:
        raise _refused(
            f"content_type {content_type!r} is not supported; "
            "send application/json or application/msgpack",
            peek_command_id(body, "json"),
        )
    if len(body) > max_bytes:
        raise _refused(
            f"the message is {len(body)} bytes; the worker accepts at most {max_bytes}",
            peek_command_id(body, fmt),
        )
    encoding = (content_encoding or "").strip().lower()
    if encoding not in IDENTITY_ENCODINGS and encoding not in ZLIB_WBITS:
        raise _refused(
            f"content_encoding {content_encoding!r} is not supported; "
            "send the body uncompressed, or gzip / deflate",
            peek_command_id(body, fmt),
        )
    plain = body if encoding in IDENTITY_ENCODINGS else _inflate(body, encoding, max_bytes)
    return decode_command(plain, fmt)


def _inflate(body: bytes, encoding: str, max_bytes: int) -> bytes:
    """The decompressed body; never more than ``max_bytes + 1`` bytes are produced."""
    try:
        inflater = zlib.decompressobj(wbits=ZLIB_WBITS[encoding])
        plain = inflater.decompress(body, max_bytes + 1)
    except zlib.error as error:
        raise _refused(f"the body is not valid {encoding}: {error}", None) from None
    if len(plain) > max_bytes or inflater.unconsumed_tail:
        raise _refused(f"the decompressed message is larger than {max_bytes} bytes", None)
    return plain


def _refused(message: str, command_id: str | None) -> CommandInvalid:
    return CommandInvalid([Violation(ViolationKind.BODY, None, message)], command_id)
