"""The streaming loops: consumer-group members that poll a topic, handle each batch, and commit.

`TopicConsumer` is the loop both streaming deployments share; `TicketStream` scores tickets from the input
topic into the output topic, and `unison.streaming.events.FeatureEventStream` pushes feature events into Feast.
At-least-once: for each polled batch, results (and dead letters) are produced and the producer is flushed --
every record acknowledged by the broker -- before the batch's offsets are committed. A crash between produce
and commit replays the batch (duplicate outputs, never lost ones); every output carries its input's topic,
partition and offset in its headers so consumers can deduplicate. A malformed message goes to the dead-letter
topic with its original bytes and a `reason` header, and its offset is committed with the rest: the partition
moves on. Broker outages are retried with backoff; the loop only stops when asked.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from unison.config import KafkaConfig
from unison.features.ticket import Ticket
from unison.ops import metrics
from unison.ops.window import RollingWindow

log = logging.getLogger("unison.streaming")

MAX_MESSAGE_BYTES = 256 * 1024


class ConsumerConfig(BaseModel):
    """What every consumer loop's `user_config` has."""

    model_config = ConfigDict(extra="forbid")

    group_id: str = Field(description="Kafka consumer group shared by every replica.")
    max_poll_records: int = Field(default=64, ge=1, le=5000, description="Most records handled per poll (one "
                                                                           "feature lookup, one model or store "
                                                                           "call).")
    poll_timeout_ms: int = Field(default=500, ge=10, description="How long one poll waits for records.")
    session_timeout_ms: int = Field(default=10_000, ge=1000, description="Group session timeout.")
    max_poll_interval_ms: int = Field(default=60_000, ge=1000,
                                      description="Longest gap between polls before the group rebalances "
                                                  "(also kafka-python's rebalance timeout).")


class StreamConfig(ConsumerConfig):
    """The ticket-scoring deployment's `user_config`."""

    group_id: str = Field(default="unison-scorer", description="Kafka consumer group shared by every replica.")
    max_text_chars: int = Field(default=20_000, ge=1, description="Longer subject + body goes to the DLQ.")
    lag_interval_s: float = Field(default=2.0, gt=0, le=60,
                                  description="How often a replica reads the group's lag (metric and autoscaling).")


@dataclass
class StreamStats:
    polls: int = 0
    records: int = 0
    scored: int = 0
    pushed: int = 0
    dead_letters: int = 0
    commits: int = 0
    errors: int = 0
    last_poll: float = 0.0
    last_error: str | None = None
    reasons: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"polls": self.polls, "records": self.records, "scored": self.scored, "pushed": self.pushed,
                "dead_letters": self.dead_letters, "commits": self.commits, "errors": self.errors,
                "seconds_since_poll": time.monotonic() - self.last_poll if self.last_poll else None,
                "last_error": self.last_error, "dead_letter_reasons": dict(self.reasons)}


def json_object(value: bytes | None, max_bytes: int) -> tuple[dict[str, Any] | None, str | None]:
    """The JSON object in a message, or the reason there is none (every topic's first check)."""
    if value is None:
        return None, "empty message (tombstone)"
    if len(value) > max_bytes:
        return None, f"message of {len(value)} bytes exceeds {max_bytes}"
    try:
        payload = json.loads(value)
    except (UnicodeDecodeError, ValueError) as exc:
        return None, f"not JSON: {exc}"
    if not isinstance(payload, dict):
        return None, f"expected a JSON object, got {type(payload).__name__}"
    return payload, None


def decode(value: bytes | None, max_text_chars: int) -> tuple[Ticket | None, str | None]:
    """The ticket in a message, or the reason it cannot be scored."""
    payload, reason = json_object(value, MAX_MESSAGE_BYTES)
    if payload is None:
        return None, reason
    try:
        ticket = Ticket.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return None, f"{where}: {first['msg']}" if where else str(first["msg"])
    if ticket.text_chars() > max_text_chars:
        return None, f"text has {ticket.text_chars()} characters, more than {max_text_chars}"
    return ticket, None


Scorer = Callable[[list[dict[str, Any]]], tuple[list[dict[str, Any]], dict[str, str]]]


class TopicConsumer:
    """One consumer-group member: poll, `handle` the batch (its sends and dead letters), flush, check every
    acknowledgement, commit. Subclasses implement `handle`."""

    name = "stream"

    def __init__(self, kafka: KafkaConfig, bootstrap_servers: str, config: ConsumerConfig, topic: str,
                 dead_letter_topic: str) -> None:
        self.kafka = kafka
        self.bootstrap_servers = bootstrap_servers
        self.config = config
        self.topic = topic
        self.dead_letter_topic = dead_letter_topic
        self.window = RollingWindow()  # the last minute: records handled, record-to-result seconds
        self.stats = StreamStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Any = None
        self._producer: Any = None
        self._sent: list[Any] = []

    def handle(self, records: list[Any]) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ clients

    def _connect(self) -> None:
        from kafka import KafkaConsumer, KafkaProducer

        options = self.kafka.client_options()
        client_id = options.pop("client_id")
        self._producer = KafkaProducer(bootstrap_servers=self.bootstrap_servers, acks="all", linger_ms=2,
                                       retries=5, client_id=f"{client_id}-{self.name}-producer", **options)
        self._consumer = KafkaConsumer(
            self.topic, bootstrap_servers=self.bootstrap_servers, group_id=self.config.group_id,
            client_id=f"{client_id}-{self.name}-consumer", enable_auto_commit=False, auto_offset_reset="earliest",
            max_poll_records=self.config.max_poll_records, session_timeout_ms=self.config.session_timeout_ms,
            heartbeat_interval_ms=max(self.config.session_timeout_ms // 4, 500),
            max_poll_interval_ms=self.config.max_poll_interval_ms, **options,
        )

    def _close(self) -> None:
        """Close both clients within a few seconds: unsent records are dropped (their poll was not committed,
        so it is replayed), and the consumer leaves the group so its partitions move at once. Unbounded, a
        producer closing against a broker that stopped answering waits forever and the loop hangs."""
        closes = ((self._consumer, {"autocommit": False, "timeout_ms": 5000}), (self._producer, {"timeout": 5}))
        for client, options in closes:
            if client is not None:
                try:
                    client.close(**options)
                except Exception:  # closing a client of a dead broker may fail; nothing to keep
                    log.debug("close failed", exc_info=True)
        self._consumer = self._producer = None

    # ------------------------------------------------------------------------------------------ loop

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"unison-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 20.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                if self._consumer is None:
                    self._connect()
                    log.info("consuming %s as group %s", self.topic, self.config.group_id)
                self.step()
                backoff = 0.5
            except Exception as exc:  # broker gone, rebalance failure, store down: reconnect with backoff
                self.stats.errors += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("%s error (%s); reconnecting in %.1f s", self.name, self.stats.last_error, backoff)
                self._close()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
        self._close()
        log.info("%s stopped", self.name)

    def step(self) -> int:
        """Poll once, handle, flush, commit. Returns the number of records handled."""
        from kafka.structs import OffsetAndMetadata

        polled = self._consumer.poll(timeout_ms=self.config.poll_timeout_ms,
                                     max_records=self.config.max_poll_records)
        self.stats.polls += 1
        self.stats.last_poll = time.monotonic()
        records = [record for batch in polled.values() for record in batch]
        if not records:
            return 0
        self._sent = []
        self.handle(records)
        # Bounded: a producer that lost its broker (or its producer id) can otherwise wait forever, and the
        # group would evict a member that stops polling. On timeout the loop reconnects and replays the poll.
        self._producer.flush(timeout=30)
        for future in self._sent:  # every output and dead letter acknowledged before the offsets move;
            future.get(timeout=30)  # a failed send raises here, nothing is committed, the batch is replayed
        offsets = {tp: OffsetAndMetadata(batch[-1].offset + 1, "", -1) for tp, batch in polled.items()}
        self._consumer.commit(offsets)
        self.stats.commits += 1
        self.stats.records += len(records)
        return len(records)

    def send(self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        self._sent.append(self._producer.send(topic, key=key, value=value, headers=headers))

    def decoded(self, records: list[Any], decode: Callable[[bytes], tuple[Any, str | None]]) -> list[tuple[Any, Any]]:
        """(record, payload) for every record `decode` accepts; the others go to the dead-letter topic with the
        reason it gave."""
        good = []
        for record in records:
            payload, reason = decode(record.value)
            if payload is None:
                self.dead_letter(record, reason or "invalid")
            else:
                good.append((record, payload))
        return good

    def dead_letter(self, record: Any, reason: str) -> None:
        """The original bytes to the dead-letter topic, with the reason and where they came from."""
        self.stats.dead_letters += 1
        kind = reason.split(":", 1)[0][:60]
        self.stats.reasons[kind] = self.stats.reasons.get(kind, 0) + 1
        metrics.inc("unison_stream_dead_letters_total", topic=record.topic, reason=kind)
        metrics.inc("unison_stream_records_total", topic=record.topic, outcome="dead_letter")
        self.send(self.dead_letter_topic, record.key, record.value,
                  [("reason", reason.encode()), ("source", source(record).encode())])


def source(record: Any) -> str:
    return f"{record.topic}/{record.partition}/{record.offset}"


class TicketStream(TopicConsumer):
    """Scores tickets into the output topic. `score(tickets)` returns one result per ticket plus common
    headers."""

    name = "stream"

    def __init__(self, kafka: KafkaConfig, bootstrap_servers: str, config: StreamConfig, score: Scorer) -> None:
        super().__init__(kafka, bootstrap_servers, config, kafka.input_topic, kafka.dead_letter_topic)
        self.config: StreamConfig = config
        self.score = score

    def handle(self, records: list[Any]) -> None:
        good: list[tuple[Any, Ticket]] = self.decoded(records,
                                                      lambda value: decode(value, self.config.max_text_chars))
        if not good:
            return
        started = time.perf_counter()
        results, headers = self.score([t.model_dump(exclude={"created_at"}) for _, t in good])
        latency_ms = (time.perf_counter() - started) * 1000
        scored: dict[str, int] = {}
        for (record, ticket), result in zip(good, results, strict=True):
            if "error" in result:
                # Unscorable for a reason of the ticket itself (the model refused it): dead-letter it.
                self.dead_letter(record, str(result["error"]))
                continue
            waited_ms = time.time() * 1000 - record.timestamp if record.timestamp and record.timestamp > 0 else -1
            self.send(self.kafka.output_topic, ticket.ticket_id.encode(), json.dumps(result).encode(),
                      [*((k, v.encode()) for k, v in headers.items()),
                       ("latency_ms", f"{latency_ms:.1f}".encode()),
                       ("event_latency_ms", f"{waited_ms:.1f}".encode()),
                       ("source", source(record).encode())])
            self.stats.scored += 1
            scored[record.topic] = scored.get(record.topic, 0) + 1
            if waited_ms >= 0:
                metrics.observe("unison_stream_event_duration_seconds", waited_ms / 1000, topic=record.topic)
                self.window.add(waited_ms / 1000)
        for topic, count in scored.items():  # one counter update per poll, not per record
            metrics.inc("unison_stream_records_total", count, topic=topic, outcome="scored")
