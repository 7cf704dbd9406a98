"""Session-wide test assets: a small generated data set and one real optimized model in a registry.

Building the model is the slowest fixture (export, fusion, quantization, gates: about half a minute on two
cores), so every test that needs an artifact shares this one; tests that modify an artifact copy it first.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from unison.data import generate


@dataclass(frozen=True)
class BuiltModel:
    registry_root: Path
    data_dir: Path
    ref: str
    result: object  # OptimizeResult


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No UNISON_* variables and an empty working directory (no ./unison.yaml), so a test sees the defaults
    whatever the shell running it has set."""
    import os

    for key in list(os.environ):
        if key.startswith("UNISON_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data")
    generate(out, customers=300, tickets=2_000, seed=11, eval_tickets=400, train_tickets=1_500)
    return out


@pytest.fixture(scope="session")
def built_model(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> Iterator[BuiltModel]:
    from unison.model.optimize import OptimizeOptions, optimize
    from unison.model.registry import Registry

    root = tmp_path_factory.mktemp("registry")
    registry = Registry(root)
    options = OptimizeOptions(data_dir=demo_data, eval_rows=200, bench_rounds=3, bench_lengths=[16, 64],
                              bench_batch=4, bench_batch_tokens=32)
    result = optimize(options, registry)
    assert result.artifact is not None
    registry.promote("triage", result.artifact.manifest.version)
    yield BuiltModel(root, demo_data, result.artifact.ref, result)
