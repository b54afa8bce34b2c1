"""``validate`` judges a body as the worker does: its size cap, its content types, no guessing."""

from __future__ import annotations

import gzip
import subprocess
import sys
from typing import TYPE_CHECKING

import msgspec
import pytest

from tests.commands import edit, encode, seed_command
from wecom_card_contracts import wire
from wecom_card_contracts.cli import main

if TYPE_CHECKING:
    from pathlib import Path

VALID = seed_command("vote_interaction", command_id="v-1")


def big_valid_command(size: int) -> bytes:
    """A valid command of about ``size`` bytes (a long desc: advice, not a limit)."""
    return encode(edit(VALID, "request.template_card.main_title.desc", "说" * (size // 3)))


@pytest.fixture
def verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Verdict:
    """Runs ``python -m wecom_card_contracts validate`` in this process on bytes."""
    monkeypatch.delenv("WECOM_MAX_MESSAGE_BYTES", raising=False)
    return Verdict(tmp_path, capsys)


class Verdict:
    """``validate`` on a body: exit code and printed lines."""

    def __init__(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.file = tmp_path / "body"
        self.capsys = capsys

    def __call__(self, body: bytes, *options: str) -> tuple[int, list[str]]:
        """Exit code and output lines of ``validate FILE OPTIONS``."""
        self.file.write_bytes(body)
        code = main(["validate", str(self.file), *options])
        captured = self.capsys.readouterr()
        return code, (captured.out + captured.err).splitlines()


def test_a_body_over_the_worker_cap_is_invalid(verdict: Verdict) -> None:
    """A 2 MB body is refused for its size as the worker refuses it; --max-bytes raises the cap."""
    body = big_valid_command(2_000_000)
    code, lines = verdict(body)
    assert code == 1
    assert lines[0].startswith("invalid: (body): the message is ")
    assert f"at most {wire.MAX_MESSAGE_BYTES}" in lines[0]
    assert verdict(body, "--max-bytes", str(4 << 20))[0] == 0


def test_the_cap_is_read_from_the_worker_setting(
    verdict: Verdict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WECOM_MAX_MESSAGE_BYTES lowers the cap like it does for the worker."""
    monkeypatch.setenv("WECOM_MAX_MESSAGE_BYTES", "2048")
    code, lines = verdict(big_valid_command(4000))
    assert code == 1
    assert "at most 2048" in lines[0]


def test_a_bad_cap_setting_is_a_usage_error(
    verdict: Verdict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A setting the worker would refuse: exit 2, one line naming it."""
    monkeypatch.setenv("WECOM_MAX_MESSAGE_BYTES", "lots")
    code, lines = verdict(encode(VALID))
    assert code == 2
    assert lines == ["validate: WECOM_MAX_MESSAGE_BYTES: expected a whole number, got 'lots'"]


def test_msgpack_without_its_content_type_is_judged_as_json(verdict: Verdict) -> None:
    """No guessing: a msgpack body without --content-type is not JSON; the hint says why."""
    body = msgspec.msgpack.encode(VALID)
    code, lines = verdict(body)
    assert code == 1
    assert lines[0].startswith("invalid: (body): the body is not valid JSON")
    assert any(line.startswith("hint: the body looks like msgpack") for line in lines)
    assert verdict(body, "--content-type", "application/msgpack")[0] == 0


def test_sniffing_only_when_asked_and_said(verdict: Verdict) -> None:
    """--sniff finds msgpack and gzip, and says that the worker will not."""
    code, lines = verdict(msgspec.msgpack.encode(VALID), "--sniff")
    assert code == 0
    assert lines[0].startswith("note: sniffed content_type application/msgpack")
    code, lines = verdict(gzip.compress(encode(VALID)), "--sniff")
    assert code == 0
    assert lines[0].startswith("note: sniffed content_encoding gzip")


def test_a_byte_order_mark_is_answered_about_json(verdict: Verdict) -> None:
    """A UTF-8 BOM: invalid JSON, with a hint about the BOM; msgpack is never mentioned."""
    code, lines = verdict(b"\xef\xbb\xbf" + encode(VALID))
    assert code == 1
    assert "JSON" in lines[0]
    assert any("byte-order mark" in line for line in lines)
    assert not any("msgpack" in line for line in lines)


def test_a_non_json_file_is_answered_about_json(verdict: Verdict) -> None:
    """A text file that is not JSON gets a message about JSON, not about msgpack."""
    code, lines = verdict(b"command_id: x\nrequest: {}\n")
    assert code == 1
    assert "JSON" in lines[0]
    assert not any("msgpack" in line for line in lines)


def test_compressed_bodies_need_their_content_encoding(verdict: Verdict) -> None:
    """gzip and deflate are read when said; a wrong content type or encoding is refused."""
    body = gzip.compress(encode(VALID))
    assert verdict(body, "--content-encoding", "gzip")[0] == 0
    code, lines = verdict(body)
    assert code == 1
    assert any("gzip" in line for line in lines[1:])
    code, lines = verdict(encode(VALID), "--content-encoding", "br")
    assert (code, lines[0].split(":")[0]) == (1, "invalid")
    assert "content_encoding 'br' is not supported" in lines[0]
    code, lines = verdict(encode(VALID), "--content-type", "text/plain")
    assert code == 1
    assert "content_type 'text/plain' is not supported" in lines[0]


def test_an_expired_code_is_valid_with_a_note(verdict: Verdict) -> None:
    """A code older than 72 h is not invalid, but the worker will answer expired: it says so."""
    code, lines = verdict(encode({**VALID, "code_issued_at": 1_000_000_000.0}))
    assert code == 0
    assert lines[1].startswith("note: code_issued_at is more than 72 h ago")


def test_the_contracts_package_runs_as_a_module(tmp_path: Path) -> None:
    """``python -m wecom_card_contracts validate FILE`` is the publisher's command."""
    file = tmp_path / "command.json"
    file.write_bytes(encode(VALID))
    done = subprocess.run(
        [sys.executable, "-m", "wecom_card_contracts", "validate", str(file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "valid: command 'v-1' (vote_interaction card)\n")
