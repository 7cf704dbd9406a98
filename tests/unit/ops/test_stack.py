"""Stack bookkeeping without servers: state files, process identity, crash reporting, endpoints."""

import subprocess
from pathlib import Path

import psutil
import pytest

from unison.config import Settings, load_settings
from unison.ops import stack


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(state_dir=tmp_path / "state")


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = stack.free_ports(20)
    assert len(set(ports)) == 20
    assert all(1024 < p < 65536 for p in ports)


def test_process_ref_rejects_a_recycled_pid() -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        ref = stack.ProcessRef.of(proc.pid)
        assert ref.process() is not None
        assert stack.ProcessRef(pid=proc.pid, create_time=ref.create_time - 100).process() is None
    finally:
        proc.kill()
        proc.wait()
    assert ref.process() is None


def test_status_without_state_reports_stopped(settings: Settings) -> None:
    statuses = stack.status(settings)
    assert [(s.name, s.health) for s in statuses] == [("ray", "stopped"), ("kafka", "stopped")]
    assert not settings.state_dir.exists()  # probing creates nothing


def test_a_dead_managed_process_is_reported_as_crashed(settings: Settings) -> None:
    proc = subprocess.Popen(["sleep", "30"])
    state = stack.StackState(components={"kafka": stack.ComponentState(
        name="kafka", managed=True, address="127.0.0.1:1", process=stack.ProcessRef.of(proc.pid),
        log="/some/kafka.log")})
    stack._save_state(settings, state)
    proc.kill()
    proc.wait()
    kafka = {s.name: s for s in stack.status(settings)}["kafka"]
    assert kafka.health == "crashed" and "/some/kafka.log" in kafka.detail


def test_down_stops_only_what_up_started(settings: Settings) -> None:
    ours = subprocess.Popen(["sleep", "30"], start_new_session=True)
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        state = stack.StackState(components={
            "kafka": stack.ComponentState(name="kafka", managed=True, address="127.0.0.1:1",
                                          process=stack.ProcessRef.of(ours.pid)),
            "ray": stack.ComponentState(name="ray", managed=False, address="head:6380",
                                        url="http://head:8265", process=stack.ProcessRef.of(bystander.pid)),
        })
        stack._save_state(settings, state)
        actions = stack.down(settings)
        assert actions == ["kafka: stopped", "ray: external, left running"]
        assert ours.wait(timeout=5) is not None
        assert psutil.Process(bystander.pid).is_running()
        assert stack.load_state(settings).components == {}
    finally:
        for proc in (ours, bystander):
            proc.kill()
            proc.wait()


def test_endpoints_need_a_running_or_configured_stack(settings: Settings) -> None:
    with pytest.raises(stack.StackError, match="unison stack up"):
        stack.endpoints(settings)
    external = load_settings(state_dir=settings.state_dir,
                             ray={"address": "head:6380", "dashboard_url": "http://head:8265"},
                             kafka={"bootstrap_servers": "k1:9092,k2:9092"})
    ep = stack.endpoints(external)
    assert (ep.ray_address, ep.ray_dashboard_url, ep.kafka_bootstrap_servers) == (
        "head:6380", "http://head:8265", "k1:9092,k2:9092")


def test_unreachable_external_components_are_reported(settings: Settings) -> None:
    (closed,) = stack.free_ports(1)
    external = load_settings(state_dir=settings.state_dir,
                             ray={"address": f"127.0.0.1:{closed}", "dashboard_url": f"http://127.0.0.1:{closed}"},
                             kafka={"bootstrap_servers": f"127.0.0.1:{closed}"})
    assert [(s.name, s.managed, s.health) for s in stack.status(external)] == [
        ("ray", False, "unreachable"), ("kafka", False, "unreachable")]


@pytest.mark.parametrize(("storage", "note"), [
    ("s3://tansu/", "object storage s3://tansu/: records and committed offsets survive a restart"),
    ("memory://tansu/", stack.BROKER_STORAGE_NOTE),
    (None, stack.BROKER_STORAGE_NOTE),  # recorded before the option existed: memory was the only engine
])
def test_status_says_whether_the_brokers_storage_survives_a_restart(settings: Settings, storage: str | None,
                                                                     note: str) -> None:
    (closed,) = stack.free_ports(1)
    proc = subprocess.Popen(["sleep", "30"])  # alive, so probed (nothing listens: unhealthy), not crashed
    try:
        component = stack.ComponentState(name="kafka", managed=True, address=f"127.0.0.1:{closed}",
                                         process=stack.ProcessRef.of(proc.pid), storage=storage)
        stack._save_state(settings, stack.StackState(components={"kafka": component}))
        kafka = {s.name: s for s in stack.status(settings)}["kafka"]
        assert kafka.health == "unhealthy" and kafka.detail.endswith(f"; {note}"), kafka
    finally:
        proc.kill()
        proc.wait()
