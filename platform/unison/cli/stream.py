"""`unison stream produce | events | tail | lag`: the Kafka side of the streaming path."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from unison.cli.common import _fail, _settings, console, print_all
from unison.cli.format import format_lag
from unison.config import Settings

app = typer.Typer(
    help="The streaming path: replay tickets into the input topic, tail any topic. The scoring itself runs in "
    "the Serve application's StreamConsumer deployment (`unison serve up`).",
    no_args_is_help=True,
)


def _kafka_address(settings: Settings) -> str:
    from unison.ops.stack import StackError, endpoints

    try:
        return endpoints(settings).kafka_bootstrap_servers
    except StackError as exc:
        _fail(str(exc))


@app.command("produce")
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


@app.command("events")
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


@app.command("tail")
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


@app.command("lag")
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
    print_all(format_lag(rows))
