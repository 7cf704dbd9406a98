"""Redeploying the session's Serve application with other settings, and putting it back, for tests that need
small limits: Ray's own `serve deploy` with the config `unison serve config` renders."""

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from unison.config import Settings
from unison.serving import deploy
from unison.serving.app import MODEL

BIN = Path(sys.executable).parent
GOOD = {"ticket_id": "t1", "customer_id": 1, "subject": "refund", "body": "I was charged twice"}


def model_info(url: str) -> dict[str, Any]:
    return httpx.get(f"{url}/v1/models", timeout=30).json()["replica"]


def wait_model_info(url: str, ready: Any, timeout: float = 180) -> dict[str, Any]:
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


def settled(settings: Settings, since: float) -> bool:
    """A deploy made after `since` is rolled out: the application RUNNING with one RUNNING Model replica (not
    merely the old one still)."""
    from unison.ops.stack import endpoints

    app = deploy.applications(endpoints(settings))["applications"].get("unison", {})
    replicas = app.get("deployments", {}).get(MODEL, {}).get("replicas", [])
    return (app.get("last_deployed_time_s", 0) > since and app.get("status") == "RUNNING"
            and [r["state"] for r in replicas] == ["RUNNING"])


def wait_settled(settings: Settings, since: float, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not settled(settings, since):
        assert time.monotonic() < deadline, "the redeploy did not roll out"
        time.sleep(1)


def restore(settings: Settings, tmp_path: Path, url: str) -> None:
    """Deploy the file's settings again and wait until they are rolled out and answering, so whatever runs next
    does not meet a replica swap."""
    since = time.time()
    serve_deploy(settings, tmp_path, {})
    wait_settled(settings, since)
    wait_model_info(url, lambda info: info["batching"]["max_batch_size"] == 16)
    deadline = time.monotonic() + 180
    while httpx.post(f"{url}/v1/predict", json={"instances": [GOOD]}, timeout=60).status_code != 200:
        assert time.monotonic() < deadline, "the restored application does not answer"
        time.sleep(1)


def serve_deploy(settings: Settings, tmp_path: Path, overrides: dict[str, dict[str, Any]],
                  args: dict[str, Any] | None = None) -> None:
    """Ray's own `serve deploy` CLI with the config `unison serve config` renders; `args` replace some of the
    `unison` application's args (its API limits)."""
    from unison.ops.stack import endpoints

    stack = endpoints(settings)
    config = deploy.render(settings, stack, int(deploy.url(settings).rsplit(":", 1)[1]), overrides)
    for application in config["applications"]:
        if application["name"] == "unison" and args:
            application["args"] = {**application.get("args", {}), **args}
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run([str(BIN / "serve"), "deploy", str(path), "--address", stack.ray_dashboard_url],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
