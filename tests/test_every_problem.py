"""A body with type errors still gets the rules checked: every problem is reported at once."""

from __future__ import annotations

import pytest

from tests.commands import edit, encode, seed_command
from wecom_card_contracts import CommandInvalid, decode_command

OPTIONS = "request.template_card.checkbox.option_list"
BUTTONS = "request.template_card.button_list"


def problems(command: dict[str, object]) -> dict[str | None, str]:
    """Every reported problem of a command, by path."""
    with pytest.raises(CommandInvalid) as raised:
        decode_command(encode(command))
    return {v.path: v.message for v in raised.value.violations}


def test_duplicate_option_id_is_reported_with_a_type_error_elsewhere() -> None:
    """Given agentid as a string and a repeated option id, both are reported; the type leads."""
    command = edit(seed_command("vote_interaction"), "request.agentid", "1000002")
    command = edit(command, f"{OPTIONS}[1].id", "option_id1")
    with pytest.raises(CommandInvalid) as raised:
        decode_command(encode(command))
    assert raised.value.path == "request.agentid"
    found = {v.path: v.message for v in raised.value.violations}
    assert set(found) == {"request.agentid", f"{OPTIONS}[1].id"}
    assert "repeats the one at index 0" in found[f"{OPTIONS}[1].id"]


def test_rules_are_checked_beside_unknown_and_out_of_range_fields() -> None:
    """An unknown field and a bad desc_color do not hide a repeated button key or a missing url."""
    command = edit(seed_command("button_interaction"), "request.template_card.task_id", "t-1")
    command = edit(command, "request.template_card.source.desc_color", 9)
    command = edit(command, f"{BUTTONS}[1].key", "button_key_1")
    command = edit(command, "request.template_card.quote_area.url", "")
    found = problems(command)
    assert set(found) == {
        "request.template_card.task_id",
        "request.template_card.source.desc_color",
        f"{BUTTONS}[1].key",
        "request.template_card.quote_area.url",
    }


def test_values_put_in_place_of_wrong_ones_never_speak() -> None:
    """Two button keys of the wrong type are reported as types, never as repeating each other."""
    command = edit(seed_command("button_interaction"), f"{BUTTONS}[0].key", 1)
    command = edit(command, f"{BUTTONS}[1].key", 2)
    found = problems(command)
    assert set(found) == {f"{BUTTONS}[0].key", f"{BUTTONS}[1].key"}
    assert all("must be a string" in message for message in found.values())


def test_a_problem_that_cannot_be_set_aside_leaves_the_walk_report_alone() -> None:
    """An unknown card_type cannot be repaired: only the walk's findings are reported."""
    command = edit(seed_command("vote_interaction"), "request.template_card.card_type", "poll")
    command = edit(command, f"{OPTIONS}[1].id", "option_id1")
    assert set(problems(command)) == {"request.template_card.card_type"}
