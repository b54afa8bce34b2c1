"""Bytes to Structs and back, for JSON and msgpack, with every rule enforced.

Decoders and encoders are built once, here, and reused for every message.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

from wecom_card_contracts.command import Command, CommandId
from wecom_card_contracts.diagnose import diagnose, first_error_path
from wecom_card_contracts.request import UpdateTemplateCardRequest
from wecom_card_contracts.result import Result
from wecom_card_contracts.rules import check_command
from wecom_card_contracts.violations import CommandInvalid, Violation, ViolationKind

BodyFormat = Literal["json", "msgpack"]

_COMMAND_DECODERS: dict[str, msgspec.json.Decoder[Command] | msgspec.msgpack.Decoder[Command]] = {
    "json": msgspec.json.Decoder(Command),
    "msgpack": msgspec.msgpack.Decoder(Command),
}
_RAW_DECODERS: dict[str, msgspec.json.Decoder[Any] | msgspec.msgpack.Decoder[Any]] = {
    # msgspec parses a literal such as 1e300 in ~15 us, Python's float() in ~0.3 us:
    # a body of them would otherwise cost 150 ms to explain.
    "json": msgspec.json.Decoder(float_hook=float),
    "msgpack": msgspec.msgpack.Decoder(),
}
_RESULT_DECODERS: dict[str, msgspec.json.Decoder[Result] | msgspec.msgpack.Decoder[Result]] = {
    "json": msgspec.json.Decoder(Result),
    "msgpack": msgspec.msgpack.Decoder(Result),
}
_JSON_ENCODER = msgspec.json.Encoder()
_MSGPACK_ENCODER = msgspec.msgpack.Encoder()
BODY_NAMES = {"json": "JSON", "msgpack": "msgpack"}

DIAGNOSE_MAX_BYTES = 64 * 1024
"""Invalid bodies up to this size get every problem listed; larger ones their first.

The largest valid card is a few KiB; walking a generic value costs up to ~70
bytes of memory per byte of msgpack (an empty list per byte), so this bounds
the walk to a few MiB whatever the size cap.
"""


class _IdProbe(msgspec.Struct):
    """Only ``command_id``, as a zero-copy view; msgspec skips every other field unbuilt."""

    command_id: msgspec.Raw = msgspec.Raw()


_ID_PROBES: dict[str, msgspec.json.Decoder[_IdProbe] | msgspec.msgpack.Decoder[_IdProbe]] = {
    "json": msgspec.json.Decoder(_IdProbe),
    "msgpack": msgspec.msgpack.Decoder(_IdProbe),
}
_ID_DECODERS: dict[str, msgspec.json.Decoder[CommandId] | msgspec.msgpack.Decoder[CommandId]] = {
    "json": msgspec.json.Decoder(CommandId),
    "msgpack": msgspec.msgpack.Decoder(CommandId),
}
PREFIX_BYTES = 4096
"""How much of a body that cannot be parsed is searched for its command_id."""
_JSON_ID_PREFIX = re.compile(rb'\A\s*\{\s*"command_id"\s*:\s*("(?:[^"\\]|\\.){1,800}")')
_MSGPACK_MAP_HEADER = {0xDE: 3, 0xDF: 5}  # map16 / map32: header bytes to skip
_MSGPACK_ID_KEY = b"\xaacommand_id"
RAW_ID_MAX_BYTES = 128 * 12 + 2
"""The longest encoding of a valid id: 128 characters, each a JSON surrogate pair escape."""


def decode_command(data: bytes | bytearray | memoryview, fmt: BodyFormat = "json") -> Command:
    """A valid command, or :class:`CommandInvalid` listing every broken rule.

    Nothing but :class:`CommandInvalid` escapes, whatever the bytes.
    """
    try:
        command = _COMMAND_DECODERS[fmt].decode(data)
    except msgspec.ValidationError as error:
        raise _explain(data, fmt, error) from None
    except (msgspec.DecodeError, RecursionError, MemoryError) as error:
        raise _undecodable(data, fmt, error) from None
    violations = check_command(command)
    if violations:
        raise CommandInvalid(violations, command.command_id)
    return command


def _explain(
    data: bytes | bytearray | memoryview, fmt: BodyFormat, error: msgspec.ValidationError
) -> CommandInvalid:
    """Every problem of a body the typed decoder refused (its first one, for a large body)."""
    if len(data) > DIAGNOSE_MAX_BYTES:
        # Built as generic values, a body can take 70 times its size: only small ones are.
        return CommandInvalid(
            [Violation(ViolationKind.TYPE, first_error_path(error), str(error))],
            peek_command_id(data, fmt),
        )
    try:
        raw = _RAW_DECODERS[fmt].decode(data)
    except (msgspec.DecodeError, RecursionError, MemoryError) as undecodable:
        # The typed decoder stopped at a wrong type before reaching the broken part.
        return _undecodable(data, fmt, undecodable)
    violations = diagnose(raw)
    if not violations:
        # The walk and the decoder disagree; the decoder's own words are still right.
        violations = [Violation(ViolationKind.TYPE, first_error_path(error), str(error))]
    return CommandInvalid(violations, readable_command_id(raw))


def _undecodable(
    data: bytes | bytearray | memoryview, fmt: BodyFormat, error: Exception
) -> CommandInvalid:
    """A body that is not JSON / msgpack at all (truncated, nested too deep, not UTF-8)."""
    name = BODY_NAMES[fmt]
    reason = "it is nested too deeply" if isinstance(error, RecursionError) else str(error)
    return CommandInvalid(
        [
            Violation(
                ViolationKind.BODY,
                None,
                f"the body is not valid {name}: {reason}; send one command as a {name} object",
            )
        ],
        peek_command_id(data, fmt),
    )


def readable_command_id(raw: Any) -> str | None:
    """The command's id when that field itself is valid, so a rejection can name it."""
    if isinstance(raw, dict):
        value = raw.get("command_id")
        if isinstance(value, str) and 1 <= len(value) <= 128:
            return value
    return None


def peek_command_id(data: bytes | bytearray | memoryview, fmt: BodyFormat = "json") -> str | None:
    """The valid id of a body that failed to decode, read without building the body.

    msgspec skips every other field unbuilt; a body it cannot parse (truncated,
    nested too deep, not UTF-8) is searched in its first bytes only.
    """
    try:
        raw = _ID_PROBES[fmt].decode(data).command_id
    except msgspec.ValidationError:  # not an object at all
        return None
    except (msgspec.DecodeError, RecursionError, MemoryError):
        return prefix_id(bytes(data[:PREFIX_BYTES]), fmt)
    return decode_command_id(bytes(raw), fmt) if 0 < len(raw) <= RAW_ID_MAX_BYTES else None


def prefix_id(prefix: bytes, fmt: BodyFormat) -> str | None:
    """The ``command_id`` of a body cut short, when it is the first field (as encoders put it)."""
    if fmt == "json":
        found = _JSON_ID_PREFIX.match(prefix)
        return decode_command_id(found.group(1), "json") if found else None
    if not prefix:
        return None
    first = prefix[0]
    skip = 1 if 0x80 <= first <= 0x8F else _MSGPACK_MAP_HEADER.get(first)
    if skip is None or prefix[skip : skip + len(_MSGPACK_ID_KEY)] != _MSGPACK_ID_KEY:
        return None
    value = prefix[skip + len(_MSGPACK_ID_KEY) :]
    if not value:
        return None
    if 0xA0 <= value[0] <= 0xBF:
        end = 1 + (value[0] & 0x1F)
    elif value[0] == 0xD9 and len(value) > 1:
        end = 2 + value[1]
    else:
        return None
    return decode_command_id(value[:end], "msgpack") if len(value) >= end else None


def decode_command_id(raw: bytes, fmt: BodyFormat) -> str | None:
    """The encoded value ``raw`` as a valid command_id, or ``None``."""
    try:
        return _ID_DECODERS[fmt].decode(raw)
    except (msgspec.DecodeError, RecursionError, MemoryError):
        return None


def validate_command(command: Command) -> Command:
    """Check a Command built in code (not decoded) against every rule."""
    raw = msgspec.to_builtins(command)
    return decode_command(_JSON_ENCODER.encode(raw))


def encode_command(command: Command, fmt: BodyFormat = "json") -> bytes:
    """A command's bytes, as upstream services publish them."""
    return _JSON_ENCODER.encode(command) if fmt == "json" else _MSGPACK_ENCODER.encode(command)


def encode_request(request: UpdateTemplateCardRequest) -> bytes:
    """The JSON body for WeCom: absent and ``null`` fields are left out."""
    return _JSON_ENCODER.encode(request)


def encode_result(result: Result, fmt: BodyFormat = "json") -> bytes:
    """A result's bytes, in its command's encoding."""
    return _JSON_ENCODER.encode(result) if fmt == "json" else _MSGPACK_ENCODER.encode(result)


def decode_result(data: bytes | bytearray | memoryview, fmt: BodyFormat = "json") -> Result:
    """A result, as consumers of the result queue read it."""
    return _RESULT_DECODERS[fmt].decode(data)
