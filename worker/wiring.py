"""The one place that builds the worker's parts from settings and closes them in reverse order.

:func:`build_parts` is an async context manager over an :class:`AsyncExitStack`:
each part is registered with its close as soon as it exists, so a failure half
way through start-up closes exactly what was opened, and a normal exit closes
the broker first (its last acks), then WeCom's connections and the gettoken
session, then the state store.
Which state store, rate limiter and token store is decided here, by the
scheme of ``WECOM_STATE_URL``; nothing else looks at it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp

from worker.amqp import Broker, Topology
from worker.apps import AppRegistry
from worker.concurrency import CorpConcurrency, CorpLimits
from worker.consumer import CommandConsumer
from worker.errors import SettingsError
from worker.faultpoints import FaultPoint
from worker.metrics import Metrics
from worker.pipeline import HeldClaims, Pipeline
from worker.ports import RateLimiter, StateStore
from worker.ratelimit import LocalRateLimiter
from worker.redis_target import RedisTarget, connect_redis
from worker.settings import Settings
from worker.wecom.client import WeComClient
from worker.wecom.http import CONNECT_TIMEOUT, READ_TIMEOUT, HttpOrigin
from worker.wecom.retry import RetryPolicy
from worker.wecom.tokens import MemoryTokenStore, TokenCache, TokenStore, create_session

ACTIVE_PER_CALL = 2  # commands worked on per place in flight: one calling, one before or after
REDIS_TIMEOUT = 1.0  # seconds per Redis call: a frozen Redis fails a command, never hangs it
# WAIT blocks the connection up to its timeout when no replica acknowledges: it must answer
# well inside the socket timeout, or the call fails as a timeout and the connection is dropped.
REDIS_WAIT_TIMEOUT = REDIS_TIMEOUT / 2


@dataclass(frozen=True)
class Parts:
    """Every long-lived part of a running worker, built and ready."""

    store: StateStore
    caller: WeComClient
    broker: Broker
    pipeline: Pipeline
    consumer: CommandConsumer
    claims: HeldClaims


@dataclass(frozen=True)
class Shared:
    """What replicas share through the state store's backend (or keep in process)."""

    store: StateStore
    limiter: RateLimiter
    tokens: TokenStore
    concurrency: CorpLimits


@contextlib.asynccontextmanager
async def build_parts(settings: Settings, metrics: Metrics) -> AsyncIterator[Parts]:
    """Open every part for ``settings``; close them in reverse order on the way out.

    Raises :class:`worker.errors.StoreLocked`, :class:`worker.errors.StoreUnavailable`
    or :class:`SettingsError` when the state store cannot be opened.
    """
    async with contextlib.AsyncExitStack() as stack:
        shared = await open_shared(settings, stack)
        total = settings.call_timeout
        connect = min(CONNECT_TIMEOUT, total)
        try:
            origin = HttpOrigin(
                settings.api_base,
                max_connections=settings.concurrency,
                connect_timeout=connect,
                read_timeout=min(READ_TIMEOUT, total),
                total_timeout=total,
                on_request_written=request_written_hook(settings.fault_point),
            )
        except ValueError as exc:
            raise SettingsError("WECOM_API_BASE", str(exc)) from None
        stack.push_async_callback(origin.close)
        session = create_session(timeout=aiohttp.ClientTimeout(total=total, connect=connect))
        stack.push_async_callback(session.close)
        concurrency = shared.concurrency
        metrics.watch_corps(
            (app.corp_id for app in settings.apps),
            concurrency.limit,
            concurrency=settings.concurrency,
            prefetch=settings.prefetch,
        )
        caller = WeComClient(
            origin,
            tokens=TokenCache(session, settings.api_base, metrics, store=shared.tokens),
            limiter=shared.limiter,
            concurrency=concurrency,
            metrics=metrics,
            max_in_flight=settings.concurrency,
            policy=RetryPolicy(budget=settings.retry_budget),
        )
        broker = Broker(
            settings.amqp_url,
            Topology(
                command_queue=settings.command_queue,
                result_queue=settings.result_queue,
                dead_letter_queue=settings.dead_letter_queue,
                delay_queue=settings.delay_queue,
                queue_type=settings.queue_type,
            ),
            prefetch=settings.prefetch,
            publish_timeout=settings.publish_timeout,
            connection_name=f"wecom-card-worker {settings.instance_id}",
        )
        stack.push_async_callback(broker.close)
        claims = HeldClaims()
        pipeline = Pipeline(
            apps=AppRegistry(list(settings.apps)),
            store=shared.store,
            caller=caller,
            claims=claims,
            max_message_bytes=settings.max_message_bytes,
            max_limiter_wait=settings.max_limiter_wait,
            fault=settings.fault_point,
        )
        consumer = CommandConsumer(
            broker, pipeline, metrics, max_active=ACTIVE_PER_CALL * settings.concurrency
        )
        yield Parts(
            store=shared.store,
            caller=caller,
            broker=broker,
            pipeline=pipeline,
            consumer=consumer,
            claims=claims,
        )


async def open_shared(settings: Settings, stack: contextlib.AsyncExitStack) -> Shared:
    """The state store, rate limiter, token store and 45033 limits ``WECOM_STATE_URL`` calls for.

    SQLite: one replica, so the limiter, tokens and concurrency live in the process.
    Redis: the same Redis holds what every replica must agree on.
    """
    path = settings.sqlite_path
    if path is not None:
        from worker.state.sqlite import SqliteStateStore  # noqa: PLC0415 - per-backend import

        store = await SqliteStateStore.open(
            path,
            owner=settings.instance_id,
            lease_seconds=settings.claim_lease,
            synchronous=settings.sqlite_synchronous,
            replay_window_seconds=settings.replay_window,
        )
        stack.push_async_callback(store.close)
        return Shared(
            store=store,
            limiter=LocalRateLimiter(settings.rate_windows),
            tokens=MemoryTokenStore(),
            concurrency=CorpConcurrency(settings.concurrency),
        )
    if settings.redis_target is not None:
        return await open_redis_shared(settings, settings.redis_target, stack)
    raise SettingsError("WECOM_STATE_URL", f"no state store for {settings.state_url_safe}")


async def open_redis_shared(
    settings: Settings, target: RedisTarget, stack: contextlib.AsyncExitStack
) -> Shared:
    """Everything shared by replicas, on one Redis connection pool."""
    from worker.redis_concurrency import SharedCorpConcurrency  # noqa: PLC0415
    from worker.redis_ratelimit import RedisRateLimiter  # noqa: PLC0415
    from worker.state.redis import RedisStateStore  # noqa: PLC0415
    from worker.wecom.redis_tokens import RedisTokenStore  # noqa: PLC0415

    connection = await connect_redis(
        target,
        password=settings.redis_password,
        socket_timeout=REDIS_TIMEOUT,
        client_name=f"wecom-card-worker-{settings.instance_id}",
    )
    stack.push_async_callback(connection.close)
    store = await RedisStateStore.open(
        connection,
        owner=settings.instance_id,
        lease_seconds=settings.claim_lease,
        replay_window_seconds=settings.replay_window,
        wait_replicas=settings.redis_wait_replicas,
        wait_timeout=REDIS_WAIT_TIMEOUT,
        close_connection=False,
    )
    stack.push_async_callback(store.close)
    concurrency = SharedCorpConcurrency(connection, settings.concurrency)
    await concurrency.start()
    stack.push_async_callback(concurrency.close)
    return Shared(
        store=store,
        limiter=RedisRateLimiter(connection, settings.rate_windows),
        tokens=RedisTokenStore(connection),
        concurrency=concurrency,
    )


def request_written_hook(fault: FaultPoint | None) -> Callable[[], None] | None:
    """The ``request_written`` fault point: fires once an update request went out (tests only)."""
    if fault is None or fault.point != "request_written":
        return None
    return lambda: fault("request_written")
