"""The wire contract of wecom-card-worker: commands, results and every rule of the seed.

Imports msgspec and the standard library only, so upstream services can build
and check commands with the same Structs the worker decodes::

    from wecom_card_contracts import decode_command, CommandInvalid

    try:
        command = decode_command(body)          # JSON bytes
    except CommandInvalid as error:
        print(error.path, error.message)

The package's version is the version of the contract (``docs/contract.md``):
a new major version is a change that can break publishers.

:func:`read_command` judges a delivered body with its AMQP ``content_type``
and ``content_encoding`` and the size cap, exactly as the worker does.
"""

from wecom_card_contracts.cards import (
    ActionItem,
    ActionMenu,
    Button,
    ButtonInteractionCard,
    ButtonSelection,
    CardAction,
    CardImage,
    Checkbox,
    CheckboxOption,
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
    TemplateCard,
    TextNoticeCard,
    VerticalContent,
    VoteInteractionCard,
)
from wecom_card_contracts.codec import (
    BodyFormat,
    decode_command,
    decode_result,
    encode_command,
    encode_request,
    encode_result,
    peek_command_id,
    validate_command,
)
from wecom_card_contracts.command import CODE_LIFETIME_SECONDS, Command
from wecom_card_contracts.message import MAX_CLOCK_SKEW_SECONDS, media_format, read_command
from wecom_card_contracts.request import ButtonReplacement, UpdateTemplateCardRequest
from wecom_card_contracts.result import STATUSES, ErrorCode, Result, ResultError, Status
from wecom_card_contracts.schema import message_schema, schema_text
from wecom_card_contracts.version import CONTRACT_VERSION
from wecom_card_contracts.violations import CommandInvalid, Violation, ViolationKind

__version__ = CONTRACT_VERSION

__all__ = [
    "CODE_LIFETIME_SECONDS",
    "CONTRACT_VERSION",
    "MAX_CLOCK_SKEW_SECONDS",
    "STATUSES",
    "ActionItem",
    "ActionMenu",
    "BodyFormat",
    "Button",
    "ButtonInteractionCard",
    "ButtonReplacement",
    "ButtonSelection",
    "CardAction",
    "CardImage",
    "Checkbox",
    "CheckboxOption",
    "Command",
    "CommandInvalid",
    "EmphasisContent",
    "ErrorCode",
    "HorizontalContent",
    "ImageTextArea",
    "JumpItem",
    "MainTitle",
    "MultipleInteractionCard",
    "NewsNoticeCard",
    "QuoteArea",
    "Result",
    "ResultError",
    "Select",
    "SelectOption",
    "Source",
    "Status",
    "SubmitButton",
    "TemplateCard",
    "TextNoticeCard",
    "UpdateTemplateCardRequest",
    "VerticalContent",
    "Violation",
    "ViolationKind",
    "VoteInteractionCard",
    "decode_command",
    "decode_result",
    "encode_command",
    "encode_request",
    "encode_result",
    "media_format",
    "message_schema",
    "peek_command_id",
    "read_command",
    "schema_text",
    "validate_command",
]
