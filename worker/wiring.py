"""Builds the WeCom side of the worker from settings: session, tokens, limiters, client."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp

from worker.concurrency import CorpConcurrency
from worker.metrics import Metrics
from worker.ratelimit import LocalRateLimiter, parse_rate_limit
from worker.settings import Settings
from worker.wecom.client import WeComClient, create_session
from worker.wecom.retry import RetryPolicy
from worker.wecom.tokens import TokenCache


async def build_caller(
    settings: Settings, metrics: Metrics
) -> tuple[WeComClient, Callable[[], Awaitable[None]]]:
    """The WeCom client for the pipeline, and how to close what it holds."""
    timeout = aiohttp.ClientTimeout(
        total=settings.call_timeout, connect=min(5.0, settings.call_timeout)
    )
    session = create_session(settings.concurrency, timeout=timeout)
    tokens = TokenCache(session, settings.api_base, metrics)
    limiter = LocalRateLimiter(parse_rate_limit(settings.rate_limit))
    concurrency = CorpConcurrency(settings.concurrency)
    metrics.watch_corps(
        (app.corp_id for app in settings.apps),
        concurrency.limit,
        concurrency=settings.concurrency,
        prefetch=settings.prefetch,
    )
    client = WeComClient(
        session,
        settings.api_base,
        tokens=tokens,
        limiter=limiter,
        concurrency=concurrency,
        metrics=metrics,
        max_in_flight=settings.concurrency,
        policy=RetryPolicy(budget=settings.retry_budget),
    )
    return client, session.close
