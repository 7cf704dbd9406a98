"""Feature events: decoding, and how one poll splits into one push and dead letters with reasons."""

import json
from collections import namedtuple
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest

from unison.config import KafkaConfig
from unison.streaming.events import MAX_EVENT_BYTES, FeatureEventConfig, FeatureEventStream, decode_event

GOOD = {"customer_id": 7, "open_tickets": 3, "tickets_last_90d": 9, "last_csat": 2.5, "days_since_last_login": 0,
        "event_timestamp": "2026-11-23T10:15:00Z"}
Record = namedtuple("Record", "topic partition offset key value timestamp")


def test_a_good_event_decodes_with_its_times_parsed_to_utc() -> None:
    payload, reason = decode_event(json.dumps(GOOD).encode())
    assert reason is None and payload == {**GOOD, "event_timestamp": datetime(2026, 11, 23, 10, 15, tzinfo=UTC),
                                          "created_timestamp": None}


def test_mixed_iso_formats_in_one_poll_become_one_instant() -> None:
    stamps = ["2026-11-23T10:15:00Z", "2026-11-23T12:15:00+02:00", "2026-11-23T10:15:00", "2026-11-23 10:15:00.000"]
    decoded = [decode_event(json.dumps({**GOOD, "event_timestamp": s, "created_timestamp": s}).encode())[0]
               for s in stamps]
    assert {d["event_timestamp"] for d in decoded if d} == {datetime(2026, 11, 23, 10, 15, tzinfo=UTC)}
    assert all(d and d["created_timestamp"] == d["event_timestamp"] for d in decoded)


@pytest.mark.parametrize(("value", "reason"), [
    (None, "tombstone"),
    (b"{nope", "not JSON"),
    (b"[1]", "expected a JSON object"),
    (json.dumps({**GOOD, "event_timestamp": 1700000000}).encode(), "ISO-8601"),
    (json.dumps({**GOOD, "open_tickets": "3"}).encode(), "open_tickets: expected a number, got str"),
    (json.dumps({**GOOD, "customer_id": True}).encode(), "customer_id: expected a number, got bool"),
    (json.dumps({**GOOD, "customer_id": 2**70}).encode(), "customer_id: Input should be less than or equal to"),
    (json.dumps({**GOOD, "open_tickets": 5_000_000_000}).encode(), "open_tickets: Input should be less than"),
    (json.dumps({**GOOD, "open_tickets": 2.5}).encode(), "open_tickets: expected a whole number"),
    (json.dumps({**GOOD, "days_since_last_login": -1}).encode(), "days_since_last_login: Input should be greater"),
    (json.dumps({**GOOD, "last_csat": 9}).encode(), "last_csat: Input should be less than or equal to 5"),
    (json.dumps({**GOOD, "created_timestamp": "x"}).encode(), "created_timestamp: 'x' is not an ISO-8601 time"),
    (json.dumps({**GOOD, "plan": "pro"}).encode(), "plan: Extra inputs are not permitted"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "open_tickets"}).encode(), "open_tickets: Field required"),
    (b"{" + b" " * MAX_EVENT_BYTES + b"}", "exceeds"),
])
def test_bad_events_have_a_reason(value: bytes | None, reason: str) -> None:
    payload, why = decode_event(value)
    assert payload is None and why is not None and reason in why


class _Future:
    def get(self, timeout: float) -> None:
        return None


class _Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any, dict[str, bytes]]] = []

    def send(self, topic: str, key: Any, value: Any, headers: list[tuple[str, bytes]]) -> _Future:
        self.sent.append((topic, value, dict(headers)))
        return _Future()


def test_one_push_for_the_good_events_and_a_dead_letter_with_its_reason_for_each_bad_one() -> None:
    pushed: list[pd.DataFrame] = []
    stream = FeatureEventStream(KafkaConfig(), "unused:9092", FeatureEventConfig(),
                                lambda frame: pushed.append(frame) or len(frame))
    stream._producer = _Producer()
    values = [GOOD, {**GOOD, "customer_id": 8}, {**GOOD, "last_csat": 9.0}, {**GOOD, "surprise": 1},
              {k: v for k, v in GOOD.items() if k != "open_tickets"}, "not an object"]
    records = [Record("customer-events", 0, i, None, json.dumps(v).encode(), 0) for i, v in enumerate(values)]
    stream.handle(records)
    (frame,) = pushed
    assert frame["customer_id"].tolist() == [7, 8]
    reasons = {int(h["source"].decode().rsplit("/", 1)[1]): h["reason"].decode()
               for topic, _, h in stream._producer.sent if topic == "customer-events.dlq"}
    assert set(reasons) == {2, 3, 4, 5}
    assert "last_csat" in reasons[2] and "surprise" in reasons[3] and "open_tickets" in reasons[4]
    assert "expected a JSON object" in reasons[5]
    assert stream.stats.pushed == 2 and stream.stats.dead_letters == 4
    assert stream.newest_event == pd.Timestamp("2026-11-23T10:15:00Z")


def test_a_store_failure_raises_so_nothing_is_committed() -> None:
    def failing(frame: pd.DataFrame) -> int:
        raise ConnectionError("online store down")

    stream = FeatureEventStream(KafkaConfig(), "unused:9092", FeatureEventConfig(), failing)
    stream._producer = _Producer()
    with pytest.raises(ConnectionError):
        stream.handle([Record("customer-events", 0, 0, None, json.dumps(GOOD).encode(), 0)])
    assert stream.stats.pushed == 0


def test_generated_events_fit_the_push_schema(tmp_path: Any) -> None:
    from unison.data import generate
    from unison.features.push import validate_push
    from unison.streaming.tools import feature_event_messages

    generate(tmp_path, customers=50, tickets=20, seed=1)
    messages = list(feature_event_messages(tmp_path / "customer_activity.parquet", 40, seed=2))
    assert len(messages) == 40
    decoded = [decode_event(value) for _, value in messages]
    assert all(reason is None for _, reason in decoded)
    frame = validate_push(pd.DataFrame.from_records([payload for payload, _ in decoded]))
    assert [int(key) for key, _ in messages] == frame["customer_id"].tolist()
