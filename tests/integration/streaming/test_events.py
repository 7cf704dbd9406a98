"""Feature events over the real broker into the real Feast stores: the online store and the offline store get
the event, the next prediction for that customer changes, and bad events land in the dead-letter topic."""

import json
import random
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pandas as pd

from unison.config import Settings
from unison.ops import stack
from unison.streaming.tools import produce, tail


def _predict(url: str, ticket: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{url}/v1/predict", json={"instances": [ticket]}, timeout=60)
    assert response.status_code == 200, response.text
    return dict(response.json()["predictions"][0])


def test_feature_events_reach_both_stores_and_change_the_next_prediction(serve_settings: Settings, url: str) -> None:
    from unison.features.store import Features

    kafka, address = serve_settings.kafka, stack.endpoints(serve_settings).kafka_bootstrap_servers
    customer = random.randint(10**8, 2 * 10**8)  # a customer no other test touches (none in the demo data)
    ticket = {"ticket_id": f"ev-{customer}", "customer_id": customer, "subject": "cannot log in",
              "body": "The app keeps rejecting my password since this morning."}
    before = _predict(url, ticket)

    when = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    event = {"customer_id": customer, "open_tickets": 40, "tickets_last_90d": 120, "last_csat": 1.0,
             "days_since_last_login": 0, "event_timestamp": when.isoformat()}
    bad = [b"{not json", json.dumps({**event, "last_csat": 11.0}).encode(),
           json.dumps({**event, "open_tickets": "many"}).encode(),
           json.dumps({k: v for k, v in event.items() if k != "days_since_last_login"}).encode()]
    key = str(customer).encode()
    produce(kafka, address, iter([(key, b) for b in bad[:2]] + [(key, json.dumps(event).encode())]
                                 + [(key, b) for b in bad[2:]]), topic=kafka.feature_events_topic)

    features = Features(serve_settings)
    deadline = time.monotonic() + 90
    while (online := features.online([customer]).iloc[0])["open_tickets"] != 40:
        assert time.monotonic() < deadline, f"the event did not reach the online store: {online.to_dict()}"
        time.sleep(1)
    assert online["tickets_last_90d"] == 120 and online["last_csat"] == 1.0

    # Offline too: a point-in-time read just after the event returns it.
    entities = pd.DataFrame({"customer_id": [customer], "event_timestamp": [pd.Timestamp(when) + pd.Timedelta("1s")]})
    offline = features.historical(entities).iloc[0]
    assert offline["open_tickets"] == 40 and offline["tickets_last_90d"] == 120

    after = _predict(url, ticket)
    assert abs(after["priority"] - before["priority"]) > 1e-3, (before, after)

    dead = [r for r in tail(kafka, address, kafka.feature_events_dead_letter_topic, from_beginning=True,
                            timeout_s=5) if r["key"] == str(customer)]
    reasons = sorted(r["headers"]["reason"] for r in dead)
    assert len(reasons) == 4, reasons
    for expected in ("not JSON", "last_csat", "open_tickets: expected a number", "days_since_last_login"):
        assert any(expected in r for r in reasons), (expected, reasons)
    status = httpx.get(f"{url}/v1/stream/events", timeout=30).json()
    assert status["stats"]["pushed"] >= 1 and status["stats"]["dead_letters"] >= 4
    assert status["newest_event"] is not None


def test_bad_feature_events_are_dead_lettered_once_and_the_partitions_move_on(
        serve_settings: Settings, url: str) -> None:
    """Events that pass JSON but not the event schema (bad and numeric timestamps, a 2^70 id, a count past int32,
    an unknown field) among good ones in several ISO formats, on several partitions: every good event reaches the
    online store, every bad one is dead-lettered exactly once with its reason, and the group's lag reaches 0."""
    from unison.features.store import Features

    kafka, address = serve_settings.kafka, stack.endpoints(serve_settings).kafka_bootstrap_servers
    base = random.randint(2 * 10**8, 3 * 10**8)  # customers no other test touches
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    formats = [now.isoformat(), now.strftime("%Y-%m-%dT%H:%M:%SZ"), now.strftime("%Y-%m-%d %H:%M:%S"),
               now.astimezone(timezone(timedelta(hours=-5))).isoformat(), now.isoformat(timespec="microseconds")]
    good = [{"customer_id": base + i, "open_tickets": 30 + i, "tickets_last_90d": 90, "last_csat": 2.0,
             "days_since_last_login": 1, "event_timestamp": formats[i % len(formats)]} for i in range(10)]
    event = good[0]
    bad = {"time": ({**event, "event_timestamp": "x"}, "event_timestamp"),
           "number-time": ({**event, "event_timestamp": 1_700_000_000}, "ISO-8601"),
           "created": ({**event, "created_timestamp": "yesterday"}, "created_timestamp"),
           "huge-id": ({**event, "customer_id": 2**70}, "customer_id"),
           "wrap": ({**event, "open_tickets": 5_000_000_000}, "open_tickets"),
           "unknown": ({**event, "region": "eu"}, "region")}
    messages = [(str(e["customer_id"]).encode(), json.dumps(e).encode()) for e in good]
    for i, (name, (payload, _)) in enumerate(bad.items()):
        messages.insert(2 * i + 1, (f"{base}-bad-{name}".encode(), json.dumps(payload).encode()))
    produce(kafka, address, iter(messages), topic=kafka.feature_events_topic)

    features = Features(serve_settings)
    ids = [e["customer_id"] for e in good]
    deadline = time.monotonic() + 120
    while (online := features.online(ids))["open_tickets"].tolist() != [e["open_tickets"] for e in good]:
        assert time.monotonic() < deadline, online.to_dict("records")
        time.sleep(1)

    deadline = time.monotonic() + 60
    while True:  # the dead letters, and no copy of them from a replayed poll
        dead = [r for r in tail(kafka, address, kafka.feature_events_dead_letter_topic, from_beginning=True,
                                timeout_s=3) if (r["key"] or "").startswith(f"{base}-bad-")]
        if len(dead) >= len(bad) or time.monotonic() > deadline:
            break
    reasons = {r["key"].removeprefix(f"{base}-bad-"): r["headers"]["reason"] for r in dead}
    assert len(dead) == len(bad) and set(reasons) == set(bad), reasons
    for name, (_, expected) in bad.items():
        assert expected in reasons[name], (name, reasons[name])

    deadline = time.monotonic() + 120
    while (status := httpx.get(f"{url}/v1/stream/events", timeout=30).json())["lag"] is None \
            or status["lag"]["lag"] > 0:  # every partition's offset moved past the bad events
        assert time.monotonic() < deadline, status
        time.sleep(1)
