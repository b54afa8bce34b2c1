"""Building test commands: the seed's examples wrapped as commands, and edits by path."""

from __future__ import annotations

import copy
import re
from typing import Any

import msgspec

from wecom_card_contracts.examples import seed_examples

DELETE = object()
"""As an edit's value: remove the field."""

_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def seed_command(name: str, command_id: str = "cmd-1", **extra: Any) -> dict[str, Any]:
    """The seed's example ``name`` (``button`` or a card_type) as a command dict."""
    command: dict[str, Any] = {
        "command_id": command_id,
        "request": copy.deepcopy(seed_examples()[name]),
    }
    command.update(extra)
    return command


def steps(path: str) -> list[str | int]:
    """``request.button_list[2].key`` as ``["request", "button_list", 2, "key"]``."""
    return [name or int(index) for name, index in _STEP.findall(path)]


def edit(command: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``command`` with the field at ``path`` set to ``value`` (or deleted)."""
    result = copy.deepcopy(command)
    *parents, last = steps(path)
    node: Any = result
    for step in parents:
        node = node[step]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return result


def encode(command: dict[str, Any]) -> bytes:
    """A command dict as JSON bytes."""
    return msgspec.json.encode(command)
