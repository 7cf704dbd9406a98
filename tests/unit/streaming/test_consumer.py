"""Decoding stream messages: a ticket, or the reason it goes to the dead-letter topic."""

import json

import pytest

from unison.streaming.consumer import MAX_MESSAGE_BYTES, StreamConfig, decode

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
