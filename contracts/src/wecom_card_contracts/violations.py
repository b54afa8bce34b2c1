"""What a broken rule looks like: a path into the command, a message, a kind.

A command can break several rules at once; all of them are collected and the
most fundamental one leads (see :class:`ViolationKind`), so the caller fixes
the cause before its consequences.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ViolationKind(enum.IntEnum):
    """Ordered from most to least fundamental; the lowest kind leads the report."""

    BODY = 0  # the bytes are not a message at all
    SHAPE = 1  # the request's mode: exactly one of button / template_card
    MISSING = 2  # a required field is absent, null or empty
    UNKNOWN = 3  # a field the seed does not have here
    TYPE = 4  # a value of the wrong JSON type
    VALUE = 5  # a value out of its range, too long, or repeated


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule. ``path`` is ``None`` when the whole body is at fault."""

    kind: ViolationKind
    path: str | None
    message: str

    def sort_key(self) -> tuple[int, int]:
        """Fundamental kinds first, then the outermost place."""
        depth = 0 if self.path is None else self.path.count(".") + self.path.count("[")
        return (self.kind, depth)

    def __str__(self) -> str:
        return f"{self.path or '(body)'}: {self.message}"


class CommandInvalid(ValueError):
    """The command breaks the contract or the seed's rules; nothing may be sent.

    ``violations`` holds every broken rule found, the leading one first.
    ``command_id`` is the command's id when that field itself was valid, so the
    result can still name the command.
    """

    def __init__(self, violations: list[Violation], command_id: str | None = None) -> None:
        if not violations:
            raise ValueError("CommandInvalid needs at least one violation")
        ordered = sorted(violations, key=Violation.sort_key)
        self.violations: tuple[Violation, ...] = tuple(ordered)
        self.command_id = command_id
        super().__init__(self.summary)

    @property
    def leading(self) -> Violation:
        """The violation to fix first."""
        return self.violations[0]

    @property
    def path(self) -> str | None:
        """The leading violation's path into the command."""
        return self.leading.path

    @property
    def message(self) -> str:
        """The leading violation's message."""
        return self.leading.message

    @property
    def summary(self) -> str:
        """The leading message, with how many more problems there are and where."""
        more = self.violations[1:]
        if not more:
            return self.message
        rest = "; ".join(str(v) for v in more[:5])
        tail = f" (and {len(more) - 5} more)" if len(more) > 5 else ""
        noun = "problem" if len(more) == 1 else "problems"
        return f"{self.message} [also {len(more)} more {noun}: {rest}{tail}]"
