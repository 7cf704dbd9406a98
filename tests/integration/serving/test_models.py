"""Many models online: byte-budget eviction, refusals (too large, bad checksum), promote under load, canary
split, autoscaling up and down -- over real HTTP on the session's Ray stack."""

import asyncio
import math
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from unison.config import Settings
from unison.model import Registry
from unison.serving import deploy
from unison.serving.app import MODEL

TICKET = {"ticket_id": "t1", "customer_id": 1, "subject": "refund", "body": "I was charged twice"}


def _ask(url: str, model: str | None = None) -> httpx.Response:
    body: dict[str, Any] = {"instances": [TICKET]}
    if model is not None:
        body["model"] = model
    return httpx.post(f"{url}/v1/predict", json=body, timeout=60)


def _replica(url: str) -> dict[str, Any]:
    return httpx.get(f"{url}/v1/models", timeout=30).json()["replica"]


def _aliases(url: str, name: str = "triage") -> dict[str, str]:
    models = httpx.get(f"{url}/v1/models", timeout=30).json()["models"]
    return dict(next(m for m in models if m["name"] == name)["aliases"])


def _redeploy(settings: Settings, model: dict[str, Any] | None = None) -> None:
    deploy.up(settings, overrides={MODEL: model} if model else None, progress=lambda line: None)


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1)


def test_models_are_listed_with_versions_and_aliases(url: str) -> None:
    models = {m["name"]: m for m in httpx.get(f"{url}/v1/models", timeout=30).json()["models"]}
    assert {"triage", "sentiment", "big", "broken"} <= set(models)
    assert models["triage"]["versions"] == ["1", "2"] and models["triage"]["aliases"] == {"production": "1"}
    response = _ask(url, "sentiment")
    assert response.status_code == 200 and response.json()["model_name"] == "sentiment"
    missing = _ask(url, "triage:5")
    assert missing.status_code == 404 and "versions: 1, 2" in missing.json()["error"]


def test_eviction_keeps_resident_memory_under_a_small_budget(serve_settings: Settings, url: str) -> None:
    budget = 45 << 20  # two of these int8 models (each accounted at >= its 21.8 MiB on disk), never three
    _redeploy(serve_settings, {"autoscaling_config": None, "num_replicas": 1, "user_config": {
        "max_batch_size": 16, "batch_wait_timeout_s": 0.05, "cache": {"budget_bytes": budget}}})
    _wait(lambda: _replica(url)["cache"]["budget_bytes"] == budget, 120, "the new budget")
    _wait(lambda: _replica(url)["cache"]["resident_bytes"] <= budget, 60, "the cache to shrink")
    start = _replica(url)["cache"]
    peak = 0
    for model in ["triage:1", "triage:2", "sentiment:1"] * 3:
        response = _ask(url, model)
        assert response.status_code == 200, response.text
        assert f"{response.json()['model_name']}:{response.json()['model_version']}" == model
        cache = _replica(url)["cache"]
        peak = max(peak, cache["resident_bytes"])
        assert cache["resident_bytes"] <= budget and len(cache["models"]) <= 2
    cache = _replica(url)["cache"]
    assert cache["evictions"] - start["evictions"] >= 6  # cycling 3 models through room for 2: every load evicts
    assert cache["loads"] > start["loads"] and cache["misses"] > start["misses"]
    for _ in range(3):  # the most recent model stays: hits
        assert _ask(url, "sentiment:1").status_code == 200
    assert _replica(url)["cache"]["hits"] >= cache["hits"] + 3

    # Larger than the whole budget: 507 with the reason; nothing is evicted for it; others keep serving.
    before = _replica(url)["cache"]
    too_big = _ask(url, "big")
    assert too_big.status_code == 507 and "budget" in too_big.json()["error"], too_big.text
    after = _replica(url)["cache"]
    assert after["evictions"] == before["evictions"] and after["refused"] == before["refused"] + 1
    assert _ask(url, "sentiment:1").status_code == 200

    # A corrupt artifact is refused by checksum, never half-loaded; the cache is untouched.
    corrupt = _ask(url, "broken")
    assert corrupt.status_code == 503 and "checksum mismatch" in corrupt.json()["error"]
    assert "broken:1" not in _replica(url)["cache"]["models"]
    _redeploy(serve_settings)


def test_promote_moves_live_traffic_without_failed_requests(serve_settings: Settings, url: str,
                                                            serving_registry: Registry) -> None:
    """Four clients keep asking while the alias moves: the ingress loads version 2 first, so no request waits
    for the load, and once traffic follows it stays on version 2."""
    results: list[tuple[int, str]] = []  # (status, version or the error)
    stop = asyncio.Event()

    async def load() -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            async def worker() -> None:
                while not stop.is_set():
                    response = await client.post(f"{url}/v1/predict", json={"instances": [TICKET]})
                    body = response.json()
                    results.append((response.status_code, body.get("model_version", "") if
                                    response.status_code == 200 else str(body.get("error"))))

            await asyncio.gather(*(worker() for _ in range(4)))

    async def until(condition: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {Counter(results)}"
            await asyncio.sleep(0.2)

    def answered(version: str) -> int:
        return sum(1 for status, v in results if status == 200 and v == version)

    async def scenario() -> None:
        task = asyncio.create_task(load())
        try:
            await until(lambda: answered("1") >= 20, 120, "traffic on version 1")
            await asyncio.to_thread(serving_registry.promote, "triage", "2")
            promoted = len(results)
            await until(lambda: sum(1 for status, v in results[promoted:] if v == "2") >= 40, 300,
                        "40 answers from version 2 after the promote")
        finally:
            stop.set()
            await task

    _wait(lambda: _ask(url).status_code == 200, 180, "the application to answer")
    try:
        asyncio.run(scenario())
    finally:  # back to version 1, and answering from it, for whatever runs next
        serving_registry.promote("triage", "1")
        _wait(lambda: _ask(url).json().get("model_version") == "1" and _aliases(url) == {"production": "1"},
              120, "version 1 to answer again")
    assert {status for status, _ in results} == {200}, Counter(results)
    versions = [version for _, version in results]
    assert versions[0] == "1" and versions[-1] == "2"
    assert set(versions[-20:]) == {"2"}  # once followed, it stays on the new version
    # The model replica held version 2 before the first answer from it: nothing waited for a load.
    assert httpx.get(f"{url}/v1/models", timeout=30).json()["warming"] == {}


def test_canary_split_is_within_statistical_tolerance(serve_settings: Settings, url: str) -> None:
    deploy.set_canary(serve_settings, "triage", "2", 0.3)
    try:
        _redeploy(serve_settings)
        _wait(lambda: any(m["name"] == "triage" and m["canary"]
                          for m in httpx.get(f"{url}/v1/models", timeout=30).json()["models"]),
              60, "the canary to be configured")
        # The canary takes traffic once its version is loaded (the first request asks for the load).
        _wait(lambda: _ask(url).status_code == 200 and
              not httpx.get(f"{url}/v1/models", timeout=30).json()["warming"], 120, "the canary to be loaded")
        before = httpx.get(f"{url}/v1/models", timeout=30).json()["routing"]

        async def burst(n: int) -> list[str]:
            async with httpx.AsyncClient(timeout=60) as client:
                semaphore = asyncio.Semaphore(8)

                async def one() -> str:
                    async with semaphore:
                        response = await client.post(f"{url}/v1/predict", json={"instances": [TICKET]})
                        assert response.status_code == 200, response.text
                        return str(response.json()["model_version"])

                return await asyncio.gather(*(one() for _ in range(n)))

        n = 300
        versions = Counter(asyncio.run(burst(n)))
        expected, sd = n * 0.3, math.sqrt(n * 0.3 * 0.7)
        assert abs(versions["2"] - expected) < 4 * sd, versions
        assert versions["1"] + versions["2"] == n
        # A request that names a version is never split.
        assert {_ask(url, "triage:1").json()["model_version"] for _ in range(10)} == {"1"}
        after = httpx.get(f"{url}/v1/models", timeout=30).json()["routing"]
        canary_requests = after["triage:2"]["canary"] - before.get("triage:2", {}).get("canary", 0)
        assert canary_requests == versions["2"]  # per-version counts
    finally:
        deploy.set_canary(serve_settings, "triage", None)
        _redeploy(serve_settings)


def _model_replicas(settings: Settings) -> int:
    from unison.ops.stack import endpoints

    apps = deploy.applications(endpoints(settings))["applications"]
    replicas = apps.get("unison", {}).get("deployments", {}).get(MODEL, {}).get("replicas", [])
    return sum(1 for r in replicas if r["state"] == "RUNNING")


@pytest.mark.timeout(600)
def test_autoscaling_adds_a_replica_under_load_and_removes_it_after(serve_settings: Settings, url: str) -> None:
    deploy.up(serve_settings, progress=lambda line: None, overrides={f"unison/{MODEL}": {"autoscaling_config": {
        "min_replicas": 1, "initial_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 2,
        "upscale_delay_s": 2, "downscale_delay_s": 10, "look_back_period_s": 12}}})
    _wait(lambda: _model_replicas(serve_settings) == 1, 120, "one replica at rest")
    seen: list[int] = []

    async def drive(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        async with httpx.AsyncClient(timeout=60) as client:
            async def worker() -> None:
                while time.monotonic() < deadline and max(seen, default=1) < 2:
                    response = await client.post(f"{url}/v1/predict", json={"instances": [TICKET] * 8})
                    assert response.status_code in (200, 503), response.text

            async def watch() -> None:
                while time.monotonic() < deadline and max(seen, default=1) < 2:
                    seen.append(await asyncio.to_thread(_model_replicas, serve_settings))
                    await asyncio.sleep(1)

            await asyncio.gather(watch(), *(worker() for _ in range(12)))

    asyncio.run(drive(90))
    assert max(seen) == 2, seen
    _wait(lambda: _model_replicas(serve_settings) == 1, 180, "the extra replica to be removed after the load")
    _redeploy(serve_settings)
