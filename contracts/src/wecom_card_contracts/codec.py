"""Bytes to Structs and back, for JSON and msgpack, with every rule enforced.

Decoders and encoders are built once, here, and reused for every message.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from wecom_card_contracts.command import Command
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
    "json": msgspec.json.Decoder(),
    "msgpack": msgspec.msgpack.Decoder(),
}
_RESULT_DECODERS: dict[str, msgspec.json.Decoder[Result] | msgspec.msgpack.Decoder[Result]] = {
    "json": msgspec.json.Decoder(Result),
    "msgpack": msgspec.msgpack.Decoder(Result),
}
_JSON_ENCODER = msgspec.json.Encoder()
_MSGPACK_ENCODER = msgspec.msgpack.Encoder()
BODY_NAMES = {"json": "JSON", "msgpack": "msgpack"}


def decode_command(data: bytes | bytearray | memoryview, fmt: BodyFormat = "json") -> Command:
    """A valid command, or :class:`CommandInvalid` listing every broken rule.

    Nothing but :class:`CommandInvalid` escapes, whatever the bytes.
    """
    try:
        command = _COMMAND_DECODERS[fmt].decode(data)
    except msgspec.ValidationError as error:
        raise _explain(data, fmt, error) from None
    except (msgspec.DecodeError, RecursionError, MemoryError) as error:
        raise CommandInvalid(
            [
                Violation(
                    ViolationKind.BODY, None, f"the body is not valid {BODY_NAMES[fmt]}: {error}"
                )
            ]
        ) from None
    violations = check_command(command)
    if violations:
        raise CommandInvalid(violations, command.command_id)
    return command


def _explain(
    data: bytes | bytearray | memoryview, fmt: BodyFormat, error: msgspec.ValidationError
) -> CommandInvalid:
    """Every problem of a body the typed decoder refused."""
    try:
        raw = _RAW_DECODERS[fmt].decode(data)
    except (
        msgspec.DecodeError,
        RecursionError,
        MemoryError,
    ):  # pragma: no cover - typed decode parsed it
        raw = None
    violations = diagnose(raw) if raw is not None else []
    if not violations:
        # The walk and the decoder disagree; the decoder's own words are still right.
        violations = [Violation(ViolationKind.TYPE, first_error_path(error), str(error))]
    return CommandInvalid(violations, readable_command_id(raw))


def readable_command_id(raw: Any) -> str | None:
    """The command's id when that field itself is valid, so a rejection can name it."""
    if isinstance(raw, dict):
        value = raw.get("command_id")
        if isinstance(value, str) and 1 <= len(value) <= 128:
            return value
    return None


def peek_command_id(data: bytes | bytearray | memoryview, fmt: BodyFormat = "json") -> str | None:
    """The id of a command that failed to decode, if it can be read at all."""
    try:
        return readable_command_id(_RAW_DECODERS[fmt].decode(data))
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
