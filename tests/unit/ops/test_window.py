"""The live window behind /v1/ops: rates over the window, percentiles of successes, errors counted apart."""

import pytest

from unison.ops.window import ThroughputWindow


def test_rates_and_percentiles_over_the_window() -> None:
    window = ThroughputWindow(window_s=10)
    start = window._started
    for i in range(100):  # 100 requests of 2 tickets in the first 10 s, latencies 1..100 ms
        window.add((i + 1) / 1000, items=2, at=start + i * 0.1)
    window.add(5.0, error=True, at=start + 9.95)
    stats = window.stats(now=start + 10)
    assert stats["events"] == 101 and stats["errors"] == 1
    assert stats["events_per_s"] == pytest.approx(10.1) and stats["items_per_s"] == pytest.approx(20.1)
    assert stats["p50_s"] == pytest.approx(0.0505) and stats["p99_s"] == pytest.approx(0.09901)  # error excluded


def test_old_events_leave_the_window() -> None:
    window = ThroughputWindow(window_s=10)
    start = window._started
    window.add(0.01, at=start + 1)
    window.add(0.02, at=start + 25)
    stats = window.stats(now=start + 30)
    assert stats["events"] == 1 and stats["p50_s"] == pytest.approx(0.02) and stats["window_s"] == 10


def test_an_empty_window_has_no_percentiles() -> None:
    stats = ThroughputWindow().stats()
    assert stats["events"] == 0 and stats["p99_s"] is None and stats["items_per_s"] == 0
