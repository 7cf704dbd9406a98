"""The classification of a consumer loop's failures and the backoff between tries (pure logic)."""

from __future__ import annotations

import sqlite3

import pytest
from kafka.errors import (
    CommitFailedError,
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotCoordinatorError,
    RebalanceInProgressError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

from unison.features.push import PushSchemaError
from unison.features.store import FeatureStoreError
from unison.model.predictor import PredictorInputError
from unison.streaming.failures import backoff, classify


@pytest.mark.parametrize(("exc", "kind"), [
    (KafkaConnectionError("connection reset"), "broker"),
    (KafkaTimeoutError("Failed to flush buffered records within 30 secs"), "broker"),
    (CommitFailedError("commit failed"), "broker"),
    (RebalanceInProgressError(), "transient"),  # ask again, the connection is fine
    (NotCoordinatorError(), "transient"),
    (MessageSizeTooLargeError(), "permanent"),  # the record's own size: the same on every try
    (ConnectionError("online store unreachable"), "transient"),
    (TimeoutError(), "transient"),
    (RedisConnectionError("Error 111 connecting to 127.0.0.1:6379"), "transient"),
    (sqlite3.OperationalError("database is locked"), "transient"),
    (FeatureStoreError("feature views are not registered"), "transient"),
    (OverflowError("Python int too large to convert to C long"), "permanent"),
    (TypeError("TextEncodeInput must be Union[TextInputSequence, Tuple[InputSequence, InputSequence]]"),
     "permanent"),
    (PushSchemaError("column 'open_tickets' must be int"), "permanent"),
    (PredictorInputError("text is empty"), "permanent"),
    (KeyError("customer_id"), "permanent"),
])
def test_a_failure_is_classified_by_what_it_is_caused_by(exc: Exception, kind: str) -> None:
    assert classify(exc) == kind


def test_the_backoff_doubles_up_to_its_ceiling_with_jitter() -> None:
    for attempt, ceiling in ((1, 0.5), (2, 1.0), (3, 2.0), (10, 10.0)):
        waits = [backoff(attempt, 0.5, 10.0) for _ in range(200)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 100  # jittered: replicas failing together do not retry in step
