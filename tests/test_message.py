"""read_command: delivered bytes with their AMQP properties to a Command or a refusal."""

from __future__ import annotations

import gzip
import math
import zlib
from typing import Any

import msgspec
import pytest

from wecom_card_contracts import CommandInvalid, media_format, read_command
from wecom_card_contracts.codec import DIAGNOSE_MAX_BYTES
from wecom_card_contracts.diagnose import MAX_VIOLATIONS

CAP = 64 * 1024
NOW = 1_764_000_000.0


def command(command_id: str = "cmd-1", **extra: Any) -> dict[str, Any]:
    """A valid button-mode command as a generic value."""
    request = {"agentid": 1000002, "response_code": "rc", "button": {"replace_name": "done"}}
    return {"command_id": command_id, "request": request, **extra}


def read(
    body: bytes,
    content_type: str | None = None,
    content_encoding: str | None = None,
    max_bytes: int = CAP,
    now: float | None = None,
) -> Any:
    """read_command with the test's size cap."""
    return read_command(
        body,
        content_type=content_type,
        content_encoding=content_encoding,
        max_bytes=max_bytes,
        now=now,
    )


def refusal(body: bytes, **properties: Any) -> CommandInvalid:
    """The CommandInvalid that read_command raises for this body."""
    with pytest.raises(CommandInvalid) as caught:
        read(body, **properties)
    return caught.value


JSON = msgspec.json.encode(command())
MSGPACK = msgspec.msgpack.encode(command())


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (None, JSON),
        ("application/json", JSON),
        ("Application/JSON; charset=utf-8", JSON),
        ("", JSON),
        ("application/msgpack", MSGPACK),
        ("application/msgpack ; q=1", MSGPACK),
    ],
)
def test_supported_content_types_decode(content_type: str | None, body: bytes) -> None:
    """JSON (the default when absent) and msgpack decode; parameters such as charset are ignored."""
    assert read(body, content_type=content_type).command_id == "cmd-1"


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "application/x-json"])
def test_other_content_types_are_refused_naming_what_to_send(content_type: str) -> None:
    """Any other content_type is refused with the types to use, and the id is still read."""
    invalid = refusal(JSON, content_type=content_type)
    assert invalid.path is None
    assert "application/json" in invalid.message
    assert "application/msgpack" in invalid.message
    assert invalid.command_id == "cmd-1"
    assert media_format(content_type) is None


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("GZIP", gzip.compress),
        ("deflate", zlib.compress),
        ("identity", bytes),
        ("", bytes),
    ],
)
def test_supported_encodings_decode(encoding: str, compress: Any) -> None:
    """gzip, deflate (zlib) and identity bodies decode to the same command."""
    assert read(compress(JSON), content_encoding=encoding).command_id == "cmd-1"


def test_unsupported_encoding_is_refused() -> None:
    """A content_encoding the worker does not decode is refused, saying what it accepts."""
    invalid = refusal(JSON, content_encoding="br")
    assert "gzip / deflate" in invalid.message
    assert invalid.command_id == "cmd-1"


def test_oversized_body_is_refused_and_its_id_read_wherever_it_is() -> None:
    """Given a body over the cap with command_id last, the refusal still names the command."""
    userids = ["u"] * 50_000
    big = msgspec.json.encode({"request": {"userids": userids}, "command_id": "late-id"})
    invalid = refusal(big)
    assert f"at most {CAP}" in invalid.message
    assert invalid.command_id == "late-id"


def test_oversized_msgpack_id_is_read() -> None:
    """The same holds for msgpack bodies."""
    big = msgspec.msgpack.encode(command("mp-id", padding="x" * CAP))
    assert refusal(big, content_type="application/msgpack").command_id == "mp-id"


def test_compression_bomb_is_refused_with_its_id() -> None:
    """Given gzip that inflates past the cap, When read, Then refused, id from the prefix."""
    bomb = gzip.compress(msgspec.json.encode(command("bomb", padding="x" * 10_000_000)))
    assert len(bomb) < CAP
    invalid = refusal(bomb, content_encoding="gzip")
    assert "decompressed message is larger" in invalid.message
    assert invalid.command_id == "bomb"


def test_oversized_compressed_body_id_comes_from_a_prefix() -> None:
    """A compressed body over the cap before inflating is refused; its id is still read."""
    noise = bytes(range(256)) * 1000
    body = zlib.compress(msgspec.json.encode(command("zz")) + noise, level=0)
    invalid = refusal(body, content_encoding="deflate")
    assert f"at most {CAP}" in invalid.message
    assert invalid.command_id == "zz"


def test_truncated_and_trailing_compressed_bodies_are_refused() -> None:
    """A cut gzip stream and bytes after its end are refused, not silently read."""
    packed = gzip.compress(JSON)
    assert "truncated" in refusal(packed[:-12], content_encoding="gzip").message
    assert "follow the end" in refusal(packed + b"xx", content_encoding="gzip").message
    assert "not valid gzip" in refusal(b"not gzip", content_encoding="gzip").message


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_issued_at_is_refused(value: float) -> None:
    """msgpack carries NaN and infinity; a code with such a time would never expire."""
    body = msgspec.msgpack.encode(command(code_issued_at=value))
    invalid = refusal(body, content_type="application/msgpack")
    assert invalid.path == "code_issued_at"
    assert "finite" in invalid.message
    assert "Unix time in seconds" in invalid.message
    assert invalid.command_id == "cmd-1"


def test_negative_issued_at_is_refused() -> None:
    """A time before 1970 is not when a code was issued."""
    invalid = refusal(msgspec.json.encode(command(code_issued_at=-5)))
    assert (invalid.path, invalid.command_id) == ("code_issued_at", "cmd-1")


def test_issued_at_far_ahead_of_the_clock_is_refused() -> None:
    """Milliseconds (or a clock far ahead) would never expire: refused past 300 s of skew."""
    millis = refusal(msgspec.json.encode(command(code_issued_at=NOW * 1000)), now=NOW)
    assert millis.path == "code_issued_at"
    assert "milliseconds" in millis.message
    ahead = refusal(msgspec.json.encode(command(code_issued_at=NOW + 301)), now=NOW)
    assert "301 s ahead" in ahead.message
    skewed = read(msgspec.json.encode(command(code_issued_at=NOW + 299)), now=NOW)
    assert skewed.code_issued_at == NOW + 299


@pytest.mark.parametrize(
    "body",
    [
        b"\xdd\xff\xff\xff\xff",  # array32 claiming 4 billion items
        b"\xdf\xff\xff\xff\xff",  # map32 claiming 4 billion pairs
        b"\x81\xaacommand_id\xdb\xff\xff\xff\xf0ab",  # str32 claiming 4 GiB
        b"\xc6\xff\xff\xff\xff",  # bin32 claiming 4 GiB
    ],
)
def test_huge_msgpack_length_claims_are_refused(body: bytes) -> None:
    """Length headers claiming gigabytes are refused without allocating them."""
    invalid = refusal(body, content_type="application/msgpack")
    assert invalid.path is None
    assert "not valid msgpack" in invalid.message


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_deep_nesting_is_refused(fmt: str) -> None:
    """Nesting far deeper than any card is refused, not a RecursionError."""
    depth = 20_000
    if fmt == "json":
        body = b'{"command_id":"deep","request":' + b"[" * depth + b"]" * depth + b"}"
    else:
        body = b"\x82\xaacommand_id\xa4deep\xa7request" + b"\x91" * depth + b"\x90"
    invalid = refusal(body, content_type=f"application/{fmt}")
    assert invalid.command_id == "deep"
    assert invalid.message


def test_invalid_utf8_is_refused() -> None:
    """Bytes that are not UTF-8 inside a string are refused as an undecodable body."""
    invalid = refusal(JSON.replace(b"done", b"d\xffne"))
    assert "not valid JSON" in invalid.message
    assert invalid.command_id == "cmd-1"


def test_large_invalid_body_reports_its_first_problem_only() -> None:
    """Over the diagnosis limit the typed decoder's first problem is reported, with a path."""
    body = msgspec.json.encode(command(), order=None)
    padding = b',"request2":"' + b"x" * DIAGNOSE_MAX_BYTES + b'"}'
    invalid = refusal(body[:-1] + padding, max_bytes=4 * DIAGNOSE_MAX_BYTES)
    assert len(invalid.violations) == 1
    assert "request2" in invalid.message
    assert invalid.command_id == "cmd-1"


def test_a_problem_per_item_is_cut_at_the_violation_limit() -> None:
    """A body with thousands of broken items lists at most MAX_VIOLATIONS problems."""
    cards = [{"keyname": 1}] * 4000
    card = {"card_type": "text_notice", "horizontal_content_list": cards}
    body = msgspec.json.encode(command(request={"template_card": card}))
    assert len(body) < DIAGNOSE_MAX_BYTES
    invalid = refusal(body)
    assert len(invalid.violations) <= MAX_VIOLATIONS + 1
