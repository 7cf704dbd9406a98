"""What the commands print, from the pure `format_*` functions: real inputs, rendered to plain text."""

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console, RenderableType
from rich.table import Table

from unison.cli.format import (
    format_compaction,
    format_drift,
    format_freshness,
    format_generated,
    format_lag,
    format_last_parity,
    format_manifest,
    format_models,
    format_ms,
    format_ops,
    format_parity,
    format_part_counts,
    format_serve_status,
    format_stages,
    format_status,
)
from unison.data.dataset import BASE_PART, Compaction
from unison.features.store import ViewFreshness
from unison.model.manifest import GateCheck, Manifest, TensorSpec, VariantInfo
from unison.ops.stack import ComponentStatus
from unison.streaming.lag import PartitionLag


def render(*parts: RenderableType) -> str:
    """Plain text as `console.print` writes it (no colors), wide enough that nothing wraps."""
    console = Console(file=io.StringIO(), width=250, record=True, color_system=None)
    for part in parts:
        console.print(part)
    return console.export_text()


def lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]


def cells(line: str) -> list[str]:
    """The cells of one rendered table row."""
    return [cell.strip() for cell in line.split("│")[1:-1]]


def row_with(text: str, *cells: str) -> str:
    """The one table line holding every cell."""
    found = [line for line in lines(text) if all(cell in line for cell in cells)]
    assert len(found) == 1, f"{cells} in {len(found)} lines of:\n{text}"
    return found[0]


# ---------------------------------------------------------------------------------------------- status


def test_format_ms() -> None:
    assert format_ms(None) == "-"
    assert format_ms(12.345) == "12.3 ms"
    assert format_ms(0) == "0.0 ms"


def test_format_status_marks_embedded_and_external_components() -> None:
    statuses = [
        ComponentStatus("ray", True, "running", "127.0.0.1:6379", "http://127.0.0.1:8265", 4242, "Ray 2.60.0"),
        ComponentStatus("kafka", False, "unreachable", "broker:9092", None, None, "connection refused"),
    ]
    text = render(format_status(statuses))
    assert lines(text)[0] == "Unison stack"
    assert row_with(text, "ray", "embedded", "running", "127.0.0.1:6379", "http://127.0.0.1:8265", "4242", "Ray 2.60.0")
    kafka = row_with(text, "kafka", "external")
    assert cells(kafka) == ["kafka", "external", "unreachable", "broker:9092", "-", "-", "connection refused"]


def test_format_status_colors_health() -> None:
    table = format_status([ComponentStatus("ray", True, "crashed", "-", None, None, "exit 1")])
    health = list(table.columns[2].cells)
    assert health == ["[red]crashed[/]"]


OPS = {
    "url": "http://127.0.0.1:8123",
    "ready": True,
    "deployments": [
        {"application": "unison", "deployment": "Ingress", "status": "HEALTHY", "running": 2, "replicas": 2},
        {"application": "unison", "deployment": "Model", "status": "UPSCALING", "running": 1, "replicas": 3},
    ],
    "models": {"default_id": "triage:1:int8", "loaded": ["triage:1:int8", "triage:2:int8"],
               "cache_bytes": 96 * 2**20},
    "online": {"requests_per_s": 12.34, "tickets_per_s": 45.67, "p50_ms": 8.04, "p99_ms": None, "errors": 3},
    "stream": {"records_per_s": 101.5, "p99_event_s": 0.256, "dead_letters": 2, "lag": 12345},
    "features": [{"view": "customer_profile", "age_s": 1234.4}, {"view": "customer_activity", "age_s": 5.0}],
}


def test_format_ops_shows_deployments_models_and_every_path() -> None:
    batch = {"job_id": "raysubmit_abc", "status": "SUCCEEDED", "rows_per_second": 2500.4, "rows": 10_000}
    text = render(*format_ops(OPS, batch))
    assert "Serve application at http://127.0.0.1:8123 (ready)" in text
    assert row_with(text, "unison", "Ingress", "HEALTHY", "2/2")
    assert row_with(text, "Model", "UPSCALING", "1/3")
    assert ("Models loaded (one Model replica): triage:1:int8, triage:2:int8; default triage:1:int8; cache 96 MiB"
            in text)
    assert row_with(text, "online", "12.3 req/s, 45.7 tickets/s", "8.0 ms", " - ", " 3 ")
    assert row_with(text, "stream", "101.5 records/s", "0.26 s", " 2 ", "12,345")
    assert row_with(text, "batch", "2,500 rows/s (last job)", "raysubmit_abc SUCCEEDED")
    assert "Feature freshness: customer_profile 1,234 s ago, customer_activity 5 s ago" in text


def test_format_ops_without_stream_batch_or_features() -> None:
    ops = {"url": "http://h:1", "ready": False, "deployments": [], "models": {}, "online": {}}
    text = render(*format_ops(ops, None))
    assert "Serve application at http://h:1 (NOT ready)" in text
    assert "Models loaded (one Model replica): -; default None; cache 0 MiB" in text
    assert row_with(text, "online", "0.0 req/s, 0.0 tickets/s")
    assert [cells(line)[0] for line in lines(text) if line.startswith("│")] == ["online"]  # no stream, no batch
    assert "Feature freshness" not in text
    # a batch job without a rate yet: its id and status, no throughput
    job = row_with(render(*format_ops(ops, {"job_id": "j1", "status": "RUNNING", "rows_per_second": None})), "j1")
    assert job.split()[:3] == ["│", "batch", "│"] and "RUNNING" in job and "rows/s" not in job


def test_format_ops_error_is_one_literal_line() -> None:
    parts = format_ops({"error": "no live figures: [Errno 111] Connection refused"}, None)
    assert len(parts) == 1
    assert render(*parts).strip() == "Serving: no live figures: [Errno 111] Connection refused"


DRIFT = {
    "config": {"window_s": 300.0, "moderate": 0.1, "significant": 0.25},
    "computed_at": "2025-01-01T00:00:00+00:00",
    "models": [
        {"model": "triage:1", "path": "online", "rows": 12345, "status": "significant",
         "psi": {"open_tickets": 0.31, "tenure_days": 0.002, "plan": 0.12, "text_length": 0.05}},
        {"model": "triage:1", "path": "stream", "rows": 10, "status": "stable", "psi": {}},
    ],
}


def test_format_drift_lists_the_three_largest_psi() -> None:
    text = render(format_drift(DRIFT))
    assert ("Input drift (PSI vs training reference; window 300 s, moderate >= 0.1, significant >= 0.25)"
            in text)
    online = row_with(text, "triage:1", "online")
    assert "12,345" in online and "significant" in online
    assert "open_tickets 0.310, plan 0.120, text_length 0.050" in online and "tenure_days" not in online
    assert row_with(text, "stream", "stable").rstrip(" │").endswith("-")


def test_format_drift_without_traffic_and_on_error() -> None:
    assert "no traffic scored yet" in render(format_drift({"config": {}, "computed_at": "now", "models": []}))
    assert "not computed yet" in render(format_drift({"config": {}, "models": []}))
    assert render(format_drift({"error": "the stack is not running"})).strip() == "Drift: the stack is not running"


def test_format_last_parity() -> None:
    assert format_last_parity(None) == "Parity: never checked here (`unison parity`)"
    ok = {"ok": True, "snapshot": "2025-01-01T00:00:00", "tickets": 500, "problems": []}
    assert render(format_last_parity(ok)).strip() == \
        "Parity (last check, snapshot 2025-01-01T00:00:00, 500 tickets): 0 mismatches"
    bad = {**ok, "ok": False, "problems": ["batch~online: 3 category mismatches", "another"]}
    assert render(format_last_parity(bad)).strip() == \
        "Parity (last check, snapshot 2025-01-01T00:00:00, 500 tickets): 2 problem(s): batch~online: 3 category " \
        "mismatches"


def test_format_stages() -> None:
    rows = [{"application": "unison", "model": "triage:1:fp32", "stage": 0, "bundle": 1, "strategy": "PACK",
             "node_id": "0123456789abcdef0123", "pid": 777, "gpu_ids": [], "provider": "CPUExecutionProvider",
             "weight_bytes": 3 * 2**20 + 2**19},
            {"application": "unison", "model": "triage:1:fp32", "stage": 1, "bundle": 2, "strategy": "PACK",
             "node_id": "fedcba", "pid": 778, "gpu_ids": ["0", "1"], "provider": "CUDAExecutionProvider",
             "weight_bytes": 0}]
    text = render(format_stages(rows))
    assert "Sharded model stages (one placement-group bundle each)" in text
    first = row_with(text, "CPUExecutionProvider")
    assert "0123456789ab " in first and "0123456789abc" not in first  # node id cut to 12 characters
    assert "3.5 MiB" in first and " 777 " in first and " - " in first
    assert "0,1" in row_with(text, "CUDAExecutionProvider") and "0.0 MiB" in row_with(text, "fedcba")


# ---------------------------------------------------------------------------------------------- parity


def _parity_report(ok: bool) -> dict:
    mismatches = {"missing": 0, "input_digest": 0, "category": 0 if ok else 2, "probabilities": 0, "priority": 1}
    return {
        "ok": ok, "tickets": 1500, "tolerance": 1e-6, "labels": ["billing", "bug"], "snapshot": "s",
        "paths": {"batch": {"rows": 1500, "rows_per_second": 2345.67, "models": ["triage:1"],
                            "feature_services": ["triage_v3"]},
                  "online": {"rows": 1500, "rows_per_second": 99.04, "models": ["triage:1", "triage:2"],
                             "feature_services": ["triage_v3"]}},
        "pairs": {"batch~online": {"mismatches": mismatches, "max_probability_diff": 1.5e-7,
                                   "max_priority_diff": 0.0}},
        "problems": [] if ok else ["the online path served several model versions: triage:1, triage:2"],
    }


def test_format_parity_agreeing_paths() -> None:
    text = render(*format_parity(_parity_report(ok=True)))
    assert row_with(text, "batch", "1,500", "2,345.7", "triage:1", "triage_v3")
    assert row_with(text, "online", "99.0", "triage:1, triage:2")
    assert cells(row_with(text, "batch vs online")) == ["batch vs online", "0", "0", "0", "0", "1", "1.50e-07",
                                                        "0.00e+00"]
    assert "  1,500 tickets, tolerance 1e-06: parity: all paths agree" in lines(text)
    assert "  - " not in text


def test_format_parity_mismatch_lists_the_problems() -> None:
    parts = format_parity(_parity_report(ok=False))
    text = render(*parts)
    assert "  1,500 tickets, tolerance 1e-06: parity: MISMATCH" in lines(text)
    assert lines(text)[-1] == "  - the online path served several model versions: triage:1, triage:2"
    assert isinstance(parts[0], Table) and isinstance(parts[1], Table) and len(parts) == 4


# ---------------------------------------------------------------------------------------------- data and features


def test_format_generated(tmp_path: Path) -> None:
    from unison.data import generate

    report = generate(tmp_path / "data", customers=20, tickets=50, seed=3, eval_tickets=10, train_tickets=10)
    text = render(*format_generated(report))
    assert f"Generated in {report.out_dir}" in text
    for name, path in report.files.items():
        assert row_with(text, f" {name} ", f"{report.rows[name]:,}", str(path))
    assert row_with(text, " tickets ", " 50 ")
    assert lines(text)[-1] == f"  {report.seconds:.2f}s, {report.tickets_per_second:,.0f} tickets/s"


def test_format_freshness() -> None:
    when = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
    rows = [ViewFreshness("customer_profile", None, when, when - timedelta(hours=1)),
            ViewFreshness("customer_activity", timedelta(days=365), None, None)]
    text = render(format_freshness(rows))
    assert "Feature freshness" in text
    assert row_with(text, "customer_profile", "none", "2025-03-04 05:06:07+00:00", "2025-03-04 04:06:07+00:00")
    assert row_with(text, "customer_activity", "365 days, 0:00:00", "never", " - ")


def test_format_part_counts() -> None:
    assert format_part_counts([]) == "0 (0 pushed, 0 compacted, 0 generated)"
    names = [BASE_PART, "push-1.parquet", "push-2.parquet", "compact-1.parquet"]
    assert format_part_counts(names) == "4 (2 pushed, 1 compacted, 1 generated)"
    assert format_part_counts([*names, "stray.parquet"]) == "5 (2 pushed, 1 compacted, 1 generated, 1 other)"


def test_format_compaction_merged() -> None:
    done = Compaction(parts_before=[BASE_PART, "push-a.parquet", "push-b.parquet", "push-c.parquet"],
                      parts_after=[BASE_PART, "compact-x.parquet"],
                      merged=["push-a.parquet", "push-b.parquet", "push-c.parquet"], output="compact-x.parquet",
                      rows_in=12_000, rows_out=11_500, recovered=["push-0.parquet"], deleted=2)
    assert format_compaction(done, Path("/d/customer_activity.parquet")) == [
        "  parts before: 4 (3 pushed, 0 compacted, 1 generated)",
        "  finished an interrupted compaction: retired 1 merged parts",
        "  merged 3 parts (12,000 rows, 11,500 distinct) into compact-x.parquet",
        "  parts after:  2 (0 pushed, 1 compacted, 1 generated); deleted 2 retired or stale files",
    ]


def test_format_compaction_nothing_to_merge_and_skipped() -> None:
    idle = Compaction(parts_before=[BASE_PART], parts_after=[BASE_PART])
    assert format_compaction(idle, Path("/d")) == [
        "  parts before: 1 (0 pushed, 0 compacted, 1 generated)", "  nothing to merge",
        "  parts after:  1 (0 pushed, 0 compacted, 1 generated); deleted 0 retired or stale files"]
    busy = Compaction(parts_before=[BASE_PART, "push-a.parquet"], parts_after=[], skipped=True)
    assert format_compaction(busy, Path("/d/activity")) == [
        "  another process is compacting /d/activity; nothing done (2 parts)"]


# ---------------------------------------------------------------------------------------------- models


def _manifest(version: str = "2", head: dict | None = None) -> Manifest:
    gate = [GateCheck(metric="accuracy", value=0.91234, threshold=0.85, comparison=">=", passed=True),
            GateCheck(metric="max_abs_diff", value=0.00012, threshold=0.01, comparison="<=", passed=True)]
    return Manifest(
        name="triage", version=version, created_at="2025-01-02T03:04:05Z", kind="triage",
        source_model={"path": "/models/minilm", "architecture": "BertModel"}, fingerprint="f" * 16, opset=17,
        max_length=256,
        inputs=[TensorSpec(name="input_ids", dtype="int64", shape=["batch", "sequence"]),
                TensorSpec(name="features", dtype="float32", shape=["batch", 16])],
        outputs=[TensorSpec(name="logits", dtype="float32", shape=["batch", 4])],
        labels=["billing", "bug", "account", "other"], numeric_features=["open_tickets", "tenure_days"],
        transform_version="3", tokenizer_files=["tokenizer.json"], head=head or {},
        variants={"fp32": VariantInfo(file="fp32/model.onnx", description="fused fp32", size_bytes=90_400_000,
                                      quality={"accuracy": 0.9234}, gate=gate[:1]),
                  "int8": VariantInfo(file="int8/model.onnx", description="dynamic int8, per channel",
                                      size_bytes=23_000_000, gate=gate)})


def test_format_models_lists_versions_aliases_and_broken_artifacts() -> None:
    aliases = {"production": "2", "canary": "2", "old": "1"}
    entries = [("triage", "1", aliases, ValueError("manifest.json is not valid JSON")),
               ("triage", "2", aliases, _manifest())]
    text = render(format_models(Path("/srv/registry"), entries))
    assert "Model registry /srv/registry" in text
    assert row_with(text, " 1 ", "broken", "manifest.json is not valid JSON")
    current = row_with(text, " 2 ", "canary, production", "2025-01-02T03:04:05Z", "triage")
    assert "fp32 (90, 92.3%), int8 (23)" in current and "old" not in current


def test_format_manifest() -> None:
    manifest = _manifest(head={"method": "logistic regression [C=1.0]"})
    text = render(*format_manifest(manifest))
    assert lines(text) == [
        "triage:2 (triage) created 2025-01-02T03:04:05Z",
        "  source: /models/minilm (BertModel)",
        "  inputs: input_ids['batch', 'sequence'], features['batch', 16]",
        "  outputs: logits['batch', 4]",
        "  labels: billing, bug, account, other",
        "  transform version 3; features: open_tickets, tenure_days",
        "  head: logistic regression [C=1.0]",
        "  fp32 90.4 MB: fused fp32",
        "    gate passed: accuracy 0.9123 >= 0.85",
        "  int8 23.0 MB: dynamic int8, per channel",
        "    gate passed: accuracy 0.9123 >= 0.85; max_abs_diff 0.0001 <= 0.01",
    ]


def test_format_manifest_leaves_out_what_a_model_lacks() -> None:
    manifest = _manifest().model_copy(update={"labels": [], "transform_version": None, "head": {}})
    text = render(*format_manifest(manifest))
    assert "labels:" not in text and "transform version" not in text and "head:" not in text
    assert lines(text)[0] == "triage:2 (triage) created 2025-01-02T03:04:05Z"


# ---------------------------------------------------------------------------------------------- serve and stream


def test_format_serve_status() -> None:
    applications = {
        "unison": {"status": "RUNNING", "message": "",
                   "deployments": {"Ingress": {"status": "HEALTHY", "replicas": [{"state": "RUNNING"}] * 2},
                                   "Model": {"status": "UPDATING", "message": "x" * 100,
                                             "replicas": [{"state": "RUNNING"}, {"state": "STARTING"}]}}},
        "broken": {"status": "DEPLOY_FAILED", "message": "ImportError: no module named nope"},
    }
    text = render(format_serve_status(applications))
    assert row_with(text, "unison", "RUNNING")
    assert row_with(text, "Ingress", "HEALTHY", "2/2")
    model = row_with(text, "Model", "UPDATING", "1/2")
    assert "x" * 80 in model and "x" * 81 not in model
    assert row_with(text, "broken", "DEPLOY_FAILED", "ImportError: no module named nope")
    assert format_serve_status({}) == "  no Serve applications (run `unison serve up`)"


def test_format_lag() -> None:
    rows = [PartitionLag("unison-scorer", "tickets", 0, 1500, 1000, 500),
            PartitionLag("unison-scorer", "tickets", 1, 2500, None, 2500)]
    table, total = format_lag(rows)
    text = render(table)
    assert row_with(text, "unison-scorer", "tickets", " 0 ", "1500", "1000", " 500 ")
    assert row_with(text, " 1 ", "2500", " - ")
    assert total == "  total lag: 3,000"
    assert format_lag([])[1] == "  total lag: 0"


@pytest.mark.parametrize("value", ["[bold]not markup[/bold]", "a [red]b[/] c"])
def test_literal_text_stays_literal(value: str) -> None:
    """Text the commands printed with markup off (errors, model names) comes out exactly as it went in."""
    assert render(*format_ops({"error": value}, None)).strip() == f"Serving: {value}"
    assert render(format_drift({"error": value})).strip() == f"Drift: {value}"
