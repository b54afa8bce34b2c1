"""What to tell a caller who made one of the mistakes real callers make.

Collected from the request bodies other SDKs and apps build (fields of other
APIs, serializer habits such as string ids or dropped defaults). Each hint
completes a message that already says what is wrong and where.
"""

from __future__ import annotations

from typing import Any

from msgspec import inspect as mi

SEND_API_FIELDS = {
    "touser": "userids",
    "toparty": "partyids",
    "totag": "tagids",
}


def foreign_field_hint(key: str, parent_path: str) -> str | None:
    """Where a field of another WeCom API belongs, and what to use instead."""
    if key == "task_id":
        if parent_path.endswith("template_card"):
            return (
                "task_id belongs to message/send (it names a card when it is sent); "
                "update_template_card finds the card by response_code. Remove it"
            )
        return (
            "task_id was the key of the retired update_taskcard API; update_template_card "
            "finds the card by response_code. Remove it"
        )
    if key in SEND_API_FIELDS:
        return (
            f"{key} belongs to message/send; update_template_card takes "
            f"request.{SEND_API_FIELDS[key]} (a list) instead"
        )
    if key in {"msgtype", "safe"}:
        return f"{key} belongs to message/send, not to update_template_card. Remove it"
    if key == "button" and parent_path.endswith("template_card"):
        return (
            "button (replace_name) is a request-level field: send request.button instead of "
            "template_card to only replace the clicked button's text, or keep template_card and "
            "use replace_text for the greyed-out button"
        )
    if key == "card_type" and not parent_path.endswith("template_card"):
        return "card_type belongs inside template_card"
    return None


def type_hint(path: str, value: Any, expected: mi.Type) -> str | None:
    """How to write a value of the wrong JSON type the way the seed's examples do."""
    if isinstance(expected, mi.IntType) and isinstance(value, str):
        digits = value.strip()
        if digits.lstrip("-").isdigit():
            return f"send the number {int(digits)}, not a string (types follow the seed's examples)"
    if isinstance(expected, mi.FloatType) and isinstance(value, str):
        return "send a JSON number, not a string"
    if (
        isinstance(expected, mi.ListType)
        and isinstance(value, str | int)
        and not isinstance(value, bool)
    ):
        shown = f'"{value}"' if isinstance(value, str) else str(value)
        if isinstance(value, str) and "|" in value:
            items = ", ".join(f'"{part}"' for part in value.split("|"))
            return f"send a list, one id an item: [{items}]"
        return f"send a list, even for one id: [{shown}]"
    if isinstance(expected, mi.BoolType) and value in (0, 1) and not isinstance(value, bool):
        return f"use {str(bool(value)).lower()}, not {value}"
    if path.endswith("agentid") and isinstance(value, str):
        return "agentid is the app's numeric id (整数)"
    return None


def value_hint(path: str, value: Any) -> str | None:
    """Advice for an out-of-range value that a serializer wrote without the caller meaning it."""
    if path.endswith("aspect_ratio") and value == 0:
        return "leave aspect_ratio out for the default 1.3 (some SDKs send an unset float as 0.0)"
    if path.endswith("card_action.type") and value == 0:
        return "0 (no action) is only allowed on button_interaction cards"
    return None
