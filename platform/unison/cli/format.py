"""What the commands print, as pure functions: data in, a string or Rich renderables out; nothing is printed here.

A `format_*` function that returns a list gives the renderables in the order they are printed, one per
`console.print` (`unison.cli.common.print_all`). Text the commands printed with `markup=False` is escaped here, so
it prints literally either way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import RenderableType
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from unison.data.dataset import Compaction
    from unison.data.generate import GenerationReport
    from unison.features.store import ViewFreshness
    from unison.model.manifest import Manifest
    from unison.ops.stack import ComponentStatus
    from unison.streaming.lag import PartitionLag

HEALTH_COLORS = {"running": "green", "crashed": "red", "unhealthy": "red", "unreachable": "red", "stopped": "yellow"}
DRIFT_COLORS = {"stable": "green", "moderate": "yellow", "significant": "red"}


def format_ms(value: float | None) -> str:
    """A latency in milliseconds, `-` when there is none."""
    return "-" if value is None else f"{value:.1f} ms"


# ---------------------------------------------------------------------------------------------- stack and status


def format_status(statuses: Sequence[ComponentStatus]) -> Table:
    """The stack table: one row per component, health colored."""
    table = Table(title="Unison stack", title_justify="left")
    for column in ("component", "kind", "health", "address", "http", "pid"):
        table.add_column(column, no_wrap=True)
    table.add_column("detail")
    for s in statuses:
        table.add_row(
            s.name, "embedded" if s.managed else "external", f"[{HEALTH_COLORS[s.health]}]{s.health}[/]", s.address,
            s.url or "-", str(s.pid or "-"), s.detail,
        )
    return table


def format_ops(ops: Mapping[str, Any], batch: Mapping[str, Any] | None) -> list[RenderableType]:
    """The live figures of `GET /v1/ops` (deployments, models loaded, each path's throughput and latency, feature
    freshness) and the last batch job; one line naming the problem when there are no figures."""
    if "error" in ops:
        return [escape(f"Serving: {ops['error']}")]
    parts: list[RenderableType] = []
    table = Table(title=f"Serve application at {ops.get('url')} ({'ready' if ops.get('ready') else 'NOT ready'})",
                  title_justify="left")
    for column in ("application", "deployment", "status", "replicas"):
        table.add_column(column, no_wrap=True)
    for row in ops.get("deployments") or []:
        color = "green" if row["status"] == "HEALTHY" else "yellow"
        table.add_row(row["application"], row["deployment"], f"[{color}]{row['status']}[/]",
                      f"{row['running']}/{row['replicas']}")
    parts.append(table)
    models = ops.get("models") or {}
    cache = models.get("cache_bytes")
    parts.append(escape(f"Models loaded (one Model replica): {', '.join(models.get('loaded') or []) or '-'}; default "
                        f"{models.get('default_id')}; cache {(cache or 0) / 2**20:.0f} MiB"))
    paths = Table(title="Paths (online and stream: the last minute)", title_justify="left")
    for column in ("path", "throughput", "p50", "p99", "errors / dead letters", "lag"):
        paths.add_column(column, no_wrap=True)
    online = ops.get("online") or {}
    paths.add_row("online", f"{online.get('requests_per_s', 0):.1f} req/s, {online.get('tickets_per_s', 0):.1f} "
                  "tickets/s", format_ms(online.get("p50_ms")), format_ms(online.get("p99_ms")),
                  str(online.get("errors", 0)), "-")
    stream = ops.get("stream")
    if stream:
        p99 = stream.get("p99_event_s")
        paths.add_row("stream", f"{stream.get('records_per_s') or 0:.1f} records/s", "-",
                      "-" if p99 is None else f"{p99:.2f} s", str(stream.get("dead_letters") or 0),
                      "-" if stream.get("lag") is None else f"{stream['lag']:,.0f}")
    if batch:
        rate = batch.get("rows_per_second")
        paths.add_row("batch", f"{rate:,.0f} rows/s (last job)" if rate else "-", "-", "-",
                      f"{batch['job_id']} {batch['status']}", "-")
    parts.append(paths)
    features = ops.get("features") or []
    if features:
        parts.append(escape("Feature freshness: " + ", ".join(f"{f['view']} {f['age_s']:,.0f} s ago"
                                                              for f in features)))
    return parts


def format_drift(drift: Mapping[str, Any]) -> RenderableType:
    """Input drift per model and path (the largest three PSIs), or the line saying why there are no figures."""
    if "error" in drift:
        return escape(f"Drift: {drift['error']}")
    config = drift.get("config") or {}
    table = Table(title=f"Input drift (PSI vs training reference; window {config.get('window_s', 0):.0f} s, "
                        f"moderate >= {config.get('moderate')}, significant >= {config.get('significant')})",
                  title_justify="left")
    for column in ("model", "path", "rows", "status", "largest PSI"):
        table.add_column(column, no_wrap=True)
    for row in drift.get("models") or []:
        top = sorted(row["psi"].items(), key=lambda item: -item[1])[:3]
        table.add_row(row["model"], row["path"], f"{row['rows']:,}",
                      f"[{DRIFT_COLORS.get(row['status'], 'dim')}]{row['status']}[/]",
                      ", ".join(f"{name} {value:.3f}" for name, value in top) or "-")
    if not drift.get("models"):
        table.add_row("-", "-", "0", "no traffic scored yet" if drift.get("computed_at") else "not computed yet",
                      "-")
    return table


def format_last_parity(report: Mapping[str, Any] | None) -> str:
    """One line on the last parity check run here (its JSON report), or that there was none."""
    if report is None:
        return "Parity: never checked here (`unison parity`)"
    verdict = "[green]0 mismatches[/]" if report["ok"] else \
        f"[red]{len(report['problems'])} problem(s)[/]: {report['problems'][0]}"
    return f"Parity (last check, snapshot {report['snapshot']}, {report['tickets']} tickets): {verdict}"


def format_stages(rows: Sequence[Mapping[str, Any]]) -> Table:
    """Where each stage of a sharded model runs: bundle, node, pid, GPUs, provider and weight size."""
    table = Table(title="Sharded model stages (one placement-group bundle each)", title_justify="left")
    for column in ("application", "model", "stage", "bundle", "strategy", "node", "pid", "GPUs", "provider",
                   "weights"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(row["application"], row["model"], str(row["stage"]), str(row["bundle"]),
                      row["strategy"], row["node_id"][:12], str(row["pid"]), ",".join(row["gpu_ids"]) or "-",
                      row["provider"], f"{row['weight_bytes'] / 2**20:.1f} MiB")
    return table


# ---------------------------------------------------------------------------------------------- parity


def format_parity(report: Mapping[str, Any]) -> list[RenderableType]:
    """A parity report (`ParityReport.as_dict()`): each path, each pair's mismatches, the verdict, the problems."""
    paths = Table("path", "rows", "rows/s", "model", "feature service")
    for name, info in report["paths"].items():
        paths.add_row(name, f"{info['rows']:,}", f"{info['rows_per_second']:,.1f}", ", ".join(info["models"]),
                      ", ".join(info["feature_services"]))
    pairs = Table("paths", "missing", "inputs", "category", "probabilities", "priority", "max |dp|",
                  "max |d priority|")
    for name, pair in report["pairs"].items():
        m = pair["mismatches"]
        pairs.add_row(name.replace("~", " vs "), *(str(m[k]) for k in ("missing", "input_digest", "category",
                                                                        "probabilities", "priority")),
                      f"{pair['max_probability_diff']:.2e}", f"{pair['max_priority_diff']:.2e}")
    verdict = "[green]parity: all paths agree[/green]" if report["ok"] else "[red]parity: MISMATCH[/red]"
    return [paths, pairs, f"  {report['tickets']:,} tickets, tolerance {report['tolerance']:g}: {verdict}",
            *(f"  - {problem}" for problem in report["problems"])]


# ---------------------------------------------------------------------------------------------- data and features


def format_generated(report: GenerationReport) -> list[RenderableType]:
    """What `unison data generate` wrote: rows and file per table, then the time and tickets/s."""
    table = Table(title=f"Generated in {report.out_dir}", title_justify="left")
    table.add_column("table")
    table.add_column("rows", justify="right")
    table.add_column("file")
    for name, path in report.files.items():
        table.add_row(name, f"{report.rows[name]:,}", str(path))
    return [table, f"  {report.seconds:.2f}s, {report.tickets_per_second:,.0f} tickets/s"]


def format_freshness(rows: Sequence[ViewFreshness]) -> Table:
    """Per feature view: TTL, how far it is materialized, the newest event time online."""
    table = Table(title="Feature freshness", title_justify="left")
    for column in ("feature view", "ttl", "materialized until", "newest event"):
        table.add_column(column)
    for row in rows:
        table.add_row(row.view, str(row.ttl or "none"), str(row.materialized_until or "never"),
                      str(row.newest_event_time or "-"))
    return table


def format_part_counts(names: Sequence[str]) -> str:
    """A dataset's parts by kind: `4 (3 pushed, 0 compacted, 1 generated)`, plus `, N other` when there are any."""
    from unison.data.dataset import BASE_PART, COMPACTED_PREFIX, PUSH_PREFIX

    pushed = sum(n.startswith(PUSH_PREFIX) for n in names)
    compacted = sum(n.startswith(COMPACTED_PREFIX) for n in names)
    generated = list(names).count(BASE_PART)
    other = len(names) - pushed - compacted - generated
    return f"{len(names)} ({pushed} pushed, {compacted} compacted, {generated} generated" + (
        f", {other} other)" if other else ")")


def format_compaction(done: Compaction, dataset: Path) -> list[str]:
    """What one compaction of `dataset` did: the parts before and after, what was merged, retired and deleted."""
    if done.skipped:
        return [f"  another process is compacting {dataset}; nothing done ({len(done.parts_before)} parts)"]
    lines = [f"  parts before: {format_part_counts(done.parts_before)}"]
    if done.recovered:
        lines.append(f"  finished an interrupted compaction: retired {len(done.recovered)} merged parts")
    if done.output:
        lines.append(f"  merged {len(done.merged)} parts ({done.rows_in:,} rows, {done.rows_out:,} distinct) "
                     f"into {done.output}")
    else:
        lines.append("  nothing to merge")
    lines.append(f"  parts after:  {format_part_counts(done.parts_after)}; deleted {done.deleted} retired or stale "
                 "files")
    return lines


# ---------------------------------------------------------------------------------------------- models


def format_models(root: Path, entries: Sequence[tuple[str, str, Mapping[str, str], Manifest | Exception]]) -> Table:
    """The registry listing: one row per (name, version, the name's aliases, its manifest or why it is broken)."""
    table = Table(title=f"Model registry {root}", title_justify="left")
    for column in ("model", "version", "aliases", "created", "kind", "variants (MB, accuracy)"):
        table.add_column(column)
    for name, version, aliases, manifest in entries:
        if isinstance(manifest, Exception):  # a broken artifact is listed, not fatal
            table.add_row(name, version, "", "", "[red]broken[/]", str(manifest))
            continue
        tags = ", ".join(sorted(a for a, v in aliases.items() if v == version))
        variants = ", ".join(
            f"{v} ({i.size_bytes / 1e6:.0f}" + (f", {i.quality['accuracy']:.1%})" if "accuracy" in i.quality
                                                  else ")")
            for v, i in manifest.variants.items())
        table.add_row(name, version, tags, manifest.created_at, manifest.kind, variants)
    return table


def format_manifest(manifest: Manifest) -> list[str]:
    """One version: source, inputs and outputs, labels, transform, head, and each variant with its gate."""
    lines = [
        f"[bold]{manifest.name}:{manifest.version}[/] ({manifest.kind}) created {manifest.created_at}",
        f"  source: {manifest.source_model.get('path')} ({manifest.source_model.get('architecture')})",
        f"  inputs: {', '.join(f'{t.name}{t.shape}' for t in manifest.inputs)}",
        f"  outputs: {', '.join(f'{t.name}{t.shape}' for t in manifest.outputs)}",
    ]
    if manifest.labels:
        lines.append(f"  labels: {', '.join(manifest.labels)}")
    if manifest.transform_version:
        lines.append(f"  transform version {manifest.transform_version}; features: "
                     f"{', '.join(manifest.numeric_features)}")
    if manifest.head:
        lines.append(escape(f"  head: {manifest.head.get('method')}"))
    for variant, info in manifest.variants.items():
        checks = "; ".join(f"{c.metric} {c.value:.4f} {c.comparison} {c.threshold}" for c in info.gate)
        lines.append(f"  [bold]{variant}[/] {info.size_bytes / 1e6:.1f} MB: {info.description}")
        lines.append(f"    gate passed: {checks}")
    return lines


# ---------------------------------------------------------------------------------------------- serve and stream


def format_serve_status(applications: Mapping[str, Any]) -> RenderableType:
    """Serve's applications and deployments (status, running/total replicas, message), or that there are none."""
    if not applications:
        return "  no Serve applications (run `unison serve up`)"
    table = Table("application", "deployment", "status", "replicas", "message")
    for name, application in applications.items():
        table.add_row(name, "", str(application.get("status")), "", str(application.get("message") or "")[:80])
        for dep_name, dep in (application.get("deployments") or {}).items():
            replicas = dep.get("replicas") or []
            running = sum(1 for r in replicas if r.get("state") == "RUNNING")
            table.add_row("", dep_name, str(dep.get("status")), f"{running}/{len(replicas)}",
                          str(dep.get("message") or "")[:80])
    return table


def format_lag(rows: Sequence[PartitionLag]) -> list[RenderableType]:
    """Consumer lag per partition, then the total."""
    table = Table("group", "topic", "partition", "end offset", "committed", "lag")
    for row in rows:
        table.add_row(row.group, row.topic, str(row.partition), str(row.end_offset),
                      "-" if row.committed is None else str(row.committed), str(row.lag))
    return [table, f"  total lag: {sum(r.lag for r in rows):,}"]

