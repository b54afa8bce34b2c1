"""One corpus through ``validate`` and through the worker: identical verdicts and error paths.

Valid and invalid bodies, oversized ones, compressed ones, both encodings and
hostile bytes, each with the AMQP properties it is published with. The worker
runs for real (a subprocess on a real broker, the simulator behind it); the
same size cap is given to both, to the worker and to ``validate`` through
``WECOM_MAX_MESSAGE_BYTES``.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from tests.commands import edit, seed_command
from tests.publisher_stack import PublisherStack, publisher_stack
from tests.worker_process import AGENT
from wecom_card_contracts import decode_result
from worker.cli import main

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

CAP = 8192
JSON = "application/json"
MSGPACK = "application/msgpack"


@dataclass(frozen=True)
class Body:
    """A body as published: bytes and the two properties that decide how it is read."""

    name: str
    data: bytes
    content_type: str | None = JSON
    content_encoding: str | None = None


def button(name: str, **extra: Any) -> dict[str, Any]:
    """A valid button update with a code of its own."""
    request = {"agentid": AGENT, "response_code": f"rc-{name}", "button": {"replace_name": "好"}}
    return {"command_id": name, "request": request, **extra}


def vote(name: str) -> dict[str, Any]:
    """The seed's vote card as a valid command of this worker's app."""
    command = seed_command("vote_interaction", command_id=name)
    command = edit(command, "request.agentid", AGENT)
    return edit(command, "request.response_code", f"rc-{name}")


def js(value: Any) -> bytes:
    """JSON bytes."""
    return msgspec.json.encode(value)


def mp(value: Any) -> bytes:
    """msgpack bytes."""
    return msgspec.msgpack.encode(value)


def corpus() -> list[Body]:
    """The bodies both judges see."""
    every_problem = edit(vote("every-problem"), "request.agentid", str(AGENT))
    every_problem = edit(
        every_problem, "request.template_card.checkbox.option_list[1].id", "option_id1"
    )
    oversized = edit(vote("oversized"), "request.template_card.main_title.desc", "长" * CAP)
    padded = js(button("bomb"))[:-1] + b" " * (CAP * 64) + b"}"
    return [
        Body("valid-json", js(button("valid-json"))),
        Body("valid-no-content-type", js(button("valid-no-content-type")), None),
        Body("valid-charset", js(vote("valid-charset")), "application/json; charset=utf-8"),
        Body("valid-msgpack", mp(vote("valid-msgpack")), MSGPACK),
        Body("valid-gzip", gzip.compress(js(vote("valid-gzip"))), JSON, "gzip"),
        Body(
            "valid-deflate-msgpack", zlib.compress(mp(button("valid-deflate"))), MSGPACK, "deflate"
        ),
        Body("every-problem", js(every_problem)),
        Body("empty-replace-name", js(edit(button("empty"), "request.button.replace_name", ""))),
        Body("unknown-field", js(edit(vote("unknown"), "request.template_card.task_id", "t"))),
        Body("msgpack-wrong-type", mp(edit(button("mp-type"), "request.agentid", "x")), MSGPACK),
        Body("missing-command-id", js({"request": button("x")["request"]})),
        Body("oversized", js(oversized)),
        Body("gzip-bomb", gzip.compress(padded), JSON, "gzip"),
        Body("msgpack-as-json", mp(button("mp-as-json")), None),
        Body("byte-order-mark", b"\xef\xbb\xbf" + js(button("bom"))),
        Body("text-plain", js(button("text-plain")), "text/plain"),
        Body("brotli", js(button("brotli")), JSON, "br"),
        Body("truncated-gzip", gzip.compress(js(button("truncated")))[:-12], JSON, "gzip"),
        Body("not-an-object", b"[1, 2, 3]"),
        Body("nested", b"[" * 4000 + b"]" * 4000),
        Body("bad-utf8", js(button("bad-utf8")).replace(b"\xe5\xa5\xbd", b"\xff\xfe")),
        Body("empty", b""),
    ]


def validate_verdict(
    body: Body, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[bool, str | None]:
    """(valid, leading error path) from ``wecom-card-worker validate`` with the body's properties."""
    file = tmp_path / body.name
    file.write_bytes(body.data)
    options = [] if body.content_type is None else ["--content-type", body.content_type]
    if body.content_encoding is not None:
        options += ["--content-encoding", body.content_encoding]
    code = main(["validate", str(file), *options])
    out = capsys.readouterr().out
    assert code in {0, 1}, out
    if code == 0:
        return True, None
    verdict = next(line for line in out.splitlines() if line.startswith("invalid: "))
    path = verdict.removeprefix("invalid: ").split(": ", 1)[0]
    return False, None if path == "(body)" else path


@pytest.fixture
async def stack(amqp_url: str, tmp_path: Path, queue_prefix: str) -> AsyncIterator[PublisherStack]:
    """Simulator, broker and the worker's world."""
    async with publisher_stack(amqp_url, tmp_path, queue_prefix) as stack:
        yield stack


async def test_validate_and_the_worker_agree_on_every_body(
    stack: PublisherStack,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Given one corpus, validate's verdict and path equal the worker's, body by body."""
    bodies = corpus()
    monkeypatch.setenv("WECOM_MAX_MESSAGE_BYTES", str(CAP))
    by_validate = {body.name: validate_verdict(body, tmp_path, capsys) for body in bodies}
    await stack.worker(WECOM_MAX_MESSAGE_BYTES=str(CAP))
    async with stack.upstream() as up:
        for body in bodies:
            await up.publish(
                body.data,
                content_type=body.content_type,
                content_encoding=body.content_encoding,
                correlation_id=body.name,
            )
        messages = await up.take("WECOM_RESULT_QUEUE", len(bodies))
    by_worker: dict[str, tuple[bool, str | None]] = {}
    for message in messages:
        packed = message.content_type == MSGPACK
        result = decode_result(message.body, "msgpack" if packed else "json")
        assert result.correlation_id is not None
        assert result.status in {"ok", "rejected"}, result
        error_path = result.error.path if result.error else None
        by_worker[result.correlation_id] = (result.status != "rejected", error_path)
    assert by_validate == by_worker
    assert sum(valid for valid, _ in by_validate.values()) == 6
    assert by_validate["every-problem"] == (False, "request.agentid")
