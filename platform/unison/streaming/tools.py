"""`unison stream produce` (replay tickets into the input topic at a rate), `unison stream events` (customer
activity updates into the feature-events topic) and `unison stream tail` (print a topic's records as they
arrive), for the demo, benchmarks and users."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from unison.config import KafkaConfig

TICKET_COLUMNS = ("ticket_id", "customer_id", "subject", "body", "channel")


def ticket_messages(path: Path, limit: int | None = None) -> Iterator[tuple[bytes, bytes]]:
    """(key, JSON value) per ticket of a Parquet file, in file order."""
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=[c for c in TICKET_COLUMNS if c in pq.read_schema(path).names])
    produced = 0
    for batch in table.to_batches(10_000):
        for row in batch.to_pylist():
            if limit is not None and produced >= limit:
                return
            value = {k: v for k, v in row.items() if v is not None}
            yield str(row["ticket_id"]).encode(), json.dumps(value).encode()
            produced += 1


def feature_event_messages(path: Path, limit: int, seed: int = 0) -> Iterator[tuple[bytes, bytes]]:
    """(customer id, JSON event) for `limit` activity updates: a random customer's snapshot from a
    customer_activity Parquet file, moved a little, stamped now -- what a product's event bus would send."""
    import numpy as np
    import pyarrow.parquet as pq

    from unison.domain import PUSH_SCHEMA

    table = pq.read_table(path, columns=[c for c in PUSH_SCHEMA if c != "event_timestamp"]).to_pandas()
    rng = np.random.default_rng(seed)
    for i in rng.integers(0, len(table), size=limit):
        row = table.iloc[int(i)]
        csat = None if row["last_csat"] != row["last_csat"] else float(
            np.clip(row["last_csat"] + rng.normal(0, 0.5), 1, 5))
        event = {"customer_id": int(row["customer_id"]),
                 "open_tickets": int(max(0, row["open_tickets"] + rng.integers(-1, 3))),
                 "tickets_last_90d": int(max(0, row["tickets_last_90d"] + rng.integers(0, 3))),
                 "last_csat": csat, "days_since_last_login": int(rng.integers(0, 3)),
                 "event_timestamp": datetime.now(UTC).isoformat()}
        yield str(event["customer_id"]).encode(), json.dumps(event).encode()


def produce(kafka: KafkaConfig, bootstrap_servers: str, messages: Iterator[tuple[bytes, bytes]],
            topic: str | None = None, rate: float | None = None,
            progress: Callable[[int, float], None] | None = None) -> int:
    """Send `messages` to `topic` (default: the input topic), paced at `rate` per second if given; flush."""
    from kafka import KafkaProducer

    options = kafka.data_client_options()
    client_id = options.pop("client_id")
    producer = KafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", linger_ms=5,
                             client_id=f"{client_id}-produce", **options)
    sent = 0
    started = time.perf_counter()
    pending: list[Any] = []

    def settle() -> None:  # a failed send raises instead of vanishing
        producer.flush()
        for future in pending:
            future.get(timeout=30)
        pending.clear()

    try:
        for key, value in messages:
            if rate:
                wait = started + sent / rate - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            pending.append(producer.send(topic or kafka.input_topic, key=key, value=value))
            sent += 1
            if sent % 1000 == 0:
                settle()
                if progress is not None:
                    progress(sent, time.perf_counter() - started)
        settle()
    finally:
        producer.close()
    return sent


def tail(kafka: KafkaConfig, bootstrap_servers: str, topic: str, from_beginning: bool = False,
         max_records: int | None = None, timeout_s: float | None = None) -> Iterator[dict[str, Any]]:
    """Records of `topic` as they arrive (no consumer group: nothing is committed, nobody's offsets move)."""
    from kafka import KafkaConsumer, TopicPartition

    options = kafka.data_client_options()
    client_id = options.pop("client_id")
    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, client_id=f"{client_id}-tail",
                             enable_auto_commit=False, **options)
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise ValueError(f"topic {topic!r} does not exist on {bootstrap_servers}")
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        if from_beginning:
            consumer.seek_to_beginning(*assigned)
        else:
            consumer.seek_to_end(*assigned)
        seen = 0
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while max_records is None or seen < max_records:
            if deadline is not None and time.monotonic() > deadline:
                return
            for batch in consumer.poll(timeout_ms=500).values():
                for record in batch:
                    yield {"topic": record.topic, "partition": record.partition, "offset": record.offset,
                           "timestamp": record.timestamp,
                           "key": record.key.decode(errors="replace") if record.key else None,
                           "headers": {k: v.decode(errors="replace") for k, v in record.headers or []},
                           "value": _value(record.value)}
                    seen += 1
                    if max_records is not None and seen >= max_records:
                        return
    finally:
        consumer.close()


def _value(raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")
