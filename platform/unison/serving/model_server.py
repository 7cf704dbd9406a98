"""The model deployment: Predictors inside a Serve replica, multiplexed by model id, behind `@serve.batch`.

Each call carries one request's tickets and, as Serve's multiplexed model id, the `name:version` the ingress
resolved. Serve routes it to a replica that already holds that model when one exists; the replica keeps its
models in an LRU cache bounded by resident bytes (`ModelCache`). Serve gathers concurrent calls into a batch
(size and wait set at run time through `user_config`); each model's share of the batch gets its customers'
online features in one lookup, goes through the one transform and one Predictor call, and is split back per
request. Length bucketing happens inside the Predictor: in `buckets` execution (GPU) rows are sorted by token
length into padded buckets; in `rows` execution (CPU) no row is padded at all.

A model that fails to load does not crash the replica (restarting would not fix a bad artifact, and the
application would flap): its calls answer with the reason (404 unknown, 503 refused by checksum or broken, 507
larger than the budget), the failure is remembered for RETRY_AFTER_S so a bad artifact is not re-read for every
request, and other models keep serving. A loaded model that can no longer answer makes `check_health` raise, so
Serve replaces the replica.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from unison.config import Settings, load_settings
from unison.model.drift import DriftRecorder
from unison.ops import metrics
from unison.ops.logs import setup_logging
from unison.serving.cache import CacheConfig, ModelCache, ModelTooLarge, release_memory, resident_bytes

log = logging.getLogger("unison.serving")

RETRY_AFTER_S = 30.0
MAX_MODELS_PER_REPLICA = 64  # Serve's count bound; the byte budget is the one that matters


class BatchingConfig(BaseModel):
    """Dynamic batching, in the model deployment's `user_config`."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(default=16, ge=1, le=1024,
                                description="Most requests gathered into one batch (each may hold many tickets).")
    batch_wait_timeout_s: float = Field(
        default=0.05, ge=0, le=1,
        description="Longest a request waits for others to join its batch. The wait is adaptive: none when the "
        "model is idle (a lone request starts at once), and while a batch runs, up to that batch's expected "
        "remaining time (the next batch could not start earlier anyway), capped by this value.")


class ModelUserConfig(BatchingConfig):
    """The model deployment's `user_config`: changed at run time without restarting replicas."""

    cache: CacheConfig = Field(default_factory=CacheConfig, description="The per-replica model cache.")
    preload: bool = Field(default=True, description="Load the default model when the replica starts.")


@dataclass
class BatchStats:
    """Counters of this replica's dynamic batching (fill ratio = requests per batch / max_batch_size)."""

    batches: int = 0
    requests: int = 0
    rows: int = 0
    fill_sum: float = 0.0
    model_seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches, "requests": self.requests, "rows": self.rows,
            "mean_requests_per_batch": self.requests / self.batches if self.batches else 0.0,
            "mean_rows_per_batch": self.rows / self.batches if self.batches else 0.0,
            "fill_ratio": self.fill_sum / self.batches if self.batches else 0.0,
            "model_seconds": self.model_seconds, "errors": dict(self.errors),
        }


class ModelLoadError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class LoadedModel:
    """One Predictor in the cache. Closed when evicted, but only once no batch is using it."""

    def __init__(self, model_id: str, predictor: Any, resident: int, seconds: float) -> None:
        self.model_id = model_id
        self.predictor = predictor
        self.resident = resident
        self.seconds = seconds
        self._users = 0
        self._closing = False
        self._lock = threading.Lock()

    def acquire(self) -> Any:
        with self._lock:
            if self.predictor is None:
                raise ModelLoadError(503, f"model {self.model_id} was evicted; retry")
            self._users += 1
            return self.predictor

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            close = self._closing and self._users == 0
        if close:
            self._close_now()

    def close(self) -> None:
        with self._lock:
            self._closing = True
            close = self._users == 0
        if close:
            self._close_now()

    def _close_now(self) -> None:
        predictor, self.predictor = self.predictor, None
        if predictor is not None:
            predictor.close()

    def __del__(self) -> None:  # Serve calls it when it evicts the model
        self.close()


def _replica_name() -> str:
    """Serve's replica id (label for per-replica gauges), or the pid outside Serve."""
    try:
        return str(serve.get_replica_context().replica_id.unique_id)
    except Exception:
        return f"pid-{os.getpid()}"


def _error(status: int, message: str) -> dict[str, Any]:
    return {"error": message, "status": status}


class ModelServer:
    """Serves every registered model version on demand; `default_ref` answers calls that name none."""

    def __init__(self, model: str | None = None, variant: str | None = None, drift: Any = None) -> None:
        from unison.domain import ModelRef
        from unison.model import Registry
        from unison.serving.routing import Router

        setup_logging()
        self.settings: Settings = load_settings()
        self.default_ref = model or self.settings.model.ref
        self.variant = variant or self.settings.model.variant
        self.registry = Registry(self.settings.model.registry_dir)
        default = ModelRef.parse(self.default_ref)
        self.router = Router(self.registry, default.name, self.settings.model.alias)
        self._default = (default.name, default.tag)
        self.config = ModelUserConfig()
        self.cache = ModelCache(self.config.cache)
        self.stats = BatchStats()
        self.versions: dict[str, dict[str, int]] = {}
        self.features: Any = None
        self.feature_error: str | None = None
        self._failed: dict[str, tuple[float, ModelLoadError]] = {}
        self._preloaded: dict[str, LoadedModel] = {}
        self._last_default_error: str | None = None
        self._outstanding = 0  # requests inside `predict`
        self._batch_seconds = 0.02  # moving average of a batch's duration, for the adaptive wait
        self.drift = DriftRecorder.to_monitor("online", drift) if drift is not None else None
        self.replica = _replica_name()
        self.cache.replica = self.replica
        self._open_features()
        self._preload_default()

    # ------------------------------------------------------------------------------------------ lifecycle

    def _open_features(self) -> None:
        from unison.features.store import Features, feature_service_name
        from unison.model.scoring import DataPlane

        try:
            self.features = Features(self.settings)
            self.dataplane = DataPlane("online", self.features, self.drift)
            self.feature_service = feature_service_name()
            self.feature_error = None
        except Exception as exc:  # the store is down or not applied: answer 503 until it is back
            self.feature_error = f"feature store unavailable: {type(exc).__name__}: {exc}"
            log.error("%s", self.feature_error)

    def _preload_default(self) -> None:
        try:
            model_id = self.router.resolve(*self._default).model_id
            # The first load in a process also pays one-time costs (ONNX Runtime and tokenizer initialisation,
            # thread pools); load once to pay them, then again to measure the model alone. A sharded model's
            # weights live in its stage actors, so there is nothing here to measure: one build.
            if self.settings.model.stages <= 1:
                self._build(model_id).close()
                release_memory()
            self._preloaded[model_id] = self._build(model_id)
            self._last_default_error = None
        except ModelLoadError as exc:
            self._last_default_error = str(exc)
            self._failed[self._default_id_or_ref()] = (time.monotonic(), exc)
        except Exception as exc:  # the registry itself is unreadable
            self._last_default_error = f"model {self.default_ref} failed to load: {type(exc).__name__}: {exc}"
            log.error("%s", self._last_default_error)

    def _default_id_or_ref(self) -> str:
        try:
            return self.router.resolve(*self._default).model_id
        except Exception:
            return self.default_ref

    def _build(self, model_id: str) -> LoadedModel:
        """Verify (checksums) and load one version, measuring the resident memory it adds."""
        from unison.model.predictor import Predictor, PredictorOptions
        from unison.model.registry import ArtifactError, RegistryError

        started, before = time.perf_counter(), resident_bytes()
        try:
            artifact = self.registry.load(model_id, [self.variant])
            # `model.stages` shards the application's default model (the one sized for it); others load whole.
            options = PredictorOptions.from_config(self.settings.model, variant=self.variant)
            predictor = Predictor.from_options(artifact, options, sharded=model_id == self._default_id_or_ref())
            predictor.check()  # the warm-up touches the weights, so the measurement below is what it costs
        except RegistryError as exc:
            raise ModelLoadError(404, str(exc)) from None
        except ArtifactError as exc:
            log.error("model %s refused: %s", model_id, exc)
            raise ModelLoadError(503, f"model {model_id} refused: {exc}") from None
        except Exception as exc:
            log.exception("model %s failed to load", model_id)
            raise ModelLoadError(503, f"model {model_id} ({self.variant}) failed to load: "
                                      f"{type(exc).__name__}: {exc}") from None
        seconds = time.perf_counter() - started
        # The RSS delta under-counts when the allocator reuses heap an earlier eviction freed; a loaded model
        # holds at least its weights, so never account less than their size on disk.
        measured = max(resident_bytes() - before, self._disk_bytes(model_id))
        loaded = LoadedModel(model_id, predictor, measured, seconds)
        log.info("loaded %s (%s) in %.2f s, +%.0f MiB resident", model_id, self.variant, seconds,
                 loaded.resident / 2**20)
        return loaded

    def _disk_bytes(self, model_id: str) -> int:
        try:
            manifest = self.registry.manifest(model_id)
            info = manifest.variants[self.variant]
            root = self.registry.root / manifest.name / manifest.version
            return sum((root / f).stat().st_size for f in [info.file, *info.data_files] if (root / f).exists())
        except Exception:
            return 0

    def _wrapper(self) -> Any:
        """Serve's multiplex wrapper (created on the first `_get_model` call): the LRU that holds the models."""
        return getattr(self, "__serve_multiplex_wrapper", None)

    @serve.multiplexed(max_num_models_per_replica=MAX_MODELS_PER_REPLICA)
    async def _get_model(self, model_id: str) -> LoadedModel:
        preloaded = self._preloaded.pop(model_id, None)
        wrapper = self._wrapper()
        if preloaded is not None:
            self.cache.loaded(model_id, preloaded.resident, preloaded.seconds)
            return preloaded
        failed = self._failed.get(model_id)
        if failed is not None and time.monotonic() - failed[0] < RETRY_AFTER_S:
            raise failed[1]
        needed = self.cache.expected(model_id, self._disk_bytes(model_id))
        try:
            await self.cache.make_room(model_id, needed, wrapper.models, wrapper.unload_model_lru)
        except ModelTooLarge as exc:
            log.error("%s", exc)
            raise ModelLoadError(507, str(exc)) from None
        try:
            loaded = await asyncio.to_thread(self._build, model_id)
        except ModelLoadError as exc:
            self._failed[model_id] = (time.monotonic(), exc)
            raise
        self._failed.pop(model_id, None)
        if loaded.resident > self.cache.config.budget_bytes:
            loaded.close()
            self.cache.stats.refused += 1
            message = (f"model {model_id} measured {loaded.resident / 2**20:.0f} MiB resident, more than this "
                       f"replica's budget of {self.cache.config.budget_bytes / 2**20:.0f} MiB")
            log.error("%s", message)
            raise ModelLoadError(507, message)
        self.cache.loaded(model_id, loaded.resident, loaded.seconds)
        # It may have measured more than expected: evict others (it is not in Serve's LRU yet) to fit.
        await self.cache.shrink(wrapper.models, wrapper.unload_model_lru)
        return loaded

    async def _model(self, model_id: str) -> tuple[LoadedModel, bool]:
        """The model and whether this replica already held it (counted as a cache hit or miss)."""
        wrapper = self._wrapper()
        hit = wrapper is not None and model_id in wrapper.models
        self.cache.lookup(hit)
        return await self._get_model(model_id), hit

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Apply `user_config` (batching, cache budget) without a restart."""
        self.config = ModelUserConfig.model_validate(config or {})
        self._score.set_max_batch_size(self.config.max_batch_size)
        self.cache.config = self.config.cache
        log.info("batching: max_batch_size=%d batch_wait_timeout_s=%.4f; cache budget %.0f MiB",
                 self.config.max_batch_size, self.config.batch_wait_timeout_s, self.config.cache.budget_bytes / 2**20)

    async def check_health(self) -> None:
        """Raise when a loaded model cannot answer; retry a failed default load or feature store now and then."""
        if self.features is None:
            await asyncio.to_thread(self._open_features)
        if self._last_default_error is not None:
            failed = self._failed.get(self._default_id_or_ref())
            if failed is None or time.monotonic() - failed[0] >= RETRY_AFTER_S:
                await asyncio.to_thread(self._preload_default)
        wrapper = self._wrapper()
        shrink_needed = wrapper is not None and self.cache.total > self.cache.config.budget_bytes
        if shrink_needed:  # the budget was lowered at run time
            await self.cache.shrink(wrapper.models, wrapper.unload_model_lru)
        models = list(wrapper.models.values()) if wrapper is not None else []
        for loaded in models + list(self._preloaded.values()):
            try:
                predictor = loaded.acquire()
            except ModelLoadError:  # evicted meanwhile
                continue
            try:
                await asyncio.to_thread(predictor.check)
            finally:
                loaded.release()

    # ------------------------------------------------------------------------------------------ requests

    def metadata(self) -> dict[str, Any]:
        """What this replica serves and holds, readiness, batching and cache counters (for the ingress)."""
        wrapper = self._wrapper()
        loaded = list(wrapper.models) if wrapper is not None else []
        default_id = self._default_id_or_ref()
        error = self.feature_error or self._last_default_error
        return {
            "default": self.default_ref, "default_id": default_id, "variant": self.variant,
            "feature_error": self.feature_error,
            "ready": error is None, "error": error, "loaded": loaded + list(self._preloaded),
            "feature_service": getattr(self, "feature_service", None), "batching": self.config.model_dump(
                include={"max_batch_size", "batch_wait_timeout_s"}),
            "stats": self.stats.as_dict(), "cache": self.cache.report(), "versions": self.versions,
            "failed": {k: str(e) for k, (_, e) in self._failed.items()}, "replica_pid": os.getpid(),
            "stages": self._stage_placement(models_of=list(wrapper.models.values()) if wrapper is not None else []),
        }

    def _stage_placement(self, models_of: list[Any]) -> list[dict[str, Any]]:
        """Where the sharded default model's stages run (placement-group bundle, node, process, devices)."""
        for loaded in [*self._preloaded.values(), *models_of]:
            chain = getattr(loaded.predictor, "chain", None)
            if chain is not None and hasattr(chain, "placement"):
                return [{"model": loaded.model_id, "stage": i, "bundle": i + chain.bundle_offset,
                         "strategy": chain.strategy, **{k: where[k] for k in ("node_id", "pid", "gpu_ids", "provider",
                                                                              "weight_bytes")}}
                        for i, where in enumerate(chain.placement)]
        return []

    async def warm(self) -> dict[str, Any]:
        """Load the call's multiplexed model (the ingress does this before traffic moves to a version)."""
        model_id = serve.get_multiplexed_model_id()
        try:
            loaded = await self._get_model(model_id)
        except ModelLoadError as exc:
            return _error(exc.status, str(exc))
        return {"loaded": loaded.model_id}

    async def predict(self, tickets: list[dict[str, Any]]) -> dict[str, Any]:
        """Score one request's tickets (validated by the ingress) with the multiplexed model of the call.

        Errors come back as `{"error", "status"}`, so the ingress maps them to HTTP without guessing.
        """
        if self.features is None:
            return _error(503, self.feature_error or "feature store unavailable")
        model_id = serve.get_multiplexed_model_id()
        started = time.perf_counter()
        try:
            if not model_id:
                model_id = self.router.resolve(*self._default).model_id
            loaded, hit = await self._model(model_id)
        except ModelLoadError as exc:
            self._count(f"load_{exc.status}")
            return _error(exc.status, str(exc))
        except LookupError as exc:
            return _error(404, str(exc))
        arrived = time.perf_counter()
        self._outstanding += 1
        metrics.set_gauge("unison_model_queue_depth", self._outstanding, replica=self.replica)
        try:
            self._score.set_batch_wait_timeout_s(self._batch_wait())
            result = await self._score((arrived, tickets, loaded))
        finally:
            self._outstanding -= 1
            metrics.set_gauge("unison_model_queue_depth", self._outstanding, replica=self.replica)
        if "error" not in result:
            result["model_cache"] = "hit" if hit else "miss"
            result["latency_ms"]["load"] = (arrived - started) * 1000
        return result

    def _batch_wait(self) -> float:
        """How long the batch this request starts may wait for company.

        Serve forms a batch as soon as its wait ends and then queues it behind the batches already formed,
        so a short fixed wait under load yields many tiny batches standing in line. Waiting instead for about
        the work already ahead (the requests in this replica, in batches of `max_batch_size`, at the recent
        batch duration) costs nothing, as the model is busy meanwhile, and fills the batch; an idle model does
        not wait at all. `batch_wait_timeout_s` caps it.
        """
        ahead = self._outstanding - 1
        if ahead <= 0:
            return 0.0
        batches_ahead = -(-ahead // self.config.max_batch_size)
        return min(self._batch_seconds * batches_ahead, self.config.batch_wait_timeout_s)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0)
    async def _score(self, calls: list[tuple[float, list[dict[str, Any]], LoadedModel]]) -> list[dict[str, Any]]:
        started = time.perf_counter()
        results: list[dict[str, Any]] = [{} for _ in calls]
        by_model: dict[str, list[int]] = {}
        for i, (_, _, loaded) in enumerate(calls):
            by_model.setdefault(loaded.model_id, []).append(i)
        for indexes in by_model.values():
            loaded = calls[indexes[0]][2]
            try:
                predictor = loaded.acquire()
            except ModelLoadError as exc:
                for i in indexes:
                    results[i] = _error(exc.status, str(exc))
                continue
            try:
                scored = await asyncio.to_thread(self._score_batch, predictor, [calls[i][1] for i in indexes])
            finally:
                loaded.release()
            for i, result in zip(indexes, scored, strict=True):
                results[i] = result
        finished = time.perf_counter()
        self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * (finished - started)
        model_ms = (finished - started) * 1000
        self.stats.batches += 1
        self.stats.requests += len(calls)
        self.stats.fill_sum += len(calls) / self.config.max_batch_size
        for model_id, indexes in by_model.items():
            metrics.observe("unison_model_batch_fill_ratio", min(1.0, len(indexes) / self.config.max_batch_size),
                            model=model_id)
        self.stats.model_seconds += finished - started
        for (arrived, _, loaded), result in zip(calls, results, strict=True):
            result["latency_ms"] = {"queue": (started - arrived) * 1000, "model": model_ms}
            counts = self.versions.setdefault(loaded.model_id, {"requests": 0, "errors": 0})
            counts["requests"] += 1
            counts["errors"] += "error" in result
        return results

    def _score_batch(self, predictor: Any, requests: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """The batch's requests through the data plane: one lookup and one Predictor call, a failure isolated
        to the request that causes it (422 its input, 503 the online store, 500 anything else it raised)."""
        from unison.model.scoring import Failure

        tickets = pd.DataFrame.from_records([t for r in requests for t in r])
        out: list[dict[str, Any]] = []
        for outcome in self.dataplane.score(predictor, tickets, groups=[len(r) for r in requests]):
            if isinstance(outcome, Failure):
                self._count({"features": "feature_store"}.get(outcome.kind, outcome.kind))
                out.append(_error(outcome.status, outcome.message))
                continue
            self.stats.rows += len(outcome)
            out.append({"model_name": predictor.name, "model_version": predictor.version, "variant": self.variant,
                        "feature_service": self.feature_service, "predictions": outcome.records()})
        return out

    def _count(self, kind: str) -> None:
        self.stats.errors[kind] = self.stats.errors.get(kind, 0) + 1
