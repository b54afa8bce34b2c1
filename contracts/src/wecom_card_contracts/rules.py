"""The seed's rules that types cannot say, checked on a decoded command.

Each check names its rule id from ``contracts/RULES.md`` (the table of every
rule with its line in the seed). A check appends a :class:`Violation` and goes
on, so one pass reports every problem of a command.

Paths are built only when a rule is broken: the valid path, which is the hot
one, allocates nothing but the sets used for uniqueness.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from wecom_card_contracts.cards import (
    ActionMenu,
    Button,
    ButtonInteractionCard,
    ButtonSelection,
    CardAction,
    Checkbox,
    CheckboxOption,
    HorizontalContent,
    ImageTextArea,
    JumpItem,
    MainTitle,
    MultipleInteractionCard,
    NewsNoticeCard,
    QuoteArea,
    SelectOption,
    SubmitButton,
    TemplateCard,
    TextNoticeCard,
    VoteInteractionCard,
)
from wecom_card_contracts.command import Command
from wecom_card_contracts.request import UpdateTemplateCardRequest
from wecom_card_contracts.violations import Violation, ViolationKind

KEY_MAX_BYTES = 1024
OPTION_ID_MAX_BYTES = 128
CARD = "request.template_card"

LINK_FIELD = {1: "url", 2: "appid"}
HORIZONTAL_FIELD = {1: "url", 2: "media_id", 3: "userid"}
HORIZONTAL_MEANING = {1: "a url link", 2: "an attachment download", 3: "a member's details"}
LINK_MEANING = {1: "a url link", 2: "a mini program"}


class RuleCheck:
    """Collects the violations of one command."""

    __slots__ = ("violations",)

    def __init__(self) -> None:
        self.violations: list[Violation] = []

    def add(self, kind: ViolationKind, path: str, message: str) -> None:
        """Record one broken rule."""
        self.violations.append(Violation(kind, path, message))

    def missing(self, path: str, message: str) -> None:
        """Record a required field that is absent or empty (R-EMPTY: empty counts as missing)."""
        self.add(ViolationKind.MISSING, path, message)

    def required_text(self, value: str | None, path: str, what: str) -> None:
        """A required string must not be empty (docs/contract.md ruling: empty means missing)."""
        if not value:
            self.missing(path, f"{what} is required and must not be empty")

    def max_bytes(self, value: str | None, path: str, limit: int, what: str) -> None:
        """Keys and ids are limited in UTF-8 bytes, not characters (R-KEY-BYTES, R-ID-BYTES)."""
        # A string of at most limit/4 characters cannot exceed the limit: skip the encode.
        if value is None or len(value) <= limit // 4:
            return
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > limit:
            self.add(
                ViolationKind.VALUE,
                path,
                f"{what} is {size} bytes in UTF-8 ({len(value)} characters); "
                f"the seed allows at most {limit} bytes (最长支持{limit}字节): shorten it",
            )

    def unique(self, values: Iterable[tuple[int, str | None]], path_of: str, what: str) -> None:
        """Keys and ids must not repeat within their list (R-UNIQUE-*)."""
        seen: dict[str, int] = {}
        for index, value in values:
            if not value:
                continue
            first = seen.setdefault(value, index)
            if first != index:
                self.add(
                    ViolationKind.VALUE,
                    path_of.format(index),
                    f"{what} {value!r} repeats the one at index {first}; "
                    "each must be unique (不可重复)",
                )

    def link(self, link_type: int | None, url: str | None, appid: str | None, path: str) -> None:
        """A link's target is required by its type: 1 needs url, 2 needs appid (R-LINK-*)."""
        if link_type == 1 and not url:
            self.missing(
                f"{path}.url",
                f"{path.rsplit('.', 1)[-1]}.url is required when type is 1 (a url link); "
                "set url, or change type",
            )
        elif link_type == 2 and not appid:
            self.missing(
                f"{path}.appid",
                f"{path.rsplit('.', 1)[-1]}.appid is required when type is 2 (a mini program); "
                "set appid, or change type",
            )


def check_command(command: Command) -> list[Violation]:
    """Every rule of the WeCom page and docs/contract.md that the Structs' types cannot say."""
    check = RuleCheck()
    check_request(check, command.request)
    check_issued_at(check, command.code_issued_at)
    return check.violations


ISSUED_AT_ADVICE = (
    "send the Unix time in seconds at which upstream obtained response_code "
    "(such as 1764000000.0), or leave code_issued_at out"
)


def check_issued_at(check: RuleCheck, issued_at: float | None) -> None:
    """R-CMD-ISSUED-TIME: a time a code can have been issued at (NaN would never expire)."""
    if issued_at is None:
        return
    if not math.isfinite(issued_at):
        check.add(
            ViolationKind.VALUE,
            "code_issued_at",
            f"code_issued_at must be a finite number, got {issued_at}; {ISSUED_AT_ADVICE}",
        )
    elif issued_at < 0:
        check.add(
            ViolationKind.VALUE,
            "code_issued_at",
            f"code_issued_at must not be negative, got {issued_at}; {ISSUED_AT_ADVICE}",
        )


def check_request(check: RuleCheck, request: UpdateTemplateCardRequest) -> None:
    """R-MODE, R-CODE and the card's own rules."""
    shape = mode_violation(
        has_button=request.button is not None, has_card=request.template_card is not None
    )
    if shape is not None:
        check.violations.append(shape)
    check.required_text(request.response_code, "request.response_code", "response_code")
    if request.button is not None:
        check.required_text(
            request.button.replace_name, "request.button.replace_name", "button.replace_name"
        )
    if request.template_card is not None:
        check_card(check, request.template_card)


def mode_violation(*, has_button: bool, has_card: bool) -> Violation | None:
    """R-MODE: exactly one of ``button`` / ``template_card``."""
    if has_button and has_card:
        return Violation(
            ViolationKind.SHAPE,
            "request",
            "the request has both button and template_card; send exactly one: button to "
            "only replace the clicked button's text, template_card to replace the card",
        )
    if not has_button and not has_card:
        return Violation(
            ViolationKind.SHAPE,
            "request",
            "the request has neither button nor template_card; send exactly one: "
            'button ({"replace_name": ...}) or template_card (a new card)',
        )
    return None


def check_card(check: RuleCheck, card: TemplateCard) -> None:
    """Dispatch on ``card_type``."""
    match card:
        case TextNoticeCard():
            check_text_notice(check, card)
        case NewsNoticeCard():
            check_news_notice(check, card)
        case ButtonInteractionCard():
            check_button_interaction(check, card)
        case VoteInteractionCard():
            check_vote_interaction(check, card)
        case MultipleInteractionCard():
            check_multiple_interaction(check, card)


def check_text_notice(check: RuleCheck, card: TextNoticeCard) -> None:
    """R-TEXT-TITLE, R-CARD-ACTION-TYPE and the shared parts."""
    title = card.main_title.title if card.main_title is not None else None
    if not title and not card.sub_title_text:
        check.missing(
            f"{CARD}.main_title.title",
            "a text_notice card needs main_title.title or sub_title_text (不可本字段和"
            "sub_title_text都不填); set at least one",
        )
    check_card_action(check, card.card_action, required_type=True, card_type="text_notice")
    check_action_menu(check, card.action_menu)
    check_quote_area(check, card.quote_area)
    check_horizontal(check, card.horizontal_content_list)
    check_jump_list(check, card.jump_list)


def check_news_notice(check: RuleCheck, card: NewsNoticeCard) -> None:
    """R-TITLE, R-NEWS-IMAGE, R-CARD-ACTION-TYPE and the shared parts."""
    check_main_title(check, card.main_title, "news_notice")
    if card.card_image is None and card.image_text_area is None:
        check.missing(
            f"{CARD}.card_image",
            "a news_notice card needs card_image or image_text_area (两者必填一个字段); "
            "add one of them",
        )
    if card.card_image is not None:
        check.required_text(card.card_image.url, f"{CARD}.card_image.url", "card_image.url")
    check_image_text_area(check, card.image_text_area)
    if card.vertical_content_list:
        for i, item in enumerate(card.vertical_content_list):
            check.required_text(
                item.title,
                f"{CARD}.vertical_content_list[{i}].title",
                "vertical_content_list.title",
            )
    check_card_action(check, card.card_action, required_type=True, card_type="news_notice")
    check_action_menu(check, card.action_menu)
    check_quote_area(check, card.quote_area)
    check_horizontal(check, card.horizontal_content_list)
    check_jump_list(check, card.jump_list)


def check_button_interaction(check: RuleCheck, card: ButtonInteractionCard) -> None:
    """R-TITLE, R-BUTTON-*, R-SELECTION-* and the shared parts."""
    check_main_title(check, card.main_title, "button_interaction")
    if card.card_action is not None:
        check_card_action(
            check, card.card_action, required_type=False, card_type="button_interaction"
        )
    check_action_menu(check, card.action_menu)
    check_quote_area(check, card.quote_area)
    check_horizontal(check, card.horizontal_content_list)
    check_button_selection(check, card.button_selection)
    check_button_list(check, card.button_list)


def check_vote_interaction(check: RuleCheck, card: VoteInteractionCard) -> None:
    """R-TITLE, R-CHECKBOX-*, R-SUBMIT-KEY."""
    check_main_title(check, card.main_title, "vote_interaction")
    check_checkbox(check, card.checkbox)
    check_submit_button(check, card.submit_button)


def check_multiple_interaction(check: RuleCheck, card: MultipleInteractionCard) -> None:
    """R-TITLE, R-SELECT-*, R-SUBMIT-KEY."""
    check_main_title(check, card.main_title, "multiple_interaction")
    for i, select in enumerate(card.select_list):
        path = f"{CARD}.select_list[{i}]"
        check.required_text(select.question_key, f"{path}.question_key", "select_list.question_key")
        check.max_bytes(select.question_key, f"{path}.question_key", KEY_MAX_BYTES, "question_key")
        check_options(check, select.option_list, f"{path}.option_list")
    check.unique(
        ((i, s.question_key) for i, s in enumerate(card.select_list)),
        f"{CARD}.select_list[{{}}].question_key",
        "question_key",
    )
    check_submit_button(check, card.submit_button)


def check_main_title(check: RuleCheck, main_title: MainTitle, card_type: str) -> None:
    """R-TITLE: ``main_title.title`` is 是 (required) on every card type but text_notice."""
    if not main_title.title:
        check.missing(
            f"{CARD}.main_title.title",
            f"main_title.title is required on a {card_type} card and must not be empty",
        )


def check_card_action(
    check: RuleCheck, action: CardAction, *, required_type: bool, card_type: str
) -> None:
    """R-CARD-ACTION-TYPE and R-LINK-CARD-ACTION."""
    path = f"{CARD}.card_action"
    if required_type and action.type is None:
        check.missing(
            f"{path}.type",
            f"card_action.type is required on a {card_type} card: 1 (open url) or "
            "2 (open mini program)",
        )
    elif required_type and action.type == 0:
        check.add(
            ViolationKind.VALUE,
            f"{path}.type",
            f"card_action.type must be 1 (open url) or 2 (open mini program) on a {card_type} "
            "card; 0 (no action) is only allowed on button_interaction",
        )
    check.link(action.type, action.url, action.appid, path)


def check_action_menu(check: RuleCheck, menu: ActionMenu | None) -> None:
    """R-ACTION-*: text and key required, key at most 1024 bytes, keys unique."""
    if menu is None:
        return
    base = f"{CARD}.action_menu.action_list"
    for i, item in enumerate(menu.action_list):
        check.required_text(item.text, f"{base}[{i}].text", "action_list.text")
        check.required_text(item.key, f"{base}[{i}].key", "action_list.key")
        check.max_bytes(item.key, f"{base}[{i}].key", KEY_MAX_BYTES, "action_list.key")
    check.unique(
        ((i, item.key) for i, item in enumerate(menu.action_list)),
        f"{base}[{{}}].key",
        "action key",
    )


def check_quote_area(check: RuleCheck, quote: QuoteArea | None) -> None:
    """R-LINK-QUOTE."""
    if quote is not None:
        check.link(quote.type, quote.url, quote.appid, f"{CARD}.quote_area")


def check_image_text_area(check: RuleCheck, area: ImageTextArea | None) -> None:
    """R-IMAGE-TEXT: image_url required; R-LINK-IMAGE-TEXT."""
    if area is None:
        return
    path = f"{CARD}.image_text_area"
    check.required_text(area.image_url, f"{path}.image_url", "image_text_area.image_url")
    check.link(area.type, area.url, area.appid, path)


def check_horizontal(check: RuleCheck, items: list[HorizontalContent] | None) -> None:
    """R-HORIZONTAL-*: keyname required; type 1 url, 2 media_id, 3 userid."""
    if not items:
        return
    for i, item in enumerate(items):
        path = f"{CARD}.horizontal_content_list[{i}]"
        check.required_text(item.keyname, f"{path}.keyname", "horizontal_content_list.keyname")
        field = HORIZONTAL_FIELD.get(item.type or 0)
        if field is not None and not getattr(item, field):
            check.missing(
                f"{path}.{field}",
                f"horizontal_content_list.{field} is required when type is {item.type} "
                f"({HORIZONTAL_MEANING[item.type or 0]}); set {field}, or change type",
            )


def check_jump_list(check: RuleCheck, items: list[JumpItem] | None) -> None:
    """R-JUMP-*: title required; R-LINK-JUMP."""
    if not items:
        return
    for i, item in enumerate(items):
        path = f"{CARD}.jump_list[{i}]"
        check.required_text(item.title, f"{path}.title", "jump_list.title")
        check.link(item.type, item.url, item.appid, path)


def check_button_selection(check: RuleCheck, selection: ButtonSelection | None) -> None:
    """R-SELECTION-*: question_key required and at most 1024 bytes; options checked."""
    if selection is None:
        return
    path = f"{CARD}.button_selection"
    check.required_text(
        selection.question_key, f"{path}.question_key", "button_selection.question_key"
    )
    check.max_bytes(selection.question_key, f"{path}.question_key", KEY_MAX_BYTES, "question_key")
    check_options(check, selection.option_list, f"{path}.option_list")


def check_button_list(check: RuleCheck, buttons: list[Button]) -> None:
    """R-BUTTON-*: text required; key required for type 0, url for type 1; keys unique."""
    base = f"{CARD}.button_list"
    for i, button in enumerate(buttons):
        check.required_text(button.text, f"{base}[{i}].text", "button_list.text")
        if not button.type and not button.key:
            check.missing(
                f"{base}[{i}].key",
                "button_list.key is required when type is 0 or absent (a callback button); "
                "set key, or set type 1 with a url",
            )
        elif button.type == 1 and not button.url:
            check.missing(
                f"{base}[{i}].url",
                "button_list.url is required when type is 1 (a url button); set url",
            )
        check.max_bytes(button.key, f"{base}[{i}].key", KEY_MAX_BYTES, "button_list.key")
    check.unique(((i, b.key) for i, b in enumerate(buttons)), f"{base}[{{}}].key", "button key")


def check_checkbox(check: RuleCheck, checkbox: Checkbox) -> None:
    """R-CHECKBOX-*: question_key at most 1024 bytes; option ids at most 128 bytes, unique."""
    path = f"{CARD}.checkbox"
    check.required_text(checkbox.question_key, f"{path}.question_key", "checkbox.question_key")
    check.max_bytes(checkbox.question_key, f"{path}.question_key", KEY_MAX_BYTES, "question_key")
    check_options(check, checkbox.option_list, f"{path}.option_list")


def check_options(
    check: RuleCheck, options: Sequence[SelectOption | CheckboxOption], base: str
) -> None:
    """R-OPTION-*: id and text required, id at most 128 bytes, ids unique within the list."""
    for i, option in enumerate(options):
        check.required_text(option.id, f"{base}[{i}].id", "option id")
        check.required_text(option.text, f"{base}[{i}].text", "option text")
        check.max_bytes(option.id, f"{base}[{i}].id", OPTION_ID_MAX_BYTES, "option id")
    check.unique(((i, o.id) for i, o in enumerate(options)), f"{base}[{{}}].id", "option id")


def check_submit_button(check: RuleCheck, button: SubmitButton | None) -> None:
    """R-SUBMIT-KEY: key required, at most 1024 bytes; text may be left out."""
    if button is None:
        return
    path = f"{CARD}.submit_button.key"
    check.required_text(button.key, path, "submit_button.key")
    check.max_bytes(button.key, path, KEY_MAX_BYTES, "submit_button.key")
