"""Parity on the real stack: the same sample through the submitted batch job, /v1/predict through the Serve
proxy, and the streaming deployment gives identical inputs, categories, probabilities and priorities."""

import json
from datetime import UTC, datetime
from pathlib import Path

from unison.config import Settings
from unison.parity import ParityConfig, run

ROOT = Path(__file__).resolve().parents[2]


def test_the_three_paths_agree(serve_settings: Settings, url: str, tmp_path: Path) -> None:
    """With non-default Predictor settings (the session's: `model.max_length` 48, `intra_op_threads` 1), so a path
    that ignores `settings.model` shows: at 48 tokens many demo tickets are truncated."""
    import httpx
    import pandas as pd

    assert (serve_settings.model.max_length, serve_settings.model.intra_op_threads) == (48, 1)
    tickets = pd.read_parquet(serve_settings.data.dir / "tickets.parquet")
    longest = tickets.assign(n=tickets["body"].str.len()).nlargest(8, "n")
    instances = [{"ticket_id": r.ticket_id, "customer_id": int(r.customer_id), "subject": r.subject, "body": r.body}
                 for r in longest.itertuples()]
    answer = httpx.post(f"{url}/v1/predict", json={"instances": instances}, timeout=60).json()
    assert all(p["truncated"] and p["tokens"] == 48 for p in answer["predictions"]), answer

    report_path = tmp_path / "parity.json"
    config = ParityConfig(sample=200, seed=3, working_dir=ROOT, report=report_path, timeout_s=600)
    report = run(serve_settings, config, progress=lambda line: None)
    assert report.ok, report.problems
    assert set(report.pairs) == {"batch~online", "batch~stream", "online~stream"}
    for pair in report.pairs.values():
        assert sum(pair["mismatches"].values()) == 0
        assert pair["max_probability_diff"] <= 1e-6 and pair["max_priority_diff"] <= 1e-6
    versions = {tuple(info["models"]) for info in report.paths.values()}
    assert len(versions) == 1 and all(info["rows"] == 200 for info in report.paths.values())
    written = json.loads(report_path.read_text())
    assert written["ok"] is True and written["tickets"] == 200


def test_a_path_reading_other_features_is_caught(serve_settings: Settings, url: str, tmp_path: Path) -> None:
    """The most common skew after a version mismatch: the online store does not hold what the offline store
    does (a push that reached only one store, a missed materialization). Activity updates for the sample's
    customers go to the offline store only, and the check runs without materializing: the batch job's
    point-in-time join reads the new values, /v1/predict and the stream read the old ones."""
    import pandas as pd

    from unison.features.store import Features
    from unison.parity import sample_tickets

    config = ParityConfig(sample=40, seed=4, working_dir=ROOT, report=tmp_path / "skew.json", timeout_s=600,
                          materialize=False)
    now = datetime.now(UTC)
    customers = sorted(set(sample_tickets(serve_settings, config.sample, config.seed, now, "x")["customer_id"]))
    updates = pd.DataFrame({"customer_id": customers, "open_tickets": 9, "tickets_last_90d": 40, "last_csat": 1.0,
                            "days_since_last_login": 0, "event_timestamp": pd.Timestamp(now)})
    Features(serve_settings).push(updates, to="offline")

    report = run(serve_settings, config, progress=lambda line: None)
    assert not report.ok
    assert report.pairs["online~stream"]["mismatches"]["input_digest"] == 0  # the two online-store readers agree
    for pair in ("batch~online", "batch~stream"):
        assert report.pairs[pair]["mismatches"]["input_digest"] == 40, report.pairs[pair]
    assert any(p.startswith("batch vs online: 40 ticket(s) differ in input_digest") for p in report.problems)
    assert json.loads((tmp_path / "skew.json").read_text())["ok"] is False
