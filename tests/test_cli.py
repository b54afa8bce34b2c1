"""The wecom-card-worker command line: validate, schema, --help, --version."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import msgspec
import pytest

from tests.commands import edit, encode, seed_command
from wecom_card_contracts import message_schema
from worker import __version__
from worker.cli import main

REALWORLD = sorted((Path(__file__).resolve().parents[2] / "shared" / "realworld").glob("*.json"))


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """The console command as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_validate_valid_file_exits_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A valid command: exit 0 and a verdict line naming the card type."""
    path = tmp_path / "command.json"
    path.write_bytes(encode(seed_command("news_notice", command_id="n-1")))
    assert main(["validate", str(path)]) == 0
    assert capsys.readouterr().out.strip() == "valid: command 'n-1' (news_notice card)"


def test_validate_invalid_file_prints_path_and_exits_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An invalid command: exit 1, the leading path and message first, the others after."""
    command = edit(
        seed_command("button_interaction"),
        "request.template_card.button_list[1].style",
        "big",
    )
    command = edit(command, "request.agentid", "1")
    path = tmp_path / "bad.json"
    path.write_bytes(encode(command))
    assert main(["validate", str(path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("invalid: request.agentid: ")
    assert lines[1].startswith("  also: request.template_card.button_list[1].style: ")


def test_validate_reads_standard_input_and_msgpack_by_its_content_type() -> None:
    """``-`` reads standard input; msgpack is judged as msgpack when its content_type says so."""
    done = subprocess.run(
        [sys.executable, "-m", "worker", "validate", "-", "--content-type", "application/msgpack"],
        input=msgspec.msgpack.encode(seed_command("vote_interaction")),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert b"vote_interaction card" in done.stdout


def test_validate_unreadable_file_exits_two(tmp_path: Path) -> None:
    """A file that cannot be read: exit 2 with a message, no traceback."""
    done = run("validate", str(tmp_path / "missing.json"))
    assert done.returncode == 2
    assert "cannot read" in done.stderr
    assert "Traceback" not in done.stderr


def test_validate_without_a_file_is_a_usage_error() -> None:
    """Bad usage: exit 2 and argparse's usage line."""
    done = run("validate")
    assert done.returncode == 2
    assert "usage:" in done.stderr


@pytest.mark.skipif(not REALWORLD, reason="../shared/realworld not present")
@pytest.mark.parametrize("path", REALWORLD[:40], ids=[p.stem for p in REALWORLD[:40]])
def test_validate_gives_each_realworld_body_its_verdict(
    tmp_path: Path, path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command line agrees with every real-world verdict and leading path."""
    case = json.loads(path.read_text("utf-8"))
    file = tmp_path / "command.json"
    file.write_bytes(encode({"command_id": path.stem, "request": case["request"]}))
    code = main(["validate", str(file)])
    out = capsys.readouterr().out
    if case["verdict"] == "valid":
        assert code == 0, out
    else:
        assert code == 1
        assert out.startswith(f"invalid: {case['path']}: ")


def test_schema_prints_the_generated_schema() -> None:
    """``schema`` prints a valid JSON Schema; ``--message command`` validates a seed command."""
    done = run("schema")
    assert done.returncode == 0
    schema = json.loads(done.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema == message_schema()
    only = json.loads(run("schema", "--message", "command").stdout)
    jsonschema.validate(seed_command("multiple_interaction"), only)


def test_help_and_version() -> None:
    """``--help`` lists the four commands; ``--version`` prints the version."""
    help_text = run("--help").stdout
    for word in ("run", "validate", "schema", "asyncapi"):
        assert word in help_text
    assert run("--version").stdout.strip() == f"wecom-card-worker {__version__}"
