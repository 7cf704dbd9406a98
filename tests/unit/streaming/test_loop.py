"""The consumer loop's step against in-memory Kafka clients (pure logic: ordering of sends, acknowledgements and
commits, two polls in flight, partitions given up). The real broker is in tests/integration/streaming."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import pytest
from kafka import TopicPartition

from unison.config import KafkaConfig
from unison.streaming.consumer import ConsumerConfig, TopicConsumer
from unison.streaming.ownership import LeaseTable, LocalCoordinator

Record = namedtuple("Record", "topic partition offset key value timestamp")
TOPIC = "tickets"


class FakeFuture:
    def __init__(self, producer: FakeProducer, fail: bool) -> None:
        self.producer, self.fail, self.acked = producer, fail, False

    def get(self, timeout: float) -> None:
        if self.fail:
            raise RuntimeError("broker refused the record")
        self.acked = True


class FakeProducer:
    def __init__(self) -> None:
        self.futures: list[FakeFuture] = []
        self.fail = False

    def send(self, topic: str, key: bytes | None, value: bytes, headers: list[Any]) -> FakeFuture:
        future = FakeFuture(self, self.fail)
        self.futures.append(future)
        return future

    def flush(self, timeout: float) -> None:
        pass


class FakeConsumer:
    """kafka-python's shape where it matters: a poll returns one partition's fetched chunk before the next
    partition's (the first unpaused partition with records), positions move on poll, commits are recorded."""

    def __init__(self, logs: dict[int, int], producer: FakeProducer) -> None:
        self.logs = {p: [Record(TOPIC, p, o, None, b"{}", 0) for o in range(n)] for p, n in logs.items()}
        self.positions = dict.fromkeys(logs, 0)
        self.assigned: set[int] = set()
        self.commits: list[tuple[dict[int, int], bool]] = []  # (offsets, every send acknowledged by then)
        self.producer = producer

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigned = {tp.partition for tp in tps}

    def poll(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Record]]:
        for p in sorted(self.assigned):
            if self.positions[p] < len(self.logs[p]):
                batch = self.logs[p][self.positions[p]:self.positions[p] + max_records]
                self.positions[p] += len(batch)
                return {TopicPartition(TOPIC, p): batch}
        return {}

    def highwater(self, tp: TopicPartition) -> int:
        return len(self.logs[tp.partition])

    def position(self, tp: TopicPartition) -> int:
        return self.positions[tp.partition]

    def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        self.commits.append(({tp.partition: meta.offset for tp, meta in offsets.items()},
                             all(f.acked for f in self.producer.futures)))

    def close(self, **kwargs: Any) -> None:
        pass


class Echo(TopicConsumer):
    """One output per record; `begin` records what was started, so the test sees two polls in flight."""

    def __init__(self, logs: dict[int, int]) -> None:
        coordinator = LocalCoordinator(LeaseTable(restarted=False))  # a first start: no grace period
        super().__init__(KafkaConfig(), "fake:9092", ConsumerConfig(group_id="g", max_poll_records=10), TOPIC, "dlq",
                         coordinator=lambda: coordinator)
        self.started: list[list[int]] = []
        self._producer = FakeProducer()
        self._consumer = FakeConsumer(logs, self._producer)
        self._partitions = len(logs)
        self.ownership.beat()  # lease every partition (the only member)

    def begin(self, records: list[Any]) -> Any:
        self.started.append(sorted({r.partition for r in records}))
        return super().begin(records)

    def handle(self, records: list[Any]) -> None:
        for record in records:
            self.send("out", record.key, record.value, [])


def _drain(loop: Echo, steps: int = 200) -> None:
    for _ in range(steps):
        loop.step()
        if loop._pending is None and all(loop._consumer.positions[p] == len(log)
                                         for p, log in loop._consumer.logs.items()):
            return
    raise AssertionError("the loop did not drain the logs")


def test_every_commit_follows_the_acknowledgement_of_its_outputs_in_poll_order() -> None:
    loop = Echo({0: 35, 1: 12})
    _drain(loop)
    consumer = loop._consumer
    assert all(acked for _, acked in consumer.commits)
    assert len(loop._producer.futures) == 47  # one output per record, none twice
    last: dict[int, int] = {}
    for offsets, _ in consumer.commits:
        for p, offset in offsets.items():
            assert offset > last.get(p, 0)  # in poll order, never backwards
            last[p] = offset
    assert last == {0: 35, 1: 12} and loop.stats.records == 47


def test_the_next_poll_is_read_before_the_one_in_flight_is_committed() -> None:
    loop = Echo({0: 30})
    loop.step()
    assert loop._pending is not None and loop._consumer.commits == []  # poll 1 begun, nothing committed
    loop.step()
    assert len(loop.started) == 2 and [c for c, _ in loop._consumer.commits] == [{0: 10}]


def test_a_failed_acknowledgement_commits_nothing_and_both_polls_are_replayed() -> None:
    loop = Echo({0: 30})
    loop.step()
    loop._producer.fail = True
    with pytest.raises(RuntimeError, match="broker refused"):
        loop.step()
    assert loop._consumer.commits == []
    loop._close()
    assert loop._pending is None  # the reconnect resumes from the group's committed offset


def test_a_partition_given_up_has_its_poll_in_flight_committed_first() -> None:
    loop = Echo({0: 30, 1: 30})
    loop.step()
    assert loop._pending is not None
    loop.ownership.wanted = lambda: {1}  # type: ignore[method-assign]  # the coordinator moved partition 0 away
    loop.step()
    assert loop._consumer.commits and loop._consumer.commits[0][0] == {0: 10}
    assert loop._consumer.assigned == {1}
