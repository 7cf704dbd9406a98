"""The private workspace every benchmark runs in: its own state, data and feature store under a temporary
directory (so it never touches the user's stack), with the project's feature repository and Serve config."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def workspace(prefix: str, customers: int, tickets: int, seed: int = 5) -> tuple[Path, Any]:
    """(directory, settings) with generated data and applied, materialized features."""
    from unison.config import load_settings
    from unison.data import generate
    from unison.features import store

    work = Path(tempfile.mkdtemp(prefix=prefix))
    base = load_settings()
    settings = base.model_copy(update={
        "state_dir": work / "state",
        "data": base.data.model_copy(update={"dir": work / "data"}),
        "features": base.features.model_copy(update={"repo_dir": ROOT / "features", "state_dir": work / "feast"}),
        "serving": base.serving.model_copy(update={"config_file": ROOT / "deploy" / "serve.yaml"}),
    })
    print(f"generating {tickets:,} tickets for {customers:,} customers in {work}", flush=True)
    generate(settings.data.dir, customers=customers, tickets=tickets, seed=seed)
    store.apply(settings)
    store.materialize(settings)
    return work, settings


def save_chart(fig: Any, path: Path) -> None:
    """Lay out, write and name a chart (every benchmark's charts look and land alike)."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"chart: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
