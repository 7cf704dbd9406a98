"""Serve's HAProxy ingress on the session's stack: the one that answers HTTP, and every socket it listens on is
loopback (Ray's template binds stats and metrics to every interface; unison.ops.haproxy rebinds them)."""

import httpx
import psutil

from unison.config import Settings
from unison.ops import stack


def test_haproxy_answers_the_api_and_listens_on_loopback_only(serve_settings: Settings, url: str) -> None:
    assert serve_settings.serving.runtime.proxy == "haproxy"
    root = stack.load_state(serve_settings).components[stack.RAY].process
    assert root is not None and root.process() is not None
    proxies = [p for p in root.process().children(recursive=True) if p.name() == "haproxy"]  # type: ignore[union-attr]
    assert proxies, "no HAProxy under the stack's Ray head"
    listening = [c.laddr for p in proxies for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    port = int(url.rsplit(":", 1)[1])
    assert port in {addr.port for addr in listening}  # HAProxy is the HTTP front door
    assert len({addr.port for addr in listening}) >= 3  # the frontend, stats and the Prometheus exporter
    assert {addr.ip for addr in listening} == {"127.0.0.1"}, listening
    response = httpx.post(f"{url}/v1/predict", json={"instances": [
        {"ticket_id": "t1", "customer_id": 1, "subject": "refund", "body": "I was charged twice"}]}, timeout=60)
    assert response.status_code == 200
