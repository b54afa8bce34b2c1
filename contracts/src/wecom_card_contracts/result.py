"""The result published for every command (docs/contract.md, "The result")."""

from __future__ import annotations

from typing import Literal

import msgspec

Status = Literal["ok", "partial", "rejected", "expired", "duplicate", "failed", "indeterminate"]
ErrorCode = Literal[
    "invalid_command",
    "unknown_app",
    "expired_code",
    "code_already_used",
    "wecom_error",
    "retries_exhausted",
    "outcome_unknown",
]

STATUSES: tuple[Status, ...] = (
    "ok",
    "partial",
    "rejected",
    "expired",
    "duplicate",
    "failed",
    "indeterminate",
)


class ResultError(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Why a command did not end ``ok`` / ``partial``."""

    code: ErrorCode
    message: str
    path: str | None = None


class Result(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One command's outcome. Every key is always present; unknown values are ``null``."""

    command_id: str | None
    correlation_id: str | None
    status: Status
    agentid: int | None = None
    response_code: str | None = None
    errcode: int | None = None
    errmsg: str | None = None
    invalid_users: list[str] = msgspec.field(default_factory=list)
    error: ResultError | None = None
    attempts: int = 0
    replayed: bool = False
    received_at: float
    finished_at: float
