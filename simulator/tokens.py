"""access_tokens: issued per app, valid until their TTL or a call budget runs out.

As WeCom documents, gettoken during a token's validity returns the same token
(with the seconds it has left as `expires_in`); after it expires, a new one.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from simulator.config import App


@dataclass(slots=True)
class IssuedToken:
    """A token's app, its expiry (Unix seconds), and update calls made with it."""

    app: App
    expires_at: float
    calls: int = 0
    revoked: bool = False

    def is_valid(self, now: float) -> bool:
        """Whether the token still authenticates at `now`."""
        return not self.revoked and now < self.expires_at


class TokenBook:
    """Every token issued since the last reset."""

    def __init__(self, ttl: float) -> None:
        """Issue tokens that live `ttl` seconds."""
        self._ttl = ttl
        self._by_token: dict[str, IssuedToken] = {}
        self._current: dict[App, str] = {}

    def current(self, app: App, now: float) -> tuple[str, IssuedToken]:
        """Return `app`'s valid token, issuing a new one when it has none."""
        token = self._current.get(app)
        if token is not None:
            issued = self._by_token[token]
            if issued.is_valid(now):
                return token, issued
        token = secrets.token_urlsafe(32)
        issued = IssuedToken(app=app, expires_at=now + self._ttl)
        self._by_token[token] = issued
        self._current[app] = token
        return token, issued

    def get(self, token: str) -> IssuedToken | None:
        """Return what is known of `token`, or None for a token never issued."""
        return self._by_token.get(token)

    def restart_call_counts(self) -> None:
        """Count update calls from zero again (the call budget changed)."""
        for issued in self._by_token.values():
            issued.calls = 0

    def clear(self) -> None:
        """Forget every token."""
        self._by_token.clear()
        self._current.clear()
