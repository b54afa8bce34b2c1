"""The ``wecom-card-worker`` command: ``run``, ``validate FILE``, ``schema``, ``asyncapi``.

Exit codes: 0 success (or a valid command), 1 an invalid command, 2 bad usage,
an unreadable file or a bad setting.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from wecom_card_contracts import CommandInvalid, decode_command, schema_text
from wecom_card_contracts.asyncapi import asyncapi_text
from worker import __version__

if TYPE_CHECKING:
    from collections.abc import Sequence

    from wecom_card_contracts import BodyFormat, Command

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with its subcommands."""
    parser = argparse.ArgumentParser(
        prog="wecom-card-worker",
        description=(
            "Consume WeCom card-update commands from RabbitMQ and call update_template_card "
            "once per response_code."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser(
        "run",
        help="run the worker (settings from the environment, see README)",
        description="Run the worker. Every setting comes from the environment (WECOM_*).",
    )
    validate = commands.add_parser(
        "validate",
        help="check a command file against the contract",
        description="Check a command (JSON or msgpack) against the contract and the seed's rules. "
        "Exit 0 valid, 1 invalid (every problem printed, the one to fix first on top), "
        "2 unreadable.",
    )
    validate.add_argument("file", help="the command file, or - for standard input")
    validate.add_argument(
        "--format",
        choices=("auto", "json", "msgpack"),
        default="auto",
        help="body encoding (default: auto, JSON when the body starts with '{')",
    )
    schema = commands.add_parser(
        "schema",
        help="print the JSON Schema of the command and result messages",
        description="Print the JSON Schema (2020-12) generated from the contract's Structs.",
    )
    schema.add_argument(
        "--message",
        choices=("command", "result"),
        default=None,
        help="print only this message's schema (default: both, as oneOf)",
    )
    commands.add_parser(
        "asyncapi",
        help="print the AsyncAPI 3 document of the queues and messages",
        description="Print the AsyncAPI 3.0 document (JSON) of the command, result and "
        "dead-letter queues and their messages, generated from the contract's Structs.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.command == "validate":
        return validate(args.file, args.format)
    if args.command == "schema":
        sys.stdout.write(schema_text(args.message))
        return EXIT_OK
    if args.command == "asyncapi":
        sys.stdout.write(asyncapi_text())
        return EXIT_OK
    from worker.service import run_from_environment  # noqa: PLC0415 - heavy imports only for run

    return run_from_environment()


def validate(file: str, fmt: Literal["auto", "json", "msgpack"]) -> int:
    """``validate FILE``: print the verdict and return the exit code."""
    try:
        data = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as error:
        print(f"wecom-card-worker validate: cannot read {file}: {error.strerror}", file=sys.stderr)
        return EXIT_USAGE
    body_format: BodyFormat = detect_format(data) if fmt == "auto" else fmt
    try:
        command = decode_command(data, body_format)
    except CommandInvalid as invalid:
        print(f"invalid: {invalid.path or '(body)'}: {invalid.message}")
        for violation in invalid.violations[1:]:
            print(f"  also: {violation.path or '(body)'}: {violation.message}")
        return EXIT_INVALID
    print(f"valid: command {command.command_id!r} ({describe_update(command)})")
    return EXIT_OK


def detect_format(data: bytes) -> BodyFormat:
    """JSON when the body starts with ``{`` (after white space), msgpack otherwise."""
    stripped = data.lstrip()
    return "json" if not stripped or stripped[:1] in b'{["' else "msgpack"


def describe_update(command: Command) -> str:
    """``button update`` or ``<card_type> card``, for the verdict line."""
    card = command.request.template_card
    if card is None:
        return "button update"
    return f"{type(card).__struct_config__.tag} card"
