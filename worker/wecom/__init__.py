"""Talking to WeCom: access tokens, update_template_card with retries, errcode classification."""

from worker.errors import TokenError, TokenRejected, TokenUnavailable
from worker.wecom.client import WeComClient, create_session
from worker.wecom.errcodes import Action, classify
from worker.wecom.retry import RetryPolicy
from worker.wecom.tokens import (
    MemoryTokenStore,
    StoredToken,
    TokenCache,
    TokenStore,
)

__all__ = [
    "Action",
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
