"""The metric registry: every definition well-formed and documented, each built from the right Ray module, gauges
held until set again or cleared. Recording through Ray's agent is tests/integration/ops/test_metrics.py."""

import re
from pathlib import Path
from typing import Any

import pytest
import ray
import ray.serve.metrics
import ray.util.metrics

from unison.ops import metrics

ROOT = Path(__file__).resolve().parents[3]


def test_every_definition_is_well_formed() -> None:
    for name, (kind, description, labels, buckets) in metrics.DEFINITIONS.items():
        assert re.fullmatch(r"unison_[a-z_]+", name) and description.endswith("."), name
        assert kind in ("counter", "gauge", "histogram") and isinstance(labels, tuple), name
        assert name.endswith("_total") == (kind == "counter"), name
        if kind == "histogram":
            assert buckets and list(buckets) == sorted(set(buckets)), name
        else:
            assert buckets is None, name
    assert metrics.SERVE_METRICS <= set(metrics.DEFINITIONS)


def test_the_ingress_and_drift_metrics_kept_their_shape() -> None:
    """Moved here from the ingress and the DriftMonitor: the dashboards and alerts query these as they were."""
    d = metrics.DEFINITIONS
    assert d["unison_http_requests_total"][::2] == ("counter", ("route", "model", "version", "status"))
    assert d["unison_http_request_duration_seconds"][::2] == ("histogram", ("route", "model", "version"))
    assert d["unison_http_request_duration_seconds"][3] == [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10]
    assert d["unison_feature_drift_psi"][::2] == ("gauge", ("model", "path", "input"))
    assert d["unison_feature_drift_window_rows"][::2] == ("gauge", ("model", "path"))
    assert metrics.SERVE_METRICS == {"unison_http_requests_total", "unison_http_request_duration_seconds"}


def test_docs_list_exactly_the_defined_metrics() -> None:
    """docs/OPS.md's table is what the dashboard and alert tests check queries against (tests/unit/deploy), so
    it must say what this module defines: the same names (as scraped, `ray_` in front), types and labels."""
    section = (ROOT / "docs" / "OPS.md").read_text().split("## Metrics", 1)[1].split("\n## ", 1)[0]
    documented = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].startswith("`ray_unison_"):
            labels = re.sub(r"\([^)]*\)", "", cells[2])  # without the values in parentheses
            documented[cells[0].strip("`")] = (cells[1], set(re.findall(r"`(\w+)`", labels)))
    defined = {f"ray_{name}": (kind, set(labels)) for name, (kind, _, labels, _) in metrics.DEFINITIONS.items()}
    assert documented == defined


class _Made:
    def __init__(self, name: str, description: str = "", boundaries: Any = None, tag_keys: Any = None) -> None:
        self.name, self.boundaries, self.tag_keys = name, boundaries, tag_keys
        self.sets: list[tuple[float, dict[str, str] | None]] = []

    def set(self, value: float, tags: dict[str, str] | None = None) -> None:
        self.sets.append((value, tags))


@pytest.fixture
def in_ray(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A process that looks like a Ray worker: fresh registry state, metric classes recorded, no refresh thread."""
    made: dict[str, Any] = {}
    monkeypatch.setattr(metrics, "_made", made)
    monkeypatch.setattr(metrics, "_held", {})
    monkeypatch.setattr(metrics, "_refresher", object())  # as if already running: none is started
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    for module in (ray.util.metrics, ray.serve.metrics):
        for kind in ("Counter", "Gauge", "Histogram"):
            monkeypatch.setattr(module, kind, type(f"{module.__name__}.{kind}", (_Made,), {}))
    return made


def test_each_metric_is_built_once_from_its_module(in_ray: dict[str, Any]) -> None:
    http = metrics.metric("unison_http_request_duration_seconds")
    assert type(http).__name__ == "ray.serve.metrics.Histogram"  # Serve adds application, deployment, replica
    assert http.boundaries == metrics.HTTP_LATENCY_BUCKETS and http.tag_keys == ("route", "model", "version")
    assert type(metrics.metric("unison_http_requests_total")).__name__ == "ray.serve.metrics.Counter"
    assert type(metrics.metric("unison_feature_drift_psi")).__name__ == "ray.util.metrics.Gauge"
    assert type(metrics.metric("unison_batch_rows_total")).__name__ == "ray.util.metrics.Counter"
    assert metrics.metric("unison_feature_drift_psi") is in_ray["unison_feature_drift_psi"]  # not built again


def test_a_gauge_is_held_until_cleared(in_ray: dict[str, Any]) -> None:
    metrics.set_gauge("unison_feature_drift_psi", 0.3, model="triage:1", path="online", input="x")
    metrics.set_gauge("unison_feature_drift_psi", 0.1, model="triage:1", path="stream", input="x")
    gauge = in_ray["unison_feature_drift_psi"]
    assert gauge.sets == [(0.3, {"model": "triage:1", "path": "online", "input": "x"}),
                          (0.1, {"model": "triage:1", "path": "stream", "input": "x"})]
    assert len(metrics._held) == 2
    metrics.clear_gauge("unison_feature_drift_psi", input="x", path="online", model="triage:1")  # any tag order
    metrics.clear_gauge("unison_feature_drift_psi", model="never", path="set", input="x")  # nothing to clear
    assert list(metrics._held.values()) == [0.1]


def test_outside_ray_nothing_is_built_or_held(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_made", {})
    monkeypatch.setattr(metrics, "_held", {})
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    metrics.inc("unison_http_requests_total", route="/v1/predict", model="m", version="1", status="200")
    metrics.observe("unison_http_request_duration_seconds", 0.01, route="/v1/predict", model="m", version="1")
    metrics.set_gauge("unison_feature_drift_window_rows", 10, model="m:1", path="online")
    assert metrics._made == {} and metrics._held == {}
