"""Which Redis WECOM_STATE_URL names, and a redis-py asyncio client for it.

Four forms (CONTRACT.md ``WECOM_STATE_URL``):

    redis://[:PASSWORD@]HOST:PORT[/DB]            one server (rediss:// with TLS)
    redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT…]/MASTER_NAME[/DB]
    redis+cluster://[:PASSWORD@]HOST:PORT[,HOST:PORT…]

(``rediss+sentinel://`` and ``rediss+cluster://`` are the TLS variants.) With
Sentinel the password is the Redis servers', not the sentinels'. A password
given on its own (``WECOM_REDIS_PASSWORD``) overrides the URL's.

Every connection has a connect and a read timeout, so a hung Redis (SIGSTOP, a
dead network path) fails a call within about ``socket_timeout`` instead of holding the
pipeline. A call is retried once, at once, only when its connection broke
(a pooled connection left from before a restart or failover, or an old master
answering READONLY); never after a timeout, which would double the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias
from urllib.parse import unquote

from worker.errors import SettingsError, StoreUnavailable

if TYPE_CHECKING:
    # redis-py is imported by connect_redis only: a worker on SQLite never loads it (~8 MiB RSS).
    from redis.asyncio import Redis, RedisCluster
    from redis.asyncio.sentinel import Sentinel

__all__ = [
    "RedisClient",
    "RedisConnection",
    "RedisTarget",
    "connect_redis",
    "parse_redis_url",
]

SETTING: Final = "WECOM_STATE_URL"
DEFAULT_PORT: Final = 6379
CLOSE_GRACE: Final = 2.0  # seconds to close a client
DEFAULT_SENTINEL_PORT: Final = 26379
_FORMS: Final = (
    "redis://[:PASSWORD@]HOST:PORT/DB, rediss://… (TLS), "
    "redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT…]/MASTER_NAME[/DB] or "
    "redis+cluster://[:PASSWORD@]HOST:PORT[,HOST:PORT…]"
)
_SCHEMES: Final[dict[str, tuple[Literal["standalone", "sentinel", "cluster"], bool]]] = {
    "redis": ("standalone", False),
    "rediss": ("standalone", True),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}

RedisClient: TypeAlias = "Redis | RedisCluster"
"""What the Redis adapters talk to: one server (maybe behind Sentinel) or a cluster."""


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """A parsed WECOM_STATE_URL naming Redis. ``repr`` and :meth:`describe` show no password."""

    kind: Literal["standalone", "sentinel", "cluster"]
    tls: bool
    nodes: tuple[tuple[str, int], ...]  # the server, the sentinels, or cluster seed nodes
    db: int = 0
    master_name: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def describe(self) -> str:
        """The target for logs and error messages, without the password."""
        scheme = {"standalone": "redis", "sentinel": "redis+sentinel", "cluster": "redis+cluster"}
        name = scheme[self.kind].replace("redis", "rediss", 1) if self.tls else scheme[self.kind]
        hosts = ",".join(_host_port(host, port) for host, port in self.nodes)
        user = f"{self.username}:***@" if self.username else (":***@" if self.password else "")
        if self.kind == "sentinel":
            return f"{name}://{user}{hosts}/{self.master_name}/{self.db}"
        if self.kind == "cluster":
            return f"{name}://{user}{hosts}"
        return f"{name}://{user}{hosts}/{self.db}"


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bad(problem: str) -> SettingsError:
    return SettingsError(SETTING, f"{problem}; the forms are {_FORMS}")


def parse_redis_url(url: str) -> RedisTarget:
    """Parse a Redis WECOM_STATE_URL; :class:`SettingsError` (never echoing a password) if bad."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        raise _bad(f"scheme {scheme.lower()!r} is not a Redis one" if sep else "not a URL")
    kind, tls = _SCHEMES[scheme.lower()]
    if "?" in rest or "#" in rest:
        raise _bad("query parameters and fragments are not supported")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username, password = _credentials(userinfo) if at else (None, None)
    default_port = DEFAULT_SENTINEL_PORT if kind == "sentinel" else DEFAULT_PORT
    nodes = tuple(_node(entry, default_port) for entry in hosts.split(","))
    if kind == "standalone" and len(nodes) != 1:
        raise _bad("a redis:// URL names one HOST:PORT (several are for sentinels or a cluster)")
    segments = [unquote(part) for part in path.split("/")] if path else []
    if segments and segments[-1] == "":
        segments.pop()  # a trailing slash
    master_name: str | None = None
    if kind == "sentinel":
        if not segments or not segments[0]:
            raise _bad("a redis+sentinel:// URL needs the master name after the sentinels")
        master_name, segments = segments[0], segments[1:]
    if len(segments) > 1:
        raise _bad(f"unexpected path {'/'.join(segments)!r}")
    db = _db(segments[0]) if segments else 0
    if kind == "cluster" and db != 0:
        raise _bad("Redis Cluster has only database 0")
    return RedisTarget(kind, tls, nodes, db, master_name, username, password)


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    user, colon, secret = userinfo.partition(":")
    if not colon:
        raise _bad("the part before @ must be :PASSWORD (or USER:PASSWORD)")
    return unquote(user) or None, unquote(secret) or None


def _node(entry: str, default_port: int) -> tuple[str, int]:
    entry = entry.strip()
    if entry.startswith("["):  # [IPv6]:PORT
        host, bracket, tail = entry[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise _bad(f"bad host {entry!r}")
        port_text = tail[1:]
    else:
        host, _, port_text = entry.partition(":")
    if not host:
        raise _bad("a HOST is missing")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise _bad(f"port {port_text!r} of {host} is not a number from 1 to 65535")
    return host, int(port_text)


def _db(text: str) -> int:
    if not text.isdigit():
        raise _bad(f"the database {text!r} is not a number (e.g. /0)")
    return int(text)


@dataclass(slots=True)
class RedisConnection:
    """An open client and what :meth:`close` must close with it (Sentinel's own connections).

    redis-py's asyncio pools fail a call at once (``MaxConnectionsError``) when every
    connection is busy; callers hold one of ``calls`` around each call (pipeline), so the
    pool is never asked for more connections than it has and a burst waits instead.
    """

    client: RedisClient
    target: RedisTarget
    calls: asyncio.Semaphore
    _sentinel: Sentinel | None = None

    def describe(self) -> str:
        """The target, safe to log."""
        return self.target.describe()

    async def close(self) -> None:
        """Close every connection this client opened (bounded: shutdown must end)."""
        clients = [self.client, *(self._sentinel.sentinels if self._sentinel else ())]
        for client in clients:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(client.aclose(), CLOSE_GRACE)


async def connect_redis(
    target: RedisTarget,
    *,
    password: str | None,
    socket_timeout: float,
    client_name: str | None = None,
    max_connections: int = 64,
) -> RedisConnection:
    """A client for ``target``; ``password`` (if given) overrides the URL's.

    Nothing is sent yet, except to a cluster, whose slot map is read here.
    Raises :class:`worker.errors.StoreUnavailable` when that fails.
    """
    from redis.asyncio import Redis, RedisCluster  # noqa: PLC0415 - see the imports at the top
    from redis.asyncio.cluster import ClusterNode  # noqa: PLC0415
    from redis.asyncio.retry import Retry  # noqa: PLC0415
    from redis.asyncio.sentinel import Sentinel  # noqa: PLC0415
    from redis.backoff import NoBackoff  # noqa: PLC0415
    from redis.exceptions import ConnectionError as RedisConnectionError  # noqa: PLC0415

    secret = password if password is not None else target.password
    retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
    common: dict[str, Any] = {
        "username": target.username,
        "password": secret,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
        "client_name": client_name,
        "retry": retry,
        "max_connections": max_connections,
    }
    if target.tls:
        common["ssl"] = True
    if target.kind == "cluster":
        nodes = [ClusterNode(host, port) for host, port in target.nodes]
        cluster = RedisCluster(startup_nodes=nodes, **common)
        try:
            await cluster.initialize()
        except Exception as error:  # noqa: BLE001 - any failure to start is 'unavailable'
            await cluster.aclose()
            raise StoreUnavailable(
                f"redis {target.describe()}: cannot read the cluster's slots: "
                f"{type(error).__name__}: {_scrub(str(error), secret)}"
            ) from None
        return RedisConnection(cluster, target, asyncio.Semaphore(max_connections))
    if target.kind == "sentinel" and target.master_name is not None:
        sentinel = Sentinel(
            target.nodes,
            sentinel_kwargs={
                "socket_timeout": socket_timeout,
                "socket_connect_timeout": socket_timeout,
                "ssl": target.tls,  # rediss+sentinel: the sentinels speak TLS too
            },
        )
        master = sentinel.master_for(target.master_name, db=target.db, **common)
        return RedisConnection(master, target, asyncio.Semaphore(max_connections), sentinel)
    host, port = target.nodes[0]
    client = Redis(host=host, port=port, db=target.db, **common)
    return RedisConnection(client, target, asyncio.Semaphore(max_connections))


def _scrub(text: str, secret: str | None) -> str:
    """``text`` with ``secret`` masked: redis-py's messages may quote what was sent."""
    return text.replace(secret, "***") if secret else text
