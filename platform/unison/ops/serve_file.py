"""Reading the Serve config file (Ray's own format, deploy/serve.yaml): one reader for `unison serve up` and for
the KubeRay manifests rendered from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class ServeFileError(ValueError):
    """The file is missing or is not a Serve config; the message names the file."""


def load_serve_config(path: Path) -> dict[str, Any]:
    """The parsed config; it must have `applications`."""
    if not path.is_file():
        raise ServeFileError(f"Serve config {path} does not exist")
    config = yaml.safe_load(path.read_text())
    if not isinstance(config, dict) or not config.get("applications"):
        raise ServeFileError(f"{path} is not a Serve config (no `applications`)")
    return config
