"""The AsyncAPI 3.0 document of the worker's queues and messages, generated from the Structs.

Written from the worker's side, as AsyncAPI describes an application: it
*receives* commands and *sends* results and dead letters. Payload schemas are
the same msgspec components as ``schema.json``, placed under
``components.schemas``; each message exists in both encodings the contract
allows (JSON and msgpack). ``wecom-card-worker asyncapi`` prints it and
``docs/asyncapi.json`` is the committed copy.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from wecom_card_contracts import wire
from wecom_card_contracts.command import Command
from wecom_card_contracts.result import Result
from wecom_card_contracts.version import CONTRACT_VERSION

ASYNCAPI_VERSION = "3.0.0"
AMQP_BINDING_VERSION = "0.3.0"
REPOSITORY = "https://github.com/wecom-card-worker/wecom-card-worker"
_ENCODINGS = {"json": wire.JSON, "msgpack": wire.MSGPACK}


def asyncapi_document(contract_version: str = CONTRACT_VERSION) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document, as a JSON-ready dict."""
    (command_ref, result_ref), schemas = msgspec.json.schema_components(
        [Command, Result], ref_template="#/components/schemas/{name}"
    )
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": _info(contract_version),
        "defaultContentType": wire.JSON,
        "servers": {
            "broker": {
                "host": "localhost:5672",
                "protocol": "amqp",
                "protocolVersion": "0-9-1",
                "description": "The RabbitMQ broker of WECOM_AMQP_URL.",
            }
        },
        "channels": _channels(),
        "operations": _operations(),
        "components": {
            "schemas": {name: _asyncapi_schema(schema) for name, schema in schemas.items()},
            "messages": _messages(command_ref, result_ref),
            "messageTraits": {
                "amqpBody": {
                    "bindings": {
                        "amqp": {
                            "contentEncoding": " | ".join(("identity", *wire.CONTENT_ENCODINGS)),
                            "bindingVersion": AMQP_BINDING_VERSION,
                        }
                    }
                }
            },
        },
    }


def asyncapi_text(contract_version: str = CONTRACT_VERSION) -> str:
    """The document as ``wecom-card-worker asyncapi`` prints it and docs/asyncapi.json holds it."""
    document = asyncapi_document(contract_version)
    return json.dumps(document, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def _info(contract_version: str) -> dict[str, Any]:
    return {
        "title": "wecom-card-worker",
        "version": contract_version,
        "description": (
            "Updates WeCom template cards: upstream services publish card-update commands, "
            "the worker checks each one against every rule of WeCom's update_template_card, "
            "calls it at most once per response_code, and answers one result per command. "
            f"The contract in prose: {REPOSITORY}/blob/main/docs/contract.md"
        ),
        "license": {"name": "MIT", "url": f"{REPOSITORY}/blob/main/LICENSE"},
        "externalDocs": {
            "description": "WeCom: 更新模版卡片消息 (update_template_card)",
            "url": "https://developer.work.weixin.qq.com/document/path/94888",
        },
    }


def _queue_channel(
    address: str,
    setting: str,
    description: str,
    messages: tuple[str, ...],
    arguments: dict[str, str] | None = None,
) -> dict[str, Any]:
    channel: dict[str, Any] = {
        "address": address,
        "title": setting,
        "description": f"{description} Name set by `{setting}` (default `{address}`).",
        "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in messages},
        "bindings": {
            "amqp": {
                "is": "queue",
                "queue": {
                    "name": address,
                    "durable": True,
                    "exclusive": False,
                    "autoDelete": False,
                    "vhost": "/",
                },
                "x-queue-type": wire.QUEUE_TYPE,
                "bindingVersion": AMQP_BINDING_VERSION,
            }
        },
    }
    if arguments:
        channel["bindings"]["amqp"].update(arguments)
    return channel


def _channels() -> dict[str, Any]:
    return {
        "commands": _queue_channel(
            wire.COMMAND_QUEUE,
            "WECOM_COMMAND_QUEUE",
            "Upstream services publish commands here, on the default exchange with the queue "
            "name as routing key.",
            ("command", "commandMsgpack"),
            {
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": wire.DEAD_LETTER_QUEUE,
            },
        ),
        "results": _queue_channel(
            wire.RESULT_QUEUE,
            "WECOM_RESULT_QUEUE",
            "One result per command that carries no `reply_to`, and results whose `reply_to` "
            f"queue did not take them (header `{wire.UNROUTABLE_REPLY_TO_HEADER}`).",
            ("result", "resultMsgpack"),
        ),
        "deadLetters": _queue_channel(
            wire.DEAD_LETTER_QUEUE,
            "WECOM_DEAD_LETTER_QUEUE",
            "The original bytes and properties of every command rejected as invalid, the reason "
            "in headers.",
            ("deadLetter",),
        ),
        "replyTo": {
            "address": None,
            "title": "reply_to",
            "description": (
                "The queue a command names in its `reply_to` property (a service's own queue, "
                f"or `{wire.DIRECT_REPLY_TO}` for direct reply-to); its result goes there "
                "instead of the result queue."
            ),
            "messages": {
                name: {"$ref": f"#/components/messages/{name}"}
                for name in ("result", "resultMsgpack")
            },
        },
    }


def _operations() -> dict[str, Any]:
    reply_messages = [
        {"$ref": f"#/channels/replyTo/messages/{name}"} for name in ("result", "resultMsgpack")
    ]
    return {
        "receiveCommand": {
            "action": "receive",
            "channel": {"$ref": "#/channels/commands"},
            "summary": "Take a command, check it, call WeCom at most once, answer one result.",
            "description": (
                "Acked only after the result is confirmed by the broker and the outcome stored: "
                "at-least-once, and a redelivered command gets its stored result again "
                "(`replayed: true`) without a second call to WeCom."
            ),
            "messages": [
                {"$ref": "#/channels/commands/messages/command"},
                {"$ref": "#/channels/commands/messages/commandMsgpack"},
            ],
            "reply": {
                "address": {
                    "location": "$message.header#/reply_to",
                    "description": "The command's AMQP `reply_to` property.",
                },
                "channel": {"$ref": "#/channels/replyTo"},
                "messages": reply_messages,
            },
            "bindings": {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING_VERSION}},
        },
        "sendResult": {
            "action": "send",
            "channel": {"$ref": "#/channels/results"},
            "summary": "The result of a command without `reply_to` (or whose reply_to refused).",
            "messages": [
                {"$ref": "#/channels/results/messages/result"},
                {"$ref": "#/channels/results/messages/resultMsgpack"},
            ],
            "bindings": {
                "amqp": {
                    "deliveryMode": 2,
                    "mandatory": True,
                    "bindingVersion": AMQP_BINDING_VERSION,
                }
            },
        },
        "sendDeadLetter": {
            "action": "send",
            "channel": {"$ref": "#/channels/deadLetters"},
            "summary": "A copy of every command rejected as invalid, byte for byte.",
            "messages": [{"$ref": "#/channels/deadLetters/messages/deadLetter"}],
            "bindings": {
                "amqp": {
                    "deliveryMode": 2,
                    "mandatory": True,
                    "bindingVersion": AMQP_BINDING_VERSION,
                }
            },
        },
    }


def _messages(command_ref: dict[str, Any], result_ref: dict[str, Any]) -> dict[str, Any]:
    messages: dict[str, Any] = {}
    for encoding, content_type in _ENCODINGS.items():
        suffix = "" if encoding == "json" else "Msgpack"
        messages[f"command{suffix}"] = {
            "name": "command",
            "title": f"Card-update command ({encoding})",
            "summary": "Update one card: a `button` text or a whole new `template_card`.",
            "contentType": content_type,
            "payload": command_ref,
            "correlationId": {
                "location": "$message.header#/correlation_id",
                "description": "Copied onto the result (the command_id when absent).",
            },
            "traits": [{"$ref": "#/components/messageTraits/amqpBody"}],
        }
        messages[f"result{suffix}"] = {
            "name": "result",
            "title": f"Command result ({encoding})",
            "summary": "The outcome of one command, in its command's encoding.",
            "contentType": content_type,
            "headers": {
                "type": "object",
                "properties": {
                    wire.UNROUTABLE_REPLY_TO_HEADER: {
                        "type": "string",
                        "description": "The reply_to queue the result was meant for.",
                    },
                    wire.UNROUTABLE_REASON_HEADER: {
                        "type": "string",
                        "description": "Why it is here instead (no such queue, or it refused).",
                    },
                },
            },
            "payload": result_ref,
            "correlationId": {
                "location": "$message.payload#/correlation_id",
                "description": "Also the AMQP property when it fits (at most 255 bytes).",
            },
        }
    messages["deadLetter"] = {
        "name": "deadLetter",
        "title": "Rejected command",
        "summary": "The original body and properties of a rejected command, with the reason.",
        "description": "The payload is the command's bytes exactly as published, valid or not.",
        "headers": _dead_letter_headers(),
        "payload": {},
    }
    return messages


def _dead_letter_headers() -> dict[str, Any]:
    return {
        "type": "object",
        "required": [wire.ERROR_CODE_HEADER, wire.ERROR_MESSAGE_HEADER],
        "properties": {
            wire.ERROR_CODE_HEADER: {
                "type": "string",
                "enum": list(wire.DEAD_LETTER_CODES),
                "description": "internal_error: the worker failed on it repeatedly (no result).",
            },
            wire.ERROR_MESSAGE_HEADER: {"type": "string", "description": "What to change."},
            wire.ERROR_PATH_HEADER: {
                "type": "string",
                "description": "The offending field, e.g. request.button.replace_name; "
                "empty when the body as a whole is at fault.",
            },
            wire.COMMAND_ID_HEADER: {
                "type": "string",
                "description": "The command_id when it could be read, else empty.",
            },
            wire.REJECTED_AT_HEADER: {"type": "integer", "description": "Unix milliseconds."},
        },
    }


def _asyncapi_schema(schema: Any) -> Any:
    """msgspec's JSON Schema as an AsyncAPI Schema Object.

    AsyncAPI's ``discriminator`` is a bare property name with another meaning
    than OpenAPI's object; the tagged union stays a plain ``anyOf`` (each
    variant's ``card_type`` is a ``const``), its mapping kept as an extension.
    """
    if isinstance(schema, dict):
        return {
            ("x-discriminator" if key == "discriminator" else key): _asyncapi_schema(value)
            for key, value in schema.items()
        }
    if isinstance(schema, list):
        return [_asyncapi_schema(item) for item in schema]
    return schema
