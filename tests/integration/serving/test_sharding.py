"""A pipeline-sharded model on the running cluster: a second application serves the default model as a 2- and a
3-stage chain (stage actors in the Model replica's placement group) and answers exactly what the whole model answers.

The sharded application is added to the deployed config for this test and removed after it; the other
applications' configs do not change, so Serve leaves them running."""

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml

from unison.config import Settings
from unison.serving import deploy

BIN = Path(sys.executable).parent


def _sharded_app(config: dict[str, Any], stages: int) -> dict[str, Any]:
    app = json.loads(json.dumps(config["applications"][0]))
    app.update(name="sharded", route_prefix="/sharded")
    app["runtime_env"] = {"env_vars": {"UNISON_MODEL__STAGES": str(stages)}}
    app["args"].update(feature_events=False, stream=False)
    keep = {"Ingress", "Model", "DriftMonitor"}
    app["deployments"] = [d for d in app["deployments"] if d["name"] in keep]
    for deployment in app["deployments"]:
        deployment.pop("autoscaling_config", None)
        deployment["num_replicas"] = 1
        deployment["ray_actor_options"] = {"num_cpus": 0.01}
        if deployment["name"] == "Model":  # the replica's bundle, then one bundle per stage, packed on one node
            deployment["placement_group_bundles"] = [{"CPU": 0.01}] + [{"CPU": 0.1}] * stages
            deployment["placement_group_strategy"] = "PACK"
    return app


def _wait_ready(url: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=10).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{url} not ready"
        time.sleep(2)


@pytest.mark.parametrize("stages", [2, 3])
def test_a_stage_chain_answers_like_the_whole_model(serve_settings: Settings, url: str, unison_env: dict[str, str],
                                                    stages: int) -> None:
    path = serve_settings.serving.config_file
    original = path.read_text()
    config = yaml.safe_load(original)
    config["applications"].append(_sharded_app(config, stages))
    path.write_text(yaml.safe_dump(config))
    try:
        deploy.up(serve_settings, progress=lambda line: None)
        _wait_ready(f"{url}/sharded")
        frame = pd.read_parquet(serve_settings.data.dir / "tickets.parquet",
                                columns=["ticket_id", "customer_id", "subject", "body", "channel"]).head(24)
        tickets = [{**t, "customer_id": int(t["customer_id"])} for t in frame.to_dict(orient="records")]
        whole = httpx.post(f"{url}/v1/predict", json={"instances": tickets}, timeout=60)
        sharded = httpx.post(f"{url}/sharded/v1/predict", json={"instances": tickets}, timeout=60)
        assert whole.status_code == 200 and sharded.status_code == 200, sharded.text
        a, b = whole.json(), sharded.json()
        assert (a["model_name"], a["model_version"]) == (b["model_name"], b["model_version"])
        for left, right in zip(a["predictions"], b["predictions"], strict=True):
            assert left["input_digest"] == right["input_digest"] and left["category"] == right["category"]
            assert left["probabilities"] == right["probabilities"] and left["priority"] == right["priority"]

        replica = httpx.get(f"{url}/sharded/v1/models", timeout=30).json()["replica"]
        placed = replica["stages"]
        assert [s["stage"] for s in placed] == list(range(stages))
        assert [s["bundle"] for s in placed] == list(range(1, stages + 1))
        assert len({s["pid"] for s in placed} | {replica["replica_pid"]}) == stages + 1  # each stage its own actor
        assert {s["strategy"] for s in placed} == {"PACK"}
        assert httpx.get(f"{url}/v1/models", timeout=30).json()["replica"]["stages"] == []  # the main app: whole

        status = subprocess.run([BIN / "unison", "status", "--json"], env=unison_env, capture_output=True,
                                text=True, timeout=120)
        assert status.returncode == 0, status.stderr
        shown = json.loads(status.stdout)["stages"]
        assert [(s["application"], s["stage"], s["bundle"]) for s in shown] == [
            ("sharded", i, i + 1) for i in range(stages)]
    finally:
        path.write_text(original)
        deploy.up(serve_settings, progress=lambda line: None)
