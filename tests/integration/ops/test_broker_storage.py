"""The embedded broker on S3 object storage (`kafka.embedded_storage: s3://<bucket>/`) for real: Tansu against
alocals3, a local S3 server that keeps its objects on disk. Acknowledged records and committed offsets survive
`stack.restart_kafka`, and the log continues after them (a store without conditional PUT lets the restarted
broker reuse offsets 0, 1, ... and overwrite what was there). No Ray: the broker alone."""

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from unison.config import Settings, load_settings
from unison.ops import stack

BIN = Path(sys.executable).parent
BUCKET = "tansu"
TOPIC = "durable"
GROUP = "durable-readers"
RECORDS = 200
PARTITIONS = 2

pytestmark = [pytest.mark.usefixtures("clean_env"), pytest.mark.timeout(180)]


@pytest.fixture
def aws_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A local S3 store with the bucket created, and the AWS_* variables the broker reads pointing at it (this
    process's environment, as `unison stack up` would see them). Yields the secret key, to look for leaks."""
    (port,) = stack.free_ports(1)
    data = tmp_path / "s3"
    (data / "objects").mkdir(parents=True)
    log_path = tmp_path / "alocals3.log"
    with open(log_path, "ab") as log:
        server = subprocess.Popen(
            [BIN / "alocals3-server", "--host", "127.0.0.1", "--port", str(port),
             "--database-url", f"sqlite:///{data / 'meta.db'}", "--storage-root", str(data / "objects"),
             "--log-level", "WARNING"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    try:
        endpoint = f"http://127.0.0.1:{port}/s3"  # alocals3 serves the S3 API under /s3
        deadline = time.monotonic() + 30
        while True:  # until it answers: creating the bucket is the readiness probe
            assert server.poll() is None, f"alocals3 exited with {server.returncode}: {log_path.read_text()}"
            try:
                response = httpx.put(f"{endpoint}/{BUCKET}", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, f"alocals3 did not answer on {endpoint}: {log_path.read_text()}"
                time.sleep(0.1)
        assert response.is_success, response.text

        secret = f"secret-{uuid.uuid4().hex}"
        for key in [k for k in os.environ if k.startswith("AWS_")]:  # no profile or token from the shell
            monkeypatch.delenv(key)
        for key, value in {"AWS_ENDPOINT": endpoint, "AWS_ACCESS_KEY_ID": "unison-test",
                           "AWS_SECRET_ACCESS_KEY": secret, "AWS_REGION": "us-east-1",
                           "AWS_ALLOW_HTTP": "true"}.items():
            monkeypatch.setenv(key, value)
        yield secret
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


def _value(i: int) -> bytes:
    return f"record-{i:04d}-".encode() * 20


def _read_all(address: str, ends: dict[int, int]) -> dict[tuple[int, int], tuple[bytes, bytes]]:
    """Every record of the topic up to `ends` (per partition), by (partition, offset)."""
    reader = KafkaConsumer(bootstrap_servers=address, enable_auto_commit=False, auto_offset_reset="earliest")
    partitions = [TopicPartition(TOPIC, p) for p in ends]
    reader.assign(partitions)
    reader.seek_to_beginning(*partitions)
    found: dict[tuple[int, int], tuple[bytes, bytes]] = {}
    deadline = time.monotonic() + 30
    try:
        while any(reader.position(tp) < ends[tp.partition] for tp in partitions) and time.monotonic() < deadline:
            for records in reader.poll(timeout_ms=500).values():
                found.update({(r.partition, r.offset): (r.key, r.value) for r in records})
    finally:
        reader.close()
    return found


def _committed(address: str) -> dict[int, int | None]:
    reader = KafkaConsumer(bootstrap_servers=address, group_id=GROUP, enable_auto_commit=False)
    try:
        return {p: reader.committed(TopicPartition(TOPIC, p)) for p in range(PARTITIONS)}
    finally:
        reader.close()


def _settings(tmp_path: Path) -> Settings:
    # Ray is configured as an external cluster where nothing listens, so `stack up` starts, records and later
    # stops the broker alone (external components are never started or stopped) and creates the topic.
    (closed,) = stack.free_ports(1)
    return load_settings(
        state_dir=tmp_path / "state",
        ray={"address": f"127.0.0.1:{closed}", "dashboard_url": f"http://127.0.0.1:{closed}"},
        kafka={"embedded_storage": f"s3://{BUCKET}/", "topics": [{"name": TOPIC, "partitions": PARTITIONS}]},
    )


def test_records_and_committed_offsets_survive_a_broker_restart(aws_secret: str, tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    state, actions = stack.up(settings)
    broker = state.components[stack.KAFKA]
    try:
        assert broker.managed and broker.storage == "s3://tansu/", broker
        assert f"kafka: created topics {TOPIC}" in actions, actions
        address = broker.address

        producer = KafkaProducer(bootstrap_servers=address, acks="all", linger_ms=5)
        futures = [producer.send(TOPIC, key=str(i).encode(), value=_value(i), partition=i % PARTITIONS)
                   for i in range(RECORDS)]
        producer.flush(timeout=60)
        acknowledged = [future.get(timeout=30) for future in futures]  # raises if any send was not acknowledged
        producer.close()
        sent = {(m.partition, m.offset): (str(i).encode(), _value(i)) for i, m in enumerate(acknowledged)}
        per_partition = RECORDS // PARTITIONS
        assert sorted(sent) == [(p, o) for p in range(PARTITIONS) for o in range(per_partition)]

        # An assigned, never-subscribed consumer commits for the group (no membership, like the stream's loops).
        commits = {0: 60, 1: 35}
        committer = KafkaConsumer(bootstrap_servers=address, group_id=GROUP, enable_auto_commit=False)
        committer.assign([TopicPartition(TOPIC, p) for p in commits])
        committer.commit({TopicPartition(TOPIC, p): OffsetAndMetadata(n, "", -1) for p, n in commits.items()})
        committer.close()
        assert _committed(address) == commits

        restarted = stack.restart_kafka(settings)
        assert restarted.address == address and restarted.storage == "s3://tansu/"
        assert restarted.process is not None and broker.process is not None
        assert restarted.process.pid != broker.process.pid
        assert broker.process.process() is None  # the first broker is gone: what follows is read from the store
        broker = restarted

        ends = {p: per_partition for p in range(PARTITIONS)}
        assert _read_all(address, ends) == sent
        assert _committed(address) == commits

        # New records continue each partition's log rather than starting it again at offset 0.
        producer = KafkaProducer(bootstrap_servers=address, acks="all")
        after = [producer.send(TOPIC, key=b"after", value=b"after-restart", partition=p).get(timeout=30)
                 for p in range(PARTITIONS)]
        producer.close()
        assert [(m.partition, m.offset) for m in after] == [(p, per_partition) for p in range(PARTITIONS)]
        everything = _read_all(address, {p: per_partition + 1 for p in range(PARTITIONS)})
        assert everything == {**sent, **{(p, per_partition): (b"after", b"after-restart") for p in range(PARTITIONS)}}

        kafka = {s.name: s for s in stack.status(settings)}[stack.KAFKA]
        assert kafka.health == "running" and kafka.managed, kafka
        assert "object storage s3://tansu/: records and committed offsets survive a restart" in kafka.detail
        # The credentials reach the broker through its environment only.
        assert aws_secret not in (settings.state_dir / stack.STATE_FILE).read_text()
        assert broker.log is not None and aws_secret not in Path(broker.log).read_text()
        assert aws_secret not in " ".join(psutil.Process(broker.process.pid).cmdline())
    finally:
        actions = stack.down(settings)
    assert actions == ["kafka: stopped", "ray: external, left running"]
    assert broker.process is not None and broker.process.process() is None
