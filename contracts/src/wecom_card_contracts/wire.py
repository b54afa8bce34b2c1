"""What surrounds a body on RabbitMQ: queue names, content types, encodings, headers, size cap.

These are part of the contract (``docs/contract.md``, "Queues" and "Bodies on
the wire"): the worker's defaults, what a publisher sets, what it finds on
results and dead letters.
"""

from __future__ import annotations

from typing import Final

COMMAND_QUEUE: Final = "wecom.card_update.commands"
"""Commands are published here (default exchange, routing key = queue name)."""
RESULT_QUEUE: Final = "wecom.card_update.results"
"""One result per command that carries no ``reply_to``."""
DEAD_LETTER_QUEUE: Final = "wecom.card_update.dead"
"""The original bytes of every command rejected as invalid, the reason in headers."""
QUEUE_TYPE: Final = "quorum"
"""``x-queue-type`` of the three queues by default (``WECOM_QUEUE_TYPE`` may say ``classic``)."""

DIRECT_REPLY_TO: Final = "amq.rabbitmq.reply-to"
"""RabbitMQ's direct reply-to pseudo-queue: a result straight to the waiting channel."""

JSON: Final = "application/json"
MSGPACK: Final = "application/msgpack"
CONTENT_TYPES: Final = (JSON, MSGPACK)
"""Accepted ``content_type`` values (parameters such as ``; charset=utf-8`` are ignored)."""
CONTENT_ENCODINGS: Final = ("gzip", "deflate")
"""Accepted ``content_encoding`` values besides none (or ``identity``)."""

MAX_MESSAGE_BYTES: Final = 256 * 1024
"""The worker's default size cap (``WECOM_MAX_MESSAGE_BYTES``), on the body as sent and inflated."""

ERROR_CODE_HEADER: Final = "x-wecom-error-code"
ERROR_MESSAGE_HEADER: Final = "x-wecom-error-message"
ERROR_PATH_HEADER: Final = "x-wecom-error-path"
COMMAND_ID_HEADER: Final = "x-wecom-command-id"
REJECTED_AT_HEADER: Final = "x-wecom-rejected-at-ms"
"""Headers of a dead-lettered command: why it was rejected, and when (Unix milliseconds)."""
UNROUTABLE_REPLY_TO_HEADER: Final = "x-unroutable-reply-to"
"""On a result that went to the result queue because its ``reply_to`` queue did not take it."""
UNROUTABLE_REASON_HEADER: Final = "x-unroutable-reason"
"""Beside it: why (no queue with that name, or the queue kept refusing the result)."""
DEAD_LETTER_CODES: Final = ("invalid_command", "unknown_app", "internal_error")
"""Values of ``x-wecom-error-code``: the two rejections, and a command the worker failed on."""
