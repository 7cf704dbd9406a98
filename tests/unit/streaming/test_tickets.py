"""Decoding stream messages: a ticket, or the reason it goes to the dead-letter topic."""

import json

import pytest
from tests.unit.fakes import FakeFeatures, FakeScorer

from unison.streaming.loop import MAX_MESSAGE_BYTES
from unison.streaming.tickets import StreamConfig, decode

GOOD = {"ticket_id": "t1", "customer_id": 3, "subject": "refund", "body": "charged twice", "channel": "email"}


def test_a_good_message_decodes() -> None:
    ticket, reason = decode(json.dumps(GOOD).encode(), 100)
    assert reason is None and ticket is not None and ticket.customer_id == 3


@pytest.mark.parametrize(("value", "reason"), [
    (None, "tombstone"),
    (b"{nope", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[1]", "expected a JSON object, got list"),
    (json.dumps({**GOOD, "customer_id": "3"}).encode(), "customer_id"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "ticket_id"}).encode(), "ticket_id"),
    (json.dumps({**GOOD, "subject": "", "body": ""}).encode(), "both empty"),
    (json.dumps({**GOOD, "body": "x" * 200}).encode(), "more than 100"),
    (json.dumps({**GOOD, "extra": 1}).encode(), "extra"),
    (b"x" * (MAX_MESSAGE_BYTES + 1), "exceeds"),
])
def test_bad_messages_have_a_reason(value: bytes | None, reason: str) -> None:
    ticket, why = decode(value, 100)
    assert ticket is None and why is not None and reason in why


def test_stream_config_is_strict() -> None:
    assert StreamConfig().group_id == "unison-scorer"
    with pytest.raises(ValueError):
        StreamConfig.model_validate({"group": "x"})


def _stream_consumer(features: object) -> object:
    import threading
    import time

    from unison.model.scoring import DataPlane
    from unison.streaming.deployment import StreamConsumer

    consumer = StreamConsumer.__new__(StreamConsumer)  # no Serve, no Kafka: the scoring shell only
    consumer._lock, consumer._checked = threading.Lock(), time.monotonic()
    consumer.variant, consumer.feature_service = "int8", "triage_v1"
    consumer.dataplane = DataPlane("stream", features)  # type: ignore[arg-type]
    consumer.predictor = FakeScorer()
    return consumer


def test_a_ticket_that_raises_in_scoring_is_dead_lettered_with_its_exception_and_the_others_are_scored() -> None:
    consumer = _stream_consumer(FakeFeatures())
    tickets = [{"ticket_id": f"t{i}", "customer_id": i, "subject": "s", "body": "boom" if i == 2 else "fine"}
               for i in range(4)]
    results, _ = consumer._score(tickets)
    assert [("error" in r) for r in results] == [False, False, True, False]
    assert results[2]["error"] == "scoring failed: OverflowError: Python int too large to convert to C long"
    assert results[3]["ticket_id"] == "t3"


def test_an_online_store_outage_raises_so_the_poll_is_retried_not_dead_lettered() -> None:
    features = FakeFeatures()
    features.down = True
    consumer = _stream_consumer(features)
    with pytest.raises(ConnectionError, match="online store unreachable"):
        consumer._score([{"ticket_id": f"t{i}", "customer_id": i, "subject": "s", "body": "b"} for i in range(3)])
