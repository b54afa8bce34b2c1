"""One breaking case (or more) for every rule of contracts/RULES.md, with its exact error path."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.commands import DELETE, edit, encode, seed_command
from wecom_card_contracts import CommandInvalid, decode_command

RULES_FILE = Path(__file__).parents[1] / "contracts" / "RULES.md"
CARD = "request.template_card"

HAN = "中"  # three bytes in UTF-8
KEY_1024_BYTES = HAN * 341 + "a"  # 342 characters, 1024 bytes
KEY_1025_BYTES = HAN * 341 + "é"  # 342 characters, 1025 bytes
ID_128_BYTES = HAN * 42 + "ab"  # 44 characters, 128 bytes
ID_129_BYTES = HAN * 42 + "abc"  # 45 characters, 129 bytes


@dataclass(frozen=True)
class Case:
    """A seed example with edits; ``path`` is the expected error path, ``None`` for valid."""

    rule: str
    name: str
    base: str
    edits: tuple[tuple[str, Any], ...] = field(default=())
    path: str | None = None

    def command(self) -> dict[str, Any]:
        """The edited command."""
        command = seed_command(self.base)
        for where, value in self.edits:
            command = edit(command, where, value)
        return command


def items(n: int, make: Any) -> list[Any]:
    """``n`` list items from ``make(i)``."""
    return [make(i) for i in range(n)]


def option(i: int) -> dict[str, Any]:
    """A drop-down option with a distinct id."""
    return {"id": f"o{i}", "text": f"option {i}"}


CASES = [
    # The command around the request.
    Case("R-CMD-ID", "empty command_id", "button", (("command_id", ""),), "command_id"),
    Case("R-CMD-ID", "129-char command_id", "button", (("command_id", "c" * 129),), "command_id"),
    Case("R-CMD-ID", "128-char command_id", "button", (("command_id", "c" * 128),)),
    Case("R-CMD-ID", "missing command_id", "button", (("command_id", DELETE),), "command_id"),
    Case("R-CMD-REQUEST", "missing request", "button", (("request", DELETE),), "request"),
    Case("R-CMD-REQUEST", "request is a list", "button", (("request", []),), "request"),
    Case("R-CMD-ISSUED", "string time", "button", (("code_issued_at", "now"),), "code_issued_at"),
    Case("R-CMD-ISSUED", "integer time is fine", "button", (("code_issued_at", 1764000000),)),
    Case(
        "R-CMD-ISSUED-TIME",
        "negative time",
        "button",
        (("code_issued_at", -1.0),),
        "code_issued_at",
    ),
    # Unknown fields and where they belong.
    Case(
        "R-UNKNOWN",
        "task_id in the card",
        "text_notice",
        ((f"{CARD}.task_id", "t"),),
        f"{CARD}.task_id",
    ),
    Case("R-UNKNOWN", "unknown top-level field", "button", (("priority", 1),), "priority"),
    Case(
        "R-UNKNOWN",
        "request-level task_id",
        "button",
        (("request.task_id", "t"),),
        "request.task_id",
    ),
    Case(
        "R-UNKNOWN",
        "field of another card type",
        "button_interaction",
        ((f"{CARD}.vertical_content_list", [{"title": "t"}]),),
        f"{CARD}.vertical_content_list",
    ),
    Case(
        "R-UNKNOWN",
        "renamed field",
        "vote_interaction",
        ((f"{CARD}.checkbox.checkbox_mode", 1),),
        f"{CARD}.checkbox.checkbox_mode",
    ),
    Case(
        "R-UNKNOWN",
        "task_id in button",
        "button",
        (("request.button.task_id", "t"),),
        "request.button.task_id",
    ),
    # null and empty.
    Case(
        "R-NULL",
        "null optional lists",
        "button",
        (("request.partyids", None), ("request.tagids", None)),
    ),
    Case("R-NULL", "null optional object", "text_notice", ((f"{CARD}.quote_area", None),)),
    Case(
        "R-NULL",
        "null required field",
        "button",
        (("request.response_code", None),),
        "request.response_code",
    ),
    Case(
        "R-EMPTY",
        "empty response_code",
        "button",
        (("request.response_code", ""),),
        "request.response_code",
    ),
    Case(
        "R-EMPTY",
        "empty url required by type",
        "text_notice",
        ((f"{CARD}.card_action", {"type": 1, "url": ""}),),
        f"{CARD}.card_action.url",
    ),
    # The request's mode.
    Case(
        "R-MODE",
        "both button and template_card",
        "text_notice",
        (("request.button", {"replace_name": "x"}),),
        "request",
    ),
    Case("R-MODE", "neither", "button", (("request.button", DELETE),), "request"),
    Case("R-MODE", "button null and no card", "button", (("request.button", None),), "request"),
    # Request fields.
    Case(
        "R-AGENTID",
        "numeric string",
        "button",
        (("request.agentid", "1000002"),),
        "request.agentid",
    ),
    Case("R-AGENTID", "missing", "button", (("request.agentid", DELETE),), "request.agentid"),
    Case("R-AGENTID", "float", "button", (("request.agentid", 1.5),), "request.agentid"),
    Case("R-AGENTID", "boolean", "button", (("request.agentid", True),), "request.agentid"),
    Case(
        "R-CODE", "missing", "button", (("request.response_code", DELETE),), "request.response_code"
    ),
    Case("R-CODE", "number", "button", (("request.response_code", 42),), "request.response_code"),
    Case(
        "R-USERIDS",
        "1001 userids",
        "button",
        (("request.userids", items(1001, str)),),
        "request.userids",
    ),
    Case("R-USERIDS", "exactly 1000 userids", "button", (("request.userids", items(1000, str)),)),
    Case(
        "R-USERIDS", "a bare string", "button", (("request.userids", "11608"),), "request.userids"
    ),
    Case("R-USERIDS", "numbers", "button", (("request.userids", [1]),), "request.userids[0]"),
    Case(
        "R-PARTYIDS",
        "101 partyids",
        "button",
        (("request.partyids", items(101, int)),),
        "request.partyids",
    ),
    Case("R-PARTYIDS", "exactly 100", "button", (("request.partyids", items(100, int)),)),
    Case(
        "R-PARTYIDS", "string ids", "button", (("request.partyids", ["2"]),), "request.partyids[0]"
    ),
    Case(
        "R-TAGIDS", "101 tagids", "button", (("request.tagids", items(101, int)),), "request.tagids"
    ),
    Case("R-TAGIDS", "exactly 100", "button", (("request.tagids", items(100, int)),)),
    Case("R-FLAGS", "atall 2", "button", (("request.atall", 2),), "request.atall"),
    Case(
        "R-FLAGS",
        "enable_id_trans 2",
        "text_notice",
        (("request.enable_id_trans", 2),),
        "request.enable_id_trans",
    ),
    Case("R-FLAGS", "enable_id_trans in button mode", "button", (("request.enable_id_trans", 0),)),
    Case(
        "R-REPLACE-NAME",
        "empty",
        "button",
        (("request.button.replace_name", ""),),
        "request.button.replace_name",
    ),
    Case(
        "R-REPLACE-NAME",
        "missing",
        "button",
        (("request.button.replace_name", DELETE),),
        "request.button.replace_name",
    ),
    # The card's type.
    Case(
        "R-CARD-TYPE",
        "missing",
        "text_notice",
        ((f"{CARD}.card_type", DELETE),),
        f"{CARD}.card_type",
    ),
    Case(
        "R-CARD-TYPE",
        "unknown",
        "text_notice",
        ((f"{CARD}.card_type", "markdown"),),
        f"{CARD}.card_type",
    ),
    Case("R-CARD-TYPE", "not an object", "text_notice", ((CARD, "text_notice"),), CARD),
    Case(
        "R-SOURCE",
        "desc_color 4",
        "text_notice",
        ((f"{CARD}.source.desc_color", 4),),
        f"{CARD}.source.desc_color",
    ),
    Case("R-SOURCE", "desc_color on vote", "vote_interaction", ((f"{CARD}.source.desc_color", 2),)),
    # action_menu.
    Case(
        "R-ACTION-LIST",
        "empty",
        "text_notice",
        ((f"{CARD}.action_menu.action_list", []),),
        f"{CARD}.action_menu.action_list",
    ),
    Case(
        "R-ACTION-LIST",
        "four actions",
        "text_notice",
        ((f"{CARD}.action_menu.action_list", items(4, lambda i: {"text": "t", "key": f"k{i}"})),),
        f"{CARD}.action_menu.action_list",
    ),
    Case(
        "R-ACTION-LIST",
        "missing",
        "news_notice",
        ((f"{CARD}.action_menu.action_list", DELETE),),
        f"{CARD}.action_menu.action_list",
    ),
    Case(
        "R-ACTION-TEXT",
        "empty",
        "text_notice",
        ((f"{CARD}.action_menu.action_list[0].text", ""),),
        f"{CARD}.action_menu.action_list[0].text",
    ),
    Case(
        "R-ACTION-KEY",
        "repeated key",
        "button_interaction",
        ((f"{CARD}.action_menu.action_list[1].key", "A"),),
        f"{CARD}.action_menu.action_list[1].key",
    ),
    Case(
        "R-ACTION-KEY",
        "1025 bytes",
        "text_notice",
        ((f"{CARD}.action_menu.action_list[0].key", KEY_1025_BYTES),),
        f"{CARD}.action_menu.action_list[0].key",
    ),
    Case(
        "R-ACTION-KEY",
        "1024 bytes",
        "text_notice",
        ((f"{CARD}.action_menu.action_list[0].key", KEY_1024_BYTES),),
    ),
    Case(
        "R-ACTION-KEY",
        "missing",
        "text_notice",
        ((f"{CARD}.action_menu.action_list[0].key", DELETE),),
        f"{CARD}.action_menu.action_list[0].key",
    ),
    # Titles.
    Case(
        "R-TEXT-TITLE",
        "neither title nor sub_title_text",
        "text_notice",
        ((f"{CARD}.main_title", DELETE), (f"{CARD}.sub_title_text", DELETE)),
        f"{CARD}.main_title.title",
    ),
    Case("R-TEXT-TITLE", "sub_title_text alone", "text_notice", ((f"{CARD}.main_title", DELETE),)),
    Case("R-TEXT-TITLE", "title alone", "text_notice", ((f"{CARD}.sub_title_text", DELETE),)),
    Case(
        "R-TITLE",
        "news without title",
        "news_notice",
        ((f"{CARD}.main_title.title", DELETE),),
        f"{CARD}.main_title.title",
    ),
    Case(
        "R-TITLE",
        "button card without main_title",
        "button_interaction",
        ((f"{CARD}.main_title", DELETE),),
        f"{CARD}.main_title",
    ),
    Case(
        "R-TITLE",
        "vote with empty title",
        "vote_interaction",
        ((f"{CARD}.main_title.title", ""),),
        f"{CARD}.main_title.title",
    ),
    Case(
        "R-TITLE",
        "multiple with empty title",
        "multiple_interaction",
        ((f"{CARD}.main_title.title", ""),),
        f"{CARD}.main_title.title",
    ),
    # quote_area.
    Case(
        "R-QUOTE",
        "type 1 without url",
        "text_notice",
        ((f"{CARD}.quote_area.url", DELETE),),
        f"{CARD}.quote_area.url",
    ),
    Case(
        "R-QUOTE",
        "type 2 without appid",
        "news_notice",
        ((f"{CARD}.quote_area.type", 2),),
        f"{CARD}.quote_area.appid",
    ),
    Case(
        "R-QUOTE",
        "type 3",
        "button_interaction",
        ((f"{CARD}.quote_area.type", 3),),
        f"{CARD}.quote_area.type",
    ),
    # horizontal_content_list.
    Case(
        "R-HORIZONTAL",
        "seven entries",
        "text_notice",
        ((f"{CARD}.horizontal_content_list", items(7, lambda i: {"keyname": f"k{i}"})),),
        f"{CARD}.horizontal_content_list",
    ),
    Case(
        "R-HORIZONTAL",
        "empty list is fine",
        "text_notice",
        ((f"{CARD}.horizontal_content_list", []),),
    ),
    Case(
        "R-HORIZONTAL",
        "missing keyname",
        "news_notice",
        ((f"{CARD}.horizontal_content_list[0].keyname", DELETE),),
        f"{CARD}.horizontal_content_list[0].keyname",
    ),
    Case(
        "R-HORIZONTAL",
        "type 1 with empty url",
        "text_notice",
        ((f"{CARD}.horizontal_content_list[1].url", ""),),
        f"{CARD}.horizontal_content_list[1].url",
    ),
    Case(
        "R-HORIZONTAL",
        "type 2 without media_id",
        "button_interaction",
        ((f"{CARD}.horizontal_content_list[2].media_id", DELETE),),
        f"{CARD}.horizontal_content_list[2].media_id",
    ),
    Case(
        "R-HORIZONTAL",
        "type 3 without userid",
        "text_notice",
        ((f"{CARD}.horizontal_content_list[3].userid", DELETE),),
        f"{CARD}.horizontal_content_list[3].userid",
    ),
    Case(
        "R-HORIZONTAL",
        "type 4",
        "text_notice",
        ((f"{CARD}.horizontal_content_list[0].type", 4),),
        f"{CARD}.horizontal_content_list[0].type",
    ),
    # jump_list.
    Case(
        "R-JUMP",
        "four jumps",
        "text_notice",
        ((f"{CARD}.jump_list", items(4, lambda i: {"title": f"j{i}"})),),
        f"{CARD}.jump_list",
    ),
    Case(
        "R-JUMP",
        "empty title",
        "news_notice",
        ((f"{CARD}.jump_list[0].title", ""),),
        f"{CARD}.jump_list[0].title",
    ),
    Case(
        "R-JUMP",
        "type 2 without appid",
        "text_notice",
        ((f"{CARD}.jump_list[1].appid", DELETE),),
        f"{CARD}.jump_list[1].appid",
    ),
    Case(
        "R-JUMP",
        "type 1 without url",
        "text_notice",
        ((f"{CARD}.jump_list[0].url", DELETE),),
        f"{CARD}.jump_list[0].url",
    ),
    # card_action.
    Case(
        "R-CARD-ACTION",
        "text_notice without card_action",
        "text_notice",
        ((f"{CARD}.card_action", DELETE),),
        f"{CARD}.card_action",
    ),
    Case(
        "R-CARD-ACTION",
        "news_notice without card_action",
        "news_notice",
        ((f"{CARD}.card_action", DELETE),),
        f"{CARD}.card_action",
    ),
    Case(
        "R-CARD-ACTION",
        "type missing",
        "text_notice",
        ((f"{CARD}.card_action.type", DELETE),),
        f"{CARD}.card_action.type",
    ),
    Case(
        "R-CARD-ACTION",
        "type 0 on text_notice",
        "text_notice",
        ((f"{CARD}.card_action.type", 0),),
        f"{CARD}.card_action.type",
    ),
    Case(
        "R-CARD-ACTION",
        "type 2 without appid",
        "news_notice",
        ((f"{CARD}.card_action.appid", DELETE),),
        f"{CARD}.card_action.appid",
    ),
    Case(
        "R-CARD-ACTION",
        "type 1 without url",
        "text_notice",
        ((f"{CARD}.card_action", {"type": 1, "appid": "a"}),),
        f"{CARD}.card_action.url",
    ),
    Case(
        "R-CARD-ACTION",
        "type 0 on button_interaction",
        "button_interaction",
        ((f"{CARD}.card_action", {"type": 0}),),
    ),
    Case(
        "R-CARD-ACTION",
        "button_interaction without card_action",
        "button_interaction",
        ((f"{CARD}.card_action", DELETE),),
    ),
    # news_notice images.
    Case(
        "R-NEWS-IMAGE",
        "neither image",
        "news_notice",
        ((f"{CARD}.card_image", DELETE), (f"{CARD}.image_text_area", DELETE)),
        f"{CARD}.card_image",
    ),
    Case("R-NEWS-IMAGE", "card_image alone", "news_notice", ((f"{CARD}.image_text_area", DELETE),)),
    Case("R-NEWS-IMAGE", "image_text_area alone", "news_notice", ((f"{CARD}.card_image", DELETE),)),
    Case(
        "R-IMAGE-TEXT",
        "empty image_url",
        "news_notice",
        ((f"{CARD}.image_text_area.image_url", ""),),
        f"{CARD}.image_text_area.image_url",
    ),
    Case(
        "R-IMAGE-TEXT",
        "type 2 without appid",
        "news_notice",
        ((f"{CARD}.image_text_area.type", 2),),
        f"{CARD}.image_text_area.appid",
    ),
    Case(
        "R-IMAGE-TEXT",
        "type 5",
        "news_notice",
        ((f"{CARD}.image_text_area.type", 5),),
        f"{CARD}.image_text_area.type",
    ),
    Case(
        "R-CARD-IMAGE",
        "empty url",
        "news_notice",
        ((f"{CARD}.card_image.url", ""),),
        f"{CARD}.card_image.url",
    ),
    Case(
        "R-CARD-IMAGE",
        "ratio 2.25",
        "news_notice",
        ((f"{CARD}.card_image.aspect_ratio", 2.25),),
        f"{CARD}.card_image.aspect_ratio",
    ),
    Case(
        "R-CARD-IMAGE",
        "ratio 1.29",
        "news_notice",
        ((f"{CARD}.card_image.aspect_ratio", 1.29),),
        f"{CARD}.card_image.aspect_ratio",
    ),
    Case(
        "R-CARD-IMAGE",
        "ratio 0.0",
        "news_notice",
        ((f"{CARD}.card_image.aspect_ratio", 0.0),),
        f"{CARD}.card_image.aspect_ratio",
    ),
    Case("R-CARD-IMAGE", "ratio 1.3", "news_notice", ((f"{CARD}.card_image.aspect_ratio", 1.3),)),
    Case(
        "R-CARD-IMAGE",
        "ratio 2.2499",
        "news_notice",
        ((f"{CARD}.card_image.aspect_ratio", 2.2499),),
    ),
    Case(
        "R-CARD-IMAGE",
        "ratio 2 as an integer",
        "news_notice",
        ((f"{CARD}.card_image.aspect_ratio", 2),),
    ),
    # vertical_content_list.
    Case(
        "R-VERTICAL",
        "five entries",
        "news_notice",
        ((f"{CARD}.vertical_content_list", items(5, lambda i: {"title": f"v{i}"})),),
        f"{CARD}.vertical_content_list",
    ),
    Case(
        "R-VERTICAL",
        "empty title",
        "news_notice",
        ((f"{CARD}.vertical_content_list[0].title", ""),),
        f"{CARD}.vertical_content_list[0].title",
    ),
    # button_selection.
    Case(
        "R-SELECTION",
        "question_key of 1025 bytes",
        "button_interaction",
        ((f"{CARD}.button_selection.question_key", KEY_1025_BYTES),),
        f"{CARD}.button_selection.question_key",
    ),
    Case(
        "R-SELECTION",
        "eleven options",
        "button_interaction",
        ((f"{CARD}.button_selection.option_list", items(11, option)),),
        f"{CARD}.button_selection.option_list",
    ),
    Case(
        "R-SELECTION",
        "ten options",
        "button_interaction",
        ((f"{CARD}.button_selection.option_list", items(10, option)),),
    ),
    Case(
        "R-SELECTION",
        "no options",
        "button_interaction",
        ((f"{CARD}.button_selection.option_list", []),),
        f"{CARD}.button_selection.option_list",
    ),
    Case(
        "R-SELECTION",
        "repeated option id",
        "button_interaction",
        ((f"{CARD}.button_selection.option_list[1].id", "btn_selection_id1"),),
        f"{CARD}.button_selection.option_list[1].id",
    ),
    Case(
        "R-SELECTION",
        "option id of 129 bytes",
        "button_interaction",
        ((f"{CARD}.button_selection.option_list[0].id", ID_129_BYTES),),
        f"{CARD}.button_selection.option_list[0].id",
    ),
    Case(
        "R-SELECTION",
        "option id of 128 bytes",
        "button_interaction",
        ((f"{CARD}.button_selection.option_list[0].id", ID_128_BYTES),),
    ),
    Case(
        "R-SELECTION",
        "empty option text",
        "button_interaction",
        ((f"{CARD}.button_selection.option_list[0].text", ""),),
        f"{CARD}.button_selection.option_list[0].text",
    ),
    Case(
        "R-SELECTION",
        "missing question_key",
        "button_interaction",
        ((f"{CARD}.button_selection.question_key", DELETE),),
        f"{CARD}.button_selection.question_key",
    ),
    # button_list.
    Case(
        "R-BUTTON-LIST",
        "missing",
        "button_interaction",
        ((f"{CARD}.button_list", DELETE),),
        f"{CARD}.button_list",
    ),
    Case(
        "R-BUTTON-LIST",
        "empty",
        "button_interaction",
        ((f"{CARD}.button_list", []),),
        f"{CARD}.button_list",
    ),
    Case(
        "R-BUTTON-LIST",
        "seven buttons",
        "button_interaction",
        ((f"{CARD}.button_list", items(7, lambda i: {"text": "b", "key": f"k{i}"})),),
        f"{CARD}.button_list",
    ),
    Case(
        "R-BUTTON-LIST",
        "six buttons",
        "button_interaction",
        ((f"{CARD}.button_list", items(6, lambda i: {"text": "b", "key": f"k{i}"})),),
    ),
    Case(
        "R-BUTTON-LIST",
        "empty text",
        "button_interaction",
        ((f"{CARD}.button_list[0].text", ""),),
        f"{CARD}.button_list[0].text",
    ),
    Case(
        "R-BUTTON-LIST",
        "type 2",
        "button_interaction",
        ((f"{CARD}.button_list[0].type", 2),),
        f"{CARD}.button_list[0].type",
    ),
    Case(
        "R-BUTTON-LIST",
        "callback without key",
        "button_interaction",
        ((f"{CARD}.button_list[1].key", DELETE),),
        f"{CARD}.button_list[1].key",
    ),
    Case(
        "R-BUTTON-LIST",
        "type 0 with empty key",
        "button_interaction",
        ((f"{CARD}.button_list[0]", {"type": 0, "text": "b", "key": ""}),),
        f"{CARD}.button_list[0].key",
    ),
    Case(
        "R-BUTTON-LIST",
        "repeated key",
        "button_interaction",
        ((f"{CARD}.button_list[1].key", "button_key_1"),),
        f"{CARD}.button_list[1].key",
    ),
    Case(
        "R-BUTTON-LIST",
        "url button without url",
        "button_interaction",
        ((f"{CARD}.button_list[0]", {"type": 1, "text": "b"}),),
        f"{CARD}.button_list[0].url",
    ),
    Case(
        "R-BUTTON-LIST",
        "url button",
        "button_interaction",
        ((f"{CARD}.button_list[0]", {"type": 1, "text": "b", "url": "https://x"}),),
    ),
    Case(
        "R-BUTTON-LIST",
        "style out of 1~4 is fine",
        "button_interaction",
        ((f"{CARD}.button_list[0].style", 9),),
    ),
    Case(
        "R-BUTTON-LIST",
        "key of 1024 bytes",
        "button_interaction",
        ((f"{CARD}.button_list[0].key", KEY_1024_BYTES),),
    ),
    Case(
        "R-BUTTON-LIST",
        "key of 1025 bytes in 342 characters",
        "button_interaction",
        ((f"{CARD}.button_list[0].key", KEY_1025_BYTES),),
        f"{CARD}.button_list[0].key",
    ),
    # checkbox.
    Case(
        "R-CHECKBOX",
        "missing checkbox",
        "vote_interaction",
        ((f"{CARD}.checkbox", DELETE),),
        f"{CARD}.checkbox",
    ),
    Case(
        "R-CHECKBOX",
        "mode 2",
        "vote_interaction",
        ((f"{CARD}.checkbox.mode", 2),),
        f"{CARD}.checkbox.mode",
    ),
    Case(
        "R-CHECKBOX",
        "21 options",
        "vote_interaction",
        (
            (
                f"{CARD}.checkbox.option_list",
                items(21, lambda i: {"id": f"o{i}", "text": "t", "is_checked": False}),
            ),
        ),
        f"{CARD}.checkbox.option_list",
    ),
    Case(
        "R-CHECKBOX",
        "20 options",
        "vote_interaction",
        (
            (
                f"{CARD}.checkbox.option_list",
                items(20, lambda i: {"id": f"o{i}", "text": "t", "is_checked": False}),
            ),
        ),
    ),
    Case(
        "R-CHECKBOX",
        "repeated option id",
        "vote_interaction",
        ((f"{CARD}.checkbox.option_list[1].id", "option_id1"),),
        f"{CARD}.checkbox.option_list[1].id",
    ),
    Case(
        "R-CHECKBOX",
        "is_checked dropped",
        "vote_interaction",
        ((f"{CARD}.checkbox.option_list[1].is_checked", DELETE),),
        f"{CARD}.checkbox.option_list[1].is_checked",
    ),
    Case(
        "R-CHECKBOX",
        "is_checked as 1",
        "vote_interaction",
        ((f"{CARD}.checkbox.option_list[0].is_checked", 1),),
        f"{CARD}.checkbox.option_list[0].is_checked",
    ),
    Case(
        "R-CHECKBOX",
        "disable as a string",
        "vote_interaction",
        ((f"{CARD}.checkbox.disable", "no"),),
        f"{CARD}.checkbox.disable",
    ),
    Case(
        "R-CHECKBOX",
        "question_key of 1025 bytes",
        "vote_interaction",
        ((f"{CARD}.checkbox.question_key", KEY_1025_BYTES),),
        f"{CARD}.checkbox.question_key",
    ),
    Case(
        "R-CHECKBOX",
        "option id of 129 bytes",
        "vote_interaction",
        ((f"{CARD}.checkbox.option_list[0].id", ID_129_BYTES),),
        f"{CARD}.checkbox.option_list[0].id",
    ),
    # submit_button.
    Case(
        "R-SUBMIT",
        "missing key",
        "vote_interaction",
        ((f"{CARD}.submit_button.key", DELETE),),
        f"{CARD}.submit_button.key",
    ),
    Case(
        "R-SUBMIT",
        "empty key",
        "multiple_interaction",
        ((f"{CARD}.submit_button.key", ""),),
        f"{CARD}.submit_button.key",
    ),
    Case(
        "R-SUBMIT",
        "text left out",
        "multiple_interaction",
        ((f"{CARD}.submit_button.text", DELETE),),
    ),
    Case(
        "R-SUBMIT",
        "key of 1025 bytes",
        "vote_interaction",
        ((f"{CARD}.submit_button.key", KEY_1025_BYTES),),
        f"{CARD}.submit_button.key",
    ),
    # select_list.
    Case(
        "R-SELECT-LIST",
        "empty",
        "multiple_interaction",
        ((f"{CARD}.select_list", []),),
        f"{CARD}.select_list",
    ),
    Case(
        "R-SELECT-LIST",
        "missing",
        "multiple_interaction",
        ((f"{CARD}.select_list", DELETE),),
        f"{CARD}.select_list",
    ),
    Case(
        "R-SELECT-LIST",
        "four selects",
        "multiple_interaction",
        (
            (
                f"{CARD}.select_list",
                items(4, lambda i: {"question_key": f"q{i}", "option_list": [option(i)]}),
            ),
        ),
        f"{CARD}.select_list",
    ),
    Case(
        "R-SELECT-LIST",
        "repeated question_key",
        "multiple_interaction",
        ((f"{CARD}.select_list[1].question_key", "question_key1"),),
        f"{CARD}.select_list[1].question_key",
    ),
    Case(
        "R-SELECT-LIST",
        "eleven options",
        "multiple_interaction",
        ((f"{CARD}.select_list[0].option_list", items(11, option)),),
        f"{CARD}.select_list[0].option_list",
    ),
    Case(
        "R-SELECT-LIST",
        "repeated option id within a list",
        "multiple_interaction",
        ((f"{CARD}.select_list[0].option_list[1].id", "selection_id1"),),
        f"{CARD}.select_list[0].option_list[1].id",
    ),
    Case(
        "R-SELECT-LIST",
        "same option id in two lists is fine",
        "multiple_interaction",
        ((f"{CARD}.select_list[1].option_list[0].id", "selection_id1"),),
    ),
    Case(
        "R-SELECT-LIST",
        "question_key of 1025 bytes",
        "multiple_interaction",
        ((f"{CARD}.select_list[0].question_key", KEY_1025_BYTES),),
        f"{CARD}.select_list[0].question_key",
    ),
    Case(
        "R-SELECT-LIST",
        "option id of 129 bytes",
        "multiple_interaction",
        ((f"{CARD}.select_list[1].option_list[1].id", ID_129_BYTES),),
        f"{CARD}.select_list[1].option_list[1].id",
    ),
    # replace_text.
    Case(
        "R-REPLACE-TEXT",
        "on text_notice",
        "text_notice",
        ((f"{CARD}.replace_text", "done"),),
        f"{CARD}.replace_text",
    ),
    Case(
        "R-REPLACE-TEXT",
        "on vote_interaction",
        "vote_interaction",
        ((f"{CARD}.replace_text", "done"),),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c.rule}: {c.name}" for c in CASES])
def test_rule_case(case: Case) -> None:
    """Each case is accepted, or rejected with exactly the expected leading path."""
    body = encode(case.command())
    if case.path is None:
        decode_command(body)
        return
    with pytest.raises(CommandInvalid) as caught:
        decode_command(body)
    assert caught.value.path == case.path, caught.value.summary
    assert caught.value.message


def test_every_rule_in_the_table_has_a_breaking_case() -> None:
    """RULES.md and this file name the same rules, and each rule has a rejected case."""
    documented = set(re.findall(r"^\| (R-[A-Z-]+) \|", RULES_FILE.read_text("utf-8"), re.MULTILINE))
    breaking = {case.rule for case in CASES if case.path is not None}
    assert documented == breaking
