"""What every command group shares: the consoles, the `--config` state, settings loading and the error exit."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console, RenderableType

from unison.config import ConfigError, Settings, load_settings

# Logs and CI are not terminals; give tables room rather than Rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 150)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 150)


class _State:
    config_file: Path | None = None


_state = _State()


def _settings() -> Settings:
    try:
        return load_settings(_state.config_file)
    except ConfigError as exc:
        _fail(str(exc), code=2)


def _fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def print_all(parts: Iterable[RenderableType]) -> None:
    """Print what a `format_*` function returned, one renderable after the other."""
    for part in parts:
        console.print(part)
