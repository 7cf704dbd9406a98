"""The model deployment's health and readiness logic, without Serve (a stub stands in for the Predictor)."""

import asyncio
import time

import pytest
from tests.unit.fakes import FakeFeatures, FakeScorer

from unison.model.scoring import DataPlane
from unison.serving.cache import ModelCache
from unison.serving.model_server import BatchStats, LoadedModel, ModelLoadError, ModelServer, ModelUserConfig


class _Predictor:
    def __init__(self, healthy: bool = True) -> None:
        self.healthy = healthy
        self.closed = False

    def check(self) -> None:
        if not self.healthy:
            raise RuntimeError("model output probabilities is not finite")

    def close(self) -> None:
        self.closed = True


def _server(preloaded: dict[str, LoadedModel] | None = None, default_error: str | None = None) -> ModelServer:
    server = ModelServer.__new__(ModelServer)  # skip loading: the load path is covered by integration tests
    server.default_ref, server.variant, server._default = "triage:production", "int8", ("triage", "production")
    server.config, server.cache, server.stats, server.versions = ModelUserConfig(), ModelCache(), BatchStats(), {}
    server.features, server.feature_error, server.feature_service = object(), None, "triage_v1"
    server._failed, server._preloaded, server._last_default_error = {}, preloaded or {}, default_error
    server._outstanding, server._batch_seconds = 0, 0.02
    server._default_id_or_ref = lambda: "triage:1"  # type: ignore[method-assign]
    return server


def test_health_check_fails_when_a_loaded_model_cannot_answer() -> None:
    asyncio.run(_server({"triage:1": LoadedModel("triage:1", _Predictor(), 1, 0.1)}).check_health())
    broken = _server({"triage:1": LoadedModel("triage:1", _Predictor(healthy=False), 1, 0.1)})
    with pytest.raises(RuntimeError, match="not finite"):
        asyncio.run(broken.check_health())


def test_a_failed_default_load_is_not_ready_but_keeps_the_replica_alive() -> None:
    error = ModelLoadError(503, "model triage:1 refused: checksum mismatch")
    server = _server(default_error=str(error))
    server._failed["triage:1"] = (time.monotonic(), error)  # retried only after RETRY_AFTER_S
    asyncio.run(server.check_health())  # does not raise: a restart would not fix a bad artifact
    meta = server.metadata()
    assert not meta["ready"] and "checksum" in meta["error"] and "triage:1" in meta["failed"]


def test_an_evicted_model_closes_only_when_its_last_batch_ends() -> None:
    predictor = _Predictor()
    loaded = LoadedModel("triage:1", predictor, 1, 0.1)
    assert loaded.acquire() is predictor
    loaded.close()  # evicted while a batch uses it
    assert not predictor.closed
    loaded.release()
    assert predictor.closed
    with pytest.raises(ModelLoadError, match="evicted"):
        loaded.acquire()


def test_user_config_is_validated() -> None:
    config = ModelUserConfig.model_validate({"max_batch_size": 8, "cache": {"budget_bytes": 64 << 20}})
    assert config.batch_wait_timeout_s == 0.05 and config.cache.budget_bytes == 64 << 20
    for bad in ({"max_batch_size": 0}, {"max_batch": 8}, {"cache": {"budget": 1}}):
        with pytest.raises(ValueError):
            ModelUserConfig.model_validate(bad)


def test_batch_stats_fill_ratio() -> None:
    stats = BatchStats(batches=2, requests=12, rows=30, fill_sum=0.75)
    assert stats.as_dict()["mean_requests_per_batch"] == 6 and stats.as_dict()["fill_ratio"] == 0.375


def _request(i: int, body: str = "charged twice") -> list[dict[str, object]]:
    return [{"ticket_id": f"t{i}", "customer_id": i, "subject": "refund", "body": body}]


def test_a_request_that_raises_in_scoring_fails_alone_and_its_batch_neighbours_succeed() -> None:
    server = _server()
    server.dataplane = DataPlane("online", FakeFeatures())
    requests = [_request(i) for i in range(15)] + [_request(15, "boom")]
    results = server._score_batch(FakeScorer(), requests)
    assert [r.get("status") for r in results[:15]] == [None] * 15
    assert all(r["predictions"][0].ticket_id == f"t{i}" for i, r in enumerate(results[:15]))
    assert results[15]["status"] == 500 and "OverflowError: Python int too large" in results[15]["error"]
    assert server.stats.errors == {"scoring": 1}


def test_an_online_store_outage_is_a_503_for_each_request_not_a_scoring_error() -> None:
    server = _server()
    features = FakeFeatures()
    features.down = True
    server.dataplane = DataPlane("online", features)
    results = server._score_batch(FakeScorer(), [_request(i) for i in range(3)])
    assert [r["status"] for r in results] == [503] * 3 and "online store unreachable" in results[0]["error"]
