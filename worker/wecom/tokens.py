"""access_tokens per app: fetched from gettoken, cached until shortly before they expire.

A token in the local cache costs a dict lookup and no await. On a miss one
refresh runs per app (single flight: concurrent callers await the same task);
it asks the shared :class:`TokenStore` first, so replicas sharing a store
(Redis, later) do not all call gettoken, then gettoken itself.

Neither the secret nor a token ever appears in an exception message, a log
line or a metric label: errors are described by their class and a text masked by
:mod:`worker.redact`, which also remembers every secret and token seen here.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

import aiohttp
import msgspec
import structlog

from worker import redact
from worker.errors import TokenRejected, TokenUnavailable
from worker.redact import redact_text, remember_secret
from worker.wecom.errcodes import gettoken_retryable

if TYPE_CHECKING:
    from worker.apps import App
    from worker.metrics import Metrics

log = structlog.get_logger("worker.wecom.tokens")

GETTOKEN_PATH: Final = "/cgi-bin/gettoken"
DEFAULT_TIMEOUT: Final = aiohttp.ClientTimeout(total=15.0, connect=5.0, sock_read=10.0)
TOKEN_CONNECTIONS: Final = 4  # gettoken calls at once (one refresh per app runs at a time)
MAX_MARGIN: Final = 300.0  # refresh 5 minutes before expiry ...
MARGIN_FRACTION: Final = 0.1  # ... or at 90 % of the lifetime, whichever comes later
_HTTP_OK: Final = 200

describe_error = redact.describe_error  # the client's import of it from here keeps working


def create_session(*, timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT) -> aiohttp.ClientSession:
    """The gettoken session of a process: a few keep-alive connections, explicit timeouts.

    Call it inside the running event loop and close it when the service stops.
    update_template_card goes through :class:`worker.wecom.http.HttpOrigin` instead.
    """
    connector = aiohttp.TCPConnector(
        limit=TOKEN_CONNECTIONS, ttl_dns_cache=300, keepalive_timeout=15.0
    )
    return aiohttp.ClientSession(connector=connector, timeout=timeout, raise_for_status=False)


@dataclass(frozen=True, slots=True)
class StoredToken:
    """A token and when to stop using it (Unix seconds, the safety margin already taken off)."""

    access_token: str = ""
    use_until: float = 0.0

    def __repr__(self) -> str:
        """Never show the token itself."""
        return f"StoredToken(use_until={self.use_until})"


class TokenStore(Protocol):
    """Tokens shared beyond this process (a Redis hash, say), keyed by :func:`token_key`."""

    async def load(self, key: str) -> StoredToken | None:
        """The stored token, or None (an expired one may be returned: the cache checks)."""
        ...

    async def save(self, key: str, token: StoredToken) -> None:
        """Share a freshly fetched token."""
        ...

    async def discard(self, key: str, access_token: str) -> None:
        """Forget the stored token if it is still ``access_token`` (compare and delete)."""
        ...

    async def refresh(
        self,
        key: str,
        fetch: Callable[[], Awaitable[StoredToken]],
        usable: Callable[[StoredToken], bool],
    ) -> StoredToken:
        """A usable stored token, or one ``fetch`` gets (and the store shares).

        A store shared by replicas lets one of them fetch while the others wait for
        its token, so gettoken is called once per app, not once per replica.
        """
        ...


class MemoryTokenStore:
    """A :class:`TokenStore` in this process: the default, and what tests share between caches."""

    def __init__(self) -> None:
        self._tokens: dict[str, StoredToken] = {}

    async def load(self, key: str) -> StoredToken | None:
        """The stored token, if any."""
        return self._tokens.get(key)

    async def save(self, key: str, token: StoredToken) -> None:
        """Keep ``token`` under ``key``."""
        self._tokens[key] = token

    async def discard(self, key: str, access_token: str) -> None:
        """Drop the token under ``key`` if it is still ``access_token``."""
        stored = self._tokens.get(key)
        if stored is not None and stored.access_token == access_token:
            del self._tokens[key]

    async def refresh(
        self,
        key: str,
        fetch: Callable[[], Awaitable[StoredToken]],
        usable: Callable[[StoredToken], bool],
    ) -> StoredToken:
        """The stored token if usable, else a fetched one, kept for the next caller."""
        stored = self._tokens.get(key)
        if stored is not None and usable(stored):
            return stored
        token = await fetch()
        self._tokens[key] = token
        return token


class _GettokenAnswer(msgspec.Struct):
    errcode: int = 0
    errmsg: str = ""
    access_token: str = ""
    expires_in: float = 0.0


_ANSWER_DECODER: Final = msgspec.json.Decoder(_GettokenAnswer)


def token_key(app: App) -> str:
    """The shared-store key of an app's token: corp, agentid and a digest of the secret."""
    digest = hashlib.sha256(app.secret.encode()).hexdigest()[:16]
    return f"{app.corp_id}:{app.agentid}:{digest}"


def use_until(now: float, expires_in: float) -> float:
    """When to stop using a token WeCom says lives ``expires_in`` seconds from ``now``."""
    return now + expires_in - min(MAX_MARGIN, MARGIN_FRACTION * expires_in)


class TokenCache:
    """access_tokens of every app, fetched from ``{api_base}/cgi-bin/gettoken`` on demand."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        api_base: str,
        metrics: Metrics,
        *,
        store: TokenStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Fetch with ``session``; share through ``store`` (default: this process only)."""
        self._session = session
        self._url = api_base.rstrip("/") + GETTOKEN_PATH
        self._metrics = metrics
        self._store: TokenStore = store if store is not None else MemoryTokenStore()
        self._clock = clock
        self._tokens: dict[App, StoredToken] = {}
        self._refreshing: dict[App, asyncio.Task[StoredToken]] = {}

    def cached(self, app: App) -> str | None:
        """The app's token if one is cached and still good, without awaiting anything."""
        token = self._tokens.get(app)
        if token is not None and self._clock() < token.use_until:
            return token.access_token
        return None

    async def get(self, app: App) -> str:
        """The app's token: cached, shared, or fetched by the one refresh in flight.

        Raises :class:`TokenRejected` or :class:`TokenUnavailable`.
        """
        token = self.cached(app)
        if token is not None:
            return token
        task = self._refreshing.get(app)
        if task is None:
            task = asyncio.create_task(self._refresh(app), name=f"gettoken {app.label}")
            self._refreshing[app] = task
            task.add_done_callback(lambda done: self._refresh_done(app, done))
        # shield: a caller giving up must not cancel the refresh other callers wait for
        fresh = await asyncio.shield(task)
        return fresh.access_token

    async def invalidate(self, app: App, access_token: str) -> None:
        """WeCom refused ``access_token``: drop it, unless the cache has moved on to a newer one."""
        current = self._tokens.get(app)
        if current is not None and current.access_token == access_token:
            del self._tokens[app]
        await self._store.discard(token_key(app), access_token)

    def _refresh_done(self, app: App, task: asyncio.Task[StoredToken]) -> None:
        if self._refreshing.get(app) is task:
            del self._refreshing[app]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have been cancelled

    async def _refresh(self, app: App) -> StoredToken:
        token = await self._store.refresh(token_key(app), lambda: self._fetch(app), self._usable)
        remember_secret(token.access_token)  # fetched here or by another replica: mask it in logs
        self._tokens[app] = token
        return token

    def _usable(self, token: StoredToken) -> bool:
        return self._clock() < token.use_until

    async def _fetch(self, app: App) -> StoredToken:
        """One gettoken call, counted in ``wecom_token_refreshes_total``."""
        remember_secret(app.secret)
        params = {"corpid": app.corp_id, "corpsecret": app.secret}
        asked_at = self._clock()  # the token's lifetime runs from before the request, to be safe
        try:
            async with self._session.get(self._url, params=params) as response:
                status = response.status
                payload = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._unavailable(app, redact.describe_error(exc, app.secret)) from None
        if status != _HTTP_OK:
            raise self._unavailable(app, f"gettoken answered HTTP {status}")
        try:
            answer = _ANSWER_DECODER.decode(payload)
        except msgspec.DecodeError:
            raise self._unavailable(app, "the answer is not gettoken's JSON") from None
        errmsg = redact_text(answer.errmsg, app.secret)
        if answer.errcode == 0 and (not answer.access_token or answer.expires_in <= 0):
            raise self._unavailable(app, "gettoken answered errcode 0 without a usable token")
        if gettoken_retryable(answer.errcode):
            raise self._unavailable(app, f"gettoken answered errcode {answer.errcode} ({errmsg})")
        if answer.errcode != 0:
            self._metrics.token_refreshes.labels(app.corp_id, "rejected").inc()
            log.error(
                "wecom.gettoken_rejected",
                corp_id=app.corp_id,
                agentid=app.agentid,
                errcode=answer.errcode,
                errmsg=errmsg,
            )
            raise TokenRejected(answer.errcode, errmsg)
        remember_secret(answer.access_token)
        self._metrics.token_refreshes.labels(app.corp_id, "ok").inc()
        log.info(
            "wecom.token_refreshed",
            corp_id=app.corp_id,
            agentid=app.agentid,
            expires_in=answer.expires_in,
        )
        return StoredToken(answer.access_token, use_until(asked_at, answer.expires_in))

    def _unavailable(self, app: App, reason: str) -> TokenUnavailable:
        """Count and log a gettoken failure worth retrying; the error to raise."""
        self._metrics.token_refreshes.labels(app.corp_id, "error").inc()
        log.warning(
            "wecom.gettoken_failed", corp_id=app.corp_id, agentid=app.agentid, reason=reason
        )
        return TokenUnavailable(reason)
