"""The online Serve application over real HTTP on the session's Ray stack: both APIs, every error case,
a model that fails to load, run-time batching changes through `serve deploy`, and 503 under overload."""

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
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


def test_v1_predict_matches_in_process_scoring(url: str, tickets: pd.DataFrame, serve_settings: Settings) -> None:
    from unison.features.store import Features
    from unison.model import Predictor, PredictorOptions, Registry
    from unison.model.scoring import DataPlane

    response = httpx.post(f"{url}/v1/predict", json={"instances": _instances(tickets)}, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    PredictResponse.model_validate(body)  # the documented response model, field for field
    assert body["model_name"] == "triage" and body["model_version"] and body["feature_service"] == "triage_v1"
    assert body["latency_ms"]["total"] >= body["latency_ms"]["model"] > 0
    assert [p["ticket_id"] for p in body["predictions"]] == tickets["ticket_id"].tolist()

    # The same tickets scored here with the same artifact, online features and transform give the same answer.
    predictor = Predictor.from_registry(Registry(serve_settings.model.registry_dir), "triage:production",
                                        PredictorOptions.from_config(serve_settings.model))
    [scored] = DataPlane("parity", Features(serve_settings)).score(predictor, tickets)
    expected = [p.model_dump() for p in scored.records()]  # type: ignore[union-attr]
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


# ---------------------------------------------------------------------------------------------- request bodies

BODY_LIMIT = 4 * 1024 * 1024  # the application's max_body_bytes (deploy/serve.yaml), also the proxy's read-ahead
JSON_TYPE = {"content-type": "application/json"}


def _blocks(total: int, size: int = 1 << 16) -> Iterator[bytes]:
    """`total` bytes in blocks: httpx sends an iterator chunked, without a Content-Length."""
    block = b" " * size
    for _ in range(total // size):
        yield block


def _body_pids(settings: Settings) -> dict[str, int]:
    """The processes a request body passes through: Serve's HTTP proxy and the ingress replica (Ray's state
    API)."""
    from ray.util.state import list_actors

    from unison.ops.stack import endpoints
    from unison.serving.app import INGRESS

    address = endpoints(settings).ray_dashboard_url
    pids = {}
    for role, class_name in (("proxy", "ProxyActor"), ("ingress", f"ServeReplica:unison:{INGRESS}")):
        actors = list_actors(address=address, filters=[("class_name", "=", class_name), ("state", "=", "ALIVE")])
        assert len(actors) == 1 and actors[0].pid, actors
        pids[role] = int(actors[0].pid)
    return pids


class PeakRss:
    """How much each process's RSS rose above its value at the start while the `with` block ran (sampled every
    few milliseconds in a thread, so a short peak counts)."""

    def __init__(self, pids: dict[str, int]) -> None:
        import psutil

        self.processes = {role: psutil.Process(pid) for role, pid in pids.items()}
        self.start = {role: p.memory_info().rss for role, p in self.processes.items()}
        self.peak = dict(self.start)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self.stop.is_set():
            for role, process in self.processes.items():
                self.peak[role] = max(self.peak[role], process.memory_info().rss)
            self.stop.wait(0.003)

    def __enter__(self) -> "PeakRss":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    @property
    def growth_mib(self) -> dict[str, float]:
        return {role: round((self.peak[role] - self.start[role]) / 2**20, 1) for role in self.processes}


def test_a_chunked_body_over_the_limit_gets_413_and_is_never_held_whole(url: str, serve_settings: Settings) -> None:
    """64x the limit, chunked: 413 with the JSON error, and neither the proxy nor the ingress replica grows by
    anything near the body (Serve's proxy alone would read it all ahead: see unison.serving.body)."""
    import psutil

    from unison.serving.body import PROXY_CALLBACK, PROXY_CALLBACK_ENV

    total = 64 * BODY_LIMIT
    pids = _body_pids(serve_settings)
    # The proxy got deploy/serve.yaml's controller_options, so it runs unison.serving.body.ReadAhead.
    assert psutil.Process(pids["proxy"]).environ().get(PROXY_CALLBACK_ENV) == PROXY_CALLBACK
    for _ in range(2):  # the second time the allocators have warmed up; both count
        with PeakRss(pids) as rss:
            response = httpx.post(f"{url}/v1/predict", content=_blocks(total), headers=JSON_TYPE, timeout=120)
        print(f"chunked {total >> 20} MiB body: RSS growth MiB {rss.growth_mib}")
        assert "content-length" not in response.request.headers
        assert response.status_code == 413, response.text
        assert response.json() == {"error": f"request body exceeds the limit of {BODY_LIMIT} bytes"}
        assert all(growth < (total >> 20) / 4 for growth in rss.growth_mib.values()), rss.growth_mib
    assert _body_pids(serve_settings) == pids  # nothing restarted
    assert httpx.post(f"{url}/v1/predict", json={"instances": [GOOD]}, timeout=60).status_code == 200


def _raw_request(url: str, head: bytes, chunks: int = 0) -> tuple[int, dict[str, Any]]:
    """Send a request head and `chunks` 64 KiB chunks of a chunked body that is never finished, then read the
    answer: it can only come while the client is still sending."""
    parsed = urllib.parse.urlsplit(url)
    with socket.create_connection((parsed.hostname, parsed.port), timeout=60) as sock:
        sock.sendall(head.replace(b"\n", b"\r\n") + b"\r\n")
        block = b" " * (1 << 16)
        for _ in range(chunks):
            sock.sendall(b"%x\r\n%s\r\n" % (len(block), block))
        reader = sock.makefile("rb")
        status = int(reader.readline().split()[1])
        headers = {}
        while (line := reader.readline().strip()):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, json.loads(reader.read(int(headers["content-length"])))


def test_the_413_arrives_while_the_body_is_still_being_sent(url: str) -> None:
    head = b"POST /v1/predict HTTP/1.1\nHost: unison\nContent-Type: application/json\nTransfer-Encoding: chunked\n"
    status, body = _raw_request(url, head, chunks=BODY_LIMIT // (1 << 16) + 2)
    assert status == 413 and body == {"error": f"request body exceeds the limit of {BODY_LIMIT} bytes"}


def test_a_content_length_over_the_limit_gets_413_before_any_body_is_sent(url: str) -> None:
    head = b"POST /v1/predict HTTP/1.1\nHost: unison\nContent-Type: application/json\nContent-Length: %d\n" % 2**40
    status, body = _raw_request(url, head)
    assert status == 413
    assert body == {"error": f"request body of {2**40} bytes exceeds the limit of {BODY_LIMIT} bytes"}


@pytest.mark.parametrize(("path", "kwargs", "declared"), [
    ("/v1/predict", {"content": json.dumps({"instances": [GOOD]}), "headers": {"content-type": "text/plain"}},
     "'text/plain'"),
    ("/v1/predict", {"data": {"instances": "[]"}}, "'application/x-www-form-urlencoded'"),
    ("/v1/predict", {"content": json.dumps({"instances": [GOOD]})}, "no Content-Type"),  # a Blob without a type
    ("/v2/models/triage/infer", {"content": json.dumps(OIP_GOOD), "headers": {"content-type": "text/plain"}},
     "'text/plain'"),
    ("/v1/parity", {"content": "{}", "headers": {"content-type": "text/plain;charset=UTF-8"}},
     "'text/plain;charset=UTF-8'"),
])
def test_a_body_that_is_not_json_gets_415_naming_the_type_to_send(url: str, path: str, kwargs: dict[str, Any],
                                                                   declared: str) -> None:
    response = httpx.post(url + path, timeout=30, **kwargs)
    assert response.status_code == 415, response.text
    error = response.json()["error"]
    assert declared in error and error.endswith("send Content-Type: application/json")


def test_json_with_a_charset_or_a_json_suffix_type_is_read(url: str) -> None:
    body = json.dumps({"instances": [GOOD]}).encode()
    for content_type in ("application/json; charset=utf-8", "application/vnd.unison+json"):
        response = httpx.post(f"{url}/v1/predict", content=body, headers={"content-type": content_type}, timeout=60)
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0]["ticket_id"] == "t1"


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
