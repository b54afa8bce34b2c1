"""The card-update command that upstream services publish (CONTRACT.md section 2)."""

from __future__ import annotations

from typing import Annotated

import msgspec

from wecom_card_contracts.cards import CardPart
from wecom_card_contracts.request import UpdateTemplateCardRequest

CommandId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]

CODE_LIFETIME_SECONDS = 72 * 3600
"""A response_code can be used for 72 hours after WeCom issued it (the seed, line 14)."""


class Command(CardPart):
    """One request to update one card, with what the worker needs around it."""

    command_id: CommandId
    request: UpdateTemplateCardRequest
    corp_id: str | None = None
    code_issued_at: float | None = None
