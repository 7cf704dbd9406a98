"""Real servers for integration tests: one embedded stack (Ray head + Tansu broker) per test session."""

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from unison.config import Settings, load_settings
from unison.ops import stack


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings whose state directory holds a running embedded stack, stopped after the session."""
    settings = load_settings(state_dir=tmp_path_factory.mktemp("stack") / "state", ray={"num_cpus": 2})
    stack.up(settings)
    try:
        yield settings
    finally:
        stack.down(settings)


@pytest.fixture(scope="session")
def endpoints(stack_settings: Settings) -> stack.Endpoints:
    return stack.endpoints(stack_settings)


@pytest.fixture
def unison_env(stack_settings: Settings, tmp_path: Path) -> dict[str, str]:
    """Environment for running the `unison` CLI in a subprocess against the session's stack."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("UNISON_")}
    env["UNISON_STATE_DIR"] = str(stack_settings.state_dir)
    return env


@pytest.fixture(scope="session")
def platform_settings(stack_settings: Settings, built_model, demo_data: Path,
                      tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The session stack plus the built model and an applied, materialized local feature store over a private
    copy of the demo data: what the scoring paths need."""
    from unison.features import store

    root = tmp_path_factory.mktemp("platform")
    shutil.copytree(demo_data, root / "data")
    settings = stack_settings.model_copy(update={
        "data": stack_settings.data.model_copy(update={"dir": root / "data"}),
        "features": stack_settings.features.model_copy(update={
            "repo_dir": Path(__file__).resolve().parents[2] / "features", "state_dir": root / "feast"}),
        "model": stack_settings.model.model_copy(update={"registry_dir": built_model.registry_root}),
    })
    store.apply(settings)
    store.materialize(settings)
    return settings
