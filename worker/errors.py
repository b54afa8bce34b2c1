"""Every exception the worker raises on purpose, in one tree.

Messages never contain a secret or an access token: they are logged and some
end up in results.
"""

from __future__ import annotations


class WorkerError(Exception):
    """Base of the worker's own errors."""


class SettingsError(WorkerError):
    """A setting is missing or malformed; start-up stops with this one line (exit 2)."""

    def __init__(self, name: str, problem: str) -> None:
        self.name = name
        self.problem = problem
        super().__init__(f"{name}: {problem}")


class StoreUnavailable(WorkerError):
    """The state store cannot be reached or written; no command may be acked without it."""


class StoreLocked(WorkerError):
    """Another worker process already uses this SQLite state store."""


class BrokerError(WorkerError):
    """RabbitMQ refused something the worker needs (topology, publish) in a way retry cannot fix."""
