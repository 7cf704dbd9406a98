"""The consumer loop's step against in-memory Kafka clients (pure logic: ordering of sends, acknowledgements and
commits, two polls in flight, partitions given up, failures retried or dead-lettered). The real broker is in
tests/integration/streaming."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaTimeoutError
from tests.unit.fakes import LocalCoordinator

from unison.config import KafkaConfig
from unison.streaming.loop import ConsumerConfig, ConsumerLoop
from unison.streaming.ownership import LeaseTable

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
        self.sent: list[tuple[str, bytes | None, bytes, dict[str, bytes]]] = []
        self.fail = False
        self.flush_times_out = False

    def send(self, topic: str, key: bytes | None, value: bytes, headers: list[Any]) -> FakeFuture:
        future = FakeFuture(self, self.fail)
        self.futures.append(future)
        self.sent.append((topic, key, value, dict(headers)))
        return future

    def flush(self, timeout: float) -> None:
        if self.flush_times_out:
            raise KafkaTimeoutError(f"Failed to flush buffered records within {timeout} secs")

    def to(self, topic: str) -> list[tuple[bytes | None, bytes, dict[str, bytes]]]:
        return [(k, v, h) for t, k, v, h in self.sent if t == topic]


class FakeConsumer:
    """kafka-python's shape where it matters: a poll returns one partition's fetched chunk before the next
    partition's (the first unpaused partition with records), positions move on poll, commits are recorded."""

    def __init__(self, logs: dict[int, int], producer: FakeProducer) -> None:
        self.logs = {p: [Record(TOPIC, p, o, None, f"{p}/{o}".encode(), 0) for o in range(n)]
                     for p, n in logs.items()}
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

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp.partition] = offset

    def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        self.commits.append(({tp.partition: meta.offset for tp, meta in offsets.items()},
                             all(f.acked for f in self.producer.futures)))

    def close(self, **kwargs: Any) -> None:
        pass


class Echo(ConsumerLoop):
    """One output per record; `begin` records what was started, so the test sees two polls in flight."""

    def __init__(self, logs: dict[int, int], **config: Any) -> None:
        coordinator = LocalCoordinator(LeaseTable(restarted=False))  # a first start: no grace period
        super().__init__(KafkaConfig(), "fake:9092", ConsumerConfig(group_id="g", max_poll_records=10, **config),
                         TOPIC, "dlq", coordinator=lambda: coordinator)
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


class Poisoned(Echo):
    """Raises on any batch holding one of `poison` (a failure the decoder could not foresee), or on the first
    `outages` calls with an online-store outage."""

    def __init__(self, logs: dict[int, int], poison: set[bytes] = frozenset(), outages: int = 0,
                 **config: Any) -> None:
        super().__init__(logs, retry_backoff_s=0.001, retry_backoff_max_s=0.001, **config)
        self.poison, self.outages, self.alone = poison, outages, 0

    def handle(self, records: list[Any]) -> None:
        if self.outages:
            self.outages -= 1
            raise ConnectionError("online store unreachable")
        if any(r.value in self.poison for r in records):
            self.alone += len(records) == 1
            raise OverflowError("Python int too large to convert to C long")
        super().handle(records)


def _run(loop: Echo, steps: int = 400) -> None:
    """What the loop thread does, one iteration at a time: step, and on an exception act on its kind."""
    for _ in range(steps):
        try:
            loop.step()
        except Exception as exc:
            loop._failed(exc)
        if not loop._pending and not loop._uncommitted and all(
                loop._consumer.positions[p] == len(log) for p, log in loop._consumer.logs.items()):
            return
    raise AssertionError("the loop did not drain the logs")


def test_a_flush_timeout_commits_nothing() -> None:
    loop = Echo({0: 30})
    loop.step()
    loop._producer.flush_times_out = True
    with pytest.raises(KafkaTimeoutError):
        loop.step()
    assert loop._consumer.commits == []


def test_a_record_that_keeps_raising_is_dead_lettered_after_max_attempts_and_the_partition_moves_on() -> None:
    loop = Poisoned({0: 35, 1: 12}, poison={b"0/17"}, max_attempts=4)
    _run(loop)
    producer, consumer = loop._producer, loop._consumer
    assert loop.alone == 4  # tried on its own max_attempts times
    [(_, value, headers)] = producer.to("dlq")
    assert value == b"0/17" and headers["source"] == b"tickets/0/17" and headers["attempts"] == b"4"
    assert headers["reason"] == b"OverflowError: Python int too large to convert to C long"
    outputs = {v for _, v, _ in producer.to("out")}
    assert outputs == {f"{p}/{o}".encode() for p, n in ((0, 35), (1, 12)) for o in range(n)} - {b"0/17"}
    assert all(acked for _, acked in consumer.commits)
    last: dict[int, int] = {}
    for offsets, _ in consumer.commits:
        for p, offset in offsets.items():
            assert offset > last.get(p, 0)
            last[p] = offset
    assert last == {0: 35, 1: 12} and loop._attempts == {} and not loop._isolating


def test_the_records_of_a_failed_poll_are_retried_alone_and_its_neighbours_are_produced_once() -> None:
    loop = Poisoned({0: 10}, poison={b"0/3"}, max_attempts=1)
    _run(loop)
    values = [v for _, v, _ in loop._producer.to("out")]
    assert sorted(values) == sorted(f"0/{o}".encode() for o in range(10) if o != 3)  # none twice
    assert [v for _, v, _ in loop._producer.to("dlq")] == [b"0/3"]


def test_an_outage_is_retried_from_the_uncommitted_offsets_and_nothing_is_dead_lettered() -> None:
    loop = Poisoned({0: 25, 1: 5}, outages=3)
    _run(loop)
    assert loop._producer.to("dlq") == [] and loop.stats.errors == 3
    outputs = {v for _, v, _ in loop._producer.to("out")}
    assert outputs == {f"{p}/{o}".encode() for p, n in ((0, 25), (1, 5)) for o in range(n)}
    assert loop.stats.committed == {0: 25, 1: 5}
