"""The kept outcome of a finished code: what survives the replay window, packed and unpacked."""

from __future__ import annotations

import pytest

from wecom_card_contracts import Result, ResultError, decode_result, encode_result
from worker.ports import AlreadyUsed, Claimed, CodeKey, Replay
from worker.state.compact import (
    HEAD_BYTES,
    KINDS,
    decide_kept,
    kept_command_name,
    pack_command_id,
    pack_kept,
    unpack_kept,
)

KEY = CodeKey("ww0123456789abcdef", "code-1")


def stored(**fields: object) -> bytes:
    """A stored Result with ``fields`` over an ``ok`` one."""
    base: dict[str, object] = {
        "command_id": "a",
        "correlation_id": "a",
        "status": "ok",
        "errcode": 0,
        "errmsg": "ok",
        "attempts": 1,
        "received_at": 1_764_000_000.123,
        "finished_at": 1_764_000_000.456,
    }
    return encode_result(Result(**{**base, **fields}))  # type: ignore[arg-type]


@pytest.mark.parametrize(("status", "error_code"), KINDS)
def test_every_status_and_error_code_survive(status: str, error_code: str | None) -> None:
    """Each kind of outcome unpacks to the status and error.code it was packed from."""
    error = None if error_code is None else ResultError(code=error_code, message="m")  # type: ignore[arg-type]
    kept = unpack_kept(
        pack_kept(
            stored(status=status, error=error), "a", spent=True, maybe_spent=False, finished_at=0
        )
    )
    assert (kept.status, kept.error_code) == (status, error_code)


@pytest.mark.parametrize("errcode", [None, 0, -1, 60140, 2**31 - 1])
def test_errcode_attempts_times_and_flags_survive(errcode: int | None) -> None:
    """Errcode, attempts, both times (to the ms) and the flags come back as packed."""
    packed = pack_kept(
        stored(errcode=errcode, attempts=3), "a", spent=False, maybe_spent=True, finished_at=0
    )
    kept = unpack_kept(packed)
    assert (kept.errcode, kept.attempts) == (errcode, 3)
    assert (kept.received_at, kept.finished_at) == (1_764_000_000.123, 1_764_000_000.456)
    assert (kept.spent, kept.maybe_spent) == (False, True)
    assert len(packed) == HEAD_BYTES + 2


def test_something_that_is_no_result_is_kept_as_indeterminate() -> None:
    """Bytes that are no Result (the pipeline never stores such) are kept as 'not known'."""
    kept = unpack_kept(pack_kept(b"\xff", "a", spent=True, maybe_spent=True, finished_at=12.5))
    assert (kept.status, kept.error_code, kept.finished_at) == ("indeterminate", None, 12.5)


@pytest.mark.parametrize(
    ("command_id", "tag", "named"),
    [
        ("x" * 32, b"=", "x" * 32),
        ("order-42-approve", b"=", "order-42-approve"),
        ("0f8fad5b-d9cb-469f-a165-70867728950e", b"u", "0f8fad5b-d9cb-469f-a165-70867728950e"),
        ("0F8FAD5B-D9CB-469F-A165-70867728950E", b"#", "0F8FAD5B-D9CB-46…"),
        ("x" * 33, b"#", "x" * 16 + "…"),
        ("审批" * 20, b"#", "审批审批审…"),  # a character cut in half is left out
    ],
)
def test_command_ids_are_kept_short_and_still_named(
    command_id: str, tag: bytes, named: str
) -> None:
    """Short ids stay as they are, UUIDs take 16 bytes, long ids a digest and their start."""
    packed = pack_command_id(command_id)
    assert packed[:1] == tag
    assert len(packed) <= 33
    assert kept_command_name(packed) == named


def test_long_ids_sharing_a_start_are_told_apart() -> None:
    """Two long ids with the same first 16 bytes are different commands."""
    first, second = "x" * 40 + "-1", "x" * 40 + "-2"
    packed = pack_kept(stored(), first, spent=True, maybe_spent=True, finished_at=0)
    assert isinstance(decide_kept(packed, KEY, first, 3600), Replay)
    assert decide_kept(packed, KEY, second, 3600) == AlreadyUsed("x" * 16 + "…")


def test_a_late_replay_is_a_result_without_details() -> None:
    """The replay built after the window is a valid Result saying its details are gone."""
    packed = pack_kept(stored(status="partial"), "a", spent=True, maybe_spent=True, finished_at=0)
    outcome = decide_kept(packed, KEY, "a", 600)
    assert isinstance(outcome, Replay)
    result = decode_result(outcome.result)
    assert (result.status, result.errcode, result.invalid_users) == ("partial", 0, [])
    assert result.errmsg == (
        "ok (details of this result are no longer kept: replay window of 600 s passed)"
    )


def test_an_unspent_kept_code_goes_to_another_command() -> None:
    """A code whose command did not spend it is claimable, with what may have been sent."""
    packed = pack_kept(stored(status="failed"), "a", spent=False, maybe_spent=True, finished_at=0)
    assert decide_kept(packed, KEY, "b", 3600) == Claimed(maybe_spent=True)
