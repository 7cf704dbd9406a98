"""The online Serve application over real HTTP on the session's Ray stack: both APIs, every error case,
a model that fails to load, run-time batching changes through `serve deploy`, and 503 under overload."""

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from unison.config import Settings
from unison.serving import deploy
from unison.serving.app import MODEL
from unison.serving.schema import PredictResponse

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def tickets(platform_settings: Settings) -> pd.DataFrame:
    frame = pd.read_parquet(platform_settings.data.dir / "tickets.parquet").head(6)
    return frame[["ticket_id", "customer_id", "subject", "body", "channel"]]


def _instances(tickets: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: (int(v) if k == "customer_id" else str(v)) for k, v in row.items()}
            for row in tickets.to_dict(orient="records")]


def test_v1_predict_matches_in_process_scoring(url: str, tickets: pd.DataFrame, platform_settings: Settings) -> None:
    from unison.features.store import Features
    from unison.model import Predictor, Registry
    from unison.model.scoring import attach_online_features, score_tickets

    response = httpx.post(f"{url}/v1/predict", json={"instances": _instances(tickets)}, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    PredictResponse.model_validate(body)  # the documented response model, field for field
    assert body["model_name"] == "triage" and body["model_version"] and body["feature_service"] == "triage_v1"
    assert body["latency_ms"]["total"] >= body["latency_ms"]["model"] > 0
    assert [p["ticket_id"] for p in body["predictions"]] == tickets["ticket_id"].tolist()

    # The same tickets scored here with the same artifact, online features and transform give the same answer.
    predictor = Predictor(Registry(platform_settings.model.registry_dir).load("triage:production", ["int8"]),
                          "int8")
    expected = score_tickets(predictor, attach_online_features(Features(platform_settings), tickets)).records()
    for got, want in zip(body["predictions"], expected, strict=True):
        assert got["category"] == want["category"] and got["features_missing"] == want["features_missing"]
        assert abs(got["priority"] - want["priority"]) < 1e-6
        diffs = [abs(got["probabilities"][k] - v) for k, v in want["probabilities"].items()]
        assert max(diffs) < 1e-6
        assert abs(sum(got["probabilities"].values()) - 1) < 1e-4


def test_open_inference_protocol_v2(url: str, tickets: pd.DataFrame) -> None:
    assert httpx.get(f"{url}/v2/health/live", timeout=30).json() == {"live": True}
    assert httpx.get(f"{url}/v2/health/ready", timeout=30).status_code == 200
    server = httpx.get(f"{url}/v2", timeout=30).json()
    assert server["name"] == "unison" and "version" in server and server["extensions"] == []
    meta = httpx.get(f"{url}/v2/models/triage", timeout=30).json()
    assert meta["versions"] == ["1", "2"]
    version = "1"
    assert {i["name"] for i in meta["inputs"]} >= {"customer_id", "subject", "body"}
    assert {o["name"]: o["datatype"] for o in meta["outputs"]}["probabilities"] == "FP32"
    assert httpx.get(f"{url}/v2/models/triage/versions/{version}", timeout=30).json()["name"] == "triage"
    assert httpx.get(f"{url}/v2/models/triage/ready", timeout=30).status_code == 200
    assert httpx.get(f"{url}/v2/models/triage/versions/{version}/ready", timeout=30).status_code == 200

    n = len(tickets)
    request = {"id": "req-1", "inputs": [
        {"name": "customer_id", "shape": [n, 1], "datatype": "INT64", "data": tickets["customer_id"].tolist()},
        {"name": "subject", "shape": [n], "datatype": "BYTES", "data": tickets["subject"].tolist()},
        {"name": "body", "shape": [n], "datatype": "BYTES", "data": tickets["body"].tolist()},
        {"name": "channel", "shape": [n], "datatype": "BYTES", "data": tickets["channel"].tolist()},
    ]}
    for path in ("/v2/models/triage/infer", f"/v2/models/triage/versions/{version}/infer"):
        response = httpx.post(url + path, json=request, timeout=60)
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["model_name"], body["model_version"], body["id"]) == ("triage", version, "req-1")
        outputs = {o["name"]: o for o in body["outputs"]}
        probabilities = np.array(outputs["probabilities"]["data"]).reshape(outputs["probabilities"]["shape"])
        assert probabilities.shape == (n, 6) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-4)
        assert outputs["category"]["datatype"] == "BYTES" and len(outputs["category"]["data"]) == n

    # Same tickets, same answers as /v1.
    v1 = httpx.post(f"{url}/v1/predict", json={"instances": _instances(tickets)}, timeout=60).json()
    assert outputs["category"]["data"] == [p["category"] for p in v1["predictions"]]
    assert np.allclose(outputs["priority"]["data"], [p["priority"] for p in v1["predictions"]], atol=1e-6)

    only = httpx.post(f"{url}/v2/models/triage/infer", json={**request, "outputs": [{"name": "priority"}]},
                      timeout=60).json()
    assert [o["name"] for o in only["outputs"]] == ["priority"]
    assert httpx.get(f"{url}/docs", timeout=30).status_code == 200
    assert "/v2/models/{name}/infer" in httpx.get(f"{url}/openapi.json", timeout=30).json()["paths"]


GOOD = {"ticket_id": "t1", "customer_id": 1, "subject": "refund", "body": "I was charged twice"}
OIP_GOOD = {"inputs": [{"name": "customer_id", "shape": [1], "datatype": "INT64", "data": [1]},
                       {"name": "body", "shape": [1], "datatype": "BYTES", "data": ["charged twice"]}]}


@pytest.mark.parametrize(("method", "path", "body", "status", "fragment"), [
    ("POST", "/v1/predict", b"{not json", 400, "malformed JSON"),
    ("POST", "/v1/predict", b"", 400, "body is missing"),
    ("POST", "/v1/predict", {"instances": [{"ticket_id": "t1", "subject": "x"}]}, 422, "customer_id"),
    ("POST", "/v1/predict", {"instances": [{**GOOD, "customer_id": "one"}]}, 422, "customer_id"),
    ("POST", "/v1/predict", {"instances": [{**GOOD, "subject": "", "body": "  "}]}, 422, "both empty"),
    ("POST", "/v1/predict", {"instances": []}, 422, "instances"),
    ("POST", "/v1/predict", {"tickets": [GOOD]}, 422, "instances"),
    ("POST", "/v1/predict", {"instances": [{**GOOD, "subject": "", "body": "x" * 20_001}]}, 413, "20001 characters"),
    ("POST", "/v1/predict", {"instances": [GOOD] * 65}, 413, "65 instances"),
    ("POST", "/v1/predict", b'{"instances": [{"ticket_id": "t1", "customer_id": 1, "body": "a\\ud800b"}]}', 422,
     "body"),
    ("POST", "/v1/predict", {"instances": [{**GOOD, "customer_id": 2**70}]}, 422, "customer_id"),
    ("POST", "/v2/models/triage/infer", {"inputs": [{**OIP_GOOD["inputs"][0], "data": [2**70]},
                                                    OIP_GOOD["inputs"][1]]}, 400, "customer_id"),
    ("POST", "/v1/predict", {"instances": [GOOD], "model": "spam"}, 404, "unknown model 'spam'; models: big, "),
    ("POST", "/v1/predict", {"instances": [GOOD], "model": "triage:999"}, 404, "no version '999'"),
    ("POST", "/v1/predict", b"x" * (4 * 1024 * 1024 + 1), 413, "exceeds the limit"),
    ("POST", "/v2/models/triage/infer", b"[1, 2", 400, "malformed JSON"),
    ("POST", "/v2/models/triage/infer", {"inputs": "nope"}, 400, "inputs"),
    ("POST", "/v2/models/triage/infer", {"inputs": [{**OIP_GOOD["inputs"][0], "datatype": "FP32"}]}, 400,
     "datatype FP32"),
    ("POST", "/v2/models/triage/infer", {**OIP_GOOD, "outputs": [{"name": "logits"}]}, 400, "unknown output"),
    ("POST", "/v2/models/spam/infer", OIP_GOOD, 404, "unknown model 'spam'"),
    ("POST", "/v2/models/triage/versions/999/infer", OIP_GOOD, 404, "no version '999'"),
    ("GET", "/v2/models/spam", None, 404, "unknown model"),
    ("GET", "/v2/models/triage/versions/999/ready", None, 404, "no version"),
    ("GET", "/v3/anything", None, 404, "no route GET /v3/anything"),
])
def test_bad_requests_get_a_clear_4xx_and_the_server_stays_up(
        url: str, method: str, path: str, body: Any, status: int, fragment: str) -> None:
    if isinstance(body, bytes):
        response = httpx.request(method, url + path, content=body, headers={"content-type": "application/json"},
                                 timeout=30)
    else:
        response = httpx.request(method, url + path, json=body, timeout=30)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]
    assert httpx.post(f"{url}/v1/predict", json={"instances": [GOOD]}, timeout=30).status_code == 200


def test_a_bad_request_batched_with_good_ones_fails_alone(url: str) -> None:
    """A surrogate and a huge id sent at once with 15 good requests (one batch window): JSON 4xx for them, 200 for
    all the others."""
    surrogate = b'{"instances": [{"ticket_id": "bad", "customer_id": 1, "body": "a\\ud800b"}]}'
    huge = json.dumps({"instances": [{**GOOD, "customer_id": 2**70}]}).encode()

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            good = [client.post(f"{url}/v1/predict", json={"instances": [{**GOOD, "ticket_id": f"g{i}"}]})
                    for i in range(15)]
            bad = [client.post(f"{url}/v1/predict", content=body, headers={"content-type": "application/json"})
                   for body in (surrogate, huge)]
            return list(await asyncio.gather(*good, *bad))

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses[:15]] == [200] * 15, [r.text for r in responses[:15]]
    assert [r.status_code for r in responses[15:]] == [422, 422]
    assert "body" in responses[15].json()["error"] and "customer_id" in responses[16].json()["error"]


def test_a_model_that_fails_to_load_answers_503_and_others_keep_serving(url: str) -> None:
    # /broken serves broken:1 by default, whose weights changed after registration: refused by checksum.
    response = httpx.post(f"{url}/broken/v1/predict", json={"instances": [GOOD]}, timeout=30)
    assert response.status_code == 503, response.text
    assert "refused" in response.json()["error"] and "checksum mismatch" in response.json()["error"]
    assert httpx.get(f"{url}/broken/v2/health/ready", timeout=30).status_code == 503
    ready = httpx.get(f"{url}/broken/v2/models/broken/ready", timeout=30)
    assert ready.status_code == 503 and "checksum" in ready.json()["error"]
    assert httpx.post(f"{url}/broken/v2/models/broken/infer", json=OIP_GOOD, timeout=30).status_code == 503
    # The process is alive, the model is not.
    assert httpx.get(f"{url}/broken/v2/health/live", timeout=30).status_code == 200
    # Other models keep serving, in the same replica and in the healthy application.
    other = httpx.post(f"{url}/broken/v1/predict", json={"instances": [GOOD], "model": "triage:1"}, timeout=60)
    assert other.status_code == 200 and other.json()["model_version"] == "1"
    assert httpx.get(f"{url}/v2/health/ready", timeout=30).status_code == 200


def _model_info(url: str) -> dict[str, Any]:
    return httpx.get(f"{url}/v1/models", timeout=30).json()["replica"]


def _wait_model_info(url: str, ready: Any, timeout: float = 180) -> dict[str, Any]:
    """The Model replica's info once `ready(info)` holds. While a redeploy replaces the replica, /v1/models may
    answer an error (no replica yet): that is "not yet", not a failure."""
    deadline = time.monotonic() + timeout
    seen: Any = None
    while True:
        try:
            seen = httpx.get(f"{url}/v1/models", timeout=30).json()
            if "replica" in seen and ready(seen["replica"]):
                return dict(seen["replica"])
        except (httpx.HTTPError, ValueError) as exc:
            seen = repr(exc)
        assert time.monotonic() < deadline, f"the Model replica never got ready; last answer: {seen}"
        time.sleep(1)


def _settled(settings: Settings, since: float) -> bool:
    """A deploy made after `since` is rolled out: the application RUNNING with one RUNNING Model replica (not
    merely the old one still)."""
    from unison.ops.stack import endpoints

    app = deploy.applications(endpoints(settings))["applications"].get("unison", {})
    replicas = app.get("deployments", {}).get(MODEL, {}).get("replicas", [])
    return (app.get("last_deployed_time_s", 0) > since and app.get("status") == "RUNNING"
            and [r["state"] for r in replicas] == ["RUNNING"])


def _wait_settled(settings: Settings, since: float, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not _settled(settings, since):
        assert time.monotonic() < deadline, "the redeploy did not roll out"
        time.sleep(1)


def _restore(settings: Settings, tmp_path: Path, url: str) -> None:
    """Deploy the file's settings again and wait until they are rolled out and answering, so whatever runs next
    does not meet a replica swap."""
    since = time.time()
    _serve_deploy(settings, tmp_path, {})
    _wait_settled(settings, since)
    _wait_model_info(url, lambda info: info["batching"]["max_batch_size"] == 16)
    deadline = time.monotonic() + 180
    while httpx.post(f"{url}/v1/predict", json={"instances": [GOOD]}, timeout=60).status_code != 200:
        assert time.monotonic() < deadline, "the restored application does not answer"
        time.sleep(1)


def _serve_deploy(settings: Settings, tmp_path: Path, overrides: dict[str, dict[str, Any]]) -> None:
    """Ray's own `serve deploy` CLI with the config `unison serve config` renders."""
    from unison.ops.stack import endpoints

    stack = endpoints(settings)
    config = deploy.render(settings, stack, int(deploy.url(settings).rsplit(":", 1)[1]), overrides)
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run([str(BIN / "serve"), "deploy", str(path), "--address", stack.ray_dashboard_url],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_batching_changes_at_run_time_through_serve_deploy(serve_settings: Settings, url: str,
                                                           tmp_path: Path) -> None:
    fixed = {"autoscaling_config": None, "num_replicas": 1}
    since = time.time()  # the controller stamps the deploy with its own clock (same machine)
    _serve_deploy(serve_settings, tmp_path, {MODEL: fixed})  # one replica, so every answer comes from it
    try:
        _wait_settled(serve_settings, since)
        before = _wait_model_info(url, lambda info: True)
        _serve_deploy(serve_settings, tmp_path,
                      {MODEL: {**fixed, "user_config": {"max_batch_size": 4, "batch_wait_timeout_s": 0.02}}})
        info = _wait_model_info(url, lambda info: info["batching"]["max_batch_size"] == 4)
        assert info["batching"]["batch_wait_timeout_s"] == 0.02
        assert info["replica_pid"] == before["replica_pid"]  # reconfigured in place, not restarted

        async def burst() -> list[int]:
            async with httpx.AsyncClient(timeout=60) as client:
                responses = await asyncio.gather(*(client.post(f"{url}/v1/predict", json={"instances": [GOOD]})
                                                   for _ in range(24)))
            return [r.status_code for r in responses]

        assert set(asyncio.run(burst())) == {200}
        stats = _model_info(url)["stats"]
        assert stats["mean_requests_per_batch"] > 1  # concurrent requests really shared batches
        assert 0 < stats["fill_ratio"] <= 1
    finally:
        _restore(serve_settings, tmp_path, url)


def test_overload_answers_503_quickly(serve_settings: Settings, url: str, tmp_path: Path) -> None:
    since = time.time()
    _serve_deploy(serve_settings, tmp_path, {MODEL: {"autoscaling_config": None, "num_replicas": 1,
                                                     "max_ongoing_requests": 1, "max_queued_requests": 1,
                                                     "user_config": {"max_batch_size": 1,
                                                                     "batch_wait_timeout_s": 0.0}}})
    try:
        _wait_settled(serve_settings, since)  # a new replica: the queue limits changed
        _wait_model_info(url, lambda info: info["batching"]["max_batch_size"] == 1)
        heavy = {"instances": [{**GOOD, "ticket_id": str(i), "body": "my invoice is wrong " * 40}
                               for i in range(64)]}

        async def flood() -> list[tuple[int, float, str]]:
            async with httpx.AsyncClient(timeout=120) as client:
                async def one() -> tuple[int, float, str]:
                    started = time.perf_counter()
                    response = await client.post(f"{url}/v1/predict", json=heavy)
                    return response.status_code, time.perf_counter() - started, response.text

                return await asyncio.gather(*(one() for _ in range(16)))

        # The ingress's handle learns the new queue limits from the controller shortly after the rollout: flood
        # until it refuses (a bounded number of times), then judge that flood.
        for _ in range(5):
            results = asyncio.run(flood())
            if any(status == 503 for status, _, _ in results):
                break
        statuses = [status for status, _, _ in results]
        rejected = [(seconds, text) for status, seconds, text in results if status == 503]
        assert 200 in statuses and rejected, statuses
        assert set(statuses) <= {200, 503}
        assert all("overloaded" in text for _, text in rejected)
        served = sorted(seconds for status, seconds, _ in results if status == 200)
        assert max(seconds for seconds, _ in rejected) < served[-1]  # refused at once, not after waiting in line
        assert httpx.post(f"{url}/v1/predict", json={"instances": [GOOD]}, timeout=60).status_code == 200
    finally:
        _restore(serve_settings, tmp_path, url)


def test_serve_status_cli_lists_the_deployments(serve_settings: Settings, unison_env: dict[str, str]) -> None:
    env = {**unison_env, "UNISON_SERVING__CONFIG_FILE": str(serve_settings.serving.config_file)}
    result = subprocess.run([str(BIN / "unison"), "serve", "status"], capture_output=True, text=True, env=env,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Ingress" in result.stdout and "Model" in result.stdout and "RUNNING" in result.stdout
    assert deploy.url(serve_settings) in result.stdout
