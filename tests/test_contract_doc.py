"""docs/contract.md: every example decodes, and every example result is what the worker answers.

Examples are the JSON blocks that follow a ``<!-- example: NAME command -->`` or
``<!-- example: NAME result -->`` marker. Each command is published, in the
order of the document, to a real worker over a real broker, with the simulator
arranged as the example's section describes; the worker's answer must equal
the example result except for what depends on the clock: the two times, the
numbers inside ``error.message`` (hours since ``code_issued_at``, the retry
budget), and how many attempts fit in the retry budget.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from simulator import Fault
from tests.publisher_stack import PublisherStack, publisher_stack
from wecom_card_contracts import STATUSES, Result, decode_command, decode_result, wire

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

CONTRACT = Path(__file__).parents[1] / "docs" / "contract.md"
MARKER = re.compile(
    r"<!-- example: (?P<name>[\w-]+) (?P<kind>command|result) -->\s*```json\n(?P<body>.*?)```",
    re.DOTALL,
)
CLOCK_FIELDS = ("received_at", "finished_at")
CORP = "ww0123456789abcdef"
AGENT = 1000002
INVALID_USERS = frozenset({"wangwu"})


def examples() -> dict[str, dict[str, Any]]:
    """``{name: {"command": ..., "result": ...}}`` in document order."""
    found: dict[str, dict[str, Any]] = {}
    for match in MARKER.finditer(CONTRACT.read_text("utf-8")):
        entry = found.setdefault(match["name"], {})
        assert match["kind"] not in entry, f"two {match['kind']} examples named {match['name']}"
        entry[match["kind"]] = json.loads(match["body"])
    return found


def arrange(stack: PublisherStack, command: dict[str, Any]) -> None:
    """The simulator's side of an example, chosen by its response_code."""
    code = command["request"]["response_code"]
    if "spent-elsewhere" in code:
        stack.sim.state.expire_codes([code])  # spent by someone else: WeCom answers 60140
    elif code == "RC-52-close":
        stack.sim.state.add_faults(Fault(kind="http_500", count=1000, response_code=code))
    elif code == "RC-53-close":
        stack.sim.state.add_faults(Fault(kind="lost_answer", response_code=code))


async def worker_answers(
    stack: PublisherStack,
    commands: dict[str, dict[str, Any]],
    arrange_one: Callable[[PublisherStack, dict[str, Any]], None] = arrange,
) -> dict[str, Result]:
    """Each command published in turn (its result awaited before the next), the worker's result."""
    await stack.worker(WECOM_RETRY_BUDGET="1.5")
    answers: dict[str, Result] = {}
    async with stack.upstream() as up:
        for name, command in commands.items():
            arrange_one(stack, command)
            await up.publish(msgspec.json.encode(command))
            [message] = await up.take("WECOM_RESULT_QUEUE", 1)
            answers[name] = decode_result(message.body)
    return answers


def test_every_status_has_an_example_command_and_result() -> None:
    """The document shows a command and its result for each of the seven statuses."""
    found = examples()
    assert all(set(entry) == {"command", "result"} for entry in found.values()), found.keys()
    assert {entry["result"]["status"] for entry in found.values()} == set(STATUSES)
    assert any(entry["result"]["replayed"] for entry in found.values())


def test_every_example_decodes() -> None:
    """Results decode as Result; commands as Command, except those the worker rejects as invalid."""
    for name, entry in examples().items():
        result = msgspec.convert(entry["result"], Result)
        body = json.dumps(entry["command"]).encode()
        if result.error is not None and result.error.code == "invalid_command":
            with pytest.raises(Exception, match="agentid"):
                decode_command(body)
        else:
            assert decode_command(body).command_id == result.command_id, name


@pytest.fixture
async def stack(amqp_url: str, tmp_path: Path, queue_prefix: str) -> AsyncIterator[PublisherStack]:
    """The worker's world for the examples: one app, and WangWu unknown to WeCom."""
    async with publisher_stack(
        amqp_url, tmp_path, queue_prefix, corp_id=CORP, agentid=AGENT, invalid_users=INVALID_USERS
    ) as stack:
        yield stack


@pytest.mark.e2e
@pytest.mark.timeout(120)
async def test_every_example_result_is_what_the_worker_answers(stack: PublisherStack) -> None:
    """Given the examples' commands published in order, the worker answers the example results."""
    found = examples()
    answers = await worker_answers(stack, {name: e["command"] for name, e in found.items()})
    now = time.time()
    for name, entry in found.items():
        answer = msgspec.to_builtins(answers[name])
        assert all(0 < answer[f] <= now for f in CLOCK_FIELDS), name
        assert timeless(answer) == timeless(entry["result"]), name
        if entry["result"]["error"] and entry["result"]["error"]["code"] == "retries_exhausted":
            assert answer["attempts"] >= 2, name


def timeless(result: dict[str, Any]) -> dict[str, Any]:
    """A result without what depends on the clock (see the module's docstring)."""
    kept = {k: v for k, v in result.items() if k not in CLOCK_FIELDS}
    error = kept.get("error")
    if error is not None:
        kept["error"] = {**error, "message": re.sub(r"\d+(\.\d+)?", "N", error["message"])}
        if error["code"] == "retries_exhausted":
            del kept["attempts"]
    return kept


def test_queue_names_in_the_document_are_the_contract_constants() -> None:
    """The queue table names the defaults the worker and the AsyncAPI document use."""
    text = CONTRACT.read_text("utf-8")
    for name in (wire.COMMAND_QUEUE, wire.RESULT_QUEUE, wire.DEAD_LETTER_QUEUE):
        assert f"`{name}`" in text
