"""The Serve application: `import_path: unison.serving.app:build` in deploy/serve.yaml.

`build(args)` is Serve's application builder: `args` (the application's `args` in the config) are validated by
`AppArgs`; everything else (registry, feature store, model reference) comes from the UNISON_* environment that
`unison serve up` puts in the application's `runtime_env`. Deployment options (replicas, queue limits,
batching `user_config`, resources) live in the config file, where Serve applies them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application

from unison.serving.drift import DriftMonitor
from unison.serving.ingress import Ingress
from unison.serving.model_server import ModelServer
from unison.serving.schema import ApiLimits
from unison.streaming.deployment import FeatureEventConsumer, StreamConsumer

INGRESS = "Ingress"
MODEL = "Model"
STREAM = "StreamConsumer"
EVENTS = "FeatureEventConsumer"
DRIFT = "DriftMonitor"


class AppArgs(ApiLimits):
    """The application's `args`: the HTTP API's limits, and which model to serve."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, description="Registry reference to serve. Empty: the configured "
                                                        "`model.name:model.alias` (UNISON_MODEL__*).")
    variant: Literal["fp32", "int8", "fp16"] | None = Field(
        default=None, description="Artifact variant. Empty: the configured `model.variant`.")
    stream: bool = Field(default=True, description="Run the streaming scorer (StreamConsumer). Off for an "
                                                   "application that only answers HTTP (a second, sharded copy).")
    feature_events: bool = Field(default=True, description="Run the feature-event deployment (customer events "
                                                           "from Kafka into Feast). One application per feature "
                                                           "store needs it; drop its deployment when off.")

    def limits(self) -> dict[str, Any]:
        return ApiLimits.model_validate(self.model_dump(include=set(ApiLimits.model_fields))).model_dump()


# Defaults for code paths that do not go through a config file (`serve.run(build({}))` in a notebook);
# the config file overrides every one of them.
model_deployment = serve.deployment(
    ModelServer, name=MODEL, max_ongoing_requests=48, max_queued_requests=128,
    user_config={"max_batch_size": 16, "batch_wait_timeout_s": 0.05},
    health_check_period_s=10, health_check_timeout_s=30, graceful_shutdown_timeout_s=20,
)
stream_deployment = serve.deployment(StreamConsumer, name=STREAM, num_replicas=1, max_ongoing_requests=8,
                                     graceful_shutdown_timeout_s=20)
events_deployment = serve.deployment(FeatureEventConsumer, name=EVENTS, num_replicas=1, max_ongoing_requests=8,
                                     user_config={}, graceful_shutdown_timeout_s=20)
drift_deployment = serve.deployment(DriftMonitor, name=DRIFT, num_replicas=1, max_ongoing_requests=64,
                                    user_config={})
ingress_deployment = serve.deployment(Ingress, name=INGRESS, max_ongoing_requests=64, max_queued_requests=256,
                                      user_config={"canaries": {}})


def build(args: dict[str, Any] | BaseModel | None = None) -> Application:
    """Serve's application builder."""
    if isinstance(args, BaseModel):
        args = args.model_dump()
    parsed = AppArgs.model_validate(args or {})
    drift = drift_deployment.bind()
    model = model_deployment.bind(parsed.model, parsed.variant, drift)
    stream = stream_deployment.bind(parsed.model, parsed.variant, drift) if parsed.stream else None
    events = events_deployment.bind() if parsed.feature_events else None
    return ingress_deployment.bind(model, parsed.limits(), parsed.model, stream, events, drift)
