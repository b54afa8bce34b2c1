"""Prometheus metrics of the worker: one registry, names used by deploy/ dashboards and alerts.

Every metric is created in :class:`Metrics` against a registry of its own, so
tests can build as many as they like. Label values are bounded: statuses,
errcodes, corp ids of configured apps; never a command id, a code or a user.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
END_TO_END_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
WAIT_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """All metrics of one worker process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
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
            "Calls of update_template_card by outcome: the errcode, or http_5xx / network.",
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
