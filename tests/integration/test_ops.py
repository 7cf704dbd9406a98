"""The dashboards and alerts against a real Prometheus scraping the session's Ray metrics port.

A Prometheus server (Debian's /usr/bin/prometheus, installed by `make install`) scrapes the stack's Ray metrics
port every 2 s and loads deploy/prometheus/alerts.yaml. Traffic goes through all three paths (a parity run:
the batch job, /v1/predict and the stream), plus what the quiet panels need to have something to show: a
malformed record (a dead letter), requests to the application whose model fails its checksum (5xx), models
cycled through a small cache budget (evictions), and /v1/predict calls in the background while querying. Then
every target of every dashboard in deploy/grafana/ is sent to Prometheus's query API with Grafana's variables
substituted: an error, or a query with no series, fails the test, naming every such panel at once.

`$__rate_interval` becomes a range covering the whole test (at least 1m): the batch job's series end with its
actors, minutes before the queries run, and a 1m window would then find nothing although the job was seen.
"""

import json
import re
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml

from unison.config import Settings
from unison.ops import stack
from unison.parity import ParityConfig, run
from unison.serving import deploy
from unison.serving.app import MODEL

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
PROMETHEUS = "/usr/bin/prometheus"  # Debian's package (make install: os-deps)
SCRAPE_S = 2
RETRY_EMPTY_S = 90


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(predicate: Any, timeout: float, what: str, every: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


class Prometheus:
    """A Prometheus server on a free loopback port, scraping one target; stopped by `stop`."""

    def __init__(self, target: str, workdir: Path) -> None:
        if not Path(PROMETHEUS).is_file():
            pytest.fail("prometheus is missing: Debian's prometheus package; run `make install` (os-deps)")
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": f"{SCRAPE_S}s", "scrape_timeout": f"{SCRAPE_S}s",
                       "evaluation_interval": f"{SCRAPE_S}s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [{"job_name": "unison", "static_configs": [{"targets": [target]}]}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = (workdir / "prometheus.log").open("w")
        self.process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=2h"],
            cwd=workdir, stdout=self.log, stderr=subprocess.STDOUT)
        self.started = time.monotonic()
        self.logfile = workdir / "prometheus.log"

    def ready(self) -> bool:
        assert self.process.poll() is None, f"prometheus exited: {self.logfile.read_text()[-2000:]}"
        return httpx.get(f"{self.url}/-/ready", timeout=5).status_code == 200

    def query(self, expr: str) -> dict[str, Any]:
        """The API's answer to an instant query, as JSON (`status` is `success` or `error`)."""
        response = httpx.post(f"{self.url}/api/v1/query", data={"query": expr}, timeout=30)
        return dict(response.json())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.close()


def substitute(expr: str, rate_interval: str) -> str:
    """Grafana's substitution with every variable on All (allValue `.*`)."""
    expr = expr.replace("$__rate_interval", rate_interval).replace("$__range", rate_interval)
    expr = expr.replace("$__interval", "30s")
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", ".*", expr)


def queries() -> list[tuple[str, str]]:
    """(where, expr): every panel target of every dashboard, and each query variable as the series it lists."""
    found = []
    for path in sorted(GRAFANA.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                found.append((f"{path.stem} / {panel['title']} / {target['refId']}", target["expr"]))
        for var in board["templating"]["list"]:
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var.get("definition", ""))
            if var["type"] == "query" and match:
                found.append((f"{path.stem} / variable {var['name']}", f"group by ({match[2]}) ({match[1]})"))
    return found


def _tickets(settings: Settings, count: int) -> list[dict[str, Any]]:
    frame = pd.read_parquet(settings.data.dir / "tickets.parquet").head(count)
    return [{k: (int(v) if k == "customer_id" else str(v)) for k, v in row.items()}
            for row in frame[["ticket_id", "customer_id", "subject", "body", "channel"]].to_dict(orient="records")]


def _background_requests(url: str, instances: list[dict[str, Any]], stop: threading.Event) -> None:
    """/v1/predict every half second (and the broken application now and then: 503s) until `stop`."""
    with httpx.Client(timeout=60) as client:
        i = 0
        while not stop.is_set():
            try:
                client.post(f"{url}/v1/predict", json={"instances": instances[i % len(instances):][:2]})
                if i % 10 == 0:
                    client.post(f"{url}/broken/v1/predict", json={"instances": instances[:1]})
            except httpx.HTTPError:
                pass
            i += 1
            stop.wait(0.5)


def _dead_letter_and_extra_stream_traffic(settings: Settings, instances: list[dict[str, Any]]) -> None:
    """One malformed record (a dead letter with a reason) and a few good tickets more for the stream's drift
    window (the session's DriftMonitor wants 50 rows, the parity sample is 40)."""
    from unison.streaming.tools import produce

    address = stack.endpoints(settings).kafka_bootstrap_servers
    run_id = f"ops-{int(time.time())}"
    good = [(f"{run_id}-{i}".encode(), json.dumps({**t, "ticket_id": f"{run_id}-{i}"}).encode())
            for i, t in enumerate(instances * 5)]
    produce(settings.kafka, address, iter([(f"{run_id}-bad-json".encode(), b"{not json"), *good]))


def _evictions(settings: Settings, url: str) -> None:
    """Three model versions through a cache with room for two: every load evicts (as tests/integration/serving
    does), then the deployment goes back to deploy/serve.yaml."""
    def replica() -> dict[str, Any]:
        return dict(httpx.get(f"{url}/v1/models", timeout=30).json()["replica"])

    budget = 45 << 20
    deploy.up(settings, overrides={MODEL: {"autoscaling_config": None, "num_replicas": 1, "user_config": {
        "max_batch_size": 16, "batch_wait_timeout_s": 0.05, "cache": {"budget_bytes": budget}}}},
        progress=lambda line: None)
    try:
        _wait(lambda: replica()["cache"]["budget_bytes"] == budget, 120, "the small cache budget")
        ticket = {"ticket_id": "ops-evict", "customer_id": 1, "subject": "refund", "body": "charged twice"}
        for model in ["triage:1", "triage:2", "sentiment:1"] * 2:
            response = httpx.post(f"{url}/v1/predict", json={"instances": [ticket], "model": model}, timeout=120)
            assert response.status_code == 200, response.text
    finally:
        deploy.up(settings, progress=lambda line: None)


@pytest.mark.timeout(1800)
def test_every_dashboard_panel_has_data_in_a_real_prometheus(serve_settings: Settings, url: str,
                                                             tmp_path: Path) -> None:
    metrics_port = stack.load_state(serve_settings).components[stack.RAY].ports["metrics_export"]
    target = f"127.0.0.1:{metrics_port}"
    prometheus = Prometheus(target, tmp_path)
    stop = threading.Event()
    background: threading.Thread | None = None
    try:
        _wait(prometheus.ready, 60, "prometheus to be ready")
        _wait(lambda: any(r["value"][1] == "1" for r in prometheus.query(f'up{{instance="{target}"}}')["data"]
                          ["result"]), 60, f"the first scrape of {target}")

        instances = _tickets(serve_settings, 8)
        background = threading.Thread(target=_background_requests, args=(url, instances, stop), daemon=True)
        background.start()
        report = run(serve_settings, ParityConfig(sample=40, seed=9, working_dir=ROOT, timeout_s=600,
                                                  report=tmp_path / "p.json"), progress=lambda line: None)
        assert report.ok, report.problems
        _dead_letter_and_extra_stream_traffic(serve_settings, instances)
        _evictions(serve_settings, url)
        time.sleep(3 * SCRAPE_S)

        errors: list[str] = []
        empty: dict[str, str] = {}
        pending = queries()
        assert len(pending) > 60
        deadline = time.monotonic() + RETRY_EMPTY_S
        while pending:
            window = f"{max(60, int(time.monotonic() - prometheus.started) + 30)}s"  # the whole test, at least 1m
            empty = {}
            for where, expr in pending:
                concrete = substitute(expr, window)
                answer = prometheus.query(concrete)
                if answer.get("status") != "success":
                    errors.append(f"{where}: {answer.get('errorType')}: {answer.get('error')}\n    {concrete}")
                elif not answer["data"]["result"]:
                    empty[where] = concrete
            if not empty or time.monotonic() > deadline:
                break
            pending = [(where, expr) for where, expr in pending if where in empty]  # scrapes lag: ask again
            time.sleep(5)
        problems = errors + [f"{where}: no series\n    {expr}" for where, expr in empty.items()]
        assert not problems, f"{len(problems)} panel queries failed:\n" + "\n".join(problems)

        # The alert rules ran on real series: every one evaluates without an error.
        rules = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=30).json()["data"]["groups"]
        bad = [f"{r['name']}: {r.get('lastError')}" for g in rules for r in g["rules"] if r.get("health") != "ok"]
        assert rules and not bad, bad
    finally:
        stop.set()
        if background is not None:
            background.join(timeout=60)
        prometheus.stop()
