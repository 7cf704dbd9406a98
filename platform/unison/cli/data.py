"""`unison data generate`: the deterministic demo data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unison.cli.common import _fail, _settings, print_all
from unison.cli.format import format_generated

app = typer.Typer(help="Demo data for support-ticket triage, generated deterministically.", no_args_is_help=True)


@app.command("generate")
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
    generate_data(
        out or settings.data.dir,
        customers if customers is not None else settings.data.customers,
        tickets if tickets is not None else settings.data.tickets,
        seed if seed is not None else settings.data.seed,
        eval_tickets,
        train_tickets,
    )


def generate_data(out: Path, customers: int, tickets: int, seed: int, eval_tickets: int, train_tickets: int) -> None:
    """Generate and print what was written (also step 2 of `unison demo`); exit 2 on bad sizes."""
    from unison.data import generate

    try:
        report = generate(out, customers=customers, tickets=tickets, seed=seed, eval_tickets=eval_tickets,
                          train_tickets=train_tickets)
    except ValueError as exc:
        _fail(str(exc), code=2)
    print_all(format_generated(report))
