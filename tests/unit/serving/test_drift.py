"""The DriftMonitor's export, without Serve: PSI per input and window rows as held gauges, and a PSI that no
longer exists (too few rows in the window now) no longer held. PSI itself is tests/unit/model/test_drift.py."""

import threading
import time
from typing import Any

import pytest

from unison.model.drift import DriftConfig, DriftWindow
from unison.ops import metrics
from unison.serving.drift import DriftMonitor

REFERENCE = {"x": {"edges": [0.5], "shares": [0.5, 0.5]}, "y": {"edges": [0.5], "shares": [0.9, 0.1]}}


def _monitor() -> DriftMonitor:
    monitor = DriftMonitor.__new__(DriftMonitor)  # no settings, registry or background thread
    monitor.config = DriftConfig(min_rows=10, window_s=100)
    monitor.windows, monitor.references = {}, {"triage:1": REFERENCE}
    monitor.latest, monitor.parity = {"computed_at": None, "models": []}, None
    monitor._lock, monitor._exported = threading.Lock(), set()
    return monitor


@pytest.fixture
def gauges(monkeypatch: pytest.MonkeyPatch) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The gauge series the registry holds, as the monitor sets and clears them."""
    held: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def set_gauge(name: str, value: float, **tags: str) -> None:
        held[(name, tuple(sorted(tags.items())))] = value

    def clear_gauge(name: str, **tags: str) -> None:
        held.pop((name, tuple(sorted(tags.items()))), None)

    monkeypatch.setattr(metrics, "set_gauge", set_gauge)
    monkeypatch.setattr(metrics, "clear_gauge", clear_gauge)
    return held


def _series(held: dict[Any, float]) -> dict[tuple[str, str | None], float]:
    return {(name, dict(tags).get("input")): value for (name, tags), value in held.items()}


def test_psi_and_rows_are_exported_and_a_gone_psi_is_no_longer_held(gauges: dict[Any, float]) -> None:
    monitor = _monitor()
    window = monitor.windows[("triage:1", "online")] = DriftWindow()
    window.add(time.time(), 20, {"x": [10, 10], "y": [2, 18]})
    monitor.check()
    psi = monitor.latest["models"][0]["psi"]
    assert _series(gauges) == {("unison_feature_drift_window_rows", None): 20,
                               ("unison_feature_drift_psi", "x"): psi["x"], ("unison_feature_drift_psi", "y"): psi["y"]}
    assert psi["x"] == 0.0 and psi["y"] > 0.25
    window._parts.clear()  # the window emptied: "insufficient data", no PSI to show
    window.add(time.time(), 5, {"x": [5, 0], "y": [5, 0]})
    monitor.check()
    assert monitor.latest["models"][0]["status"] == "insufficient data"
    assert _series(gauges) == {("unison_feature_drift_window_rows", None): 5}
