"""The one place secrets are masked: log lines, exception texts and URLs all pass through here.

What counts as a secret:

- the value of a query parameter, keyword or JSON/``repr`` key named like one
  (``access_token=…``, ``corpsecret=…``, ``"secret": "…"``, ``Authorization: Bearer …``);
- the password of any URL (``amqp://user:pass@host``, ``redis://:pass@host``);
- any value given to :func:`remember_secret` (app secrets, access tokens), wherever
  it appears, even with nothing around it that says it is one;
- in a log event, the whole value of a key named like a secret.

Logs are masked last, after the traceback is formatted and the line rendered
(:func:`redact_rendered`), so no exception text, ``repr`` or nested value can
carry a secret past it. Masking the rendered JSON keeps it valid: the patterns
never consume a quote or a backslash.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import MutableMapping
from typing import Any, Final

REDACTED: Final = "***"

SECRET_KEYS: Final = frozenset(
    {
        "secret",
        "corpsecret",
        "access_token",
        "token",
        "password",
        "passwd",
        "authorization",
        "api_key",
    }
)
"""Log event keys whose whole value is masked."""

_NAMES: Final = r"access_token|corpsecret|secret|password|passwd|token|api_key"
_ASSIGNED: Final = re.compile(rf"(?i)((?:{_NAMES})=)[^&\s\"'<>\\,;)]*")
"""``name=value`` in query strings, keyword reprs and form bodies."""
_QUOTED_KEY: Final = re.compile(
    rf"""(?i)((?:\\?["'])(?:{_NAMES})(?:\\?["'])\s*:\s*)(\\?["'])(?:\\.|(?!\2)[^\\])*\2"""
)
"""``"name": "value"`` in JSON and ``'name': 'value'`` in dict reprs (also inside JSON strings)."""
_AUTHORIZATION: Final = re.compile(
    r"(?i)(authorization\W{1,8}(?:bearer\s+|basic\s+)?)[^\s\"'\\,}]+"
)
_URL_PASSWORD: Final = re.compile(
    r"([a-z][a-z0-9+.-]*://[^:/@\s\"'\\]*):[^/\s\"'\\]*@", re.IGNORECASE
)

MIN_SECRET_LENGTH: Final = 6
"""Shorter values are not remembered: masking every "abc" would garble the logs."""
MAX_REMEMBERED: Final = 256
"""Secrets remembered at most; the oldest is forgotten first (tokens rotate every 2 h)."""

_remembered: OrderedDict[str, None] = OrderedDict()
_lock = threading.Lock()


def remember_secret(value: str | None) -> None:
    """Mask ``value`` wherever it appears from now on (an app secret, an access token)."""
    if value is None or len(value) < MIN_SECRET_LENGTH:
        return
    with _lock:
        _remembered[value] = None
        _remembered.move_to_end(value)
        while len(_remembered) > MAX_REMEMBERED:
            _remembered.popitem(last=False)


def redact_text(text: str, *secrets: str) -> str:
    """``text`` with every secret masked: named values, URL passwords, remembered and given ones."""
    if "=" in text:
        text = _ASSIGNED.sub(rf"\g<1>{REDACTED}", text)
    if ":" in text:
        text = _QUOTED_KEY.sub(rf"\g<1>\g<2>{REDACTED}\g<2>", text)
        text = _URL_PASSWORD.sub(rf"\g<1>:{REDACTED}@", text)
        text = _AUTHORIZATION.sub(rf"\g<1>{REDACTED}", text)
    with _lock:
        known = [*_remembered, *secrets]
    for secret in known:
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact_url(url: str) -> str:
    """``scheme://user:***@host/path?access_token=***``: a URL fit to log."""
    return redact_text(url)


def describe_error(exc: BaseException, *secrets: str) -> str:
    """``exc`` fit to log or put in a result: its class and masked message."""
    message = redact_text(str(exc), *secrets)
    name = type(exc).__name__
    return f"{name}: {message}" if message else name


def redact_event(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask the values of secret-named keys, and secrets in string values."""
    for key, value in list(event.items()):
        if key.lower() in SECRET_KEYS:
            event[key] = REDACTED
        elif isinstance(value, str):
            event[key] = redact_text(value)
    return event


def redact_rendered(_: Any, __: str, line: str | bytes) -> str | bytes:
    """structlog processor after the renderer: the final line, tracebacks included, masked."""
    if isinstance(line, bytes):
        return redact_text(line.decode("utf-8", "replace")).encode("utf-8")
    return redact_text(line)
