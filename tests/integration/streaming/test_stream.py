"""The streaming deployment against the real Tansu broker and Ray: every good ticket scored exactly as in process,
poison messages dead-lettered with reasons, a killed replica loses nothing, a broker restart is survived."""

import json
import os
import signal
import threading
import time
import uuid
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml

from unison.config import Settings
from unison.ops import stack
from unison.serving.app import STREAM
from unison.streaming.tools import produce, tail


def _tickets(settings: Settings, run: str, n: int) -> list[dict[str, Any]]:
    frame = pd.read_parquet(settings.data.dir / "tickets.parquet").head(n)
    return [{"ticket_id": f"{run}-{i}", "customer_id": int(row.customer_id), "subject": row.subject,
             "body": row.body, "channel": row.channel} for i, row in enumerate(frame.itertuples())]


def _send(settings: Settings, messages: list[tuple[bytes, bytes | None]], rate: float | None = None) -> None:
    address = stack.endpoints(settings).kafka_bootstrap_servers
    produce(settings.kafka, address, iter(messages), rate=rate)  # type: ignore[arg-type]


def _collect(settings: Settings, topic: str, run: str, want: int, timeout: float) -> list[dict[str, Any]]:
    """Records of `topic` whose key starts with `run`, until `want` distinct keys arrived or `timeout`."""
    address = stack.endpoints(settings).kafka_bootstrap_servers
    found: list[dict[str, Any]] = []
    keys: set[str] = set()
    deadline = time.monotonic() + timeout
    while len(keys) < want and time.monotonic() < deadline:
        found = [r for r in tail(settings.kafka, address, topic, from_beginning=True, timeout_s=3)
                 if (r["key"] or "").startswith(run)]
        keys = {r["key"] for r in found}
    return found


def _stream(url: str) -> dict[str, Any]:
    return httpx.get(f"{url}/v1/stream", timeout=30).json()


@pytest.fixture
def run() -> str:
    return uuid.uuid4().hex[:8]


def test_good_tickets_are_scored_and_poison_goes_to_the_dead_letter_topic(
        serve_settings: Settings, url: str, run: str) -> None:
    from unison.features.store import Features
    from unison.model import Predictor, Registry
    from unison.model.scoring import attach_online_features, score_tickets

    good = _tickets(serve_settings, run, 40)
    poison: list[tuple[bytes, bytes | None]] = [
        (f"{run}-bad-json".encode(), b"{not json"),
        (f"{run}-bad-array".encode(), b"[1, 2]"),
        (f"{run}-bad-missing".encode(), json.dumps({"ticket_id": "x", "subject": "no customer"}).encode()),
        (f"{run}-bad-type".encode(), json.dumps({"ticket_id": "x", "customer_id": "7", "body": "x"}).encode()),
        (f"{run}-bad-empty".encode(), json.dumps({"ticket_id": "x", "customer_id": 7, "body": " "}).encode()),
        (f"{run}-bad-long".encode(), json.dumps({"ticket_id": "x", "customer_id": 7, "body": "y" * 20_001}).encode()),
        (f"{run}-bad-tombstone".encode(), None),
    ]
    messages: list[tuple[bytes, bytes | None]] = [(t["ticket_id"].encode(), json.dumps(t).encode()) for t in good]
    for i, message in enumerate(poison):  # mixed in among the good ones
        messages.insert(i * 5 + 2, message)
    _send(serve_settings, messages)

    outputs = _collect(serve_settings, serve_settings.kafka.output_topic, run, len(good), 120)
    by_id = {r["key"]: r for r in outputs}
    assert set(by_id) == {t["ticket_id"] for t in good}
    dead = _collect(serve_settings, serve_settings.kafka.dead_letter_topic, f"{run}-bad", len(poison), 60)
    reasons = {r["key"]: r["headers"]["reason"] for r in dead}
    assert set(reasons) == {key.decode() for key, _ in poison}
    assert "not JSON" in reasons[f"{run}-bad-json"] and "expected a JSON object" in reasons[f"{run}-bad-array"]
    assert "customer_id" in reasons[f"{run}-bad-missing"] and "customer_id" in reasons[f"{run}-bad-type"]
    assert "empty" in reasons[f"{run}-bad-empty"] and "20001 characters" in reasons[f"{run}-bad-long"]
    assert next(r for r in dead if r["key"] == f"{run}-bad-json")["value"] == "{not json"  # original bytes kept

    # Outputs carry model version and source, and equal in-process scoring of the same tickets.
    registry = Registry(serve_settings.model.registry_dir)
    predictor = Predictor(registry.load("triage:production", ["int8"]), "int8")
    expected = score_tickets(predictor, attach_online_features(Features(serve_settings), pd.DataFrame(good)))
    for ticket, want in zip(good, expected.records(), strict=True):
        record = by_id[ticket["ticket_id"]]
        assert record["headers"]["model_version"] == "1" and record["headers"]["source"].startswith("tickets/")
        assert record["value"]["category"] == want["category"]
        assert abs(record["value"]["priority"] - want["priority"]) < 1e-6
    assert _stream(url)["stats"]["dead_letters"] >= len(poison)


def test_killing_a_stream_replica_loses_no_ticket(serve_settings: Settings, url: str, run: str) -> None:
    tickets = _tickets(serve_settings, run, 300)
    messages = [(t["ticket_id"].encode(), json.dumps(t).encode()) for t in tickets]
    before = _stream(url)["stats"]["scored"]
    sender = threading.Thread(target=_send, args=(serve_settings, messages, 60.0))
    sender.start()
    deadline = time.monotonic() + 120
    while (status := _stream(url))["stats"]["scored"] <= before:  # kill it mid-run: while it is scoring
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    victim = status["replica_pid"]
    os.kill(victim, signal.SIGKILL)  # no goodbye: no commit, no group leave
    sender.join()
    outputs = _collect(serve_settings, serve_settings.kafka.output_topic, run, len(tickets), 240)
    assert {r["key"] for r in outputs} == {t["ticket_id"] for t in tickets}  # duplicates allowed, losses not
    deadline = time.monotonic() + 60
    while _stream(url).get("replica_pid") in (None, victim):
        assert time.monotonic() < deadline
        time.sleep(1)


def test_the_stream_survives_a_broker_restart(serve_settings: Settings, url: str, run: str) -> None:
    before = _stream(url)["replica_pid"]
    stack.restart_kafka(serve_settings)  # memory storage: topics and group offsets are gone, recreated empty
    tickets = _tickets(serve_settings, run, 30)
    deadline = time.monotonic() + 120
    while True:  # the first sends may race the broker coming back
        try:
            _send(serve_settings, [(t["ticket_id"].encode(), json.dumps(t).encode()) for t in tickets])
            break
        except Exception:
            assert time.monotonic() < deadline
            time.sleep(2)
    outputs = _collect(serve_settings, serve_settings.kafka.output_topic, run, len(tickets), 180)
    assert {r["key"] for r in outputs} == {t["ticket_id"] for t in tickets}
    status = _stream(url)
    assert status["replica_pid"] == before  # reconnected by itself, not restarted by Serve
    assert status["stats"]["errors"] >= 0


def test_lag_scales_the_stream_up_under_a_backlog_and_down_after_it_drains(
        serve_settings: Settings, url: str, run: str) -> None:
    """The lag policy as deploy/serve.yaml configures it (target 1000 per replica, max 2, upscale delay 10 s,
    downscale delay 60 s): 1 -> 2 replicas under a backlog, back to 1 only after the downscale delay.

    Only `user_config` changes here (small polls, so one replica drains slowly; lag read every second): Serve
    applies it in place, and it is left in place afterwards. Restarting a member's loop (a changed config, a
    rolling redeploy) while the group is still rebalancing after the scale-down stalls the embedded broker's
    group coordinator for minutes (Tansu; docs/STREAMING.md), so this test runs last and does not restore."""
    from unison.serving import deploy
    from unison.streaming.lag import consumer_lag

    config = yaml.safe_load(serve_settings.serving.config_file.read_text())
    scaling = next(d for d in config["applications"][0]["deployments"] if d["name"] == STREAM)["autoscaling_config"]
    target = scaling["policy"]["policy_kwargs"]["target_lag_per_replica"]
    small = {"group_id": "unison-scorer", "max_poll_records": 8, "poll_timeout_ms": 200, "lag_interval_s": 1}
    key = f"unison/{STREAM}"
    deploy.up(serve_settings, overrides={key: {"user_config": small}}, progress=lambda line: None)
    address = stack.endpoints(serve_settings).kafka_bootstrap_servers

    def deployment() -> tuple[int, int]:
        """(the autoscaler's target, replicas that exist: starting, running or stopping)."""
        apps = deploy.applications(stack.endpoints(serve_settings))["applications"]
        found = apps["unison"]["deployments"][STREAM]
        return found["target_num_replicas"], len(found["replicas"])

    def lag() -> int:
        return sum(r.lag for r in consumer_lag(serve_settings.kafka, address, "unison-scorer"))

    try:
        base = _tickets(serve_settings, run, 500)
        messages = [(f"{run}-{i}".encode(), json.dumps({**base[i % len(base)], "ticket_id": f"{run}-{i}"}).encode())
                    for i in range(6000)]
        _send(serve_settings, messages)
        assert lag() > 2 * target  # a backlog well above one replica's target
        deadline, peak = time.monotonic() + 180, (1, 1)
        while peak != (2, 2):  # decided, and the second replica exists
            assert time.monotonic() < deadline, f"no scale-up under a backlog of {lag()}: {_stream(url)}"
            decided, existing = deployment()
            peak = (max(peak[0], decided), max(peak[1], existing))
            time.sleep(0.5)
        deadline = time.monotonic() + 300
        while lag() > 0:
            assert time.monotonic() < deadline, f"the backlog did not drain: {lag()} left"
            time.sleep(0.5)
        drained = time.monotonic()
        deadline = drained + scaling["downscale_delay_s"] + 90
        while deployment()[0] != 1:
            assert time.monotonic() < deadline, "no scale-down after the backlog drained"
            time.sleep(0.5)
        # Held for the downscale delay (lag reports trail by a few seconds, so allow a little).
        assert time.monotonic() - drained >= scaling["downscale_delay_s"] - 10
        while deployment()[1] != 1:
            assert time.monotonic() < deadline, "the second replica did not stop"
            time.sleep(1)
        # The lag is exported as a metric per partition through Ray's metrics endpoint (what Prometheus scrapes).
        port = stack.load_state(serve_settings).components[stack.RAY].ports["metrics_export"]
        deadline = time.monotonic() + 60
        while True:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            series = [line for line in text.splitlines()
                      if "unison_kafka_consumer_lag{" in line and 'topic="tickets"' in line]
            if len({line.split('partition="')[1].split('"')[0] for line in series}) == 4:
                break
            assert time.monotonic() < deadline, "no unison_kafka_consumer_lag series for the 4 input partitions"
            time.sleep(2)
    except BaseException:
        deploy.up(serve_settings, progress=lambda line: None)  # leave a failed run's deployment as configured
        raise
