"""Consumer lag against a known backlog on the real broker, read without disturbing the group."""

import uuid

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.structs import OffsetAndMetadata

from unison.config import Settings
from unison.ops import stack
from unison.streaming.lag import LagReader, consumer_lag


def test_lag_is_end_offset_minus_committed(stack_settings: Settings) -> None:
    address = stack.endpoints(stack_settings).kafka_bootstrap_servers
    run = uuid.uuid4().hex[:8]
    topic, group = f"lag-{run}", f"lag-test-{run}"
    admin = KafkaAdminClient(bootstrap_servers=address)
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=address, linger_ms=20)  # several records per batch
    for partition, count in ((0, 10), (1, 6)):
        for i in range(count):
            producer.send(topic, value=f"{i}".encode(), partition=partition)
    producer.flush()
    producer.close()
    committer = KafkaConsumer(bootstrap_servers=address, group_id=group, enable_auto_commit=False)
    committer.assign([TopicPartition(topic, 0)])
    committer.commit({TopicPartition(topic, 0): OffsetAndMetadata(3, "", -1)})
    committer.close()

    rows = {r.partition: r for r in consumer_lag(stack_settings.kafka, address, group, [topic])}
    assert (rows[0].end_offset, rows[0].committed, rows[0].lag) == (10, 3, 7)
    assert (rows[1].end_offset, rows[1].committed, rows[1].lag) == (6, None, 6)  # never committed: all of it
    reader = LagReader(stack_settings.kafka, address)  # what the streaming replicas keep open
    try:
        for _ in range(2):
            again = {r.partition: r.lag for r in reader.read(group, [topic])}
            assert again == {0: 7, 1: 6}  # reading lag moved nothing
    finally:
        reader.close()
