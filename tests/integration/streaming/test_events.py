"""Feature events over the real broker into the real Feast stores: the online store and the offline store get
the event, the next prediction for that customer changes, and bad events land in the dead-letter topic."""

import json
import random
import time
from datetime import UTC, datetime, timedelta
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
