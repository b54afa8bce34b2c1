"""Property-based fuzzing of the whole decode path with hostile bodies made from valid commands.

Every input must end in a valid Command or a described refusal (``CommandInvalid``
with a message), and through the pipeline in a ``rejected`` result whose body
decodes in the content type it is labelled with. Any other exception fails the
test; the run as a whole is bounded by pytest-timeout, so a hang fails it too.
"""

from __future__ import annotations

import asyncio
import random

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hostile_bodies import HostileDelivery, hostile_delivery, judge, rejecting_pipeline
from tests.strategies import commands
from wecom_card_contracts import Command, decode_result, media_format
from worker.pipeline import Reply

FUZZ = settings(
    max_examples=250,
    deadline=None,  # no timing assertions; the test's timeout bounds a hang
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def generic(command: Command) -> object:
    """A command as the generic value its encoders write."""
    return msgspec.to_builtins(command)


@FUZZ
@given(command=commands(), rng=st.randoms(use_true_random=False))
def test_every_hostile_body_is_a_command_or_a_described_refusal(
    command: Command, rng: random.Random
) -> None:
    """Given a valid command broken at value, byte and compression level, When read,
    Then the outcome is a Command or CommandInvalid with a message, nothing else."""
    for _ in range(4):
        assert judge(hostile_delivery(generic(command), rng)) in {"valid", "invalid"}


@settings(FUZZ, max_examples=40)
@given(command=commands(), rng=st.randoms(use_true_random=False))
def test_pipeline_rejects_hostile_bodies_in_their_own_encoding(
    command: Command, rng: random.Random
) -> None:
    """Given hostile deliveries that read_command refuses, When the pipeline processes them,
    Then each ends rejected / invalid_command, dead-lettered, encoded as its content type says."""
    refused: list[HostileDelivery] = []
    while len(refused) < 4:
        hostile = hostile_delivery(generic(command), rng)
        if judge(hostile) == "invalid":
            refused.append(hostile)
    asyncio.run(_reject_all(refused))


async def _reject_all(refused: list[HostileDelivery]) -> None:
    async with rejecting_pipeline() as pipeline:
        for hostile in refused:
            disposition = await pipeline.process(hostile.delivery())
            assert isinstance(disposition, Reply), hostile.recipe
            result = disposition.result
            assert result.status == "rejected"
            assert result.error is not None
            assert result.error.code == "invalid_command"
            assert result.error.message
            assert disposition.dead_letter is not None
            fmt = media_format(hostile.content_type) or "json"
            assert disposition.content_type == f"application/{fmt}"
            assert decode_result(disposition.body, fmt) == result


@pytest.mark.parametrize("seed", range(3))
def test_a_seeded_batch_of_hostile_bodies_replays_identically(seed: int) -> None:
    """The generator is deterministic per seed, so a failing case found by bench/fuzz.py replays."""
    value = {"command_id": "c", "request": {"agentid": 1, "response_code": "r"}}
    first = [hostile_delivery(value, random.Random(seed)) for _ in range(20)]
    again = [hostile_delivery(value, random.Random(seed)) for _ in range(20)]
    assert first == again
