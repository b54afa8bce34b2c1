"""Classification of update_template_card answers and 45009 block times: pure functions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.wecom.errcodes import (
    HOUR_ESCALATION_GRACE,
    Action,
    classify,
    frequency_block_until,
    gettoken_retryable,
)

# 2025-11-24 17:00:00 UTC: the start of an hour (and so of a minute).
HOUR_START = 1_764_003_600.0


@pytest.mark.parametrize(
    ("errcode", "action", "spends"),
    [
        (0, Action.SUCCESS, True),
        (-1, Action.SYSTEM_BUSY, True),
        (40014, Action.REFRESH_TOKEN, False),
        (42001, Action.REFRESH_TOKEN, False),
        (40001, Action.REFRESH_TOKEN, False),
        (45009, Action.FREQUENCY_LIMIT, False),
        (45033, Action.CONCURRENCY_LIMIT, False),
        (60140, Action.CODE_INVALID, True),
        (301002, Action.CONFIG_ERROR, False),
        (60020, Action.IP_NOT_TRUSTED, False),
        (42015, Action.REQUEST_ERROR, False),
        (40058, Action.REQUEST_ERROR, False),
        (81013, Action.REQUEST_ERROR, False),
        (47001, Action.REQUEST_ERROR, False),
    ],
)
def test_every_row_of_the_design_table(errcode: int, action: Action, spends: bool) -> None:
    """Each errcode of DESIGN.md's table maps to its action and whether it spends the code."""
    assert classify(errcode) is action
    assert action.spends_code is spends


@given(
    st.integers().filter(
        lambda c: c not in {0, -1, 40014, 42001, 40001, 45009, 45033, 60140, 301002, 60020}
    )
)
def test_unknown_errcodes_are_request_errors(errcode: int) -> None:
    """Any errcode outside the table is a refused request that did not spend the code."""
    assert classify(errcode) is Action.REQUEST_ERROR
    assert not classify(errcode).spends_code


@pytest.mark.parametrize(
    ("errcode", "retryable"),
    [(-1, True), (40001, False), (40013, False), (40125, False), (41004, False)],
)
def test_only_system_busy_makes_gettoken_worth_retrying(errcode: int, retryable: bool) -> None:
    """gettoken's -1 is retried; a refused corp id or secret is final."""
    assert gettoken_retryable(errcode) is retryable


def test_a_first_45009_blocks_until_the_next_minute() -> None:
    """With no recent minute block, the corp is blocked to the next minute boundary."""
    assert frequency_block_until(HOUR_START + 12.5, None) == HOUR_START + 60.0
    assert frequency_block_until(HOUR_START, None) == HOUR_START + 60.0


def test_45009_right_after_a_minute_block_blocks_until_the_next_hour() -> None:
    """A 45009 within the grace after a minute block ended cannot be the minute: block the hour."""
    ended = HOUR_START + 120.0
    assert frequency_block_until(ended + 0.2, ended) == HOUR_START + 3600.0


def test_45009_during_a_minute_block_keeps_the_minute() -> None:
    """Calls answered 45009 while the block stands (sent before it) do not escalate it."""
    block_end = HOUR_START + 120.0
    assert frequency_block_until(block_end - 5.0, block_end) == block_end


def test_45009_long_after_a_minute_block_is_a_new_minute_block() -> None:
    """A 45009 well after the last minute block ended is taken for a minute overflow again."""
    ended = HOUR_START + 120.0
    later = ended + HOUR_ESCALATION_GRACE + 1.0
    assert frequency_block_until(later, ended) == HOUR_START + 180.0


@given(
    st.floats(min_value=1e9, max_value=2e9),
    st.one_of(st.none(), st.floats(min_value=1e9, max_value=2e9)),
)
def test_a_block_always_ends_on_a_later_minute_boundary(now: float, last: float | None) -> None:
    """Whatever came before, the block ends after now, on a minute boundary, within an hour."""
    until = frequency_block_until(now, last)
    assert now < until <= now + 3600.0
    assert until % 60.0 == 0.0
