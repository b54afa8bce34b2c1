"""Talking to WeCom: access tokens, update_template_card with retries, errcode classification.

update_template_card goes over :class:`HttpOrigin` (worker/wecom/http.py, HTTP/1.1
keep-alive on asyncio protocols); gettoken over an aiohttp session (:func:`create_session`).
"""

from worker.errors import AnswerLost, ConnectFailed, TokenError, TokenRejected, TokenUnavailable
from worker.wecom.client import WeComClient
from worker.wecom.errcodes import Action, classify
from worker.wecom.http import HttpOrigin
from worker.wecom.retry import RetryPolicy
from worker.wecom.tokens import (
    MemoryTokenStore,
    StoredToken,
    TokenCache,
    TokenStore,
    create_session,
)

__all__ = [
    "Action",
    "AnswerLost",
    "ConnectFailed",
    "HttpOrigin",
    "MemoryTokenStore",
    "RetryPolicy",
    "StoredToken",
    "TokenCache",
    "TokenError",
    "TokenRejected",
    "TokenStore",
    "TokenUnavailable",
    "WeComClient",
    "classify",
    "create_session",
]
