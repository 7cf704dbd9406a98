"""The consumer loop both streaming deployments share: poll the leased partitions, handle each batch, commit.

Longer than 500 lines: the at-least-once ordering (poll, handle, flush, acknowledgements, commit, leases, retry
and isolation of a failed poll) is one set of invariants; it reads, and is tested, as one loop.

`ConsumerLoop` is the loop; `unison.streaming.tickets.TicketStream` scores tickets from the input topic into the
output topic, and `unison.streaming.events.FeatureEventStream` pushes feature events into Feast.
At-least-once: for each polled batch, results (and dead letters) are produced and the producer is flushed --
every record acknowledged by the broker -- before the batch's offsets are committed. A crash between produce
and commit replays the batch (duplicate outputs, never lost ones); every output carries its input's topic,
partition and offset in its headers so consumers can deduplicate. A malformed message goes to the dead-letter
topic with its original bytes and a `reason` header, and its offset is committed with the rest: the partition
moves on. A failure is classified (`unison.streaming.failures`): broker and store outages are retried with
backoff and jitter; any other exception holds the poll back and retries it one record at a time, so only the
record that raises is retried, up to `max_attempts` times, and then dead-lettered. The loop only stops when
asked. Which partitions a loop consumes is decided by the partition coordinator (`unison.streaming.ownership`),
never by a group rebalance.

Two polls are in flight at most: while the model scores poll N (in its own thread; ONNX Runtime releases the
GIL), the loop reads and decodes poll N+1 and then sends, flushes and commits poll N. Commits stay in poll
order, and a failure anywhere drops both (neither is committed: both are replayed).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from unison.config import KafkaConfig
from unison.ops import metrics
from unison.ops.window import ThroughputWindow
from unison.streaming.failures import backoff, classify
from unison.streaming.lag import LagWatch
from unison.streaming.ownership import Coordinator, Ownership, ray_coordinator

log = logging.getLogger("unison.streaming")

MAX_MESSAGE_BYTES = 256 * 1024


class ConsumerConfig(BaseModel):
    """What every consumer loop's `user_config` has."""

    model_config = ConfigDict(extra="forbid")

    group_id: str = Field(description="Kafka consumer group id the replicas commit offsets to (they never join it "
                                      "as members: partitions are leased by the coordinator, docs/STREAMING.md).")
    max_poll_records: int = Field(default=64, ge=1, le=5000, description="Most records handled per poll (one "
                                                                           "feature lookup, one model or store "
                                                                           "call).")
    poll_timeout_ms: int = Field(default=500, ge=10, description="How long one poll waits for records.")
    max_poll_interval_ms: int = Field(default=60_000, ge=1000,
                                      description="Longest a loop may go without coming round (a hung poll or "
                                                  "store call) before its leases are left to expire.")
    heartbeat_s: float = Field(default=1.0, gt=0, le=30, description="How often a replica renews its partition "
                                                                       "leases with the coordinator.")
    lease_s: float = Field(default=8.0, gt=0, le=300,
                           description="A partition lease not renewed for this long expires and the partition "
                                       "moves (a killed replica's partitions resume after about this long).")
    stall_after_s: float = Field(default=30.0, gt=0, le=3600,
                                 description="A replica whose partitions lag without a commit for this long is "
                                             "stalled: its health check fails and its partitions move.")
    lag_interval_s: float = Field(default=2.0, gt=0, le=60,
                                  description="How often a replica reads its group's lag (metric, autoscaling, "
                                              "stall detection).")
    max_attempts: int = Field(default=3, ge=1, le=100,
                              description="How many times a record whose handling raises (an error that is not "
                                          "a broker or store outage) is tried on its own before it goes to the "
                                          "dead-letter topic with `reason=<exception class>: <message>`.")
    retry_backoff_s: float = Field(default=0.5, gt=0, le=60,
                                   description="First wait before a retry (a record's, or after an outage); it "
                                               "doubles per try, with jitter, up to retry_backoff_max_s.")
    retry_backoff_max_s: float = Field(default=10.0, gt=0, le=300, description="Longest wait between retries.")

    @model_validator(mode="after")
    def _lease_outlives_heartbeats(self) -> ConsumerConfig:
        if self.lease_s < 3 * self.heartbeat_s:
            raise ValueError(f"lease_s ({self.lease_s}) must be at least 3 heartbeats ({3 * self.heartbeat_s})")
        if self.stall_after_s <= self.lease_s:
            raise ValueError(f"stall_after_s ({self.stall_after_s}) must exceed lease_s ({self.lease_s})")
        return self


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
    committed: dict[int, int] = field(default_factory=dict)  # partition -> the offset this loop last committed

    def as_dict(self) -> dict[str, Any]:
        return {"polls": self.polls, "records": self.records, "scored": self.scored, "pushed": self.pushed,
                "dead_letters": self.dead_letters, "commits": self.commits, "errors": self.errors,
                "seconds_since_poll": time.monotonic() - self.last_poll if self.last_poll else None,
                "last_error": self.last_error, "dead_letter_reasons": dict(self.reasons),
                "committed": {str(p): offset for p, offset in sorted(self.committed.items())}}


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


class ConsumerLoop:
    """One consumer of a topic: poll the partitions it holds leases on, `handle` the batch (its sends and dead
    letters), flush, check every acknowledgement, commit. Subclasses implement `handle`.

    Partitions come from the coordinator (`unison.streaming.ownership`), not from a group rebalance: between
    polls the loop re-`assign()`s what it may consume, so a partition it gives up has had its last poll
    committed."""

    name = "stream"

    def __init__(self, kafka: KafkaConfig, bootstrap_servers: str, config: ConsumerConfig, topic: str,
                 dead_letter_topic: str, lag: LagWatch | None = None,
                 coordinator: Callable[[], Coordinator] | None = None) -> None:
        self.kafka = kafka
        self.bootstrap_servers = bootstrap_servers
        self.config = config
        self.topic = topic
        self.dead_letter_topic = dead_letter_topic
        self.lag = lag
        self.window = ThroughputWindow()  # the last minute: records handled, record-to-result seconds
        self.stats = StreamStats()
        self.ownership = Ownership(
            coordinator or (lambda: ray_coordinator(config.group_id, topic)), self.name,
            heartbeat_s=config.heartbeat_s, lease_s=config.lease_s, stall_after_s=config.stall_after_s,
            max_poll_interval_s=config.max_poll_interval_ms / 1000, partitions=self._partition_count,
            lag=lag.by_partition if lag is not None else lambda: None)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Any = None
        self._producer: Any = None
        self._assigned: set[int] = set()
        self._partitions = 0
        self._end_checked = self._exported_at = 0.0
        self._sent: list[Any] = []
        self._pending: tuple[dict[Any, Any], int, Callable[[], None]] | None = None  # (offsets, records, complete)
        self._uncommitted: list[Any] = []  # records polled and not yet committed, in poll order
        self._isolating = False  # a poll failed: its records are handled one at a time
        self._attempts: dict[tuple[int, int], int] = {}  # (partition, offset) -> failed tries on its own
        # Test hook: while this file exists, the loop holds between "every send acknowledged" and "commit".
        self._hold_before_commit = os.environ.get("UNISON_TEST_HOLD_BEFORE_COMMIT")
        self.progress_at = time.monotonic()  # the last commit, or the last moment nothing was left to do

    def handle(self, records: list[Any]) -> None:
        raise NotImplementedError

    def begin(self, records: list[Any]) -> Callable[[], None]:
        """Start a poll's work; return the call that completes it (its sends). By default all the work is done
        by that call; a subclass may start a slow stage here, to run while the loop reads the next poll."""
        return lambda: self.handle(records)

    # ------------------------------------------------------------------------------------------ clients

    def _connect(self) -> None:
        from kafka import KafkaConsumer, KafkaProducer

        options = self.kafka.data_client_options()
        client_id = options.pop("client_id")
        # Not idempotent: delivery is at-least-once with a dedupe key on every output anyway, and an idempotent
        # producer's id does not survive a restart of a broker that lost its state (Tansu on memory storage
        # answers UnknownProducerId to every retry until the flush times out).
        self._producer = KafkaProducer(bootstrap_servers=self.bootstrap_servers, acks="all", linger_ms=2,
                                       retries=5, enable_idempotence=False,
                                       client_id=f"{client_id}-{self.name}-producer", **options)
        # No subscription: partitions are assign()ed from the leases; group_id is only where offsets are
        # committed and read from (no JoinGroup, no rebalance).
        self._consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap_servers, group_id=self.config.group_id,
            client_id=f"{client_id}-{self.name}-consumer", enable_auto_commit=False, auto_offset_reset="earliest",
            max_poll_records=self.config.max_poll_records, **options,
        )
        self._assigned = set()
        self._partitions = len(self._consumer.partitions_for_topic(self.topic) or ())
        if not self._partitions:  # e.g. a broker restarted empty, its topics not created again yet: reconnect later
            self._close()
            raise RuntimeError(f"topic {self.topic!r} does not exist on {self.bootstrap_servers}")

    def _partition_count(self) -> int:
        rows = self.lag.fresh() if self.lag is not None else None
        return max(len(rows or ()), self._partitions)

    def _close(self) -> None:
        """Close both clients within a few seconds: unsent records are dropped (their poll was not committed,
        so it is replayed). Unbounded, a producer closing against a broker that stopped answering waits
        forever and the loop hangs. The leases are kept: a reconnect resumes the same partitions."""
        closes = ((self._consumer, {"autocommit": False, "timeout_ms": 5000}), (self._producer, {"timeout": 5}))
        for client, options in closes:
            if client is not None:
                try:
                    client.close(**options)
                except Exception:  # closing a client of a dead broker may fail; nothing to keep
                    log.debug("close failed", exc_info=True)
        self._consumer = self._producer = None
        self._assigned = set()
        self._pending = None  # not committed: replayed from the group's offsets
        self._uncommitted, self._isolating = [], False

    # ------------------------------------------------------------------------------------------ loop

    def start(self) -> None:
        self.ownership.start()
        self._thread = threading.Thread(target=self._run, name=f"unison-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 20.0) -> None:
        """Finish the poll in hand (committed), close the clients, then give the leases back."""
        self._stop.set()
        self.ownership.changed.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.ownership.stop()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        failures = 0  # consecutive outages, for the backoff
        while not self._stop.is_set():
            self.ownership.loop_alive()
            try:
                if self._consumer is None:
                    self._connect()
                    log.info("consuming %s (offsets in group %s) as %s", self.topic, self.config.group_id,
                             self.ownership.member)
                self.step()
                self._export_liveness()
                failures = 0
            except Exception as exc:
                failures = 0 if self._failed(exc) else failures + 1
                if failures:
                    self._stop.wait(backoff(failures, self.config.retry_backoff_s, self.config.retry_backoff_max_s))
        try:
            self._complete()  # the poll in hand is committed before the leases are given back
        except Exception:
            log.warning("%s: the last poll could not be committed; its records will be replayed", self.name,
                        exc_info=True)
        self._close()
        log.info("%s stopped", self.name)

    def _failed(self, exc: Exception) -> bool:
        """Act on a failure by its kind (`unison.streaming.failures`). True when the loop goes on at once (the
        records in flight are retried one at a time); False when it should back off first."""
        kind = classify(exc)
        self.stats.errors += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        metrics.inc("unison_stream_errors_total", topic=self.topic, kind=kind)
        if kind == "permanent" and self._uncommitted and not self._isolating and self._consumer is not None:
            log.warning("%s: a poll of %d records failed (%s); retrying them one at a time", self.name,
                        len(self._uncommitted), self.stats.last_error)
            self._pending, self._isolating = None, True
            return True
        if kind == "broker" or self._consumer is None:
            log.warning("%s: broker error (%s); reconnecting", self.name, self.stats.last_error)
            self._close()  # the leases are kept; the records in flight are replayed from the committed offsets
        else:
            log.warning("%s: %s error (%s); retrying the uncommitted records", self.name, kind,
                        self.stats.last_error)
            self._rewind()
        return False

    def _rewind(self) -> None:
        """Seek back to the first uncommitted record of every partition (the clients are kept)."""
        from kafka import TopicPartition

        first: dict[int, int] = {}
        for record in self._uncommitted:
            first.setdefault(record.partition, record.offset)
        for partition, offset in first.items():
            self._consumer.seek(TopicPartition(self.topic, partition), offset)
        self._pending, self._uncommitted, self._isolating = None, [], False

    def _reassign(self, wanted: set[int]) -> set[int]:
        """Take up what the coordinator granted, drop what it moves away (the last poll is committed)."""
        from kafka import TopicPartition

        if wanted != self._assigned:
            self._consumer.assign([TopicPartition(self.topic, p) for p in sorted(wanted)])
            if wanted - self._assigned:  # a partition taken up counts from now, not from before it was held
                self.progress_at = time.monotonic()
            log.info("%s partitions %s -> %s", self.ownership.member, sorted(self._assigned), sorted(wanted))
            self._assigned = wanted
            self._attempts = {k: n for k, n in self._attempts.items() if k[0] in wanted}
            self.ownership.holding(wanted)
        return wanted

    def step(self) -> int:
        """Re-assign, poll once, begin handling it, then complete the poll before it (flush, commit). Returns
        the number of records committed. After a failed poll, handles its records one at a time instead (the
        partitions are kept until they are done: a few tries each, bounded by `max_attempts`)."""
        if self._isolating:
            return self._isolate_next()
        wanted = self.ownership.wanted()
        if self._pending is not None and wanted != self._assigned:
            self._complete()  # a partition is given up only with its last poll committed
        if not self._reassign(wanted):  # nothing leased (yet): wait for a grant, not for a poll
            self.ownership.changed.wait(self.config.poll_timeout_ms / 1000)
            self.progress_at = time.monotonic()
            return 0
        # With a poll in flight, take only what is already fetched: its outputs should not wait for new input.
        polled = self._consumer.poll(timeout_ms=0 if self._pending else self.config.poll_timeout_ms,
                                     max_records=self.config.max_poll_records)
        self.stats.polls += 1
        self.stats.last_poll = time.monotonic()
        records = [record for batch in polled.values() for record in batch]
        self._uncommitted.extend(records)
        if not records:
            if self._pending is not None:
                return self._complete()
            if self._rewound_past_end():
                return 0
            self.progress_at = time.monotonic()  # caught up: nothing to commit is not a stall
            return 0
        complete = self.begin(records)
        committed = self._complete()
        self._pending = ({tp: batch[-1].offset + 1 for tp, batch in polled.items()}, len(records), complete)
        return committed

    def _complete(self) -> int:
        """Complete the poll in flight: its sends, every acknowledgement, then its offsets committed."""

        if self._pending is None:
            return 0
        offsets, count, complete = self._pending
        self._pending = None
        self._sent = []
        complete()
        self._acknowledge()
        self._commit(offsets, count)
        return count

    def _isolate_next(self) -> int:
        """Handle the first record of a failed poll on its own and commit it. One that raises (not an outage)
        is tried again after a backoff, and after `max_attempts` tries goes to the dead-letter topic."""
        from kafka import TopicPartition

        record = self._uncommitted[0]
        key = (record.partition, record.offset)
        self._sent = []
        try:
            self.begin([record])()
            self._acknowledge()
        except Exception as exc:
            if classify(exc) != "permanent":
                raise
            tries = self._attempts[key] = self._attempts.get(key, 0) + 1
            if tries < self.config.max_attempts:
                log.warning("%s: %s raised %s: %s (try %d of %d)", self.name, source(record), type(exc).__name__,
                            exc, tries, self.config.max_attempts)
                self._stop.wait(backoff(tries, self.config.retry_backoff_s, self.config.retry_backoff_max_s))
                return 0
            log.error("%s: %s dead-lettered after %d tries: %s: %s", self.name, source(record), tries,
                      type(exc).__name__, exc)
            self._sent = []
            self.dead_letter(record, f"{type(exc).__name__}: {exc}", attempts=tries)
            self._acknowledge()
        self._commit({TopicPartition(record.topic, record.partition): record.offset + 1}, 1)
        self._attempts.pop(key, None)
        if not self._uncommitted:
            self._isolating = False
            log.info("%s: the failed poll is through; back to whole polls", self.name)
        return 1

    def _acknowledge(self) -> None:
        """Wait for every send of the poll. Bounded: a producer that lost its broker (or its producer id) can
        otherwise wait forever; a timeout or a failed send raises, and nothing is committed."""
        self._producer.flush(timeout=30)
        for future in self._sent:
            future.get(timeout=30)
        self._sent = []

    def _commit(self, offsets: dict[Any, int], count: int) -> None:
        """Commit a handled poll's offsets (its records are the first `count` uncommitted ones)."""
        from kafka.structs import OffsetAndMetadata

        while self._hold_before_commit and os.path.exists(self._hold_before_commit) and not self._stop.is_set():
            time.sleep(0.05)  # test hook: every send is acknowledged, nothing committed yet
        self._consumer.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()})
        del self._uncommitted[:count]
        self.stats.committed.update({tp.partition: offset for tp, offset in offsets.items()})
        self.stats.commits += 1
        self.stats.records += count
        self.progress_at = time.monotonic()

    def _rewound_past_end(self) -> bool:
        """Seek back partitions whose position is past the end of their log; True if any was.

        A broker that lost its log (a restart with memory storage, a recreated topic) has a shorter log than
        our position. Kafka answers such a fetch with OFFSET_OUT_OF_RANGE and the client resets; Tansu
        answers with no records, and an assigned consumer (no rebalance to reset it) would wait there
        forever. Resume from the group's committed offset if it is within the log, else from the beginning."""
        from kafka import TopicPartition

        now = time.monotonic()
        if now - self._end_checked < 2.0:
            return False
        self._end_checked = now
        rewound = False
        for p in sorted(self._assigned):
            tp = TopicPartition(self.topic, p)
            end = self._consumer.highwater(tp)
            if end is None or self._consumer.position(tp) <= end:
                continue
            committed = self._consumer.committed(tp)
            start = committed if committed is not None and committed <= end else \
                self._consumer.beginning_offsets([tp])[tp]
            log.warning("%s: partition %d is at %d, past the end of its log (%d): the broker lost data? "
                        "resuming at %d", self.ownership.member, p, self._consumer.position(tp), end, start)
            self._consumer.seek(tp, start)
            rewound = True
        return rewound

    # ------------------------------------------------------------------------------------------ liveness

    def stall(self) -> str | None:
        """Why this consumer makes no progress, or None: its loop died, the coordinator declared it stalled,
        its own partitions lag without a commit for `stall_after_s`, or the balanced assignment gives it
        partitions that it has not been granted for that long while they lag."""
        if not self.alive:
            return "the consumer loop is not running"
        if self.ownership.stalled:
            return f"stalled (coordinator): {self.ownership.stalled}"
        hung = self.ownership.loop_hung()
        if hung:
            return hung
        rows = self.lag.fresh() if self.lag is not None else None
        if rows is None:  # no recent lag read (the broker is away): a stall cannot be told from an outage
            return None
        idle = time.monotonic() - self.progress_at
        lagging = {r.partition: r.lag for r in rows if r.lag > 0}
        mine = {p: lag for p, lag in lagging.items() if p in self._assigned}
        if mine and idle > self.config.stall_after_s:
            return (f"partitions {sorted(mine)} have {sum(mine.values())} records of lag and no commit for "
                    f"{idle:.0f} s (stall_after_s {self.config.stall_after_s:.0f})")
        target = set(self.ownership.answer.get("target", ()))
        waiting = target - self._assigned
        if waiting & set(lagging) and not self._assigned and idle > self.config.stall_after_s:
            return (f"assigned partitions {sorted(waiting)} by the balance but granted none for {idle:.0f} s "
                    "while they lag")
        return None

    def _export_liveness(self) -> None:
        """The per-replica ownership gauges, at most once a second (from the loop, whoever asks for status)."""
        now = time.monotonic()
        if now - self._exported_at < 1.0:
            return
        self._exported_at = now
        tags = {"group": self.config.group_id, "topic": self.topic, "member": self.ownership.member}
        metrics.set_gauge("unison_stream_partitions_owned", len(self._assigned), **tags)
        metrics.set_gauge("unison_stream_seconds_since_commit", now - self.progress_at, **tags)

    def liveness(self) -> dict[str, Any]:
        """Ownership and progress for `/v1/stream`."""
        since = time.monotonic() - self.progress_at
        rows = self.lag.fresh() if self.lag is not None else None
        lagging = sum(r.lag for r in rows or ())
        return {**self.ownership.status(), "seconds_since_progress": round(since, 1),
                "idle_with_lag": bool(not self._assigned and lagging > 0), "stall": self.stall()}

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

    def dead_letter(self, record: Any, reason: str, attempts: int = 1) -> None:
        """The original bytes to the dead-letter topic, with the reason, where they came from, and how many times
        they were tried."""
        self.stats.dead_letters += 1
        kind = reason.split(":", 1)[0][:60]
        self.stats.reasons[kind] = self.stats.reasons.get(kind, 0) + 1
        metrics.inc("unison_stream_dead_letters_total", topic=record.topic, reason=kind)
        metrics.inc("unison_stream_records_total", topic=record.topic, outcome="dead_letter")
        self.send(self.dead_letter_topic, record.key, record.value,
                  [("reason", reason.encode()), ("source", source(record).encode()),
                   ("attempts", str(attempts).encode())])


def source(record: Any) -> str:
    return f"{record.topic}/{record.partition}/{record.offset}"


