"""JSON Schema of the command and result messages, generated from the Structs.

The schema says what types can: fields, types, required fields, lengths and
ranges. The rules of :mod:`wecom_card_contracts.rules` (required-by-type, uniqueness,
UTF-8 byte limits) are described in ``contracts/RULES.md`` and enforced by
:func:`wecom_card_contracts.decode_command`, not by the schema.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import msgspec

from wecom_card_contracts.command import Command
from wecom_card_contracts.result import Result

SCHEMA_FILE = Path(__file__).with_name("schema.json")
SCHEMA_ID = "https://github.com/wecom-card-worker/wecom-card-worker/contracts/schema.json"
Message = Literal["command", "result"]


def message_schema(message: Message | None = None) -> dict[str, Any]:
    """The JSON Schema (2020-12) of one message, or of both as ``oneOf``."""
    (command_ref, result_ref), components = msgspec.json.schema_components(
        [Command, Result], ref_template="#/$defs/{name}"
    )
    refs = {"command": command_ref, "result": result_ref}
    document: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "wecom-card-worker messages",
        "description": (
            "Card-update commands (upstream -> worker) and their results (worker -> upstream). "
            "Rules the schema cannot express are in contracts/RULES.md."
        ),
    }
    if message is None:
        document["oneOf"] = [refs["command"], refs["result"]]
    else:
        document.update(refs[message])
        document["title"] = f"wecom-card-worker {message}"
    document["$defs"] = components
    return document


def schema_text(message: Message | None = None) -> str:
    """The schema as the ``schema`` command prints it and ``schema.json`` stores it."""
    return json.dumps(message_schema(message), indent=2, ensure_ascii=False, sort_keys=True) + "\n"
