"""Work, not requests, on the session's Serve application: admission by work at the ingress (503 with
Retry-After at once, never a timeout), token-budget batches, and a model replica whose event loop keeps
answering while a long batch is scoring."""

import asyncio
import time
from pathlib import Path

import httpx
from tests.integration.serving.redeploy import GOOD, restore, serve_deploy, wait_model_info, wait_settled

from unison.config import Settings
from unison.serving.app import MODEL

LONG = {"subject": "App keeps crashing after the latest update",
        "body": "Since the update the desktop app crashes whenever I open the reports page and exports fail. " * 4}


def _heavy(i: int, tickets: int) -> dict[str, list[dict[str, object]]]:
    return {"instances": [{**GOOD, **LONG, "ticket_id": f"{i}-{j}"} for j in range(tickets)]}


def test_a_health_probe_answers_while_a_long_batch_is_scoring(url: str) -> None:
    """Serve runs request handling on the replica's event loop (throughput-optimized mode); the ONNX Runtime call
    runs in a worker thread, so the model replica answers its readiness probe while a batch of 64 long tickets
    scores. Judged by order, not by time: a probe must come back while the long request is still running."""

    async def run() -> tuple[int, int, list[int]]:
        async with httpx.AsyncClient(timeout=120) as client:
            long = asyncio.ensure_future(client.post(f"{url}/v1/predict", json=_heavy(0, 64)))
            await asyncio.sleep(0)  # let it go out first
            during: list[int] = []
            probes = 0
            while not long.done():
                probe = await client.get(f"{url}/v2/health/ready")  # ingress -> Model replica `metadata`
                probes += 1
                if not long.done():
                    during.append(probe.status_code)
            return (await long).status_code, probes, during

    status, probes, during = asyncio.run(run())
    assert status == 200
    assert during and set(during) == {200}, f"no probe answered while the batch ran ({probes} sent)"


def test_admission_by_work_answers_503_with_retry_after_at_once(serve_settings: Settings, url: str,
                                                                tmp_path: Path) -> None:
    """With at most 0.2 s of work queued, a flood of requests of 16 long tickets each: every answer is 200 or
    503, the 503s name the queued work, carry Retry-After and come back sooner than any accepted request, and
    nothing times out. (How batches form under the token budget: tests/unit/serving/test_work.py, with Serve's own
    batching.)"""
    since = time.time()
    budget = 2048
    serve_deploy(serve_settings, tmp_path, {MODEL: {"autoscaling_config": None, "num_replicas": 1,
                                                    "user_config": {"max_batch_size": 16, "max_batch_tokens": budget}}},
                 args={"max_queued_s": 0.2})
    try:
        wait_settled(serve_settings, since)
        wait_model_info(url, lambda info: info["batching"]["max_batch_tokens"] == budget)  # user_config applied

        async def flood() -> list[tuple[int, float, str, str | None]]:
            async with httpx.AsyncClient(timeout=120) as client:
                async def one(i: int) -> tuple[int, float, str, str | None]:
                    started = time.perf_counter()
                    response = await client.post(f"{url}/v1/predict", json=_heavy(i, 16))
                    return (response.status_code, time.perf_counter() - started, response.text,
                            response.headers.get("retry-after"))

                return await asyncio.gather(*(one(i) for i in range(48)))

        results = asyncio.run(flood())
        statuses = [r[0] for r in results]
        assert set(statuses) <= {200, 503}, statuses
        refused = [r for r in results if r[0] == 503]
        served = [r for r in results if r[0] == 200]
        assert served and refused, statuses
        assert all("overloaded" in text and "work queued" in text for _, _, text, _ in refused)
        assert all(retry is not None and int(retry) >= 1 for *_, retry in refused)
        assert max(seconds for _, seconds, _, _ in refused) < max(seconds for _, seconds, _, _ in served)
        assert httpx.post(f"{url}/v1/predict", json={"instances": [GOOD]}, timeout=60).status_code == 200
    finally:
        restore(serve_settings, tmp_path, url)
