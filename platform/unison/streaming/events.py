"""Feature events: customer activity updates from Kafka pushed into Feast (online and offline stores).

Feast leaves stream ingestion to its users; this is ours. Each poll becomes one push through the feature
view's push source (`Features.push`, which validates against the one push schema), so the scorer's next online
lookup sees the new values. An event that does not fit the schema goes to the dead-letter topic with the reason
and its original bytes, and the rest of the poll is still pushed. A store failure raises before the commit: the
batch is pushed again after a backoff (`unison.streaming.failures`; a replayed push leaves the online stores as
they were and adds offline duplicates that point-in-time joins read the same way).

An event, one JSON object per message (key: the customer id, optional):
    {"customer_id": 17, "open_tickets": 3, "tickets_last_90d": 9, "last_csat": 2.5,
     "days_since_last_login": 0, "event_timestamp": "2026-11-23T10:15:00Z"}
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pandas as pd
from pydantic import Field

from unison.config import KafkaConfig
from unison.streaming.lag import LagWatch
from unison.streaming.loop import ConsumerConfig, ConsumerLoop, json_object
from unison.streaming.ownership import Coordinator

MAX_EVENT_BYTES = 16 * 1024


class FeatureEventConfig(ConsumerConfig):
    """The feature-event deployment's `user_config`."""

    group_id: str = Field(default="unison-feature-events", description="Kafka consumer group of the replicas.")
    max_poll_records: int = Field(default=500, ge=1, le=5000,
                                  description="Most events per poll: one push to the online and offline stores.")


def decode_event(value: bytes | None) -> tuple[dict[str, Any] | None, str | None]:
    """The event's push row, or the reason it cannot be pushed (`unison.features.event.FeatureEvent`'s rules:
    the first failing field, named)."""
    from pydantic import ValidationError

    from unison.features.event import FeatureEvent
    from unison.features.ticket import first_error

    payload, reason = json_object(value, MAX_EVENT_BYTES)
    if payload is None:
        return None, reason
    try:
        return FeatureEvent.model_validate(payload).row(), None
    except ValidationError as exc:
        return None, first_error(exc)


Push = Callable[[pd.DataFrame], int]


class FeatureEventStream(ConsumerLoop):
    """Pushes each poll's valid events in one call; `push` is `Features.push`."""

    name = "feature-events"

    def __init__(self, kafka: KafkaConfig, bootstrap_servers: str, config: FeatureEventConfig, push: Push,
                 lag: LagWatch | None = None, coordinator: Callable[[], Coordinator] | None = None) -> None:
        super().__init__(kafka, bootstrap_servers, config, kafka.feature_events_topic,
                         kafka.feature_events_dead_letter_topic, lag, coordinator)
        self.push = push
        self.newest_event: pd.Timestamp | None = None
        self.last_push_seconds: float | None = None
        self.last_push_at: float | None = None  # wall clock of the last successful push

    def handle(self, records: list[Any]) -> None:
        events: list[tuple[Any, dict[str, Any]]] = self.decoded(records, decode_event)
        if not events:
            return
        # Each event passed FeatureEvent, the push schema's rules; `push` checks the frame once more. Should it
        # still raise, the loop retries the poll one event at a time and dead-letters the one that fails.
        frame = pd.DataFrame.from_records([p for _, p in events])
        started = time.perf_counter()
        self.push(frame)  # a store failure raises: nothing is committed, the poll is retried
        self.last_push_seconds = time.perf_counter() - started
        self.last_push_at = time.time()
        self.stats.pushed += len(frame)
        newest = pd.to_datetime(frame["event_timestamp"], utc=True).max()
        if self.newest_event is None or newest > self.newest_event:
            self.newest_event = newest
