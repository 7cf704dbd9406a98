"""`unison serve up | down | status | config`: deploy deploy/serve.yaml to a Ray cluster's Serve.

`up` does what `serve deploy` does (a PUT of the config to the dashboard's Serve REST API), after filling in
what only this machine knows: the HTTP address, and this configuration's UNISON_* variables in each
application's `runtime_env` (absolute paths to the registry and feature store; the stack's Kafka and Ray
addresses). The rendered config is validated with Serve's own `ServeDeploySchema` first, so a bad file fails
here with Serve's message, not later in a replica.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from unison.config import Settings, environment
from unison.domain import DEFAULT_ALIAS
from unison.ops import serve_file
from unison.ops.stack import Endpoints, endpoints, free_ports, port_open, ray_auth_headers

SERVE_API = "/api/serve/applications/"
APP_IMPORT_PATH = "unison.serving.app:build"
STATE_FILE = "serve.json"


class ServeError(RuntimeError):
    """Serve could not be deployed, reached or stopped; the message says why and what to do."""


@dataclass(frozen=True)
class ServeState:
    url: str
    applications: dict[str, dict[str, Any]]


def _state_path(settings: Settings) -> Path:
    return settings.state_dir / STATE_FILE


def load_config(settings: Settings) -> dict[str, Any]:
    try:
        return serve_file.load_serve_config(settings.serving.config_file)
    except serve_file.ServeFileError as exc:
        raise ServeError(f"{exc} (serving.config_file)") from None


def _state(settings: Settings) -> dict[str, Any]:
    path = _state_path(settings)
    return dict(json.loads(path.read_text())) if path.is_file() else {}


def _save_state(settings: Settings, **values: Any) -> None:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    _state_path(settings).write_text(json.dumps({**_state(settings), **values}, indent=2))


def _recorded_port(settings: Settings) -> int | None:
    port = _state(settings).get("http_port")
    return int(port) if port else None


def canaries(settings: Settings) -> dict[str, dict[str, Any]]:
    """Canary splits set with `unison serve canary`, applied by every `serve up` on top of the file's."""
    return dict(_state(settings).get("canaries", {}))


def set_canary(settings: Settings, name: str, version: str | None, weight: float = 0.0,
               alias: str = DEFAULT_ALIAS) -> dict[str, dict[str, Any]]:
    """Record a canary split for `name` (None: remove it); the next `up` applies it in place."""
    from unison.model.registry import Registry
    from unison.serving.routing import Canary

    recorded = canaries(settings)
    if version is None:
        recorded.pop(name, None)
    else:
        known = Registry(settings.model.registry_dir).versions(name)
        if version not in known:
            raise ServeError(f"model {name!r} has no version {version!r} (versions: {', '.join(known) or 'none'})")
        recorded[name] = Canary(version=version, weight=weight, alias=alias).model_dump()
    _save_state(settings, canaries=recorded)
    return recorded


def render(settings: Settings, stack: Endpoints | None, http_port: int,
           overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The config as deployed: HTTP address, UNISON_* environment, optional per-deployment overrides.

    `overrides` maps a deployment name (every application's) or `application/deployment` to options that replace
    the file's (tests and benchmarks use it for small limits).
    """
    from ray.serve.schema import ServeDeploySchema

    from unison.serving.app import INGRESS, MODEL, STREAM

    config = copy.deepcopy(load_config(settings))
    http = config.setdefault("http_options", {})
    http["host"] = settings.serving.http_host
    http["port"] = http_port
    resolved = settings
    if stack is not None:
        resolved = settings.model_copy(update={
            "ray": settings.ray.model_copy(update={"address": stack.ray_address,
                                                   "dashboard_url": stack.ray_dashboard_url}),
            "kafka": settings.kafka.model_copy(update={"bootstrap_servers": stack.kafka_bootstrap_servers}),
        })
    env = environment(resolved)
    for application in config["applications"]:
        runtime_env = application.setdefault("runtime_env", {})
        runtime_env["env_vars"] = {**env, **runtime_env.get("env_vars", {})}
        for deployment in application.get("deployments", []):
            if deployment["name"] == INGRESS and canaries(settings):
                routing = dict(deployment.get("user_config") or {})
                routing["canaries"] = {**routing.get("canaries", {}), **canaries(settings)}
                deployment["user_config"] = routing
            for key in (deployment["name"], f"{application['name']}/{deployment['name']}"):
                deployment.update((overrides or {}).get(key, {}))
            if deployment["name"] in (MODEL, STREAM):
                scoring_resources(deployment, settings)
                stage_bundles(deployment, settings)
    try:
        ServeDeploySchema.model_validate(config)
    except Exception as exc:
        raise ServeError(f"invalid Serve config {settings.serving.config_file}: {exc}") from None
    check_body_limits(config, settings.serving.config_file)
    return config


def check_body_limits(config: dict[str, Any], source: Path) -> None:
    """Every Unison application's `max_body_bytes` within the proxy's read-ahead. The proxy stops reading a body
    there, so an application allowing more would leave a larger upload waiting until the proxy's timeout."""
    from unison.serving.body import READ_AHEAD_ENV, read_ahead_bytes
    from unison.serving.schema import ApiLimits

    env = ((config.get("controller_options") or {}).get("runtime_env") or {}).get("env_vars") or {}
    read_ahead = read_ahead_bytes(env)
    if read_ahead is None:
        return
    for application in config["applications"]:
        if application.get("import_path") != APP_IMPORT_PATH:
            continue
        limit = int((application.get("args") or {}).get("max_body_bytes", ApiLimits().max_body_bytes))
        if limit > read_ahead:
            raise ServeError(f"application {application.get('name')!r} in {source}: max_body_bytes {limit} is more "
                             f"than the proxy reads ahead ({READ_AHEAD_ENV}: {read_ahead} in controller_options); "
                             "raise that or lower max_body_bytes")


def scoring_resources(deployment: dict[str, Any], settings: Settings) -> None:
    """GPUs per scoring replica and replica spreading, from the configuration (GPU hosts and clusters)."""
    serving = settings.serving
    actor = deployment.setdefault("ray_actor_options", {})
    if serving.gpus_per_replica > 0 and "num_gpus" not in actor:
        actor["num_gpus"] = serving.gpus_per_replica
    if serving.max_replicas_per_node is not None and "max_replicas_per_node" not in deployment:
        deployment["max_replicas_per_node"] = serving.max_replicas_per_node


def stage_bundles(deployment: dict[str, Any], settings: Settings) -> None:
    """With `model.stages` = K > 1, a scoring replica owns a placement group: its own bundle, then one bundle per
    stage (`model.stage_resources`, strategy `model.stage_placement`), so Serve places each replica's stage
    actors with it and removes them together. A file that sets `placement_group_bundles` itself is kept."""
    stages = settings.model.stages
    if stages <= 1 or "placement_group_bundles" in deployment:
        return
    actor = deployment.get("ray_actor_options") or {}
    own = {"CPU": float(actor.get("num_cpus", 1.0))}
    if actor.get("num_gpus"):
        own["GPU"] = float(actor["num_gpus"])
    deployment["placement_group_bundles"] = [own] + [dict(settings.model.stage_resources) for _ in range(stages)]
    deployment["placement_group_strategy"] = settings.model.stage_placement


def _api(stack: Endpoints) -> str:
    return stack.ray_dashboard_url.rstrip("/") + SERVE_API


def _serve_api(stack: Endpoints, method: str, what: str, timeout: float, **kwargs: Any) -> requests.Response:
    """One call to the dashboard's Serve REST API; ServeError naming `what` failed, with Serve's message."""
    try:
        response = requests.request(method, _api(stack), headers=ray_auth_headers(), timeout=timeout, **kwargs)
    except requests.RequestException as exc:
        raise ServeError(f"cannot reach the Ray dashboard at {stack.ray_dashboard_url}: {exc}") from None
    if not response.ok:
        raise ServeError(f"{what} ({response.status_code}): {response.text[:2000]}")
    return response


def applications(stack: Endpoints) -> dict[str, Any]:
    """Serve's view of the cluster (GET /api/serve/applications/)."""
    return dict(_serve_api(stack, "GET", "Serve status failed", 10).json())


def up(settings: Settings, overrides: dict[str, dict[str, Any]] | None = None,
       progress: Any = print) -> ServeState:
    """Deploy (or update in place) and wait until every application is RUNNING and /v2/health/ready answers."""
    stack = endpoints(settings)
    port = settings.serving.http_port or _recorded_port(settings)
    if port is None or (settings.serving.http_port is None and not _serving(settings, stack) and
                        port_open(settings.serving.http_host, port)):
        port = free_ports(1, settings.serving.http_host)[0]  # none recorded, or taken by someone else meanwhile
    config = render(settings, stack, port, overrides)
    progress(f"deploying {settings.serving.config_file} to {stack.ray_dashboard_url} (HTTP on port {port})")
    _serve_api(stack, "PUT", "Serve refused the config", 60, json=config)
    url = f"http://{settings.serving.http_host}:{port}"
    _save_state(settings, http_port=port, url=url)
    names = [a["name"] for a in config["applications"]]
    deadline = time.monotonic() + settings.serving.deploy_timeout_s
    last = ""
    while True:
        try:
            apps = applications(stack).get("applications", {})
        except ServeError as exc:  # a dashboard busy starting replicas answers late: ask again until the deadline
            if time.monotonic() > deadline:
                raise ServeError(f"not ready after {settings.serving.deploy_timeout_s:g} s: {exc}") from None
            progress(f"  {exc}; asking again")
            time.sleep(1.0)
            continue
        statuses = {name: apps.get(name, {}).get("status", "NOT_STARTED") for name in names}
        failed = {n: apps[n].get("message", "") for n, s in statuses.items() if s == "DEPLOY_FAILED"}
        if failed:
            raise ServeError("deployment failed: " + "; ".join(f"{n}: {m}" for n, m in failed.items()))
        line = ", ".join(f"{n} {s}" for n, s in statuses.items())
        if line != last:
            progress(f"  {line}")
            last = line
        if all(s == "RUNNING" for s in statuses.values()) and _ready(url):
            return ServeState(url=url, applications=apps)
        if time.monotonic() > deadline:
            detail = {n: apps.get(n, {}).get("message", "") for n in names}
            raise ServeError(f"not ready after {settings.serving.deploy_timeout_s:g} s: {line}; {detail}")
        time.sleep(1.0)


def _serving(settings: Settings, stack: Endpoints) -> bool:
    """Whether Serve already runs on the cluster (then its recorded port is ours, not someone else's)."""
    try:
        return bool(applications(stack).get("applications"))
    except ServeError:
        return False


def _ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/v2/health/ready", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def down(settings: Settings) -> None:
    """Delete every Serve application and shut Serve down (DELETE /api/serve/applications/)."""
    stack = endpoints(settings)
    _serve_api(stack, "DELETE", "Serve shutdown failed", 120)
    deadline = time.monotonic() + 60
    while applications(stack).get("applications") and time.monotonic() < deadline:
        time.sleep(1.0)
    # The recorded port stays: the next `up` reuses it while it is free, so clients keep their URL.


def url(settings: Settings) -> str:
    """The HTTP address `serve up` recorded (or the configured one); Serve may since have been taken down."""
    port = settings.serving.http_port or _recorded_port(settings)
    if port is None:
        raise ServeError("Serve is not up: run `unison serve up` first")
    return f"http://{settings.serving.http_host}:{port}"
