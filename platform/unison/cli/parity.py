"""`unison parity`: the same tickets through the batch job, the HTTP API and the stream, compared."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unison.cli.common import _fail, _settings, console, print_all
from unison.cli.format import format_parity


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
    print_all(format_parity(result.as_dict()))
    if not result.ok:
        raise typer.Exit(1)
