"""``python -m wecom_card_contracts`` (``wecom-card-contracts``): validate, schema, asyncapi.

For publishers who install only this package. ``validate`` judges a body with
the very function the worker uses on a delivery (:func:`read_command`), with
the same defaults: JSON when no content type is given, no compression when no
content encoding is given, the worker's size cap. It guesses neither unless
asked (``--sniff``), and then says what it guessed.

Exit codes: 0 valid (or printed), 1 invalid, 2 bad usage or an unreadable file.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from wecom_card_contracts import wire
from wecom_card_contracts.asyncapi import asyncapi_text
from wecom_card_contracts.command import CODE_LIFETIME_SECONDS
from wecom_card_contracts.message import read_command
from wecom_card_contracts.schema import schema_text
from wecom_card_contracts.version import CONTRACT_VERSION
from wecom_card_contracts.violations import CommandInvalid

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from wecom_card_contracts.command import Command

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
MAX_BYTES_SETTING = "WECOM_MAX_MESSAGE_BYTES"
MAX_BYTES_RANGE = (1024, 64 << 20)  # what the worker accepts for the setting
UTF8_BOM = b"\xef\xbb\xbf"
GZIP_MAGIC = b"\x1f\x8b"


class UsageError(Exception):
    """A bad option or setting: one line naming it, exit 2."""


@dataclass(frozen=True)
class Properties:
    """The AMQP properties a body is judged with, and how they were chosen."""

    content_type: str | None
    content_encoding: str | None
    max_bytes: int
    notes: tuple[str, ...] = ()


def add_validate_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``validate``, shared with ``wecom-card-worker validate``."""
    parser.add_argument("file", help="the message body, or - for standard input")
    parser.add_argument(
        "--content-type",
        metavar="CT",
        help="the AMQP content_type it will be published with "
        "(default: none, which the worker reads as application/json)",
    )
    parser.add_argument(
        "--content-encoding",
        metavar="CE",
        help="the AMQP content_encoding it will be published with: gzip or deflate "
        "(default: none, the body as is)",
    )
    parser.add_argument(
        "--max-bytes",
        type=int,
        metavar="N",
        help=f"the worker's size cap (default: ${MAX_BYTES_SETTING}, "
        f"else {wire.MAX_MESSAGE_BYTES})",
    )
    parser.add_argument(
        "--sniff",
        action="store_true",
        help="guess content type and encoding from the bytes where not given "
        "(the worker never guesses: the output says what was guessed)",
    )


def validate_main(
    args: argparse.Namespace,
    environ: Mapping[str, str],
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """``validate``: print the verdict and return the exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as error:
        print(f"validate: cannot read {args.file}: {error.strerror}", file=err)
        return EXIT_USAGE
    try:
        properties = choose_properties(args, environ, data)
    except UsageError as error:
        print(f"validate: {error}", file=err)
        return EXIT_USAGE
    for note in properties.notes:
        print(f"note: {note}", file=out)
    try:
        command = read_command(
            data,
            content_type=properties.content_type,
            content_encoding=properties.content_encoding,
            max_bytes=properties.max_bytes,
            now=time.time(),
        )
    except CommandInvalid as invalid:
        print(f"invalid: {invalid.path or '(body)'}: {invalid.message}", file=out)
        for violation in invalid.violations[1:]:
            print(f"  also: {violation.path or '(body)'}: {violation.message}", file=out)
        for hint in body_hints(data, properties):
            print(f"hint: {hint}", file=out)
        return EXIT_INVALID
    print(f"valid: command {command.command_id!r} ({describe_update(command)})", file=out)
    for remark in remarks(command):
        print(f"note: {remark}", file=out)
    return EXIT_OK


def choose_properties(
    args: argparse.Namespace, environ: Mapping[str, str], data: bytes
) -> Properties:
    """The properties to judge with: as given, else the worker's defaults (or sniffed)."""
    max_bytes = args.max_bytes
    if max_bytes is None:
        max_bytes = max_bytes_setting(environ)
    elif not MAX_BYTES_RANGE[0] <= max_bytes <= MAX_BYTES_RANGE[1]:
        raise UsageError(
            f"--max-bytes must be between {MAX_BYTES_RANGE[0]} and {MAX_BYTES_RANGE[1]}"
        )
    content_type, content_encoding = args.content_type, args.content_encoding
    notes: list[str] = []
    if args.sniff:
        if content_encoding is None and data.startswith(GZIP_MAGIC):
            content_encoding = "gzip"
            notes.append(
                "sniffed content_encoding gzip from the bytes; the worker does not guess: "
                "publish with content_encoding=gzip"
            )
        if content_type is None and content_encoding is None and looks_like_msgpack(data):
            content_type = wire.MSGPACK
            notes.append(
                "sniffed content_type application/msgpack from the first byte; the worker "
                "does not guess: publish with content_type=application/msgpack"
            )
    return Properties(content_type, content_encoding, max_bytes, tuple(notes))


def max_bytes_setting(environ: Mapping[str, str]) -> int:
    """``WECOM_MAX_MESSAGE_BYTES`` read as the worker reads it (or ``_FILE``), else the default."""
    name = MAX_BYTES_SETTING
    raw = environ.get(name)
    file = environ.get(f"{name}_FILE")
    if raw is not None and file is not None:
        raise UsageError(f"{name}: both {name} and {name}_FILE are set; set only one")
    if file is not None:
        try:
            raw = Path(file).read_text("utf-8").strip()
        except OSError as error:
            raise UsageError(f"{name}_FILE: cannot read {file}: {error.strerror}") from None
    if raw is None or raw == "":
        return wire.MAX_MESSAGE_BYTES
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(f"{name}: expected a whole number, got {raw!r}") from None
    low, high = MAX_BYTES_RANGE
    if not low <= value <= high:
        raise UsageError(f"{name}: must be between {low} and {high}, got {value}")
    return value


def looks_like_msgpack(data: bytes) -> bool:
    """A msgpack map starts with 0x80-0x8f, 0xde or 0xdf; JSON text never does."""
    return bool(data) and (0x80 <= data[0] <= 0x8F or data[0] in {0xDE, 0xDF})


def body_hints(data: bytes, properties: Properties) -> list[str]:
    """Likely causes of an unreadable body, when the bytes show one."""
    hints: list[str] = []
    is_json = properties.content_type is None or "json" in properties.content_type.lower()
    if properties.content_encoding is None and is_json:
        if data.startswith(UTF8_BOM):
            hints.append(
                "the file starts with a UTF-8 byte-order mark (EF BB BF); JSON bodies must "
                "not have one: save it as UTF-8 without BOM"
            )
        elif data.startswith(GZIP_MAGIC):
            hints.append("the body looks gzip-compressed: say so with --content-encoding gzip")
        elif looks_like_msgpack(data):
            hints.append(
                "the body looks like msgpack: say so with --content-type application/msgpack "
                "(and publish it with that content_type)"
            )
    return hints


def remarks(command: Command) -> list[str]:
    """What a valid command will still meet at the worker, beyond its validity."""
    issued_at = command.code_issued_at
    if issued_at is not None and time.time() - issued_at > CODE_LIFETIME_SECONDS:
        return [
            "code_issued_at is more than 72 h ago: the worker will answer expired, not call WeCom"
        ]
    return []


def describe_update(command: Command) -> str:
    """``button update`` or ``<card_type> card``, for the verdict line."""
    card = command.request.template_card
    if card is None:
        return "button update"
    return f"{type(card).__struct_config__.tag} card"


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m wecom_card_contracts``."""
    parser = argparse.ArgumentParser(
        prog="wecom-card-contracts",
        description="Check card-update commands as wecom-card-worker judges them; print the "
        "contract's JSON Schema or AsyncAPI document.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {CONTRACT_VERSION}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    validate = commands.add_parser(
        "validate",
        help="check a command body exactly as the worker would judge it",
        description="Check a message body as the worker would judge it with these AMQP "
        "properties. Exit 0 valid, 1 invalid (every problem printed, the one to fix first "
        "on top), 2 unreadable or bad usage.",
    )
    add_validate_arguments(validate)
    schema = commands.add_parser("schema", help="print the JSON Schema of the messages")
    schema.add_argument("--message", choices=("command", "result"), default=None)
    commands.add_parser("asyncapi", help="print the AsyncAPI 3 document of queues and messages")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.command == "validate":
        return validate_main(args, os.environ)
    if args.command == "schema":
        sys.stdout.write(schema_text(args.message))
    else:
        sys.stdout.write(asyncapi_text())
    return EXIT_OK
