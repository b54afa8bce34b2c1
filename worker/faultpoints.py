"""A test-only hook that kills (or breaks) the worker at a named point of a command's path.

``WECOM_TEST_FAULT_POINT=after_claim`` makes the process SIGKILL itself the
first time a command reaches that point; ``after_decode:raise`` raises
:class:`InjectedFault` there instead, every time (an unexpected error, as a bug
would). The fault suite uses it to prove that a crash at any point ends in
exactly one definite result after the restart, never two ``ok`` and never a
lost command. Unset (the default), the hook costs one ``is None`` test per point.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import Final, Literal

from worker.errors import SettingsError, WorkerError

POINTS: Final = (
    "after_decode",  # the command is decoded, nothing claimed
    "after_claim",  # the code is claimed in the state store, nothing sent
    "request_written",  # the HTTP request went out, no answer read
    "after_answer",  # WeCom answered, the outcome not yet recorded
    "after_record",  # the outcome is recorded, no result published
    "after_publish",  # the result is confirmed by the broker, the command not acked
    "before_ack",  # everything done but the ack
)
SETTING: Final = "WECOM_TEST_FAULT_POINT"


class InjectedFault(WorkerError):
    """Raised at a fault point set to ``raise``: stands for a bug."""


@dataclass(frozen=True, slots=True)
class FaultPoint:
    """Where to fail and how."""

    point: str
    action: Literal["kill", "raise"] = "kill"

    def __call__(self, point: str) -> None:
        """Called at every point a command passes; acts at the configured one."""
        if point != self.point:
            return
        if self.action == "raise":
            raise InjectedFault(f"fault injected at {point}")
        os.kill(os.getpid(), signal.SIGKILL)


def parse_fault_point(text: str | None) -> FaultPoint | None:
    """``POINT`` or ``POINT:kill`` or ``POINT:raise``; None when unset."""
    if not text:
        return None
    point, _, action = text.partition(":")
    if point not in POINTS:
        raise SettingsError(SETTING, f"unknown point {point!r}; one of {', '.join(POINTS)}")
    if action in {"", "kill"}:
        return FaultPoint(point)
    if action == "raise":
        return FaultPoint(point, "raise")
    raise SettingsError(SETTING, f"unknown action {action!r}; kill or raise")
