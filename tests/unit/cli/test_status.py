"""`unison status` against a running stack, faked: a real local HTTP server answers for the Serve proxy
(`/v1/ops`, `/v1/models`) and the Ray dashboard (`/api/serve/applications/`, `/api/jobs/`)."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.unit.fakes import json_server
from typer.testing import CliRunner

from unison.cli import app
from unison.ops import stack

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("clean_env")  # no UNISON_* variables, an empty working dir

ROUTES: dict[str, tuple[int, Any]] = {}


@pytest.fixture
def running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with json_server(ROUTES) as url:
        yield from _running(url, tmp_path, monkeypatch)


def _running(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    port = url.rsplit(":", 1)[1]
    for key, value in {"UNISON_SERVING__HTTP_HOST": "127.0.0.1", "UNISON_SERVING__HTTP_PORT": port,
                       "UNISON_RAY__ADDRESS": "127.0.0.1:1", "UNISON_RAY__DASHBOARD_URL": url,
                       "UNISON_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:2"}.items():
        monkeypatch.setenv(key, value)
    statuses = [stack.ComponentStatus("ray", False, "running", "127.0.0.1:1", url, None, "Ray"),
                stack.ComponentStatus("kafka", False, "running", "127.0.0.1:2", None, None, "Kafka")]
    monkeypatch.setattr(stack, "status", lambda settings: statuses)
    output = tmp_path / "predictions"
    output.mkdir()
    (output / "_SUCCESS").write_text(json.dumps({"rows_per_second": 2500.5, "rows_out": 1000}))
    ROUTES.update({path: (200, body) for path, body in {
        "/v1/ops": {"ready": True, "models": {"loaded": ["triage:1:int8"], "default_id": "triage:1:int8"},
                    "deployments": [{"application": "unison", "deployment": "Model", "status": "HEALTHY",
                                     "running": 1, "replicas": 1}],
                    "online": {"requests_per_s": 3.0, "tickets_per_s": 9.0, "p50_ms": 4.2, "p99_ms": 12.0},
                    "drift": {"config": {"window_s": 60}, "computed_at": "x",
                              "models": [{"model": "triage:1", "path": "online", "rows": 100, "status": "moderate",
                                          "psi": {"open_tickets": 0.15}}]}},
        "/api/serve/applications/": {"applications": {"unison": {"route_prefix": "/"}}},
        "/v1/models": {"replica": {"stages": [{"model": "triage:1:fp32", "stage": 0, "bundle": 0, "strategy": "PACK",
                                               "node_id": "abcdef0123456789", "pid": 1, "gpu_ids": [],
                                               "provider": "CPUExecutionProvider", "weight_bytes": 2**21}]}},
        "/api/jobs/": [{"submission_id": "raysubmit_x", "status": "SUCCEEDED", "start_time": 3,
                        "entrypoint": f"python pipelines/batch_predict.py --output {output}"}],
    }.items()})
    yield url


def test_status_shows_every_part(running: str) -> None:
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    text = result.output
    assert "Unison stack" in text and f"Serve application at {running}" in text
    assert "Models loaded (one Model replica): triage:1:int8; default triage:1:int8; cache 0 MiB" in text
    assert "2,500 rows/s (last job)" in text and "raysubmit_x SUCCEEDED" in text
    assert "open_tickets 0.150" in text
    assert "Parity: never checked here (`unison parity`)" in text
    assert "Sharded model stages" in text and "abcdef012345" in text


def test_status_json(running: str) -> None:
    result = runner.invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert set(report) == {"stack", "ops", "batch", "drift", "parity", "stages"}
    assert report["ops"]["url"] == running and report["drift"]["models"][0]["status"] == "moderate"
    assert report["batch"] == {"job_id": "raysubmit_x", "status": "SUCCEEDED", "rows_per_second": 2500.5,
                               "rows": 1000}
    assert [s["application"] for s in report["stages"]] == ["unison"] and report["parity"] is None


def test_status_when_serve_is_not_up(running: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UNISON_SERVING__HTTP_PORT")  # and nothing recorded in the state dir
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    assert "Serving: no live figures: Serve is not up: run `unison serve up` first" in result.output
    assert "Drift: no live figures: Serve is not up" in result.output
    assert "Sharded model stages" not in result.output


def test_status_without_a_stack_exits_1() -> None:
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 1
    assert "Serving: the stack is not running" in result.output and "Drift: the stack is not running" in result.output
