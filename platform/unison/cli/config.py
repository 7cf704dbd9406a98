"""`unison config`: the configuration in effect and its documented schema."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from unison.cli.common import _settings, console
from unison.config import Settings

app = typer.Typer(help="Show the configuration in effect and its documented schema.", no_args_is_help=True)


@app.command("show")
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
