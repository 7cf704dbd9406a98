"""deploy/prometheus/: the alert rules pass `promtool check rules` and their own unit tests (`promtool test rules`
with alerts_test.yaml: input series, expected alerts, labels and rendered annotations), use only metrics
docs/OPS.md lists, and the example scrape configuration is valid and loads them."""

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yaml"
TESTS = PROMETHEUS / "alerts_test.yaml"
CONFIG = PROMETHEUS / "prometheus.yml"
EXPECTED = {  # alert -> what it watches (docs/OPS.md, "Alerts")
    "UnisonConsumerLagGrowing": "ray_unison_kafka_consumer_lag",
    "UnisonStreamPartitionsUnowned": "ray_unison_stream_unowned_lagging_partitions",
    "UnisonStreamStalled": "ray_unison_stream_stalled_partitions",
    "UnisonOnlineLatencyHigh": "ray_unison_http_request_duration_seconds_bucket",
    "UnisonHttpErrorRatioHigh": "ray_unison_http_requests_total",
    "UnisonFeaturesStale": "ray_unison_feature_freshness_seconds",
    "UnisonInputDrift": "ray_unison_feature_drift_psi",
    "UnisonParityFailed": "ray_unison_parity_ok",
    "UnisonParityNotRun": "ray_unison_parity_last_run_timestamp_seconds",
    "UnisonDeadLettersHigh": "ray_unison_stream_dead_letters_total",
    "UnisonNoHealthyReplicas": "ray_serve_deployment_replica_healthy",
}


def promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        pytest.fail("promtool is missing: it comes with Debian's prometheus package; run `make install` (os-deps)")
    return found


def run(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.fixture(scope="module")
def rules() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    assert [g["name"] for g in groups] == ["unison"]
    return {rule["alert"]: rule for rule in groups[0]["rules"]}


def test_promtool_checks_the_rules() -> None:
    result = run("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    result = run("test", "rules", str(TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_alert_unit_tests_can_fail(tmp_path: Path) -> None:
    """The same tests against rules with other thresholds must fail: they pin the thresholds, not just syntax."""
    text = ALERTS.read_text()
    for old, new in [(">= 0.25", ">= 0.35"), ("min(ray_unison_parity_ok) == 0", "min(ray_unison_parity_ok) < 0"),
                     ("> 1000", "> 5000")]:
        assert old in text
        (tmp_path / "alerts.yaml").write_text(text.replace(old, new))
        shutil.copy(TESTS, tmp_path / "alerts_test.yaml")
        result = run("test", "rules", "alerts_test.yaml", cwd=tmp_path)
        assert result.returncode != 0, f"the unit tests still pass with {new!r} instead of {old!r}"


def test_every_alert_is_unit_tested(rules: dict[str, dict[str, Any]]) -> None:
    tests = yaml.safe_load(TESTS.read_text())
    assert tests["rule_files"] == ["alerts.yaml"]
    fired = {case["alertname"] for test in tests["tests"] for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert set(rules) <= fired, f"never expected to fire in alerts_test.yaml: {sorted(set(rules) - fired)}"
    assert {"UnisonParityFailed", "UnisonInputDrift", "UnisonConsumerLagGrowing"} <= fired


def test_the_alerts_watch_what_they_are_for(rules: dict[str, dict[str, Any]]) -> None:
    assert set(rules) == set(EXPECTED)
    for name, metric in EXPECTED.items():
        assert metric in rules[name]["expr"], f"{name} does not read {metric}"
    assert ">= 0.25" in rules["UnisonInputDrift"]["expr"] and rules["UnisonInputDrift"]["for"] == "30m"
    assert "> 0.5" in rules["UnisonOnlineLatencyHigh"]["expr"] and rules["UnisonOnlineLatencyHigh"]["for"] == "5m"
    assert "> 0.01" in rules["UnisonHttpErrorRatioHigh"]["expr"] and 'status=~"5.."' in \
        rules["UnisonHttpErrorRatioHigh"]["expr"]
    assert "> 86400" in rules["UnisonParityNotRun"]["expr"]
    assert "deriv(" in rules["UnisonConsumerLagGrowing"]["expr"] and rules["UnisonConsumerLagGrowing"]["for"] == "10m"


def test_every_alert_has_a_severity_and_explains_itself(rules: dict[str, dict[str, Any]]) -> None:
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        annotations = rule["annotations"]
        assert annotations.get("summary") and annotations.get("description"), name
        for label in re.findall(r"\bby \(([^)]*)\)", rule["expr"])[:1]:  # the outer grouping: what fires
            for key in (k.strip() for k in label.split(",") if k.strip() not in ("le", "partition")):
                assert f"$labels.{key}" in annotations["summary"] + annotations["description"], \
                    f"{name}: the annotations do not say which {key}"


def test_the_alerts_use_only_documented_metrics(rules: dict[str, dict[str, Any]]) -> None:
    ops = (ROOT / "docs" / "OPS.md").read_text()
    table = ops.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(ray_unison_[a-z_]+)`", table, re.MULTILINE))
    assert len(documented) >= 20
    for name, rule in rules.items():
        for metric in re.findall(r"\bray_unison_[a-z_]+", rule["expr"]):
            base = next((metric[: -len(suffix)] for suffix in ("_bucket", "_count", "_sum")
                         if metric.endswith(suffix) and metric[: -len(suffix)] in documented), metric)
            assert base in documented, f"{name}: {metric} is not in docs/OPS.md's table"
        for metric in re.findall(r"\bray_serve_[a-z_]+", rule["expr"]):
            assert metric in ops, f"{name}: {metric} is not mentioned in docs/OPS.md"


def test_the_example_scrape_config_is_valid_and_loads_the_alerts() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    assert config["rule_files"] == ["alerts.yaml"]
    assert config["scrape_configs"], "no scrape job"
    result = run("check", "config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout
