"""The `unison` command line: one entry point for the stack, data, models, features and the three paths."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from unison.config import ConfigError, Settings, load_settings

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    name="unison",
    help=(
        "Unison serves one Feast feature definition and one optimized ONNX model on three paths that always "
        "agree: batch (a Ray Data job), online (a Ray Serve HTTP application) and streaming (Ray Serve "
        "replicas in one Kafka consumer group).\n\n"
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
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """One screen of operational state. Today: the stack's components (see `unison stack status`)."""
    stack_status(as_json)


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
) -> None:
    """Run the platform end to end on the embedded stack and print where everything runs.

    Steps: start the stack, generate the demo data, check that the Ray node is alive and the broker
    serves the configured topics, then print addresses, data and next commands. The stack stops at the
    end unless --keep-running.
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
        console.rule("[bold]3. where everything runs")
        statuses = stack.status(settings)
        _print_status(statuses)
        if any(s.health != "running" for s in statuses):
            _fail("a stack component is not healthy; see the table above")
        ep = stack.endpoints(settings)
        console.print(f"  Ray dashboard:     {ep.ray_dashboard_url}")
        console.print(f"  Ray GCS address:   {ep.ray_address}")
        console.print(f"  Kafka bootstrap:   {ep.kafka_bootstrap_servers}")
        console.print(f"  Demo data:         {settings.data.dir}")
        console.print(f"  State and logs:    {settings.state_dir}")
        console.print(f"  Submit a job:      ray job submit --address {ep.ray_dashboard_url} -- python my_job.py")
    finally:
        if keep_running:
            console.print("  The stack keeps running; stop it with `unison stack down`.")
        else:
            console.rule("[bold]stopping the stack")
            for line in stack.down(settings):
                console.print(f"  {line}")


# ---------------------------------------------------------------------------------------------- later issues


def _not_yet(name: str, what: str) -> typer.Typer:
    """A command group whose commands are not built yet: listed in --help, and says so when used."""
    group = typer.Typer(help=f"{what} [not available in this version yet]", invoke_without_command=True)

    @group.callback()
    def _unavailable() -> None:
        _fail(f"`unison {name}` is not available in this version yet", code=2)

    return group


for _name, _what in (
    ("optimize", "Export a Hugging Face model to ONNX, fuse, quantize, validate and register it."),
    ("models", "The model registry: list, show and promote versioned artifacts."),
    ("features", "The Feast feature repository: apply definitions, materialize to the online store."),
    ("batch", "Submit the batch prediction job (Ray Data) to a Ray cluster and follow it."),
    ("serve", "Start and stop the Ray Serve application (HTTP API and streaming deployments)."),
    ("stream", "Produce tickets into Kafka, tail topics, show consumer lag."),
    ("parity", "Score the same tickets on batch, online and streaming and compare them."),
):
    app.add_typer(_not_yet(_name, _what), name=_name)


def main() -> None:
    app(prog_name="unison")


if __name__ == "__main__":
    sys.exit(main())
