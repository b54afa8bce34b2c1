"""Prometheus metrics of the worker: one registry, names used by deploy/ dashboards and alerts.

Every metric is created in :class:`Metrics` against a registry of its own, so
tests can build as many as they like. Label values are bounded: statuses,
errcodes (known ones as themselves, any other as ``other``: :func:`errcode_label`),
corp ids of configured apps; never a command id, a code or a user. The catalogue
with each metric's meaning is in ``deploy/README.md``.

Every labelled series is created at zero when the worker starts (every
status, retry reason, and each configured corp's errcodes and token results),
so the first ``indeterminate`` or 45009 of a replica's life is an increase
that ``rate()`` and ``increase()`` see, not a new series whose first sample
is already 1. The label sets are bounded, so this costs a fixed number of series.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

from worker import __version__

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

# Every status of the contract: their series exist from start-up.
STATUSES: Final = ("ok", "partial", "rejected", "expired", "duplicate", "failed", "indeterminate")
# Errcodes that get a series of their own: those the client acts on, and the refusals
# operators meet most (bad parameter, agentid, privilege, API forbidden). WeCom has
# hundreds more; each of them would be a new series, so they count as "other".
# The numbers are written here, not imported from worker.wecom (whose client imports this
# module); tests/test_deploy_metrics.py checks every errcode the client acts on is listed.
KNOWN_ERRCODES: Final[frozenset[int]] = frozenset(
    {
        0,  # ok
        -1,  # system busy
        40001,  # invalid credential
        40014,  # invalid access_token
        42001,  # access_token expired
        45009,  # frequency limit
        45033,  # concurrency limit
        60020,  # IP not trusted
        60140,  # response_code used or expired
        301002,  # another app's message
        40056,  # invalid agentid
        40058,  # invalid parameter
        48002,  # API forbidden
        60011,  # no privilege
        81013,  # every recipient invalid
    }
)
# Outcomes without an errcode, named by the client.
CALL_FAILURES: Final = frozenset({"network", "http_5xx", "http_4xx", "invalid_answer"})
# Why the client retried a call (worker/wecom/client.py names them).
RETRY_REASONS: Final = (
    "gettoken",
    "connect",
    "lost_answer",
    "invalid_answer",
    "http_5xx",
    "system_busy",
    "token",
    "concurrency_limit",
    "frequency_limit",
)


def errcode_label(outcome: int | str) -> str:
    """The ``errcode`` label of a call: a known errcode or failure as itself, else ``other``."""
    if isinstance(outcome, int):
        return str(outcome) if outcome in KNOWN_ERRCODES else "other"
    return outcome if outcome in CALL_FAILURES else "other"


LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
END_TO_END_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
WAIT_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """All metrics of one worker process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # One switch for the whole library: no ``*_created`` series beside each counter and
        # histogram (they double the series count and no query here reads them).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.build_info = Gauge(
            "wecom_worker_build_info", "Always 1; the version in a label.", ["version"], registry=r
        )
        self.build_info.labels(__version__).set(1)
        self.commands = Counter(
            "wecom_commands_total", "Commands finished, by result status.", ["status"], registry=r
        )
        self.command_duration = Histogram(
            "wecom_command_duration_seconds",
            "From delivery to ack, per command.",
            ["status"],
            buckets=END_TO_END_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "wecom_commands_in_flight", "Commands delivered and not yet acked.", registry=r
        )
        self.api_calls = Counter(
            "wecom_api_calls_total",
            "Calls of update_template_card by outcome: a known errcode, other, or "
            "http_5xx / http_4xx / network / invalid_answer.",
            ["corp_id", "errcode"],
            registry=r,
        )
        self.api_latency = Histogram(
            "wecom_api_call_duration_seconds",
            "Latency of update_template_card calls.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.limiter_wait = Histogram(
            "wecom_rate_limiter_wait_seconds",
            "Time a call waited for a rate-limit slot.",
            ["corp_id"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.token_refreshes = Counter(
            "wecom_token_refreshes_total",
            "gettoken calls by result: ok, rejected (errcode), error (network/5xx/-1).",
            ["corp_id", "result"],
            registry=r,
        )
        self.invalid_users = Counter(
            "wecom_invalid_users_total", "Recipients WeCom reported as invalid.", registry=r
        )
        self.retries = Counter(
            "wecom_api_retries_total", "Retried calls, by reason.", ["reason"], registry=r
        )
        self.deferred = Counter(
            "wecom_commands_deferred_total",
            "Commands handed to the delay queue because no slot was near enough.",
            registry=r,
        )
        self.unroutable_results = Counter(
            "wecom_results_unroutable_total",
            "Results whose reply_to queue did not exist, sent to the result queue instead.",
            registry=r,
        )
        self.dead_lettered = Counter(
            "wecom_commands_dead_lettered_total",
            "Rejected commands copied to the dead-letter queue.",
            registry=r,
        )
        self.claims_recreated = Counter(
            "wecom_claims_recreated_total",
            "Lease renewals that found their claim gone and wrote it again.",
            registry=r,
        )
        self.store_durable = Gauge(
            "wecom_state_store_durable",
            "1 when the state store's durability settings keep the single-use promise.",
            registry=r,
        )
        self.broker_connected = Gauge(
            "wecom_broker_connected", "1 while connected to RabbitMQ with a consumer.", registry=r
        )
        self.store_errors = Counter(
            "wecom_state_store_errors_total",
            "State store operations that failed (the command was not acked).",
            registry=r,
        )
        self.ip_not_trusted = Gauge(
            "wecom_ip_not_trusted",
            "1 after WeCom answered 60020 (the worker's IP is not on the app's trusted list).",
            ["corp_id"],
            registry=r,
        )
        self.ready = Gauge(
            "wecom_worker_ready",
            "1 while /readyz would answer 200 (broker, consumer, state store), read at scrape.",
            registry=r,
        )
        self.concurrency_configured = Gauge(
            "wecom_concurrency_configured",
            "WECOM_CONCURRENCY: API calls in flight allowed per replica (and per corp).",
            registry=r,
        )
        self.prefetch_configured = Gauge(
            "wecom_prefetch_configured",
            "WECOM_PREFETCH: unacked commands held per replica.",
            registry=r,
        )
        self.corp_concurrency_limit = Gauge(
            "wecom_corp_concurrency_limit",
            "A corp's current limit of calls in flight: WECOM_CONCURRENCY, halved on 45033.",
            ["corp_id"],
            registry=r,
        )
        for status in STATUSES:
            self.commands.labels(status)
            self.command_duration.labels(status)
        for reason in RETRY_REASONS:
            self.retries.labels(reason)

    def watch_corps(
        self,
        corp_ids: Iterable[str],
        limit: Callable[[str], int],
        *,
        concurrency: int,
        prefetch: int,
    ) -> None:
        """Create the configured corps' series and read their concurrency limits at scrape time."""
        self.concurrency_configured.set(concurrency)
        self.prefetch_configured.set(prefetch)
        for corp_id in dict.fromkeys(corp_ids):
            self.corp_concurrency_limit.labels(corp_id).set_function(_reader(limit, corp_id))
            for errcode in (*map(str, sorted(KNOWN_ERRCODES)), *sorted(CALL_FAILURES), "other"):
                self.api_calls.labels(corp_id, errcode)
            for result in ("ok", "rejected", "error"):
                self.token_refreshes.labels(corp_id, result)
            self.limiter_wait.labels(corp_id)
            self.ip_not_trusted.labels(corp_id).set(0)


def _reader(limit: Callable[[str], int], corp_id: str) -> Callable[[], float]:
    """``limit(corp_id)`` as a scrape-time gauge function."""
    return lambda: float(limit(corp_id))
