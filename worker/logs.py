"""structlog set-up: JSON lines (or console), with secrets redacted whatever a caller logs.

Redaction (:mod:`worker.redact`) runs after the traceback is formatted, and once
more on the rendered line, for structlog's own loggers and for stdlib loggers
(aio-pika and aiormq log the broker URL) alike.

Call sites bind ``command_id``, ``corp_id``, ``agentid``, ``status``,
``errcode``, ``attempt`` and durations; per-command fields travel through
``structlog.contextvars`` so a deep call need not pass them along.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from worker.redact import redact_event, redact_rendered


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
    ]
    # Tracebacks become text before redaction sees them; the rendered line is masked again.
    tail: list[Any] = [
        structlog.processors.format_exc_info,
        redact_event,
        renderer,
        redact_rendered,
    ]
    structlog.configure(
        processors=[*shared, *tail],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # A failed write (stdout closed) would otherwise print the record, unmasked, to stderr.
    logging.raiseExceptions = False
    root.setLevel(max(numeric, logging.INFO))
    # aiormq/aio-pika log every reconnect attempt at warning with the URL; keep them, redacted.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
