"""One logging setup for every Unison process: Serve replicas, Ray actors, the batch job's scoring actors.

Ray starts those processes with the root logger unconfigured, so Python would print only warnings, without a
time or a logger name. Each of them calls `setup_logging()` first thing in its constructor: one format, and the
level from `UNISON_LOG_LEVEL` (a level name such as `DEBUG` or `warning`, or a number; default `INFO`).
tests/unit/test_architecture.py keeps `logging.basicConfig` out of every other module.
"""

from __future__ import annotations

import logging
import os

LEVEL_ENV = "UNISON_LOG_LEVEL"
DEFAULT_LEVEL = "INFO"
FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def log_level(value: str | None = None) -> int:
    """The level `value` names (default: `$UNISON_LOG_LEVEL`, else INFO). An unknown name is an error, so a typo
    never silently logs at another level."""
    raw = (os.environ.get(LEVEL_ENV, "") if value is None else value).strip() or DEFAULT_LEVEL
    if raw.isdigit():
        return int(raw)
    level = logging.getLevelNamesMapping().get(raw.upper())
    if level is None:
        names = ", ".join(n for n in logging.getLevelNamesMapping() if n not in ("WARN", "FATAL", "NOTSET"))
        raise ValueError(f"{LEVEL_ENV}={raw!r} is not a log level: use one of {names} or a number")
    return level


def setup_logging() -> None:
    """Give the root logger one stderr handler with FORMAT, at `log_level()`.

    Idempotent: once the root logger has a handler (from an earlier call, or from whoever configured logging
    first, such as a host application or `ray.init(logging_config=...)`), nothing is added or changed; that is
    `logging.basicConfig`'s rule (under logging's own lock), so every call after the first is a no-op. The level
    is still read, so a misspelt `UNISON_LOG_LEVEL` fails the process that reads it either way.
    """
    logging.basicConfig(level=log_level(), format=FORMAT)
