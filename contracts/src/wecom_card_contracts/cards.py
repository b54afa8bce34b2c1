"""The five template cards of ``update_template_card`` and every object inside them.

Field names, nesting and which fields each ``card_type`` may carry follow the
seed page (``更新模版卡片消息``) table by table. Constraints that a type can say
(list lengths, number ranges, enumerations) live here as ``msgspec.Meta`` so
the decoder enforces them and the JSON Schema shows them; rules that need
more than one field (required-by-``type``, uniqueness, UTF-8 byte limits)
live in :mod:`wecom_card_contracts.rules`.

``None`` is the default of every optional field: JSON ``null`` and an absent
field mean the same, and ``omit_defaults`` leaves both out when the request is
encoded again for WeCom.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

# Integer enumerations, as the seed lists them.
DescColor = Annotated[
    int, msgspec.Meta(ge=0, le=3, description="0 grey (default), 1 black, 2 red, 3 green")
]
LinkType3 = Annotated[
    int, msgspec.Meta(ge=0, le=2, description="0 or absent: no link, 1 url, 2 mini program")
]
HorizontalType = Annotated[
    int, msgspec.Meta(ge=0, le=3, description="0 or absent: text, 1 url, 2 attachment, 3 member")
]
CardActionType = Annotated[
    int,
    msgspec.Meta(
        ge=0, le=2, description="1 url, 2 mini program (0: none, button_interaction only)"
    ),
]
ButtonType = Annotated[
    int, msgspec.Meta(ge=0, le=1, description="0 or absent: callback with key, 1 url")
]
CheckboxMode = Annotated[
    int, msgspec.Meta(ge=0, le=1, description="0 single choice (default), 1 multiple")
]
AspectRatio = Annotated[
    float,
    msgspec.Meta(ge=1.3, lt=2.25, description="width / height, 1.3 <= ratio < 2.25 (default 1.3)"),
]


class CardPart(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    """Base of every object of the request: unknown fields are errors, ``None`` means absent."""


class Source(CardPart):
    """``source``: the card's origin line, one shape for every card type (a contract ruling)."""

    icon_url: str | None = None
    desc: str | None = None
    desc_color: DescColor | None = None


class ActionItem(CardPart):
    """One entry of ``action_menu.action_list``."""

    text: str
    key: str


class ActionMenu(CardPart):
    """``action_menu``: the "more" menu in the card's top right corner."""

    action_list: Annotated[list[ActionItem], msgspec.Meta(min_length=1, max_length=3)]
    desc: str | None = None


class MainTitle(CardPart):
    """``main_title``."""

    title: str | None = None
    desc: str | None = None


class QuoteArea(CardPart):
    """``quote_area``: a quoted block, optionally a link."""

    type: LinkType3 | None = None
    url: str | None = None
    appid: str | None = None
    pagepath: str | None = None
    title: str | None = None
    quote_text: str | None = None


class EmphasisContent(CardPart):
    """``emphasis_content``: one key figure."""

    title: str | None = None
    desc: str | None = None


class HorizontalContent(CardPart):
    """One entry of ``horizontal_content_list``."""

    keyname: str
    type: HorizontalType | None = None
    value: str | None = None
    url: str | None = None
    media_id: str | None = None
    userid: str | None = None


class JumpItem(CardPart):
    """One entry of ``jump_list``."""

    title: str
    type: LinkType3 | None = None
    url: str | None = None
    appid: str | None = None
    pagepath: str | None = None


class CardAction(CardPart):
    """``card_action``: what a click on the whole card does."""

    type: CardActionType | None = None
    url: str | None = None
    appid: str | None = None
    pagepath: str | None = None


class ImageTextArea(CardPart):
    """``image_text_area``: image on the left, text on the right (news_notice)."""

    image_url: str
    type: LinkType3 | None = None
    url: str | None = None
    appid: str | None = None
    pagepath: str | None = None
    title: str | None = None
    desc: str | None = None


class CardImage(CardPart):
    """``card_image``: one large image (news_notice)."""

    url: str
    aspect_ratio: AspectRatio | None = None


class VerticalContent(CardPart):
    """One entry of ``vertical_content_list`` (news_notice)."""

    title: str
    desc: str | None = None


class SelectOption(CardPart):
    """One option of a drop-down (``button_selection`` or ``select_list``)."""

    id: str
    text: str


class ButtonSelection(CardPart):
    """``button_selection``: a drop-down above the buttons (button_interaction)."""

    question_key: str
    option_list: Annotated[list[SelectOption], msgspec.Meta(min_length=1, max_length=10)]
    title: str | None = None
    selected_id: str | None = None


class Button(CardPart):
    """One entry of ``button_list`` (button_interaction)."""

    text: str
    type: ButtonType | None = None
    style: int | None = None  # "不填或错填默认1": any value is accepted
    key: str | None = None
    url: str | None = None


class CheckboxOption(CardPart):
    """One option of ``checkbox.option_list`` (vote_interaction)."""

    id: str
    text: str
    is_checked: bool


class Checkbox(CardPart):
    """``checkbox``: the vote question (vote_interaction)."""

    question_key: str
    option_list: Annotated[list[CheckboxOption], msgspec.Meta(min_length=1, max_length=20)]
    disable: bool | None = None
    mode: CheckboxMode | None = None


class Select(CardPart):
    """One entry of ``select_list`` (multiple_interaction)."""

    question_key: str
    option_list: Annotated[list[SelectOption], msgspec.Meta(min_length=1, max_length=10)]
    title: str | None = None
    selected_id: str | None = None
    disable: bool | None = None


class SubmitButton(CardPart):
    """``submit_button``; WeCom shows 提交 when ``text`` is left out (docs/contract.md ruling)."""

    key: str
    text: str | None = None


HorizontalContentList = Annotated[list[HorizontalContent], msgspec.Meta(max_length=6)]
JumpList = Annotated[list[JumpItem], msgspec.Meta(max_length=3)]


class Card(
    CardPart,
    tag_field="card_type",
    forbid_unknown_fields=True,
    omit_defaults=True,
    kw_only=True,
):
    """Base of the five card types; ``card_type`` is the tag that picks one."""


class TextNoticeCard(Card, tag="text_notice"):
    """文本通知型: ``main_title.title`` or ``sub_title_text``, and ``card_action``, are required."""

    card_action: CardAction
    source: Source | None = None
    action_menu: ActionMenu | None = None
    main_title: MainTitle | None = None
    quote_area: QuoteArea | None = None
    emphasis_content: EmphasisContent | None = None
    sub_title_text: str | None = None
    horizontal_content_list: HorizontalContentList | None = None
    jump_list: JumpList | None = None


class NewsNoticeCard(Card, tag="news_notice"):
    """图文展示型: ``main_title.title``, ``card_action``, ``card_image`` or ``image_text_area``."""

    main_title: MainTitle
    card_action: CardAction
    source: Source | None = None
    action_menu: ActionMenu | None = None
    quote_area: QuoteArea | None = None
    image_text_area: ImageTextArea | None = None
    card_image: CardImage | None = None
    vertical_content_list: Annotated[list[VerticalContent], msgspec.Meta(max_length=4)] | None = (
        None
    )
    horizontal_content_list: HorizontalContentList | None = None
    jump_list: JumpList | None = None


class ButtonInteractionCard(Card, tag="button_interaction"):
    """按钮交互型: ``main_title.title`` and ``button_list`` (1..6) are required."""

    main_title: MainTitle
    button_list: Annotated[list[Button], msgspec.Meta(min_length=1, max_length=6)]
    source: Source | None = None
    action_menu: ActionMenu | None = None
    quote_area: QuoteArea | None = None
    sub_title_text: str | None = None
    horizontal_content_list: HorizontalContentList | None = None
    card_action: CardAction | None = None
    button_selection: ButtonSelection | None = None
    replace_text: str | None = None


class VoteInteractionCard(Card, tag="vote_interaction"):
    """投票选择型: ``main_title.title`` and ``checkbox`` are required."""

    main_title: MainTitle
    checkbox: Checkbox
    source: Source | None = None
    submit_button: SubmitButton | None = None
    replace_text: str | None = None


class MultipleInteractionCard(Card, tag="multiple_interaction"):
    """多项选择型: ``main_title.title`` and ``select_list`` (1..3) are required."""

    main_title: MainTitle
    select_list: Annotated[list[Select], msgspec.Meta(min_length=1, max_length=3)]
    source: Source | None = None
    submit_button: SubmitButton | None = None
    replace_text: str | None = None


TemplateCard = (
    TextNoticeCard
    | NewsNoticeCard
    | ButtonInteractionCard
    | VoteInteractionCard
    | MultipleInteractionCard
)
"""The tagged union decoded in one pass on ``card_type``."""

CARD_TYPES: tuple[type[Card], ...] = (
    TextNoticeCard,
    NewsNoticeCard,
    ButtonInteractionCard,
    VoteInteractionCard,
    MultipleInteractionCard,
)
