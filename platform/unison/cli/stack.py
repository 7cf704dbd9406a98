"""`unison stack up | down | status` (the embedded local stack) and `unison status` (the one-screen overview)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated, Any

import typer

from unison.cli.common import _fail, _settings, console, print_all
from unison.cli.format import format_drift, format_last_parity, format_ops, format_stages, format_status
from unison.config import Settings

app = typer.Typer(
    help=(
        "The embedded local stack: a Ray head (dashboard and job server on) and a Tansu Kafka broker, each on "
        "free loopback ports. State lives in the state directory (default .unison/), so `status` and `down` "
        "work from any shell. Configure `ray.address`/`ray.dashboard_url` or `kafka.bootstrap_servers` to use "
        "an existing cluster instead; external components are probed, never started or stopped."
    ),
    no_args_is_help=True,
)


@app.command("up")
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
    console.print(format_status(stack.status(settings)))


@app.command("down")
def stack_down() -> None:
    """Stop what `stack up` started (every process of it, workers included); leave external clusters alone."""
    from unison.ops import stack

    for line in stack.down(_settings()):
        console.print(f"  {line}")


@app.command("status")
def stack_status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Probe each component. Exit code 0 when all run, 1 when any is stopped, crashed or unreachable."""
    from unison.ops import stack

    statuses = stack.status(_settings())
    if as_json:
        console.print_json(json.dumps([asdict(s) for s in statuses]))
    else:
        console.print(format_status(statuses))
    if any(s.health != "running" for s in statuses):
        raise typer.Exit(1)


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
    ops: dict[str, Any] = _ops_report(settings) if running else {"error": "the stack is not running"}
    batch = _last_batch_job(settings) if running else None
    drift = ops.get("drift") or {"error": ops.get("error", "no drift figures")}
    last_parity = _last_parity(settings)
    stages = _stage_placement(settings) if running else []
    if as_json:
        print(json.dumps({"stack": [asdict(s) for s in statuses], "ops": ops, "batch": batch, "drift": drift,
                          "parity": last_parity, "stages": stages}, indent=2, default=str))
    else:
        console.print(format_status(statuses))
        print_all(format_ops(ops, batch))
        console.print(format_drift(drift))
        console.print(format_last_parity(last_parity))
        if stages:
            console.print(format_stages(stages))
    if not running:
        raise typer.Exit(1)


# Where the Serve application is (serving) and what it reports (ops) are two rooms; these join them.


def _ops_report(settings: Settings) -> dict[str, Any]:
    from unison.ops import report
    from unison.serving import deploy

    try:
        url = deploy.url(settings)
    except deploy.ServeError as exc:
        return report.unavailable(exc)
    return report.ops_report(url)


def _stage_placement(settings: Settings) -> list[dict[str, Any]]:
    from unison.ops import report
    from unison.ops.stack import endpoints
    from unison.serving import deploy

    try:
        url = deploy.url(settings)
        applications = deploy.applications(endpoints(settings)).get("applications") or {}
    except Exception:
        return []
    return report.stage_placement(url, applications)


def _last_batch_job(settings: Settings) -> dict[str, Any] | None:
    from unison.batch.submit import last_batch_job

    return last_batch_job(settings)


def _last_parity(settings: Settings) -> dict[str, Any] | None:
    """The report the last `unison parity` (or `unison demo`) wrote in this state directory."""
    path = settings.state_dir / "parity" / "last.json"
    return json.loads(path.read_text()) if path.is_file() else None
