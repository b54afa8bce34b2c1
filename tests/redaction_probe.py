"""Logs secrets every way the worker can, in a fresh process: ``python -m tests.redaction_probe FMT``.

Run by tests/test_redaction.py, which reads stdout and looks for the secrets below.
"""

from __future__ import annotations

import logging
import sys

import structlog

from worker.logs import configure_logging
from worker.redact import remember_secret

TOKEN = "Tk9-access-token-value"
SECRET = "corp-s3cret-value-XYZ"
PASSWORD = "pa55-broker-word"
URL = f"amqp://worker:{PASSWORD}@127.0.0.1:5672/vhost"
LEAKS = (TOKEN, SECRET, PASSWORD)


class CallFailed(Exception):
    """An error whose text carries everything that must not be printed."""


def connect() -> None:
    """Fail the way a connection to the broker fails, naming its URL."""
    raise ConnectionError(f"cannot reach {URL}")


def fail() -> None:
    """Raise an error with a token, a secret and a broker URL in its text and its cause."""
    try:
        connect()
    except ConnectionError as cause:
        raise CallFailed(
            f"POST /cgi-bin/message/update_template_card?access_token={TOKEN} "
            f"with secret {SECRET}: {{'access_token': '{TOKEN}'}}"
        ) from cause


def main(fmt: str) -> None:
    """Log the failure through structlog and through stdlib loggers, as aio-pika does."""
    configure_logging(fmt, "debug")
    remember_secret(SECRET)  # the token cache does this with every app's secret
    log = structlog.get_logger("worker.probe")
    foreign = logging.getLogger("aiormq.connection")
    try:
        fail()
    except CallFailed:
        log.exception("call failed", url=URL, attempt=1)
        log.exception("call failed again", detail={"token": TOKEN, "url": URL})
        foreign.exception("Connection to %s closed", URL)
        foreign.warning("retrying %s", URL, exc_info=True)
    log.info("token refreshed", access_token=TOKEN, secret=SECRET)
    sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1])
