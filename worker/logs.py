"""structlog set-up: JSON lines (or console), with secrets redacted whatever a caller logs.

Call sites bind ``command_id``, ``corp_id``, ``agentid``, ``status``,
``errcode``, ``attempt`` and durations; per-command fields travel through
``structlog.contextvars`` so a deep call need not pass them along.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

SECRET_KEYS = frozenset(
    {"secret", "corpsecret", "access_token", "token", "password", "authorization"}
)
TOKEN_IN_TEXT = re.compile(r"(access_token|corpsecret)=[^&\s\"']+")
PASSWORD_IN_URL = re.compile(r"(://[^:/@\s]+):[^@/\s]+@")
REDACTED = "***"


def redact_text(text: str) -> str:
    """A text with any ``access_token=...`` / ``corpsecret=...`` value masked."""
    text = TOKEN_IN_TEXT.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
    return PASSWORD_IN_URL.sub(lambda m: f"{m.group(1)}:{REDACTED}@", text)


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask secret-named keys and token query strings in values."""
    for key, value in list(event.items()):
        if key.lower() in SECRET_KEYS:
            event[key] = REDACTED
        elif isinstance(value, str) and ("=" in value or "@" in value):
            event[key] = redact_text(value)
    return event


def configure_logging(fmt: str = "json", level: str = "info") -> None:
    """Route structlog (and the stdlib loggers of aio-pika / aiohttp) to stdout."""
    numeric = logging.getLevelNamesMapping()[level.upper()]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.INFO))
    # aiormq/aio-pika log every reconnect attempt at warning with the URL; keep them, redacted.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
