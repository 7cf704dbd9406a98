"""The running Serve application's live figures, read over HTTP for `unison status`.

`ops_report` is `GET /v1/ops` (deployments, models loaded, throughput and latency per path, lag, freshness,
drift); `stage_placement` asks one Model replica of each application where a sharded model's stages run
(`GET <route prefix>/v1/models`). Both take the Serve HTTP address; finding it is the caller's job
(`unison.serving.deploy.url`). Neither raises on a server that is down or answers badly: the status screen shows
what it can.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx


def unavailable(reason: object) -> dict[str, Any]:
    """The report when there are no live figures, saying why."""
    return {"error": f"no live figures: {reason}"}


def ops_report(url: str, timeout: float = 30.0) -> dict[str, Any]:
    """`GET {url}/v1/ops` with the address added (`url`), or `{"error": ...}` naming what went wrong."""
    try:
        response = httpx.get(f"{url}/v1/ops", timeout=timeout)
    except httpx.HTTPError as exc:
        return unavailable(exc)
    if response.status_code != 200:
        return {"error": f"/v1/ops answered {response.status_code}: {response.text[:200]}"}
    return {"url": url, **response.json()}


def stage_placement(url: str, applications: Mapping[str, Any], timeout: float = 10.0) -> list[dict[str, Any]]:
    """Per Serve application (Serve's `applications` mapping) with a sharded model: where each stage runs, as one
    Model replica reports it, each row with its `application`. An application that does not answer is skipped."""
    rows: list[dict[str, Any]] = []
    for name, application in applications.items():
        prefix = (application.get("route_prefix") or "/").rstrip("/")
        try:
            replica = httpx.get(f"{url}{prefix}/v1/models", timeout=timeout).json().get("replica") or {}
        except (httpx.HTTPError, ValueError):
            continue
        rows.extend({"application": name, **stage} for stage in replica.get("stages") or [])
    return rows
