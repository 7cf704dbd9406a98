"""The root `unison` app: the global `--config` option and the command groups, registered in help order.

Each group lives in its own module (`unison.cli.<group>`); this module only assembles them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unison.cli import batch, config, data, demo, deploy, features, models, optimize, parity, serve, stack, stream
from unison.cli.common import _state

app = typer.Typer(
    name="unison",
    help=(
        "Unison serves one Feast feature definition and one optimized ONNX model on three paths that always "
        "agree: batch (a Ray Data job), online (a Ray Serve HTTP application) and streaming (Ray Serve "
        "replicas consuming a Kafka topic's partitions by lease).\n\n"
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


@app.callback()
def _main(
    config_file: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML configuration file. Default: $UNISON_CONFIG, else ./unison.yaml."),
    ] = None,
) -> None:
    _state.config_file = config_file


app.add_typer(config.app, name="config")
app.add_typer(stack.app, name="stack")
app.command("status")(stack.status)
app.add_typer(data.app, name="data")
app.command("demo")(demo.demo)
app.command("optimize")(optimize.optimize_command)
app.add_typer(models.app, name="models")
app.add_typer(features.app, name="features")
app.add_typer(batch.app, name="batch")
app.add_typer(serve.app, name="serve")
app.add_typer(stream.app, name="stream")
app.command("parity")(parity.parity)
app.add_typer(deploy.app, name="deploy")


def main() -> None:
    app(prog_name="unison")
