"""Real servers for integration tests: one embedded stack (Ray head + Tansu broker) per test session."""

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
