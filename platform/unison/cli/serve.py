"""`unison serve up | down | status | canary | config`: the online Serve application."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from unison.cli.common import _fail, _settings, console
from unison.cli.format import format_serve_status
from unison.domain import DEFAULT_ALIAS

app = typer.Typer(
    help="The online Serve application: Unison's JSON API (/v1/predict), the Open Inference Protocol v2 (/v2) "
    "and OpenAPI docs (/docs), deployed from deploy/serve.yaml (`serving.config_file`).",
    no_args_is_help=True,
)


@app.command("up")
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


@app.command("down")
def serve_down() -> None:
    """Delete the Serve applications and shut Serve down on the cluster (the stack keeps running)."""
    from unison.ops.stack import StackError
    from unison.serving import deploy

    try:
        deploy.down(_settings())
    except (deploy.ServeError, StackError) as exc:
        _fail(str(exc))
    console.print("  Serve is down")


@app.command("status")
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
    applications = details.get("applications") or {}
    console.print(format_serve_status(applications))
    if not applications:
        return
    try:
        console.print(f"  HTTP: {deploy.url(settings)}", markup=False)
    except deploy.ServeError:
        pass


@app.command("canary")
def serve_canary(
    model: Annotated[str, typer.Argument(help="Model name, e.g. triage.")],
    version: Annotated[str | None, typer.Argument(help="Canary version. Omit with --off.")] = None,
    weight: Annotated[float, typer.Option(help="Fraction of the alias's traffic sent to the canary.")] = 0.1,
    alias: Annotated[str, typer.Option(help="The alias whose traffic is split.")] = DEFAULT_ALIAS,
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


@app.command("config")
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
