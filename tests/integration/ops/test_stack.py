"""The embedded stack for real: Ray accepts `ray job submit`, the broker serves a consumer group, and
`down` leaves no process behind."""

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from unison.config import Settings, load_settings
from unison.ops import stack

BIN = Path(sys.executable).parent


def test_status_reports_both_components_running(stack_settings: Settings) -> None:
    statuses = {s.name: s for s in stack.status(stack_settings)}
    assert statuses["ray"].health == "running", statuses["ray"]
    assert "1 node(s) alive" in statuses["ray"].detail
    assert statuses["kafka"].health == "running", statuses["kafka"]


def test_configured_topics_exist_with_their_partitions(stack_settings: Settings, endpoints: stack.Endpoints) -> None:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=endpoints.kafka_bootstrap_servers)
    try:
        described = {t["name"]: len(t["partitions"]) for t in admin.describe_topics()}
    finally:
        admin.close()
    expected = {t.name: t.partitions for t in stack_settings.kafka.topics}
    assert {name: described.get(name) for name in expected} == expected
    assert stack.ensure_topics(stack_settings.kafka, endpoints.kafka_bootstrap_servers) == []  # idempotent


def test_up_twice_is_harmless(stack_settings: Settings) -> None:
    before = stack.load_state(stack_settings)
    _, actions = stack.up(stack_settings)
    after = stack.load_state(stack_settings)
    assert all("already running" in a for a in actions), actions
    assert {n: c.process for n, c in before.components.items()} == {n: c.process for n, c in after.components.items()}


def test_cli_status_from_another_process(unison_env: dict[str, str]) -> None:
    result = subprocess.run([BIN / "unison", "stack", "status", "--json"], env=unison_env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert {c["name"]: c["health"] for c in json.loads(result.stdout)} == {"ray": "running", "kafka": "running"}


def test_produce_and_consume_in_a_consumer_group(stack_settings: Settings, endpoints: stack.Endpoints) -> None:
    topic, group = "tickets", f"it-{uuid.uuid4().hex[:8]}"
    run = uuid.uuid4().hex
    producer = KafkaProducer(bootstrap_servers=endpoints.kafka_bootstrap_servers, acks="all")
    sent = {f"{run}-{i}" for i in range(40)}
    for key in sent:
        producer.send(topic, key=key.encode(), value=json.dumps({"ticket_id": key}).encode())
    producer.flush(timeout=30)
    producer.close()

    def consumer() -> KafkaConsumer:
        # Explicit timeouts: kafka-python's default max_poll_interval_ms is also its rebalance timeout.
        return KafkaConsumer(topic, bootstrap_servers=endpoints.kafka_bootstrap_servers, group_id=group,
                             auto_offset_reset="earliest", enable_auto_commit=False, max_poll_interval_ms=30_000,
                             session_timeout_ms=10_000, heartbeat_interval_ms=1_000)

    first = consumer()
    seen: set[str] = set()
    deadline = time.monotonic() + 60
    while not sent <= seen and time.monotonic() < deadline:
        for records in first.poll(timeout_ms=500).values():
            seen.update(r.key.decode() for r in records if r.key.decode().startswith(run))
    assert sent <= seen
    first.commit()
    partitions = [TopicPartition(topic, p) for p in first.partitions_for_topic(topic)]
    committed = {tp.partition: first.committed(tp) for tp in partitions}
    first.close()  # leaves the group

    # A new member of the same group resumes from the committed offsets: nothing of this run is redelivered.
    second = consumer()
    replay: list[str] = []
    deadline = time.monotonic() + 20
    while not second.assignment() and time.monotonic() < deadline:
        replay.extend(r.key.decode() for rs in second.poll(timeout_ms=500).values() for r in rs)
    replay.extend(r.key.decode() for rs in second.poll(timeout_ms=1_000).values() for r in rs)
    assert {tp.partition: second.committed(tp) for tp in partitions} == committed
    second.close()
    assert not [k for k in replay if k.startswith(run)]


def test_ray_job_submit_cli(endpoints: stack.Endpoints, tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(
        "import ray\n"
        "ray.init()\n"
        "@ray.remote\n"
        "def double(x):\n"
        "    return 2 * x\n"
        "print('ANSWER', sum(ray.get([double.remote(i) for i in range(10)])))\n"
        "import unison; print('UNISON', unison.__version__)\n"
    )
    result = subprocess.run(
        [BIN / "ray", "job", "submit", "--address", endpoints.ray_dashboard_url, "--working-dir", str(tmp_path),
         "--", "python", "job.py"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "ANSWER 90" in result.stdout
    assert "UNISON " in result.stdout  # the job runs in the environment that has Unison installed


def _processes_of(state: stack.StackState) -> list[psutil.Process]:
    found = []
    for component in state.components.values():
        found.extend(stack._component_processes(component))
    return found


def test_lifecycle_crash_is_reported_restarted_and_down_leaves_nothing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNISON_")}
    env["UNISON_STATE_DIR"] = str(tmp_path / "state")
    env["UNISON_RAY__NUM_CPUS"] = "1"
    settings = load_settings(state_dir=tmp_path / "state")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([BIN / "unison", "stack", *args], env=env, capture_output=True, text=True, timeout=300)

    try:
        assert cli("up").returncode == 0
        state = stack.load_state(settings)
        ray_temp = state.components["ray"].workdir
        assert ray_temp and _processes_of(state)

        kafka = state.components["kafka"].process
        assert kafka is not None
        psutil.Process(kafka.pid).kill()
        psutil.Process(kafka.pid).wait(timeout=10)
        status = cli("status", "--json")
        assert status.returncode == 1
        assert {c["name"]: c["health"] for c in json.loads(status.stdout)}["kafka"] == "crashed"

        again = cli("up")
        assert again.returncode == 0 and "crashed" in again.stdout
        assert cli("status").returncode == 0
        state = stack.load_state(settings)
    finally:
        down = cli("down")
    assert down.returncode == 0, down.stderr
    pids = [p.pid for p in _processes_of(state) if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert pids == []
    leftovers = [p.pid for p in psutil.process_iter(["cmdline"])
                 if any(ray_temp in arg for arg in (p.info["cmdline"] or ()))]
    assert leftovers == []
    assert cli("status").returncode == 1


@pytest.mark.parametrize("bad", ["ray", "kafka"])
def test_external_components_are_probed_not_started(tmp_path: Path, bad: str) -> None:
    (closed,) = stack.free_ports(1)
    overrides = {"ray": {"address": f"127.0.0.1:{closed}", "dashboard_url": f"http://127.0.0.1:{closed}"}} \
        if bad == "ray" else {"kafka": {"bootstrap_servers": f"127.0.0.1:{closed}"}}
    settings = load_settings(state_dir=tmp_path / "state", **overrides)
    statuses = {s.name: s for s in stack.status(settings)}
    assert statuses[bad].health == "unreachable" and not statuses[bad].managed
