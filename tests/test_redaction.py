"""No secret reaches a log line: tracebacks are formatted before redaction, in every format."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.redaction_probe import LEAKS, TOKEN
from worker.redact import (
    describe_error,
    redact_rendered,
    redact_text,
    redact_url,
    remember_secret,
)

ROOT = Path(__file__).resolve().parents[1]


def probe_output(fmt: str) -> str:
    """What the worker's logging prints for the probe's failures, in format ``fmt``."""
    run = subprocess.run(
        [sys.executable, "-m", "tests.redaction_probe", fmt],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return run.stdout + run.stderr


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_exceptions_logged_with_exc_info_print_no_secret(fmt: str) -> None:
    """Given an error holding a token, a secret and a broker URL, logged with its traceback
    through structlog and a stdlib logger, Then the tracebacks print and no secret does."""
    output = probe_output(fmt)
    for leak in LEAKS:
        assert leak not in output
    assert output.count("Traceback (most recent call last)") >= 4
    assert "CallFailed" in output
    assert "ConnectionError" in output  # the cause's traceback too
    assert "access_token=***" in output
    assert "amqp://worker:***@127.0.0.1:5672/vhost" in output
    assert "aiormq.connection" in output


def test_json_lines_stay_valid_after_masking() -> None:
    """Every JSON log line still parses after the rendered line is masked."""
    lines = [line for line in probe_output("json").splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]
    assert len(records) == 5
    assert records[-1]["access_token"] == "***"
    assert records[-1]["secret"] == "***"


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("GET /gettoken?corpid=ww1&corpsecret=abc123", "GET /gettoken?corpid=ww1&corpsecret=***"),
        ("?access_token=tok.EN-1&debug=1", "?access_token=***&debug=1"),
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("amqp://u:p@ss@h/vh", "amqp://u:***@h/vh"),
        ('{"access_token": "a\\"b", "n": 1}', '{"access_token": "***", "n": 1}'),
        ("{'secret': 'abc', 'n': 1}", "{'secret': '***', 'n': 1}"),
        ("Authorization: Bearer xyz", "Authorization: Bearer ***"),
        ("errcode 40014: invalid access_token", "errcode 40014: invalid access_token"),
    ],
)
def test_every_secret_shape_is_masked(text: str, kept: str) -> None:
    """Query values, JSON and repr keys, URL passwords and auth headers are masked; prose is not."""
    assert redact_text(text) == kept


def test_remembered_and_given_secrets_are_masked_anywhere() -> None:
    """A value known to be secret is masked with nothing around it saying so."""
    remember_secret("remembered-s3cret")
    assert redact_text("got remembered-s3cret back") == "got *** back"
    assert redact_text("got given-s3cret back", "given-s3cret") == "got *** back"
    assert describe_error(ValueError("bad given-s3cret"), "given-s3cret") == "ValueError: bad ***"


def test_url_and_rendered_json_are_masked() -> None:
    """redact_url masks a password; a rendered JSON line with an escaped secret stays valid."""
    assert redact_url("amqps://a:b@h:5671/") == "amqps://a:***@h:5671/"
    line = json.dumps({"event": f'error {{"access_token": "{TOKEN}"}}'})
    masked = redact_rendered(None, "error", line)
    assert isinstance(masked, str)
    assert TOKEN not in masked
    assert json.loads(masked)["event"] == 'error {"access_token": "***"}'
