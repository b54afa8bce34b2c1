"""The ``update_template_card`` request body, in its two modes.

Either ``button`` (replace the clicked button's text, leaving the card as it
is) or ``template_card`` (a whole new card): exactly one of them, which
:mod:`wecom_card_contracts.rules` checks. Request-level flags are valid in both modes
(CONTRACT.md ruling on ``enable_id_trans``).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from wecom_card_contracts.cards import CardPart, TemplateCard

MAX_USERIDS = 1000
MAX_PARTYIDS = 100
MAX_TAGIDS = 100

Flag = Annotated[int, msgspec.Meta(ge=0, le=1, description="0 no, 1 yes")]


class ButtonReplacement(CardPart):
    """``button``: the new text of the clicked button, shown greyed out."""

    replace_name: str


class UpdateTemplateCardRequest(CardPart):
    """The body POSTed to ``/cgi-bin/message/update_template_card``."""

    agentid: int
    response_code: str
    userids: Annotated[list[str], msgspec.Meta(max_length=MAX_USERIDS)] | None = None
    partyids: Annotated[list[int], msgspec.Meta(max_length=MAX_PARTYIDS)] | None = None
    tagids: Annotated[list[int], msgspec.Meta(max_length=MAX_TAGIDS)] | None = None
    atall: Flag | None = None
    enable_id_trans: Flag | None = None
    enable_duplicate_check: Flag | None = None
    duplicate_check_interval: Annotated[int, msgspec.Meta(ge=0)] | None = None
    button: ButtonReplacement | None = None
    template_card: TemplateCard | None = None
