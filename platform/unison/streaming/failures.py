"""What a consumer loop does with an exception: the one classification of failures, and the backoff between
tries.

Three kinds, the way Spring Kafka's error handlers and Kafka Streams' exception handlers split them:
- `broker`: the connection to the broker is gone or timed out. Close both clients and reconnect; the poll in
  flight is replayed from the group's committed offsets. The partition leases are kept meanwhile.
- `transient`: a dependency is briefly unavailable (the online store, the coordinator of the group's offsets, a
  timeout). Keep the clients, seek back to the first uncommitted offsets and try the same records again.
- `permanent`: anything else, presumed to be caused by a record. The poll is retried one record at a time so
  only the record that raises is held back, and a record that raises `max_attempts` times is dead-lettered
  with `<exception class>: <message>` and its offset committed: the partition moves on.

Both retries wait with exponential backoff and jitter, so replicas that failed together do not retry in step.
"""

from __future__ import annotations

import random
import sqlite3
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Literal

Failure = Literal["broker", "transient", "permanent"]

# kafka-python errors that belong to the record, not to the broker: the same record fails on every try.
_RECORD_ERRORS = ("MessageSizeTooLargeError", "InvalidRecordError", "CorruptRecordError", "CorruptRecordException")
# kafka-python errors that mean "ask again" with the connection in good order (offsets' coordinator moving).
_RETRY_ERRORS = ("RebalanceInProgressError", "NotCoordinatorError", "CoordinatorLoadInProgressError",
                 "CoordinatorNotAvailableError", "NotLeaderForPartitionError", "NotEnoughReplicasError",
                 "NotEnoughReplicasAfterAppendError", "LeaderNotAvailableError", "UnknownTopicOrPartitionError")


def classify(exc: BaseException) -> Failure:
    """The kind of a failure in a consumer loop (see the module docstring)."""
    from kafka.errors import KafkaError

    name = type(exc).__name__
    if isinstance(exc, KafkaError):
        if name in _RECORD_ERRORS:
            return "permanent"
        return "transient" if name in _RETRY_ERRORS else "broker"
    if isinstance(exc, OSError | FutureTimeout | sqlite3.OperationalError) or _is_store_outage(exc):
        return "transient"
    from unison.features.store import FeatureStoreError

    if isinstance(exc, FeatureStoreError):
        return "transient"
    return "permanent"


def _is_store_outage(exc: BaseException) -> bool:
    """Redis (the online store) and Ray (the partition coordinator) unreachable; imported only when installed."""
    try:
        from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError
    except ImportError:
        redis_errors: tuple[type[BaseException], ...] = ()
    else:
        redis_errors = (ConnectionError, TimeoutError, BusyLoadingError)
    try:
        from ray.exceptions import GetTimeoutError, RayActorError
    except ImportError:
        ray_errors: tuple[type[BaseException], ...] = ()
    else:
        ray_errors = (GetTimeoutError, RayActorError)
    return isinstance(exc, redis_errors + ray_errors)


def backoff(attempt: int, base_s: float, max_s: float) -> float:
    """Seconds to wait before try `attempt + 1` (attempt >= 1): doubling from `base_s` up to `max_s`, with
    "equal jitter" (a uniform half of it), so a retry never comes immediately and never in lockstep."""
    ceiling = min(max_s, base_s * 2 ** (attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)
