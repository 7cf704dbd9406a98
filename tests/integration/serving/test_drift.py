"""Input drift on the running application: what /v1/predict and the stream score is counted against the model's
training reference; PSI reaches /v1/drift, Ray's metrics port and `unison status`.

Each scenario uses its own copy of the model (drift is kept per model version and path), so traffic from other
tests cannot blur it. The monitor runs every second here (conftest: DriftMonitor user_config)."""

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from unison.config import Settings
from unison.model import Registry
from unison.ops import stack
from unison.streaming.tools import produce

BIN = Path(sys.executable).parent


def _tickets(settings: Settings, n: int, seed: int) -> list[dict[str, Any]]:
    frame = pd.read_parquet(settings.data.dir / "tickets.parquet",
                            columns=["ticket_id", "customer_id", "subject", "body", "channel"])
    picked = frame.sample(n=n, random_state=seed)
    return [{**t, "customer_id": int(t["customer_id"])} for t in picked.to_dict(orient="records")]


def _predict(url: str, model: str, tickets: list[dict[str, Any]]) -> None:
    with httpx.Client(timeout=60) as client:
        for i in range(0, len(tickets), 32):
            response = client.post(f"{url}/v1/predict", json={"model": model, "instances": tickets[i:i + 32]})
            assert response.status_code == 200, response.text


def _row(url: str, model: str, path: str, rows: int, timeout: float = 60) -> dict[str, Any]:
    """The drift report's row for `model` and `path` once the monitor has counted at least `rows` rows."""
    deadline = time.monotonic() + timeout
    while True:
        report = httpx.get(f"{url}/v1/drift", timeout=30).json()
        found = [r for r in report["models"] if r["model"] == model and r["path"] == path]
        if found and found[0]["rows"] >= rows:
            return found[0]
        assert time.monotonic() < deadline, f"no drift row with {rows} rows for {model} {path}: {report}"
        time.sleep(1)


def test_shifted_inputs_are_flagged(serve_settings: Settings, url: str,
                                                            serving_registry: Registry,
                                                            unison_env: dict[str, str]) -> None:
    steady = serving_registry.copy("triage:1", "steady").ref
    shifted = serving_registry.copy("triage:1", "shifted").ref
    normal = _tickets(serve_settings, 400, seed=1)
    _predict(url, steady, normal)
    # The same tickets from customers the feature store does not know, with three times the text.
    unknown = [{**t, "customer_id": 10**9 + i, "body": " ".join([t["body"]] * 3)} for i, t in enumerate(normal)]
    _predict(url, shifted, unknown)

    # The demo's online store holds each customer's newest activity, while training read values point-in-time
    # across the period, so activity counts (logins, tickets in 90 days) legitimately differ on both copies;
    # the inputs this test shifts are compared.
    row = _row(url, steady, "online", 400)
    assert row["rows"] == 400, row
    assert row["psi"]["features_missing"] < 0.1 and row["psi"]["text_chars"] < 0.1, row
    row = _row(url, shifted, "online", 400)
    assert row["status"] == "significant", row
    assert row["psi"]["features_missing"] > 0.25 and row["psi"]["text_chars"] > 0.25, row

    # Exported through Ray's metrics port, one series per input.
    port = stack.load_state(serve_settings).components[stack.RAY].ports["metrics_export"]
    deadline = time.monotonic() + 60
    while True:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        series = [line for line in text.splitlines() if line.startswith("ray_unison_feature_drift_psi{")
                  and f'model="{shifted}"' in line and 'input="features_missing"' in line]
        if series:
            break
        assert time.monotonic() < deadline, "no ray_unison_feature_drift_psi series for the shifted model"
        time.sleep(2)
    assert float(series[0].rsplit(" ", 1)[1]) > 0.25

    # And in `unison status`, for people and for scripts.
    result = subprocess.run([BIN / "unison", "status", "--json"], env=unison_env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    drift = json.loads(result.stdout)["drift"]
    assert (shifted, "significant") in {(r["model"], r["status"]) for r in drift["models"]}
    screen = subprocess.run([BIN / "unison", "status"], env=unison_env, capture_output=True, text=True,
                            timeout=120)
    assert screen.returncode == 0 and "Input drift" in screen.stdout and "significant" in screen.stdout


def test_the_stream_path_is_counted_too(serve_settings: Settings, url: str) -> None:
    serving = Registry(serve_settings.model.registry_dir)
    model = ":".join(serving.resolve(serve_settings.model.ref))
    before = next((r["rows"] for r in httpx.get(f"{url}/v1/drift", timeout=30).json()["models"]
                   if r["model"] == model and r["path"] == "stream"), 0)
    tickets = _tickets(serve_settings, 60, seed=2)
    address = stack.endpoints(serve_settings).kafka_bootstrap_servers
    produce(serve_settings.kafka, address, iter((t["ticket_id"].encode(), json.dumps(t).encode()) for t in tickets))
    row = _row(url, model, "stream", before + 60, timeout=120)
    assert row["rows"] >= before + 60
