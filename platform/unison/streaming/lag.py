"""Consumer lag per topic partition: the end offset minus the group's committed offset.

Read without disturbing the group: committed offsets come from the admin API (OffsetFetch) and end offsets
from a consumer that belongs to no group and is never assigned, so no rebalance is triggered and no offset moves.
A partition the group never committed counts from its beginning offset (everything in it is still to do).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from unison.config import KafkaConfig


@dataclass(frozen=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    end_offset: int
    committed: int | None
    lag: int


class LagReader:
    """Keeps an admin client and a group-less reader open, for repeated reads (a metric, autoscaling)."""

    def __init__(self, kafka: KafkaConfig, bootstrap_servers: str) -> None:
        self.kafka = kafka
        self.bootstrap_servers = bootstrap_servers
        self._admin: Any = None
        self._reader: Any = None

    def _connect(self) -> None:
        from kafka import KafkaAdminClient, KafkaConsumer

        options = self.kafka.client_options()
        client_id = options.pop("client_id")
        self._admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers, client_id=f"{client_id}-lag",
                                       **options)
        self._reader = KafkaConsumer(bootstrap_servers=self.bootstrap_servers, client_id=f"{client_id}-lag-reader",
                                     enable_auto_commit=False, allow_auto_create_topics=False, **options)

    def read(self, group: str, topics: list[str] | None = None) -> list[PartitionLag]:
        """Lag of `group` on `topics` (default: the input topic), one row per partition, sorted. A failure
        closes the clients (the next read reconnects) and raises."""
        from kafka import TopicPartition

        if self._admin is None:
            self._connect()
        try:
            wanted = topics or [self.kafka.input_topic]
            partitions = []
            for topic in wanted:
                ids = self._reader.partitions_for_topic(topic)
                if not ids:
                    raise ValueError(f"topic {topic!r} does not exist on {self.bootstrap_servers}")
                partitions += [TopicPartition(topic, p) for p in sorted(ids)]
            committed = self._admin.list_group_offsets({group: partitions}).get(group, {})
            starts = self._reader.beginning_offsets(partitions)
            ends = _high_watermarks(self._reader, partitions)
        except Exception:
            self.close()
            raise
        rows = []
        for tp in partitions:
            meta = committed.get(tp)
            offset = meta.offset if meta is not None and meta.offset is not None and meta.offset >= 0 else None
            base = offset if offset is not None else starts[tp]
            rows.append(PartitionLag(group, tp.topic, tp.partition, ends[tp], offset, max(ends[tp] - base, 0)))
        return rows

    def close(self) -> None:
        for client in (self._reader, self._admin):
            if client is not None:
                try:
                    client.close()
                except Exception:  # a dead broker's client may fail to close; nothing to keep
                    pass
        self._admin = self._reader = None


def consumer_lag(kafka: KafkaConfig, bootstrap_servers: str, group: str,
                 topics: list[str] | None = None) -> list[PartitionLag]:
    """One read of `group`'s lag (see `LagReader.read`)."""
    reader = LagReader(kafka, bootstrap_servers)
    try:
        return reader.read(group, topics)
    finally:
        reader.close()


def _high_watermarks(reader: Any, partitions: list[Any]) -> dict[Any, int]:
    """End offsets as fetch responses report them (the high watermark).

    ListOffsets(latest) would be the usual way, but the embedded Tansu broker answers it with the last record
    batch's base offset + 1, not the end of the log; the high watermark in a fetch response is right on Tansu
    and on Kafka alike. The reader is assigned (never subscribed), so no group is touched.
    """
    listed = reader.end_offsets(partitions)
    reader.assign(partitions)
    for tp in partitions:
        reader.seek(tp, max(listed[tp] - 1, 0))
    marks: dict[Any, int] = {}
    deadline = time.monotonic() + 10
    while len(marks) < len(partitions) and time.monotonic() < deadline:
        reader.poll(timeout_ms=200, max_records=1)
        for tp in partitions:
            mark = reader.highwater(tp)
            if mark is not None:
                marks[tp] = max(mark, listed[tp])
    for tp in partitions:  # an empty partition may never answer a fetch: its listed end is right
        marks.setdefault(tp, listed[tp])
    return marks


class LagWatch:
    """A thread that reads one group's lag on one topic every `interval_s`: the gauge
    `unison_kafka_consumer_lag` per partition, the figures for autoscaling, and per-partition lag for the
    partition coordinator's stall detection. Runs whether or not the replica's own loop does (lag is worth
    reporting while a model cannot load)."""

    def __init__(self, kafka: KafkaConfig, bootstrap_servers: str, group: str, topic: str,
                 interval_s: float) -> None:
        self.kafka, self.bootstrap_servers = kafka, bootstrap_servers
        self.group, self.topic, self.interval_s = group, topic, interval_s
        self.rows: list[PartitionLag] = []
        self.read_at: float | None = None  # wall clock of the last good read
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> LagWatch:
        self._thread = threading.Thread(target=self._run, name=f"unison-lag-{self.group}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        from unison.ops import metrics

        reader = LagReader(self.kafka, self.bootstrap_servers)
        while not self._stop.wait(self.interval_s):
            try:
                rows = reader.read(self.group, [self.topic])
            except Exception as exc:  # broker away: keep the last figures, say so, retry next time
                self.error = f"{type(exc).__name__}: {exc}"
                continue
            self.error = None
            self.rows, self.read_at = rows, time.time()
            for row in rows:
                metrics.set_gauge("unison_kafka_consumer_lag", row.lag, group=row.group, topic=row.topic,
                                  partition=str(row.partition))
        reader.close()

    def fresh(self, max_age_s: float | None = None) -> list[PartitionLag] | None:
        """The last read if it is recent (default: within 5 intervals, at least 15 s), else None."""
        limit = max_age_s if max_age_s is not None else max(15.0, 5 * self.interval_s)
        if self.read_at is None or time.time() - self.read_at > limit:
            return None
        return self.rows

    def by_partition(self) -> dict[int, tuple[int | None, int]] | None:
        """partition -> (committed offset, lag) from a recent read, for the coordinator."""
        rows = self.fresh()
        return None if rows is None else {r.partition: (r.committed, r.lag) for r in rows}
