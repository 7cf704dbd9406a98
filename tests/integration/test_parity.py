"""Parity on the real stack: the same sample through the submitted batch job, /v1/predict through the Serve
proxy, and the streaming deployment gives identical inputs, categories, probabilities and priorities."""

import json
from pathlib import Path

from unison.config import Settings
from unison.parity import ParityConfig, run

ROOT = Path(__file__).resolve().parents[2]


def test_the_three_paths_agree(serve_settings: Settings, url: str, tmp_path: Path) -> None:
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
