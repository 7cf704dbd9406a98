"""The parity comparison: exact fields, tolerances, missing tickets and version skew are all reported."""

import pandas as pd

from unison.parity import PathRun, compare

LABELS = ["billing", "bug"]


def _run(name: str, rows: list[dict], model_version: str = "1") -> PathRun:
    frame = pd.DataFrame([{"model_name": "triage", "model_version": model_version,
                           "feature_service": "triage_v1", **r} for r in rows]).set_index("ticket_id")
    return PathRun(name, frame, seconds=2.0)


def _row(ticket: str, p: float = 0.7, priority: float = 0.5, digest: str = "d", category: str = "billing") -> dict:
    return {"ticket_id": ticket, "category": category, "priority": priority, "input_digest": digest,
            "p_billing": p, "p_bug": 1 - p}


def test_identical_paths_pass() -> None:
    rows = [_row("a"), _row("b", p=0.2, category="bug")]
    report = compare({n: _run(n, rows) for n in ("batch", "online", "stream")}, ["a", "b"], LABELS, 1e-6)
    assert report.ok, report.problems
    assert set(report.pairs) == {"batch~online", "batch~stream", "online~stream"}
    assert report.paths["batch"]["models"] == ["triage:1"] and report.paths["batch"]["rows_per_second"] == 1.0


def test_every_kind_of_difference_is_counted_and_named() -> None:
    batch = [_row("a"), _row("b"), _row("c"), _row("d")]
    online = [_row("a", p=0.7 + 1e-3), _row("b", priority=0.6), _row("c", digest="other"), _row("d", category="bug")]
    report = compare({"batch": _run("batch", batch), "online": _run("online", online)}, ["a", "b", "c", "d", "e"],
                     LABELS, 1e-6)
    mismatches = report.pairs["batch~online"]["mismatches"]
    assert mismatches == {"missing": 1, "input_digest": 1, "category": 1, "probabilities": 1, "priority": 1}
    assert abs(report.pairs["batch~online"]["max_priority_diff"] - 0.1) < 1e-9
    assert not report.ok and any("first: c" in p for p in report.problems)


def test_within_tolerance_is_equal() -> None:
    report = compare({"batch": _run("batch", [_row("a")]), "online": _run("online", [_row("a", p=0.7 + 1e-7)])},
                     ["a"], LABELS, 1e-6)
    assert report.ok


def test_a_path_on_another_model_version_fails_clearly() -> None:
    rows = [_row("a")]
    report = compare({"batch": _run("batch", rows), "online": _run("online", rows, model_version="2")}, ["a"],
                     LABELS, 1e-6)
    assert not report.ok
    assert any("different model versions" in p and "online triage:2" in p for p in report.problems)
