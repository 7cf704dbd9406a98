"""`unison batch submit`: the batch prediction job on Ray Data, submitted through Ray's job SDK."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unison.cli.common import _fail, _settings, console

app = typer.Typer(
    help="The batch prediction job (Ray Data): tickets in Parquet -> point-in-time features -> transform -> "
    "Predictor actors -> partitioned Parquet with a _SUCCESS manifest.",
    no_args_is_help=True,
)


@app.command("submit")
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
