"""`unison batch submit`: the batch prediction job on Ray Data, submitted through Ray's job SDK."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import typer

from unison.batch.config import BatchJobConfig
from unison.cli.common import _fail, _settings, console

app = typer.Typer(
    help="The batch prediction job (Ray Data): tickets in Parquet -> point-in-time features -> transform -> "
    "Predictor actors -> partitioned Parquet with a _SUCCESS manifest.",
    no_args_is_help=True,
)


# Flags the job's own options do not name the way the CLI always has.
_ALIASES = {"object_store_memory_bytes": ["--object-store-memory"]}


def _job_parameters() -> list[inspect.Parameter]:
    """One option per BatchJobConfig field, its description as help: the flags of `pipelines/batch_predict.py`,
    so the two entry points cannot drift (defaults included: an empty model, variant or device means
    `settings.model`'s, as online and stream score)."""
    params = []
    for name, field in BatchJobConfig.model_fields.items():
        annotation: Any = field.annotation
        optional = type(None) in get_args(annotation)
        inner = next((a for a in get_args(annotation) if a is not type(None)), annotation) if optional else annotation
        kind: Any = str if get_origin(inner) is Literal else inner
        choices = f" ({' | '.join(map(str, get_args(inner)))})" if get_origin(inner) is Literal else ""
        flag = "--" + name.replace("_", "-")
        decls = [f"{flag}/--no-{name.replace('_', '-')}"] if kind is bool else [flag, *_ALIASES.get(name, [])]
        option = typer.Option(*decls, help=(field.description or "") + choices)
        default = inspect.Parameter.empty if field.is_required() else field.default
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                        annotation=Annotated[kind | None if optional else kind, option]))
    return params


def batch_submit(
    *,
    working_dir: Path = Path("."),
    follow: bool = True,
    **job: Any,
) -> None:
    """Submit the batch job through Ray's job SDK to the configured cluster (the embedded stack by default),
    print the job id and the equivalent `ray job submit` command, and follow its logs.

    Paths to the registry, data and feature store are passed to the job as absolute UNISON_* variables.
    Exit code: 0 when the job succeeded, 1 when it failed (or, with --no-follow, when submission failed).
    """
    from unison.batch.submit import submit
    from unison.ops import stack

    settings = _settings()
    # The job runs in its own copy of the working dir: a relative local path must mean the same file here.
    for key in ("tickets", "output"):
        job[key] = str(Path(job[key]).resolve()) if "://" not in job[key] else job[key]
    try:
        config = BatchJobConfig.model_validate({k: v for k, v in job.items() if v is not None})
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


batch_submit.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
    *_job_parameters(),
    inspect.Parameter("working_dir", inspect.Parameter.KEYWORD_ONLY, default=Path("."), annotation=Annotated[
        Path, typer.Option(help="Directory uploaded as the job's working dir (must contain pipelines/ and "
                                "features/).")]),
    inspect.Parameter("follow", inspect.Parameter.KEYWORD_ONLY, default=True, annotation=Annotated[
        bool, typer.Option("--follow/--no-follow", help="Stream the logs until the job ends.")]),
])
app.command("submit")(batch_submit)
