"""One delivered message to a :class:`Command`, or the reason it is refused.

The worker and ``wecom-card-worker validate`` both judge a message here, so
they cannot disagree. :func:`read_command` takes the AMQP body with its
``content_type`` and ``content_encoding`` and returns a valid command or raises
:class:`CommandInvalid`; nothing else escapes, whatever the bytes.

Memory: a hostile body must not cost more than a small multiple of the size
cap. The body is measured before and after decompression (inflating stops one
byte past the cap, so a compression bomb costs the cap, not its claim); the
typed decoder stops at the first broken rule (except that a JSON list is built
whole before its length is checked: 50,000 short userids under a 256 KiB cap
are the costliest body found, ~3 MiB of objects, ~8 MiB of peak RSS); the
generous walk that lists every problem runs only on bodies small enough to
afford it (see :data:`wecom_card_contracts.codec.DIAGNOSE_MAX_BYTES`). A refused
body's ``command_id`` is read without building the body: msgspec skips every other field, and the
id arrives as a zero-copy :class:`msgspec.Raw` that is decoded only when it is
short enough to be a valid id. A truncated or compressed body is searched for
its id only in a short prefix.
"""

from __future__ import annotations

import zlib
from typing import Final

from wecom_card_contracts.codec import (
    PREFIX_BYTES,
    BodyFormat,
    decode_command,
    peek_command_id,
    prefix_id,
)
from wecom_card_contracts.command import Command
from wecom_card_contracts.rules import ISSUED_AT_ADVICE
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

MAX_CLOCK_SKEW_SECONDS: Final = 300.0
"""How far ahead of the worker's clock ``code_issued_at`` may be: clocks of hosts
synchronised by NTP agree within a second; five minutes covers a badly set VM
without letting a timestamp in milliseconds (far in the future) never expire."""


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
    now: float | None = None,
) -> Command:
    """The command in a delivered body, judged exactly as the worker judges it.

    ``max_bytes`` caps the body before and after decompression. With ``now``
    (Unix seconds), a ``code_issued_at`` further ahead than
    :data:`MAX_CLOCK_SKEW_SECONDS` is refused too. Raises :class:`CommandInvalid`
    with a message saying what to change, and the ``command_id`` when it can be
    read within bounded memory.
    """
    fmt = media_format(content_type)
    if fmt is None:
        raise _refused(
            f"content_type {content_type!r} is not supported; "
            "send application/json (the default) or application/msgpack",
            peek_command_id(body, "json"),
        )
    encoding = (content_encoding or "").strip().lower()
    if encoding not in IDENTITY_ENCODINGS and encoding not in ZLIB_WBITS:
        raise _refused(
            f"content_encoding {content_encoding!r} is not supported; "
            "send the body uncompressed, or gzip / deflate",
            peek_command_id(body, fmt),
        )
    if len(body) > max_bytes:
        raise _refused(
            f"the message is {len(body)} bytes; the worker accepts at most {max_bytes}: "
            "send a smaller command",
            peek_command_id(body, fmt)
            if encoding in IDENTITY_ENCODINGS
            else _compressed_id(body, encoding, fmt),
        )
    plain = body if encoding in IDENTITY_ENCODINGS else inflate(body, encoding, fmt, max_bytes)
    command = decode_command(plain, fmt)
    _check_issued_at(command, now)
    return command


def inflate(body: bytes, encoding: str, fmt: BodyFormat, max_bytes: int) -> bytes:
    """The decompressed body; never more than ``max_bytes + 1`` bytes are produced."""
    inflater = zlib.decompressobj(wbits=ZLIB_WBITS[encoding])
    try:
        plain = inflater.decompress(body, max_bytes + 1)
    except zlib.error as error:
        raise _refused(
            f"the body is not valid {encoding} ({error}); compress it with {encoding}, "
            "or send it uncompressed without content_encoding",
            peek_command_id(body, fmt),
        ) from None
    if len(plain) > max_bytes:
        raise _refused(
            f"the decompressed message is larger than {max_bytes} bytes, "
            "the most the worker accepts: send a smaller command",
            prefix_id(plain[:PREFIX_BYTES], fmt),
        )
    if not inflater.eof:
        raise _refused(
            f"the {encoding} stream is truncated; send the whole compressed body",
            prefix_id(plain[:PREFIX_BYTES], fmt),
        )
    if inflater.unused_data:
        raise _refused(
            f"{len(inflater.unused_data)} bytes follow the end of the {encoding} stream; "
            "send exactly one compressed body",
            peek_command_id(plain, fmt),
        )
    return plain


def _compressed_id(body: bytes, encoding: str, fmt: BodyFormat) -> str | None:
    """The id of a compressed body, from its first few decompressed bytes only."""
    try:
        prefix = zlib.decompressobj(wbits=ZLIB_WBITS[encoding]).decompress(body, PREFIX_BYTES)
    except zlib.error:
        return None
    return prefix_id(prefix, fmt)


def _check_issued_at(command: Command, now: float | None) -> None:
    """R-CMD-ISSUED-TIME: a code cannot have been issued in the future (beyond clock skew).

    Finite and not negative are checked with the other rules; this part needs a clock.
    """
    issued_at = command.code_issued_at
    if now is None or issued_at is None or issued_at <= now + MAX_CLOCK_SKEW_SECONDS:
        return
    unit = " (is it in milliseconds?)" if issued_at > now * 100 else ""
    message = (
        f"code_issued_at is {issued_at - now:.0f} s ahead of the worker's clock{unit}; "
        f"at most {MAX_CLOCK_SKEW_SECONDS:.0f} s of clock skew is allowed; {ISSUED_AT_ADVICE}"
    )
    raise CommandInvalid(
        [Violation(ViolationKind.VALUE, "code_issued_at", message)], command.command_id
    )


def _refused(message: str, command_id: str | None) -> CommandInvalid:
    return CommandInvalid([Violation(ViolationKind.BODY, None, message)], command_id)
