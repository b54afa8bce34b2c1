"""The contracts package: seed examples, real-world bodies, round trips, schema, robustness."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.commands import edit, encode, seed_command
from tests.strategies import commands
from wecom_card_contracts import (
    Command,
    CommandInvalid,
    Result,
    ResultError,
    decode_command,
    decode_result,
    encode_command,
    encode_request,
    encode_result,
    message_schema,
    peek_command_id,
    schema_text,
    validate_command,
)
from wecom_card_contracts.examples import seed_examples
from wecom_card_contracts.schema import SCHEMA_FILE

SHARED = Path(__file__).resolve().parents[2] / "shared"
SEED_PAGE = SHARED / "seed" / "update_template_card.md"
REALWORLD = sorted((SHARED / "realworld").glob("*.json"))


def test_seed_examples_file_matches_the_seed_page() -> None:
    """contracts/seed_examples.json holds exactly the six request examples of the seed page."""
    if not SEED_PAGE.exists():
        pytest.skip(f"seed page not present at {SEED_PAGE}")
    blocks = re.findall(r"```(?:json)?\n(.*?)```", SEED_PAGE.read_text("utf-8"), re.DOTALL)
    published = [json.loads(b) for b in blocks if '"response_code"' in b]
    assert list(seed_examples().values()) == published
    assert len(published) == 6


@pytest.mark.parametrize("name", list(seed_examples()))
def test_seed_example_is_valid_as_published(name: str) -> None:
    """Every request example of the seed decodes and passes every rule."""
    command = decode_command(encode(seed_command(name)))
    assert command.request.response_code == "response_code"


@pytest.mark.parametrize("name", list(seed_examples()))
def test_seed_example_is_sent_to_wecom_unchanged(name: str) -> None:
    """The body re-encoded for WeCom equals the seed's example: nothing dropped or added."""
    command = decode_command(encode(seed_command(name)))
    assert json.loads(encode_request(command.request)) == seed_examples()[name]


def test_null_fields_are_left_out_of_the_body_sent_to_wecom() -> None:
    """null optional fields decode as absent and are not sent on."""
    body = encode(edit(seed_command("button"), "request.partyids", None))
    sent = json.loads(encode_request(decode_command(body).request))
    assert "partyids" not in sent


@pytest.mark.skipif(not REALWORLD, reason="../shared/realworld not present")
@pytest.mark.parametrize("path", REALWORLD, ids=[p.stem for p in REALWORLD])
def test_realworld_body_gets_its_verdict_and_path(path: Path) -> None:
    """Bodies built by other SDKs and apps: right verdict, right leading path, a useful message."""
    case = json.loads(path.read_text("utf-8"))
    body = encode({"command_id": f"rw-{path.stem}", "request": case["request"]})
    if case["verdict"] == "valid":
        decode_command(body)
        return
    with pytest.raises(CommandInvalid) as caught:
        decode_command(body)
    invalid = caught.value
    assert invalid.path == case["path"], invalid.summary
    assert invalid.command_id == f"rw-{path.stem}"
    field = case["path"].rsplit(".", 1)[-1].split("[")[0]
    if field != "request":
        assert field in invalid.message


@pytest.mark.parametrize(
    ("edits", "words"),
    [
        ((("request.template_card.task_id", "t"),), ["message/send", "Remove it"]),
        ((("request.agentid", "1000002"),), ["send the number 1000002"]),
        ((("request.userids", "11608"),), ['["11608"]']),
        (
            (("request.template_card.card_image", {"url": "u", "aspect_ratio": 0.0}),),
            ["leave aspect_ratio out"],
        ),
    ],
)
def test_messages_say_what_to_change(edits: tuple[tuple[str, Any], ...], words: list[str]) -> None:
    """The messages for real callers' mistakes say what to do instead."""
    command = seed_command("news_notice")
    for where, value in edits:
        command = edit(command, where, value)
    with pytest.raises(CommandInvalid) as caught:
        decode_command(encode(command))
    for word in words:
        assert word in caught.value.message


def test_field_of_another_card_type_names_its_card_type() -> None:
    """A news_notice field on a button card says it belongs to news_notice cards."""
    command = edit(
        seed_command("button_interaction"), "request.template_card.card_image", {"url": "u"}
    )
    with pytest.raises(CommandInvalid) as caught:
        decode_command(encode(command))
    assert "news_notice" in caught.value.message
    assert caught.value.path == "request.template_card.card_image"


def test_every_violation_is_reported_and_the_summary_lists_them() -> None:
    """Several problems at once: all are collected, the most fundamental leads."""
    command = edit(seed_command("button_interaction"), "request.agentid", "1")
    command = edit(command, "request.template_card.task_id", "t")
    command = edit(command, "request.template_card.button_list[0].style", "big")
    with pytest.raises(CommandInvalid) as caught:
        decode_command(encode(command))
    paths = [v.path for v in caught.value.violations]
    assert paths[0] == "request.template_card.task_id"
    assert set(paths) == {
        "request.template_card.task_id",
        "request.agentid",
        "request.template_card.button_list[0].style",
    }
    assert "also 2 more problems" in caught.value.summary


def test_rules_report_every_problem_of_a_well_typed_command() -> None:
    """Rule violations are collected too, not only the first."""
    command = edit(
        seed_command("button_interaction"),
        "request.template_card.button_list[1].key",
        "button_key_1",
    )
    command = edit(command, "request.response_code", "")
    with pytest.raises(CommandInvalid) as caught:
        decode_command(encode(command))
    assert [v.path for v in caught.value.violations] == [
        "request.response_code",
        "request.template_card.button_list[1].key",
    ]


def test_command_id_is_kept_when_the_rest_is_invalid() -> None:
    """A rejection still names the command when its command_id is readable."""
    body = encode(edit(seed_command("button", command_id="keep-me"), "request.agentid", "x"))
    with pytest.raises(CommandInvalid) as caught:
        decode_command(body)
    assert caught.value.command_id == "keep-me"
    assert peek_command_id(body) == "keep-me"
    assert peek_command_id(b"not json") is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"[1, 2]", "must be an object"),
        (b'"text"', "must be an object"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_undecodable_bodies_are_rejected_with_no_path(body: bytes, message: str) -> None:
    """A body that is not a JSON object has no path into it and says why."""
    with pytest.raises(CommandInvalid) as caught:
        decode_command(body)
    assert caught.value.path is None
    assert message in caught.value.message
    assert caught.value.command_id is None


def test_msgpack_and_json_decode_to_the_same_command() -> None:
    """The same command as msgpack and as JSON gives equal Structs."""
    raw = seed_command("multiple_interaction")
    from_json = decode_command(msgspec.json.encode(raw), "json")
    from_msgpack = decode_command(msgspec.msgpack.encode(raw), "msgpack")
    assert from_json == from_msgpack


def test_msgpack_violations_use_the_same_paths() -> None:
    """Validation errors in msgpack bodies carry the same paths as in JSON."""
    raw = edit(seed_command("vote_interaction"), "request.template_card.checkbox.mode", 7)
    with pytest.raises(CommandInvalid) as caught:
        decode_command(msgspec.msgpack.encode(raw), "msgpack")
    assert caught.value.path == "request.template_card.checkbox.mode"


def test_validate_command_checks_structs_built_in_code() -> None:
    """A Command built in code by an upstream service is checked by the same rules."""
    command = decode_command(encode(seed_command("button_interaction")))
    assert validate_command(command) == command
    broken = msgspec.structs.replace(
        command, request=msgspec.structs.replace(command.request, response_code="")
    )
    with pytest.raises(CommandInvalid):
        validate_command(broken)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(commands())
def test_generated_commands_round_trip_json_msgpack_struct(command: Command) -> None:
    """Any valid command survives Struct -> JSON -> Struct -> msgpack -> Struct unchanged."""
    from_json = decode_command(encode_command(command, "json"), "json")
    from_msgpack = decode_command(encode_command(from_json, "msgpack"), "msgpack")
    assert from_json == command
    assert from_msgpack == command


@settings(max_examples=300)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_raise_only_command_invalid(data: bytes) -> None:
    """Whatever the bytes, JSON or msgpack, the only error is CommandInvalid."""
    for fmt in ("json", "msgpack"):
        try:
            decode_command(data, fmt)
        except CommandInvalid as invalid:
            assert invalid.message


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300)
@given(json_values, st.sampled_from(list(seed_examples())), st.data())
def test_mutated_seed_commands_raise_only_command_invalid(
    value: Any, name: str, data: st.DataObject
) -> None:
    """A seed command with any JSON value put anywhere is accepted or rejected with a path."""
    command = seed_command(name)
    paths = list(all_paths(command))
    where = data.draw(st.sampled_from(paths))
    try:
        decode_command(encode(edit(command, where, value)))
    except CommandInvalid as invalid:
        assert invalid.message
        assert invalid.path is None or invalid.path.split(".")[0].split("[")[0] in command


def all_paths(node: Any, prefix: str = "") -> list[str]:
    """Every path into a JSON value, in the notation of error paths."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else key
            found.append(path)
            found.extend(all_paths(value, path))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.append(f"{prefix}[{i}]")
            found.extend(all_paths(value, f"{prefix}[{i}]"))
    return found


def test_deeply_nested_body_is_rejected_cleanly() -> None:
    """A pathologically nested body is an invalid command, not a crash."""
    body = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(CommandInvalid):
        decode_command(body)


def test_schema_file_equals_the_generated_schema() -> None:
    """contracts/schema.json is what the Structs generate (regenerate it when they change)."""
    assert SCHEMA_FILE.read_text("utf-8") == schema_text()


def command_validator() -> jsonschema.Draft202012Validator:
    """A JSON Schema validator for commands."""
    schema = message_schema("command")
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("name", list(seed_examples()))
def test_schema_accepts_every_seed_example(name: str) -> None:
    """The JSON Schema accepts each seed example as a command."""
    errors = list(command_validator().iter_errors(seed_command(name)))
    assert errors == []


@pytest.mark.parametrize(
    ("base", "where", "value"),
    [
        ("button", "request.agentid", "1000002"),
        ("button", "request.userids", "11608"),
        ("button", "request.task_id", "t"),
        ("text_notice", "request.template_card.task_id", "t"),
        ("text_notice", "request.template_card.card_type", "markdown"),
        ("news_notice", "request.template_card.card_image.aspect_ratio", 0.0),
        ("vote_interaction", "request.template_card.checkbox.checkbox_mode", 0),
        ("button_interaction", "request.template_card.button_list", []),
        ("button", "command_id", ""),
    ],
)
def test_schema_rejects_what_it_can_express(base: str, where: str, value: Any) -> None:
    """Type-level mistakes are rejected by the JSON Schema as well as by the decoder."""
    command = edit(seed_command(base), where, value)
    assert list(command_validator().iter_errors(command)) != []
    with pytest.raises(CommandInvalid):
        decode_command(encode(command))


def test_schema_with_both_messages_is_valid_and_describes_a_result() -> None:
    """The combined schema is a valid 2020-12 schema and accepts a result."""
    schema = message_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    result = Result(
        command_id="c", correlation_id="c", status="ok", received_at=1.0, finished_at=2.0
    )
    jsonschema.validate(json.loads(encode_result(result)), schema)


def test_result_has_every_key_and_round_trips() -> None:
    """A result carries every key of CONTRACT.md section 3, nulls included, in both encodings."""
    result = Result(
        command_id=None,
        correlation_id=None,
        status="rejected",
        error=ResultError(code="invalid_command", message="m", path="request.agentid"),
        received_at=1.0,
        finished_at=1.5,
    )
    body = json.loads(encode_result(result))
    assert list(body) == [
        "command_id",
        "correlation_id",
        "status",
        "agentid",
        "response_code",
        "errcode",
        "errmsg",
        "invalid_users",
        "error",
        "attempts",
        "replayed",
        "received_at",
        "finished_at",
    ]
    assert body["error"] == {"code": "invalid_command", "message": "m", "path": "request.agentid"}
    assert decode_result(encode_result(result, "msgpack"), "msgpack") == result
