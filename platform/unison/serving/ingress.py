"""HTTP ingress (FastAPI inside Serve): Unison's JSON API under /v1 and the Open Inference Protocol v2 under /v2.

Every error is JSON, `{"error": "<what is wrong>"}`, with a status that tells the client what to do: 400
(malformed JSON, a bad OIP tensor), 404 (unknown model, version or route), 413 (too many instances, text or body
too large), 415 (a body that is not JSON: unison.serving.body), 422 (a field missing or of the wrong type, empty
text), 503 (model not loaded, overloaded: retry later), 504 (the model did not answer in time). The model
deployment is reached through a handle; when its queue is full Serve raises back-pressure at once and the request
answers 503 instead of waiting.

No `from __future__ import annotations` here: FastAPI reads the route signatures at run time.
"""

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from ray import serve
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from starlette.exceptions import HTTPException as StarletteHTTPException

import unison
from unison.domain import ModelRef
from unison.ops import metrics
from unison.ops.logs import setup_logging
from unison.ops.window import ThroughputWindow
from unison.serving.body import BodyGuard
from unison.serving.routing import Route, Router, UnknownModel
from unison.serving.schema import (
    OIP_INPUTS,
    ApiLimits,
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    PredictRequest,
    PredictResponse,
    RequestError,
    ServerMetadata,
    check_limits,
    check_requested_outputs,
    oip_outputs,
    oip_response,
    oip_tickets,
)

log = logging.getLogger("unison.serving")
OPS_PAGE = (Path(__file__).parent / "static" / "ops.html").read_text()


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def _deployments() -> list[dict[str, Any]]:
    """Every application's deployments with their status and running/target replicas (Serve's controller)."""
    rows = []
    for app_name, application in serve.status().applications.items():
        for name, deployment in application.deployments.items():
            states = {str(getattr(k, "value", k)): v for k, v in deployment.replica_states.items()}
            rows.append({"application": app_name, "deployment": name,
                         "status": str(getattr(deployment.status, "value", deployment.status)),
                         "replicas": sum(states.values()), "running": states.get("RUNNING", 0)})
    return rows

METADATA_TTL_S = 2.0  # how long the ingress trusts one model replica's readiness view
WARM_TIMEOUT_S = 300.0  # loading a version before traffic moves to it: verify, build, warm up
WARM_RETRY_S = 10.0  # a version that failed to load is tried again after this

app = FastAPI(
    title="Unison",
    version=unison.__version__,
    description="Support-ticket triage. `/v1`: Unison's JSON API. `/v2`: the Open Inference Protocol v2 "
                "(KServe, Triton, MLServer clients work unchanged). Errors are `{\"error\": \"...\"}`.",
)
# One ingress replica per process: its limits, read by the body middleware before any parsing.
_limits: dict[str, ApiLimits] = {"current": ApiLimits()}
app.add_middleware(BodyGuard, limit=lambda: _limits["current"].max_body_bytes)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _route(request: Request) -> str:
    """The path inside the application (Serve mounts it under its route prefix)."""
    path, root = request.scope.get("path", ""), request.scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


@app.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    oip = _route(request).startswith("/v2")
    for error in errors:
        if error.get("type") == "json_invalid":
            detail = (error.get("ctx") or {}).get("error", "")
            return _error(400, f"malformed JSON body: {detail}".rstrip(": "))
        if error.get("type") == "missing" and tuple(error.get("loc", ())) == ("body",):
            return _error(400, "request body is missing: send a JSON object")
    parts = []
    for error in errors[:5]:
        loc = tuple(error.get("loc", ()))
        loc = loc[1:] if loc[:1] == ("body",) else loc  # FastAPI's prefix only: a ticket field is named "body" too
        where = ".".join(str(p) for p in loc)
        parts.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return _error(400 if oip else 422, "; ".join(parts) + more)


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    message = exc.detail if exc.status_code != 404 else f"no route {request.method} {_route(request)}"
    return _error(exc.status_code, str(message))


@app.exception_handler(RequestError)
async def _refused(request: Request, exc: RequestError) -> JSONResponse:
    return _error(exc.status, exc.message)


@serve.ingress(app)
class Ingress:
    """Validates requests, picks the model version (registry alias, canary), calls the model deployment with
    that version as Serve's multiplexed model id, and shapes answers for /v1 and /v2."""

    def __init__(self, model: Any, limits: dict[str, Any] | None = None, default_model: str | None = None,
                 stream: Any = None, events: Any = None, drift: Any = None) -> None:
        from unison.config import load_settings
        from unison.model.registry import Registry

        setup_logging()
        settings = load_settings()
        self.model = model
        self.stream = stream
        self.events = events
        self.drift = drift
        self.limits = ApiLimits.model_validate(limits or {})
        _limits["current"] = self.limits
        default = default_model or settings.model.ref
        ref = ModelRef.parse(default)
        self.default = (ref.name, ref.tag)
        self.router = Router(Registry(settings.model.registry_dir), ref.name, settings.model.alias, warm_first=True)
        self._warmups: dict[str, asyncio.Task[None]] = {}
        self.counts: dict[str, dict[str, int]] = {}
        self.window = ThroughputWindow()  # the last minute of scoring requests, for /v1/ops
        self._label_cache: dict[str, list[str]] = {}
        self._replica: dict[str, Any] | None = None
        self._replica_at = 0.0

    def reconfigure(self, config: dict[str, Any]) -> None:
        """`user_config`: canary splits, changed at run time without a restart."""
        parsed = self.router.configure(config)
        log.info("routing: %s", parsed.model_dump())

    # ------------------------------------------------------------------------------------------ helpers

    async def _replica_metadata(self, fresh: bool = False) -> dict[str, Any]:
        """One model replica's view (readiness, loaded models, counters), cached for METADATA_TTL_S."""
        if fresh or self._replica is None or time.monotonic() - self._replica_at > METADATA_TTL_S:
            self._replica = await self._call(self.model.metadata.remote(), self.limits.request_timeout_s)
            self._replica_at = time.monotonic()
        assert self._replica is not None
        return self._replica

    def _resolve(self, name: str | None, tag: str | None) -> Route:
        try:
            if name is None:
                name, tag = self.default[0], tag or self.default[1]
            route = self.router.resolve(name, tag)
        except UnknownModel as exc:
            raise RequestError(404, str(exc)) from None
        for model_id in self.router.wanted():
            if model_id not in self._warmups:
                self._warmups[model_id] = asyncio.get_running_loop().create_task(self._warm(model_id))
        return route

    async def _warm(self, model_id: str) -> None:
        """Load a version an alias moved to (or a canary) on a model replica; traffic follows once it is loaded,
        so no request waits for the load. A failure keeps traffic where it is and is retried."""
        try:
            log.info("loading %s before traffic moves to it", model_id)
            result = await self._call(self.model.options(multiplexed_model_id=model_id).warm.remote(),
                                      WARM_TIMEOUT_S)
            if "error" in result:
                raise RequestError(int(result.get("status", 503)), str(result["error"]))
            self.router.warmed(model_id)
            log.info("%s loaded: its traffic moves to it now", model_id)
        except Exception as exc:
            reason = exc.message if isinstance(exc, RequestError) else f"{type(exc).__name__}: {exc}"
            self.router.warm_failed(model_id, reason)
            log.error("%s could not be loaded (%s); traffic stays on the version before it", model_id, reason)
            await asyncio.sleep(WARM_RETRY_S)
            self.router.retry(model_id)
        finally:
            self._warmups.pop(model_id, None)

    def _labels(self, name: str, version: str) -> list[str]:
        """A version's labels; artifacts are immutable, so each manifest is read once, not per request."""
        key = f"{name}:{version}"
        if key not in self._label_cache:
            self._label_cache[key] = list(self.router.registry.manifest(key).labels)
        return self._label_cache[key]

    async def _call(self, response: Any, timeout: float) -> Any:
        try:
            return await asyncio.wait_for(response, timeout)
        except BackPressureError:
            raise RequestError(503, "overloaded: the model's queue is full; retry later") from None
        except DeploymentUnavailableError as exc:
            raise RequestError(503, f"model deployment unavailable: {exc}") from None
        except TimeoutError:
            response.cancel()
            raise RequestError(504, f"the model did not answer within {timeout:g} s") from None

    async def _ask(self, deployment: Any, what: str, method: str, *args: Any) -> dict[str, Any]:
        """One call to an optional deployment of the application; 404 naming it when the app has none."""
        if deployment is None:
            raise RequestError(404, f"this application has no {what} deployment")
        return dict(await self._call(getattr(deployment, method).remote(*args), self.limits.request_timeout_s))

    async def _predict(self, route: Route, tickets: list[dict[str, Any]], path: str) -> dict[str, Any]:
        started = time.perf_counter()
        status = 200
        try:
            handle = self.model.options(multiplexed_model_id=route.model_id)
            result = await self._call(handle.predict.remote(tickets), self.limits.request_timeout_s)
            if "error" in result:
                status = int(result.get("status", 503))
                raise RequestError(status, result["error"])
            return result
        except RequestError as exc:
            status = exc.status
            raise
        finally:
            counts = self.counts.setdefault(route.model_id, {"requests": 0, "errors": 0, "canary": 0})
            counts["requests"] += 1
            counts["errors"] += status != 200
            counts["canary"] += route.canary
            tags = {"route": path, "model": route.name, "version": route.version}
            metrics.inc("unison_http_requests_total", **tags, status=str(status))
            elapsed = time.perf_counter() - started
            metrics.observe("unison_http_request_duration_seconds", elapsed, **tags)
            self.window.add(elapsed, items=len(tickets), error=status >= 500)

    # ------------------------------------------------------------------------------------------ /v1

    @app.post("/v1/predict", response_model=PredictResponse, summary="Score one or many tickets")
    async def predict(self, request: PredictRequest) -> PredictResponse:
        """`model` may name a model, `name:version` or `name:alias`; by default the configured model's alias
        (with its canary split, if one is configured). The answer names the version that served it."""
        started = time.perf_counter()
        check_limits(request.instances, self.limits)
        name, tag = (None, None)
        if request.model is not None:
            try:
                ref = ModelRef.parse(request.model)
            except ValueError as exc:  # not a model reference: no such model (the field's documented 404)
                raise RequestError(404, str(exc)) from None
            name, tag = ref.name, ref.tag
        route = self._resolve(name, tag)
        result = await self._predict(route, [t.model_dump(exclude={"created_at"}) for t in request.instances],
                                     "/v1/predict")
        result["latency_ms"]["total"] = (time.perf_counter() - started) * 1000
        response = PredictResponse(**result)  # typed Predictions from the data plane: checked, not re-validated
        # pydantic's own encoder: FastAPI would dump the model to a dict, validate it again and then encode it.
        return Response(response.model_dump_json(), media_type="application/json")  # type: ignore[return-value]

    @app.get("/v1/models", summary="Registered models, routing (aliases, canaries, per-version counts), and one "
                                   "model replica's cache and batching counters")
    async def models(self) -> dict[str, Any]:
        registry = []
        for name in self.router.models():
            entry = self.router.describe(name)
            canary = self.router.config.canaries.get(name)
            registry.append({"name": name, **entry, "canary": canary.model_dump() if canary else None})
        return {"models": registry, "routing": self.counts, "warming": self.router.warming(),
                "replica": await self._replica_metadata(fresh=True)}

    @app.get("/v1/stream", summary="The streaming deployment: one replica's consumer loop, model version, "
                                   "counters (records, scored, dead letters, commits, errors)")
    async def stream_status(self) -> dict[str, Any]:
        return await self._ask(self.stream, "streaming", "status")

    @app.get("/v1/stream/events", summary="The feature-event deployment: one replica's consumer loop (events "
                                          "pushed into Feast, dead letters, newest event time)")
    async def feature_events_status(self) -> dict[str, Any]:
        return await self._ask(self.events, "feature-event", "status")

    @app.get("/v1/drift", summary="Input drift: per model version and path (online, stream), rows in the window, "
                                  "status and PSI per input against the training reference (the last scheduled "
                                  "check)")
    async def drift_report(self) -> dict[str, Any]:
        return await self._ask(self.drift, "drift monitor", "report")

    @app.post("/v1/parity", summary="Record the result of a parity check (`unison parity` posts its report here), "
                                    "for the parity metrics, /v1/ops and the ops page")
    async def record_parity(self, request: Request) -> dict[str, Any]:
        try:
            report = await request.json()
        except ValueError:
            raise RequestError(400, "the body must be a parity report (JSON)") from None
        missing = [k for k in ("ok", "tickets", "pairs", "problems") if not isinstance(report, dict) or k not in report]
        if missing:
            raise RequestError(422, f"a parity report needs {missing}")
        return await self._ask(self.drift, "drift monitor", "record_parity", report)

    @app.get("/v1/ops", summary="Live operational figures in one document (what `unison status` and /ops show): "
                                "deployments and replicas, models loaded, throughput and p99 per path, Kafka lag, "
                                "feature freshness, drift, the last parity check")
    async def ops(self) -> dict[str, Any]:
        return await self._ops()

    @app.get("/ops", response_class=HTMLResponse, summary="The ops page: the same figures, with charts, refreshed "
                                                          "every 2 s (self-contained: no external scripts)")
    async def ops_page(self) -> HTMLResponse:
        return HTMLResponse(OPS_PAGE)

    async def _ops(self) -> dict[str, Any]:
        async def part(present: bool, call: Any) -> Any:
            if not present:
                call.close()
                return None
            try:
                return await call
            except Exception as exc:  # one part down must not hide the rest
                return {"error": f"{type(exc).__name__}: {exc}"}

        replica, stream, events, drift, deployments = await asyncio.gather(  # concurrently: one slow part at most
            part(True, self._replica_metadata(fresh=True)),
            part(self.stream is not None, self._ask(self.stream, "streaming", "status")),
            part(self.events is not None, self._ask(self.events, "feature-event", "status")),
            part(self.drift is not None, self._ask(self.drift, "drift monitor", "report")),
            part(True, asyncio.to_thread(_deployments)))
        online = self.window.stats()
        stream_window = (stream or {}).get("window") or {}
        stream_stats = (stream or {}).get("stats") or {}
        return {
            "ready": bool(replica.get("ready")),
            "deployments": deployments if isinstance(deployments, list) else [],
            "models": {"default_id": replica.get("default_id"), "loaded": replica.get("loaded", []),
                       "cache_bytes": (replica.get("cache") or {}).get("resident_bytes"),
                       "budget_bytes": (replica.get("cache") or {}).get("budget_bytes"),
                       "stages": replica.get("stages", []), "error": replica.get("error")},
            "online": {"requests_per_s": online["events_per_s"], "tickets_per_s": online["items_per_s"],
                       "p50_ms": _ms(online["p50_s"]), "p99_ms": _ms(online["p99_s"]), "errors": online["errors"],
                       "window_s": online["window_s"]},
            "stream": None if stream is None else {
                "records_per_s": stream_window.get("events_per_s"), "p99_event_s": stream_window.get("p99_s"),
                "lag": (stream.get("lag") or {}).get("lag"), "partitions": (stream.get("lag") or {}).get("partitions"),
                "dead_letters": stream_stats.get("dead_letters"), "scored": stream_stats.get("scored"),
                "model_version": stream.get("model_version"), "error": stream.get("error") or stream.get("load_error")},
            "features": (events or {}).get("freshness") or [],
            "drift": drift,
            "parity": (drift or {}).get("parity"),
        }

    # ------------------------------------------------------------------------------------------ /v2 (OIP)

    @app.get("/v2", response_model=ServerMetadata, summary="OIP server metadata")
    async def server_metadata(self) -> ServerMetadata:
        return ServerMetadata(name="unison", version=unison.__version__, extensions=[])

    @app.get("/v2/health/live", summary="OIP liveness")
    async def live(self) -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready", summary="OIP readiness: the default model is loaded and features are reachable")
    async def ready(self) -> JSONResponse:
        meta = await self._replica_metadata(fresh=True)
        body: dict[str, Any] = {"ready": bool(meta["ready"])}
        if meta.get("error"):
            body["error"] = meta["error"]
        return JSONResponse(body, status_code=200 if meta["ready"] else 503)

    @app.get("/v2/models/{name}", response_model=ModelMetadata, summary="OIP model metadata")
    async def model_metadata(self, name: str) -> ModelMetadata:
        return self._describe(self._resolve(name, None))

    @app.get("/v2/models/{name}/versions/{version}", response_model=ModelMetadata,
             summary="OIP model version metadata")
    async def model_version_metadata(self, name: str, version: str) -> ModelMetadata:
        return self._describe(self._resolve(name, version))

    @app.get("/v2/models/{name}/ready", summary="OIP model readiness")
    async def model_ready(self, name: str) -> JSONResponse:
        return await self._readiness(self._resolve(name, None))

    @app.get("/v2/models/{name}/versions/{version}/ready", summary="OIP model version readiness")
    async def model_version_ready(self, name: str, version: str) -> JSONResponse:
        return await self._readiness(self._resolve(name, version))

    @app.post("/v2/models/{name}/infer", response_model=InferenceResponse, summary="OIP inference")
    async def infer(self, name: str, request: InferenceRequest) -> InferenceResponse:
        return await self._infer(name, None, request)

    @app.post("/v2/models/{name}/versions/{version}/infer", response_model=InferenceResponse,
              summary="OIP inference on a version")
    async def infer_version(self, name: str, version: str, request: InferenceRequest) -> InferenceResponse:
        return await self._infer(name, version, request)

    async def _infer(self, name: str, version: str | None, request: InferenceRequest) -> InferenceResponse:
        route = self._resolve(name, version)
        tickets = oip_tickets(request, self.limits)
        check_requested_outputs(request.outputs)
        result = await self._predict(route, [t.model_dump(exclude={"created_at"}) for t in tickets], "/v2/infer")
        labels = self._labels(route.name, result["model_version"])
        return oip_response(result, request.outputs, request.id, labels)

    def _describe(self, route: Route) -> ModelMetadata:
        entry = self.router.describe(route.name)
        labels = self._labels(route.name, route.version)
        return ModelMetadata(name=route.name, versions=list(entry["versions"]), platform="onnxruntime_onnx",
                             inputs=list(OIP_INPUTS), outputs=list(oip_outputs(labels)))

    async def _readiness(self, route: Route) -> JSONResponse:
        meta = await self._replica_metadata(fresh=True)
        error = meta["failed"].get(route.model_id)
        if error is None and meta["error"] and (route.model_id == meta["default_id"] or meta["error"] ==
                                                meta.get("feature_error")):
            error = meta["error"]
        body: dict[str, Any] = {"name": route.name, "version": route.version, "ready": error is None}
        if error:
            body["error"] = error
        return JSONResponse(body, status_code=200 if error is None else 503)
