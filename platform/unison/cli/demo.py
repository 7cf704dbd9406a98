"""`unison demo`: the platform end to end on the embedded stack, all three paths checked against each other.

The `_demo_*` steps score a few tickets themselves, to show each step's result.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from unison.cli.common import _fail, _settings, console, print_all
from unison.cli.data import generate_data
from unison.cli.format import format_freshness, format_parity, format_status
from unison.config import Settings
from unison.domain import DEFAULT_ALIAS


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
        generate_data(
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
        print_all(format_parity(parity_report.as_dict()))
        console.rule("[bold]8. where everything runs")
        statuses = stack.status(settings)
        console.print(format_status(statuses))
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


def _demo_model(settings: Settings) -> None:
    from unison.features.offline import load_labelled
    from unison.model import Registry
    from unison.model.optimize import OptimizeOptions, optimize

    registry = Registry(settings.model.registry_dir)
    result = optimize(OptimizeOptions(name=settings.model.name, data_dir=settings.data.dir, eval_rows=500,
                                      bench_rounds=15), registry, progress=lambda m: console.print(f"  {m}"))
    assert result.artifact is not None
    if DEFAULT_ALIAS not in registry.aliases(settings.model.name):
        registry.promote(settings.model.name, result.artifact.manifest.version)
    report = result.artifact.path / "report" / "benchmark.md"
    if report.exists():
        console.print(report.read_text(), markup=False, highlight=False)
    sample = load_labelled(settings.data.dir, "eval").head(5)  # labelled rows carry their point-in-time features
    predictor, scored = _score(settings, sample, online=False)
    table = Table(title=f"Predictor {predictor.name}:{predictor.version} ({predictor.variant}, "
                  f"{predictor.execution} execution)", title_justify="left")
    for column in ("ticket", "subject", "predicted", "label", "priority", "label priority"):
        table.add_column(column)
    for (_, row), prediction in zip(sample.iterrows(), scored.records(), strict=True):
        table.add_row(row["ticket_id"], row["subject"][:40], prediction.category, row["category"],
                      f"{prediction.priority:.2f}", f"{row['priority']:.2f}")
    console.print(table)


def _demo_features(settings: Settings) -> None:
    import pandas as pd

    from unison.features import store

    store.apply(settings)
    store.materialize(settings)
    console.print(format_freshness(store.Features(settings).freshness()))
    tickets = pd.read_parquet(settings.data.dir / "tickets.parquet").head(5)
    _, scored = _score(settings, tickets, online=True)
    table = Table(title=f"Online features -> transform -> Predictor ({store.feature_service_name()})",
                  title_justify="left")
    for column in ("ticket", "customer", "plan", "open tickets", "predicted", "priority"):
        table.add_column(column)
    for (_, row), prediction in zip(scored.tickets.iterrows(), scored.records(), strict=True):
        table.add_row(prediction.ticket_id, str(prediction.customer_id), str(row["plan"]), str(row["open_tickets"]),
                      prediction.category, f"{prediction.priority:.2f}")
    console.print(table)


def _score(settings: Settings, tickets: Any, online: bool) -> tuple[Any, Any]:
    """The demo's tickets through the one data plane, with the Predictor the serving paths build."""
    from unison.features.store import Features
    from unison.model import Predictor, PredictorOptions, Registry
    from unison.model.scoring import DataPlane, Failure

    ref = f"{settings.model.name}:{DEFAULT_ALIAS}"
    predictor = Predictor.from_registry(Registry(settings.model.registry_dir), ref,
                                        PredictorOptions.from_config(settings.model))
    [outcome] = DataPlane("demo", Features(settings) if online else None).score(predictor, tickets)
    if isinstance(outcome, Failure):
        _fail(f"scoring the demo's tickets failed: {outcome.message}")
    return predictor, outcome


def _demo_batch(settings: Settings) -> float:
    from unison.batch.job import BatchJobConfig
    from unison.batch.submit import submit
    from unison.ops.stack import endpoints

    working_dir = Path.cwd()
    if not (working_dir / "pipelines" / "batch_predict.py").is_file():
        _fail(f"{working_dir} has no pipelines/batch_predict.py: run the demo from the project directory")
    output = (settings.state_dir / "demo" / "predictions").resolve()  # the job runs in its own working dir
    config = BatchJobConfig(tickets=str((settings.data.dir / "tickets.parquet").resolve()), output=str(output))
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
