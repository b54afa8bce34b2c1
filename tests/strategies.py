"""Hypothesis strategies for valid commands of every card type."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from wecom_card_contracts import (
    ActionItem,
    ActionMenu,
    Button,
    ButtonInteractionCard,
    ButtonReplacement,
    ButtonSelection,
    CardAction,
    CardImage,
    Checkbox,
    CheckboxOption,
    Command,
    EmphasisContent,
    HorizontalContent,
    ImageTextArea,
    JumpItem,
    MainTitle,
    MultipleInteractionCard,
    NewsNoticeCard,
    QuoteArea,
    Select,
    SelectOption,
    Source,
    SubmitButton,
    TextNoticeCard,
    UpdateTemplateCardRequest,
    VerticalContent,
    VoteInteractionCard,
)

text = st.text(min_size=1, max_size=12)
maybe_text = st.none() | st.text(max_size=12)
key = st.text(min_size=1, max_size=20)


def unique_keys(n_min: int, n_max: int, size: int = 20) -> st.SearchStrategy[list[str]]:
    """Distinct non-empty keys."""
    return st.lists(st.text(min_size=1, max_size=size), min_size=n_min, max_size=n_max, unique=True)


@st.composite
def link(draw: st.DrawFn, allow_zero: bool = True) -> dict[str, Any]:
    """type / url / appid / pagepath consistent with each other."""
    kind = draw(st.sampled_from([None, 0, 1, 2] if allow_zero else [1, 2]))
    fields: dict[str, Any] = {"type": kind}
    if kind == 1:
        fields["url"] = draw(text)
    if kind == 2:
        fields["appid"] = draw(text)
        fields["pagepath"] = draw(maybe_text)
    return fields


sources = st.none() | st.builds(
    Source, icon_url=maybe_text, desc=maybe_text, desc_color=st.none() | st.integers(0, 3)
)


@st.composite
def action_menus(draw: st.DrawFn) -> ActionMenu | None:
    """None or a menu of 1..3 actions with distinct keys."""
    if draw(st.booleans()):
        return None
    keys = draw(unique_keys(1, 3))
    return ActionMenu(
        desc=draw(maybe_text), action_list=[ActionItem(text=draw(text), key=k) for k in keys]
    )


@st.composite
def quote_areas(draw: st.DrawFn) -> QuoteArea | None:
    """None or a quote area whose link fields match its type."""
    if draw(st.booleans()):
        return None
    return QuoteArea(**draw(link()), title=draw(maybe_text), quote_text=draw(maybe_text))


@st.composite
def horizontal_lists(draw: st.DrawFn) -> list[HorizontalContent] | None:
    """None or up to six entries, each with the field its type needs."""
    if draw(st.booleans()):
        return None
    entries = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from([None, 0, 1, 2, 3]))
        needed = {1: "url", 2: "media_id", 3: "userid"}.get(kind or 0)
        extra = {needed: draw(text)} if needed else {}
        entries.append(
            HorizontalContent(keyname=draw(text), type=kind, value=draw(maybe_text), **extra)
        )
    return entries


@st.composite
def jump_lists(draw: st.DrawFn) -> list[JumpItem] | None:
    """None or up to three jumps."""
    if draw(st.booleans()):
        return None
    return [JumpItem(title=draw(text), **draw(link())) for _ in range(draw(st.integers(0, 3)))]


@st.composite
def options(draw: st.DrawFn, most: int) -> list[SelectOption]:
    """1..most options with distinct ids."""
    ids = draw(unique_keys(1, most, size=10))
    return [SelectOption(id=i, text=draw(text)) for i in ids]


@st.composite
def text_notice(draw: st.DrawFn) -> TextNoticeCard:
    """A valid text_notice card."""
    title = draw(maybe_text)
    sub = draw(maybe_text) if title else draw(text)
    return TextNoticeCard(
        card_action=CardAction(**draw(link(allow_zero=False))),
        source=draw(sources),
        action_menu=draw(action_menus()),
        main_title=MainTitle(title=title, desc=draw(maybe_text)) if title else None,
        quote_area=draw(quote_areas()),
        emphasis_content=draw(
            st.none() | st.builds(EmphasisContent, title=maybe_text, desc=maybe_text)
        ),
        sub_title_text=sub,
        horizontal_content_list=draw(horizontal_lists()),
        jump_list=draw(jump_lists()),
    )


@st.composite
def news_notice(draw: st.DrawFn) -> NewsNoticeCard:
    """A valid news_notice card."""
    image = draw(
        st.none() | st.builds(CardImage, url=text, aspect_ratio=st.none() | st.floats(1.3, 2.24))
    )
    area = None
    if image is None or draw(st.booleans()):
        area = ImageTextArea(image_url=draw(text), **draw(link()), title=draw(maybe_text))
    verticals = draw(
        st.none() | st.lists(st.builds(VerticalContent, title=text, desc=maybe_text), max_size=4)
    )
    return NewsNoticeCard(
        main_title=MainTitle(title=draw(text)),
        card_action=CardAction(**draw(link(allow_zero=False))),
        source=draw(sources),
        action_menu=draw(action_menus()),
        quote_area=draw(quote_areas()),
        image_text_area=area,
        card_image=image,
        vertical_content_list=verticals,
        horizontal_content_list=draw(horizontal_lists()),
        jump_list=draw(jump_lists()),
    )


@st.composite
def button_interaction(draw: st.DrawFn) -> ButtonInteractionCard:
    """A valid button_interaction card."""
    buttons = []
    for k in draw(unique_keys(1, 6)):
        if draw(st.booleans()):
            buttons.append(
                Button(
                    text=draw(text),
                    type=draw(st.sampled_from([None, 0])),
                    key=k,
                    style=draw(st.none() | st.integers(-5, 9)),
                )
            )
        else:
            buttons.append(Button(text=draw(text), type=1, url=draw(text)))
    selection = None
    if draw(st.booleans()):
        selection = ButtonSelection(
            question_key=draw(key), option_list=draw(options(10)), title=draw(maybe_text)
        )
    return ButtonInteractionCard(
        main_title=MainTitle(title=draw(text)),
        button_list=buttons,
        source=draw(sources),
        action_menu=draw(action_menus()),
        quote_area=draw(quote_areas()),
        sub_title_text=draw(maybe_text),
        horizontal_content_list=draw(horizontal_lists()),
        card_action=draw(st.none() | link().map(lambda f: CardAction(**f))),
        button_selection=selection,
        replace_text=draw(maybe_text),
    )


@st.composite
def vote_interaction(draw: st.DrawFn) -> VoteInteractionCard:
    """A valid vote_interaction card."""
    ids = draw(unique_keys(1, 20, size=10))
    return VoteInteractionCard(
        main_title=MainTitle(title=draw(text)),
        checkbox=Checkbox(
            question_key=draw(key),
            option_list=[
                CheckboxOption(id=i, text=draw(text), is_checked=draw(st.booleans())) for i in ids
            ],
            disable=draw(st.none() | st.booleans()),
            mode=draw(st.none() | st.integers(0, 1)),
        ),
        source=draw(sources),
        submit_button=draw(st.none() | st.builds(SubmitButton, key=key, text=maybe_text)),
        replace_text=draw(maybe_text),
    )


@st.composite
def multiple_interaction(draw: st.DrawFn) -> MultipleInteractionCard:
    """A valid multiple_interaction card."""
    keys = draw(unique_keys(1, 3))
    return MultipleInteractionCard(
        main_title=MainTitle(title=draw(text)),
        select_list=[
            Select(
                question_key=k,
                option_list=draw(options(10)),
                disable=draw(st.none() | st.booleans()),
            )
            for k in keys
        ],
        source=draw(sources),
        submit_button=draw(st.none() | st.builds(SubmitButton, key=key, text=maybe_text)),
    )


cards = st.one_of(
    text_notice(), news_notice(), button_interaction(), vote_interaction(), multiple_interaction()
)


@st.composite
def commands(draw: st.DrawFn) -> Command:
    """A valid command: a button update or any of the five cards."""
    card = draw(st.none() | cards)
    return Command(
        command_id=draw(st.text(min_size=1, max_size=128)),
        corp_id=draw(st.none() | st.text(min_size=1, max_size=20)),
        code_issued_at=draw(st.none() | st.floats(0, 4e9)),
        request=UpdateTemplateCardRequest(
            agentid=draw(st.integers(0, 2**31)),
            response_code=draw(text),
            userids=draw(st.none() | st.lists(text, max_size=5)),
            partyids=draw(st.none() | st.lists(st.integers(1, 10**6), max_size=5)),
            tagids=draw(st.none() | st.lists(st.integers(1, 10**6), max_size=5)),
            atall=draw(st.none() | st.integers(0, 1)),
            enable_id_trans=draw(st.none() | st.integers(0, 1)),
            button=ButtonReplacement(replace_name=draw(text)) if card is None else None,
            template_card=card,
        ),
    )
