"""`unison features apply | materialize | freshness | compact | get`: the Feast feature repository."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

import typer

from unison.cli.common import _fail, _settings, console, print_all
from unison.cli.format import format_compaction, format_freshness

_T = TypeVar("_T")

app = typer.Typer(
    help=(
        "The Feast feature repository (`features.repo_dir`, default features/): apply the definitions, "
        "materialize to the online store, look customers up, report freshness. Profiles: `local` (SQLite online "
        "store, file registry) or `redis` (Redis online store, SQL registry), chosen by `features.profile`. "
        "The Feast CLI keeps working in the repository directly (`cd features && feast apply`)."
    ),
    no_args_is_help=True,
)


def _features_call(action: Callable[[], _T]) -> _T:
    from unison.features.store import FeatureStoreError

    try:
        return action()
    except FeatureStoreError as exc:
        _fail(str(exc), code=2)


@app.command("apply")
def features_apply() -> None:
    """Register the entity, feature views, push source, on-demand transform and feature service
    (`feast apply` with the configured profile, paths and data directory)."""
    from unison.features import store

    settings = _settings()
    _features_call(lambda: store.apply(settings))
    console.print(f"  applied {settings.features.repo_dir} ({settings.features.profile} profile); feature service "
                  f"{store.feature_service_name()}")


@app.command("materialize")
def features_materialize(
    incremental: Annotated[bool, typer.Option("--incremental", help="Only what arrived since the last run "
                                              "(views never materialized are loaded in full).")] = False,
) -> None:
    """Load the newest value of every customer's features into the online store, up to now."""
    from unison.features import store

    settings = _settings()
    views = _features_call(lambda: store.materialize(settings, incremental=incremental))
    console.print(f"  materialized {', '.join(views)}")
    console.print(format_freshness(_features_call(lambda: store.Features(settings).freshness())))


@app.command("freshness")
def features_freshness() -> None:
    """Per feature view: TTL, how far it is materialized, and the newest event time in the online store."""
    from unison.features import store

    settings = _settings()
    console.print(format_freshness(_features_call(lambda: store.Features(settings).freshness())))


@app.command("compact")
def features_compact(
    full: Annotated[bool, typer.Option("--full", help="Also merge every compacted part under "
                                       "`features.compact_max_part_mib`, not only the small ones.")] = False,
) -> None:
    """Merge the pushed parts of the offline activity dataset into one (pushes also start this past
    `features.compact_after_parts`); skipped when another process is compacting. For cron or an operator."""
    from unison.features import push, store

    settings = _settings()
    done = _features_call(lambda: push.compact(settings, full=full))
    print_all(format_compaction(done, store.activity_dataset(settings)))


@app.command("get")
def features_get(
    customer_ids: Annotated[list[int], typer.Argument(help="Customer ids to look up.")],
) -> None:
    """Online features of some customers (one batch lookup), as the scoring paths see them."""
    from unison.features import store

    settings = _settings()
    frame = _features_call(lambda: store.Features(settings).online(customer_ids))
    console.print(frame.to_string(index=False), markup=False, highlight=False)
