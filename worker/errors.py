"""Every exception the worker raises on purpose, in one tree.

    WorkerError
    ├── SettingsError         a setting is missing or malformed (exit 2 at start-up)
    ├── StoreError
    │   ├── StoreUnavailable  the state store cannot be reached or written
    │   └── StoreLocked       another process holds the SQLite file
    ├── BrokerError           RabbitMQ refused what retrying cannot fix (topology, credentials)
    ├── PublishError
    │   ├── Unroutable        a mandatory publish had no queue
    │   └── PublishRefused    the broker kept nacking or not confirming a publish
    ├── UnknownApp            a command names an app the worker has no credentials for
    ├── TokenError
    │   ├── TokenRejected     gettoken refused the credentials
    │   └── TokenUnavailable  gettoken could not be reached, or answered -1 / 5xx
    └── HttpError             an update call's HTTP exchange gave no answer
        ├── ConnectFailed     no connection: not a byte of the request was sent
        └── AnswerLost        the request may have reached the server; no complete answer

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


class StoreError(WorkerError):
    """The state store failed."""


class StoreUnavailable(StoreError):
    """The state store cannot be reached or written; no command may be acked without it."""


class StoreLocked(StoreError):
    """Another worker process already uses this SQLite state store."""


class BrokerError(WorkerError):
    """RabbitMQ refused something the worker needs in a way retrying cannot fix.

    ``setting`` names the setting to change (start-up turns it into one line, exit 2).
    """

    def __init__(self, message: str, setting: str = "WECOM_AMQP_URL") -> None:
        self.setting = setting
        super().__init__(message)


class PublishError(WorkerError):
    """A publish did not end with the broker's confirm."""


class Unroutable(PublishError):
    """The broker returned a mandatory publish: no queue has that name."""

    def __init__(self, routing_key: str) -> None:
        self.routing_key = routing_key
        super().__init__(f"no queue named {routing_key!r}")


class PublishRefused(PublishError):
    """The broker kept refusing (nack) or not confirming a publish within the allowed tries."""

    def __init__(self, routing_key: str, reason: str) -> None:
        self.routing_key = routing_key
        self.reason = reason
        super().__init__(f"publish to {routing_key!r} not confirmed: {reason}")


class UnknownApp(WorkerError, LookupError):
    """The command names a corp or agentid the worker has no credentials for."""


class TokenError(WorkerError):
    """gettoken gave no token."""


class TokenRejected(TokenError):
    """gettoken refused the app's credentials (wrong corp id or secret...): retrying cannot help."""

    def __init__(self, errcode: int, errmsg: str) -> None:
        self.errcode = errcode
        self.errmsg = errmsg
        super().__init__(f"gettoken refused the credentials: errcode {errcode} ({errmsg})")


class TokenUnavailable(TokenError):
    """gettoken could not be reached or answered -1 / 5xx: worth another try."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"gettoken unavailable: {reason}")


class HttpError(WorkerError):
    """An HTTP exchange of :mod:`worker.wecom.http` ended without a complete answer.

    The subclass says whether the request may have reached the server, which
    decides whether a response_code may have been spent. The message says what
    happened; it never contains the request's target (the access_token is in it).
    """


class ConnectFailed(HttpError):
    """No connection (DNS, refused, connect or TLS timeout, TLS failure): nothing was sent."""


class AnswerLost(HttpError):
    """The request was handed to the connection and no complete, well-formed answer came back.

    Reset, end of stream before the answer's end, read or call timeout, a malformed
    or oversized answer: the server may have processed the request.
    """
