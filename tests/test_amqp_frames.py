"""Result properties marshalled in one pass are byte for byte what pamqp writes, and read back."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pamqp import commands as spec
from pamqp.header import ContentHeader

from worker.amqp import Broker, ResultProperties

CASES = [
    {"content_type": "application/json", "delivery_mode": 2, "message_id": "result-1"},
    {
        "content_type": "application/msgpack",
        "correlation_id": "c" * 255,
        "message_id": "m",
        "delivery_mode": 2,
    },
    {"content_type": "application/json", "correlation_id": "é命令-1", "message_id": "x"},
    {"content_encoding": "gzip", "priority": 9, "reply_to": "amq.rabbitmq.reply-to.abc"},
    {"expiration": "60000", "message_type": "t", "user_id": "guest", "app_id": "a"},
    {"content_type": "", "message_id": "only-empty-type-skipped"},
    {"headers": {"x-unroutable-reply-to": "gone", "x-unroutable-reason": "no queue"}},
    {"timestamp": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "message_id": "t"},
]


@pytest.mark.parametrize("fields", CASES)
def test_result_properties_marshal_as_pamqp_does(fields: dict[str, object]) -> None:
    """Given any mix of properties, when marshalled, then the bytes equal pamqp's and read back."""
    # Given
    fast = ResultProperties(**fields)  # type: ignore[arg-type]
    plain = spec.Basic.Properties(**fields)  # type: ignore[arg-type]
    # When
    marshalled = fast.marshal()
    # Then
    assert marshalled == plain.marshal()
    header = ContentHeader(body_size=3, properties=fast)
    read = ContentHeader()
    read.unmarshal(header.marshal())
    for name, value in fields.items():
        assert getattr(read.properties, name) == (value or None)


def test_result_properties_refuse_an_over_long_short_string() -> None:
    """Given a message_id over 255 bytes, when marshalled, then it is refused as pamqp refuses it."""
    # Given
    fast = ResultProperties(message_id="m" * 256)
    # When / Then
    with pytest.raises(ValueError, match="255"):
        fast.marshal()


def test_broker_builds_result_properties_for_results() -> None:
    """Given a result, when the broker builds its properties, then they marshal in one pass."""
    # Given / When
    properties = Broker.properties("application/json", "corr-1", "result-1")
    # Then
    assert isinstance(properties, ResultProperties)
    assert properties.delivery_mode == 2
    assert (
        properties.marshal()
        == spec.Basic.Properties(
            content_type="application/json",
            correlation_id="corr-1",
            message_id="result-1",
            delivery_mode=2,
        ).marshal()
    )
