"""The live ops figures on the running application: `GET /v1/ops`, the `/ops` page in headless Chromium (a
screenshot is kept in test-artifacts/), and `unison status` on one screen."""

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from unison.config import Settings

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"


def _traffic(settings: Settings, url: str, stop: threading.Event) -> None:
    frame = pd.read_parquet(settings.data.dir / "tickets.parquet",
                            columns=["ticket_id", "customer_id", "subject", "body", "channel"]).head(64)
    tickets = [{**t, "customer_id": int(t["customer_id"])} for t in frame.to_dict(orient="records")]
    with httpx.Client(timeout=60) as client:
        while not stop.is_set():
            for i in range(0, len(tickets), 8):
                client.post(f"{url}/v1/predict", json={"instances": tickets[i:i + 8]})


def _ops(url: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/v1/ops", timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def test_live_figures_page_and_status(serve_settings: Settings, url: str, unison_env: dict[str, str]) -> None:
    stop = threading.Event()
    sender = threading.Thread(target=_traffic, args=(serve_settings, url, stop), daemon=True)
    sender.start()
    try:
        deadline = time.monotonic() + 60
        while (ops := _ops(url))["online"]["requests_per_s"] == 0 or ops["online"]["p99_ms"] is None:
            assert time.monotonic() < deadline, ops["online"]
            time.sleep(1)
        assert ops["ready"] is True and ops["online"]["tickets_per_s"] > 0
        deployments = {(d["application"], d["deployment"]): d for d in ops["deployments"]}
        assert deployments[("unison", "Model")]["running"] >= 1
        assert {("unison", name) for name in ("Ingress", "StreamConsumer", "FeatureEventConsumer", "DriftMonitor")} \
            <= set(deployments)
        assert ops["models"]["default_id"] in ops["models"]["loaded"]
        assert ops["stream"]["lag"] is not None and ops["stream"]["partitions"] == 4
        assert {f["view"] for f in ops["features"]} == {"customer_profile", "customer_activity"}

        page = httpx.get(f"{url}/ops", timeout=30)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        # Self-contained: nothing fetched from elsewhere (no CDN scripts, styles or fonts).
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page.text)
        assert "@import" not in page.text

        ARTIFACTS.mkdir(exist_ok=True)
        screenshot = ARTIFACTS / "ops-page.png"
        screenshot.unlink(missing_ok=True)
        browser = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                   "--window-size=1400,1000", "--virtual-time-budget=10000"]
        dom = subprocess.run([*browser, "--dump-dom", f"{url}/ops"], capture_output=True, text=True, timeout=120)
        assert dom.returncode == 0, dom.stderr[-2000:]
        figure = re.search(r'id="online-rps">([^<]*)<', dom.stdout)
        assert figure and re.fullmatch(r"\d+\.\d", figure.group(1)), (figure and figure.group(1), dom.stdout[:3000])
        assert re.search(r'id="health" class="ok">ready<', dom.stdout)
        assert "<td>Model</td>" in dom.stdout and "customer_activity" in dom.stdout
        shot = subprocess.run([*browser, f"--screenshot={screenshot}", f"{url}/ops"], capture_output=True,
                              text=True, timeout=120)
        assert shot.returncode == 0 and screenshot.stat().st_size > 10_000, shot.stderr[-2000:]
    finally:
        stop.set()
        sender.join(timeout=60)

    result = subprocess.run([BIN / "unison", "status", "--json"], env=unison_env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert {c["name"] for c in status["stack"]} >= {"ray", "kafka"}
    assert status["ops"]["ready"] is True and status["ops"]["deployments"]
    screen = subprocess.run([BIN / "unison", "status"], env=unison_env, capture_output=True, text=True, timeout=120)
    assert screen.returncode == 0
    for heading in ("Unison stack", "Serve application", "Paths", "online", "stream", "Feature freshness",
                    "Input drift"):
        assert heading in screen.stdout, (heading, screen.stdout[-3000:])
