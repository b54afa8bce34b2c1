"""The ``wecom-card-worker`` command: ``run``, ``validate FILE``, ``schema``, ``asyncapi``.

``validate``, ``schema`` and ``asyncapi`` are the contracts package's own
commands (``python -m wecom_card_contracts``), so a publisher without the
worker gets the same verdicts.

Exit codes: 0 success (or a valid command), 1 an invalid command, 2 bad usage,
an unreadable file or a bad setting.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from wecom_card_contracts import schema_text
from wecom_card_contracts.asyncapi import asyncapi_text
from wecom_card_contracts.cli import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_USAGE,
    add_validate_arguments,
    validate_main,
)
from worker import __version__

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["EXIT_INVALID", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]


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
        help="check a command body exactly as the worker would judge it",
        description="Check a message body as the worker would judge it with these AMQP "
        "properties: JSON when --content-type is not given, the worker's size cap "
        "(WECOM_MAX_MESSAGE_BYTES). Exit 0 valid, 1 invalid (every problem printed, the one "
        "to fix first on top), 2 unreadable or bad usage.",
    )
    add_validate_arguments(validate)
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
        return validate_main(args, os.environ)
    if args.command == "schema":
        sys.stdout.write(schema_text(args.message))
        return EXIT_OK
    if args.command == "asyncapi":
        sys.stdout.write(asyncapi_text())
        return EXIT_OK
    from worker.service import run_from_environment  # noqa: PLC0415 - heavy imports only for run

    return run_from_environment()
