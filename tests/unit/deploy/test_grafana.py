"""The Grafana dashboards in deploy/grafana/: well-formed, every query on a metric and label docs/OPS.md lists, every
variable defined, every PromQL expression parsed by Prometheus itself (promtool), and each dashboard showing
what it is for."""

import json
import re
import shutil
import subprocess
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
GRAFANA = ROOT / "deploy" / "grafana"
NAMES = ("overview", "online", "streaming", "batch", "models")
METRIC = re.compile(r"\bray_(?:unison|serve)_[a-z_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")
BUILTINS = {"__rate_interval", "__interval", "__range"}  # Grafana's own
RAY_LABELS = {"WorkerId", "Component", "NodeAddress", "SessionName", "job", "instance"}  # Ray's and Prometheus's
# Serve's own metric (docs/OPS.md names it below the table) and its labels.
SERVE = {"ray_serve_deployment_replica_healthy": {"application", "deployment", "replica"}}
UNITS = {"s", "bytes", "percentunit", "reqps", "cps", "ops", "short", "none"}


def documented_metrics() -> dict[str, tuple[str, set[str]]]:
    """docs/OPS.md's metric table: scraped name -> (type, label names)."""
    text = (ROOT / "docs" / "OPS.md").read_text()
    section = text.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    found = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].startswith("`ray_"):
            labels = set(re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", cells[2])))
            found[cells[0].strip("`")] = (cells[1], labels)
    assert len(found) >= 20, f"docs/OPS.md's metric table parsed to {len(found)} metrics"
    for name, labels in SERVE.items():
        assert name in text, f"docs/OPS.md no longer mentions {name}"
        found[name] = ("gauge", labels)
    return found


def base_name(name: str, metrics: dict[str, tuple[str, set[str]]]) -> str:
    """The documented metric a scraped series name belongs to (histograms: without _bucket/_count/_sum)."""
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and metrics.get(name[: -len(suffix)], ("",))[0] == "histogram":
            return name[: -len(suffix)]
    return name


def substitute(expr: str, interval: str = "1m") -> str:
    """What Grafana would send with every variable on All: builtin intervals, `$var` and `${var}` -> `.*`."""
    expr = expr.replace("$__rate_interval", interval).replace("$__interval", "30s").replace("$__range", interval)
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", ".*", expr)


@pytest.fixture(scope="module")
def metrics() -> dict[str, tuple[str, set[str]]]:
    return documented_metrics()


@pytest.fixture(scope="module")
def dashboards() -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(GRAFANA.glob("*.json"))}


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    out = []
    for panel in board.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))
    return [p for p in out if p.get("type") != "row"]


def exprs(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title / refId, expr) of every target."""
    return [(f"{p['title']} / {t.get('refId')}", t.get("expr", "")) for p in panels(board) for t in p["targets"]]


def variables(board: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in board.get("templating", {}).get("list", [])}


def promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        pytest.fail("promtool is missing: it comes with Debian's prometheus package; run `make install` (os-deps)")
    return found


# ------------------------------------------------------------------------------------------------ structure


def test_the_five_dashboards_exist_with_unique_uids(dashboards: dict[str, dict[str, Any]]) -> None:
    assert set(dashboards) == set(NAMES)
    uids = [board.get("uid") for board in dashboards.values()]
    assert all(uids) and len(set(uids)) == len(uids), uids
    for name, board in dashboards.items():
        assert board["title"].startswith("Unison / ") and "unison" in board["tags"], name
        assert 36 <= board["schemaVersion"] <= 41, name
        assert "__inputs" not in board and "__requires" not in board, f"{name}: exported for sharing, not as a model"


@pytest.mark.parametrize("name", NAMES)
def test_panels_query_the_datasource_variable(dashboards: dict[str, dict[str, Any]], name: str) -> None:
    board = dashboards[name]
    found = variables(board)
    assert found.get("datasource", {}).get("type") == "datasource"
    assert found["datasource"]["query"] == "prometheus"
    everything = panels(board)
    assert len(everything) >= 4
    assert len({p["id"] for p in everything}) == len(everything), "panel ids repeat"
    for panel in everything:
        assert panel["type"] in {"timeseries", "stat", "table"}, panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], f"{panel['title']} has no target"
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), f"{panel['title']} / {target.get('refId')}: empty expr"
            assert target.get("datasource", panel["datasource"]) == panel["datasource"], panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"]), panel["title"]
        unit = panel["fieldConfig"]["defaults"].get("unit")
        assert unit in UNITS, f"{panel['title']}: unit {unit!r}"
        assert panel.get("description"), f"{panel['title']} says nothing about what it shows"


@pytest.mark.parametrize("name", NAMES)
def test_panels_do_not_overlap(dashboards: dict[str, dict[str, Any]], name: str) -> None:
    boxes = [(p["title"], p["gridPos"]) for p in panels(dashboards[name])]
    for (_, box) in boxes:
        assert box["x"] >= 0 and box["x"] + box["w"] <= 24
    for (a, p), (b, q) in combinations(boxes, 2):
        apart = (p["x"] + p["w"] <= q["x"] or q["x"] + q["w"] <= p["x"] or p["y"] + p["h"] <= q["y"]
                 or q["y"] + q["h"] <= p["y"])
        assert apart, f"{name}: {a!r} overlaps {b!r}"


# ------------------------------------------------------------------------------------------------ queries


@pytest.mark.parametrize("name", NAMES)
def test_every_metric_and_label_is_documented(dashboards: dict[str, dict[str, Any]], name: str,
                                              metrics: dict[str, tuple[str, set[str]]]) -> None:
    problems = []
    board = dashboards[name]
    queries = exprs(board) + [(f"variable {v}", q["definition"]) for v, q in variables(board).items()
                              if q["type"] == "query"]
    for where, expr in queries:
        used = [base_name(m, metrics) for m in METRIC.findall(expr)]
        if not used:
            problems.append(f"{where}: queries no Unison or Serve metric")
        problems += [f"{where}: {m} is not in docs/OPS.md" for m in used if m not in metrics]
        known = {label for m in used if m in metrics for label in metrics[m][1]} | RAY_LABELS
        for metric, selector in re.findall(r"(ray_(?:unison|serve)_[a-z_]+)\{([^}]*)\}", expr):
            labels = metrics.get(base_name(metric, metrics), ("", set()))[1] | RAY_LABELS
            labels |= {"le"} if metric.endswith("_bucket") else set()
            problems += [f"{where}: {metric} has no label {label!r}"
                         for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", selector) if label not in labels]
        for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
            for label in filter(None, (g.strip() for g in group.split(","))):
                if label not in known and not (label == "le" and "_bucket" in expr):
                    problems.append(f"{where}: groups by {label!r}, a label none of its metrics has")
        match = re.match(r"label_values\((.+),\s*(\w+)\)$", expr)
        if where.startswith("variable") and (not match or match.group(2) not in known):
            problems.append(f"{where}: not label_values(<documented metric>, <its label>)")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", NAMES)
def test_every_variable_used_is_defined(dashboards: dict[str, dict[str, Any]], name: str) -> None:
    board = dashboards[name]
    defined = variables(board)
    queries = exprs(board) + [(f"variable {v}", q["definition"]) for v, q in defined.items() if q["type"] == "query"]
    used = {(where, a or b) for where, expr in queries for a, b in re.findall(r"\$\{(\w+)[^}]*\}|\$(\w+)", expr)}
    missing = sorted(f"{where}: ${var}" for where, var in used if var not in defined and var not in BUILTINS)
    assert not missing, "undefined variables:\n" + "\n".join(missing)
    for var in defined.values():
        if var["type"] == "query":
            assert var["includeAll"] is True and var["allValue"] == ".*", var["name"]
            assert var["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, var["name"]
            assert var["query"]["query"] == var["definition"], var["name"]


@pytest.mark.parametrize("name", NAMES)
def test_counters_are_rated_and_histograms_read_by_bucket(dashboards: dict[str, dict[str, Any]], name: str,
                                                          metrics: dict[str, tuple[str, set[str]]]) -> None:
    problems = []
    for where, expr in exprs(dashboards[name]):
        for match in METRIC.finditer(expr):
            metric = match.group(0)
            kind = metrics.get(base_name(metric, metrics), ("",))[0]
            if kind == "counter" or (kind == "histogram" and metric != base_name(metric, metrics)):
                before = expr[: match.start()]
                after = expr[match.end():]
                if not re.search(r"\b(rate|increase)\(\s*$", before):
                    problems.append(f"{where}: {metric} is not inside rate() or increase()")
                if not re.match(r"(\{[^}]*\})?\[\$__(rate_interval|range)\]", after):
                    problems.append(f"{where}: {metric} is not taken over [$__rate_interval]")
            if kind == "histogram" and metric == base_name(metric, metrics):
                problems.append(f"{where}: {metric} is a histogram: use _bucket, _sum or _count")
        for quantile in re.findall(r"histogram_quantile\(([^,]+),\s*(.{0,30})", expr):
            if not quantile[1].startswith(("sum by (le", "sum by(le")):
                problems.append(f"{where}: histogram_quantile over something other than sum by (le, ...)")
    assert not problems, "\n".join(problems)


CONTENT = {  # what each dashboard is for: the metrics it must show
    "overview": ["ray_unison_http_requests_total", "ray_unison_http_request_duration_seconds_bucket",
                 "ray_unison_stream_records_total", "ray_unison_kafka_consumer_lag",
                 "ray_unison_stream_dead_letters_total", "ray_serve_deployment_replica_healthy",
                 "ray_unison_feature_drift_psi", "ray_unison_parity_ok", "ray_unison_feature_freshness_seconds"],
    "online": ["ray_unison_http_requests_total", "ray_unison_http_request_duration_seconds_bucket",
               "ray_unison_model_batch_duration_seconds_bucket", "ray_unison_model_batch_size_bucket",
               "ray_unison_model_batch_fill_ratio", "ray_unison_model_queue_depth", "ray_unison_model_cache_bytes",
               "ray_unison_model_cache_loads_total", "ray_unison_model_cache_evictions_total"],
    "streaming": ["ray_unison_stream_records_total", "ray_unison_stream_dead_letters_total",
                  "ray_unison_stream_event_duration_seconds_bucket", "ray_unison_kafka_consumer_lag",
                  "ray_unison_model_batch_duration_seconds_bucket"],
    "batch": ["ray_unison_batch_rows_total", "ray_unison_batch_block_duration_seconds_bucket"],
    "models": ["ray_unison_feature_drift_psi", "ray_unison_feature_drift_window_rows", "ray_unison_parity_mismatches",
               "ray_unison_parity_last_run_timestamp_seconds", "ray_unison_model_cache_loads_total",
               "ray_unison_model_cache_evictions_total"],
}


@pytest.mark.parametrize("name", NAMES)
def test_each_dashboard_shows_what_it_is_for(dashboards: dict[str, dict[str, Any]], name: str) -> None:
    text = "\n".join(expr for _, expr in exprs(dashboards[name]))
    assert not [m for m in CONTENT[name] if m not in text], f"{name} lacks panels on these metrics"
    quantiles = {q for q in re.findall(r"histogram_quantile\((0\.\d+)", text)}
    if name in ("overview", "online", "streaming", "batch"):
        assert "0.99" in quantiles, f"{name} shows no p99"
    if name == "streaming":
        assert 'path="stream"' in text and "partition" in text
    if name == "online":
        assert {"0.5", "0.9", "0.99"} <= quantiles and 'path="online"' in text
    if name == "models":
        kinds = {p["type"] for p in panels(dashboards[name]) if "feature_drift_psi" in json.dumps(p["targets"])}
        assert kinds == {"table", "timeseries"}
        assert "time() - max(ray_unison_parity_last_run_timestamp_seconds)" in text


# ------------------------------------------------------------------------------------------------ promtool


def _rule_file(expressions: list[tuple[str, str]], path: Path) -> Path:
    """The expressions as recording rules: `promtool check rules` parses each with Prometheus's own parser."""
    rules = [{"record": f"dashboard:panel_{i}:check", "expr": expr} for i, (_, expr) in enumerate(expressions)]
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}, width=1000))
    return path


def test_promtool_parses_every_expression(dashboards: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    expressions = [(f"{name}: {where}", substitute(expr)) for name, board in dashboards.items()
                   for where, expr in exprs(board)]
    expressions += [(f"{name}: variable {v}", substitute(q["definition"].removeprefix("label_values(")
                                                         .rsplit(",", 1)[0]))
                    for name, board in dashboards.items() for v, q in variables(board).items() if q["type"] == "query"]
    assert len(expressions) > 60
    result = subprocess.run([promtool(), "check", "rules", str(_rule_file(expressions, tmp_path / "exprs.yaml"))],
                            capture_output=True, text=True, timeout=60)
    if result.returncode:
        numbered = "\n".join(f"panel_{i}: {where}: {expr}" for i, (where, expr) in enumerate(expressions))
        pytest.fail(f"promtool rejects an expression:\n{result.stdout}{result.stderr}\n{numbered}")
    assert f"SUCCESS: {len(expressions)} rules found" in result.stdout, result.stdout


def test_the_promtool_check_does_reject_bad_promql(tmp_path: Path) -> None:
    for bad in ["sum by (le (rate(x[1m]))", "rate(ray_unison_http_requests_total)", "histogram_quantile(0.99)"]:
        result = subprocess.run([promtool(), "check", "rules", str(_rule_file([("bad", bad)], tmp_path / "b.yaml"))],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode != 0, f"promtool accepted {bad!r}"


def test_substitution_leaves_no_variable() -> None:
    expr = 'sum by (le) (rate(m_bucket{model=~"$model(:.*)?", a=~"${application}"}[$__rate_interval]))'
    assert substitute(expr) == 'sum by (le) (rate(m_bucket{model=~".*(:.*)?", a=~".*"}[1m]))'
