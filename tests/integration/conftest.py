"""Real servers for integration tests: one embedded stack (Ray head + Tansu broker) per test session, and one
Serve deployment of deploy/serve.yaml on it for the serving and streaming tests."""

import contextlib
import functools
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from unison.config import Settings, load_settings
from unison.model import Registry
from unison.ops import stack
from unison.serving import deploy

ROOT = Path(__file__).resolve().parents[2]


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


@pytest.fixture(scope="session")
def serving_registry(platform_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """triage:1 (production), triage:2 (same weights), sentiment:1, big:1 (weights padded past small budgets),
    broken:1 (a weight file changed after registration)."""
    root = tmp_path_factory.mktemp("serving-registry")
    shutil.copytree(platform_settings.model.registry_dir, root, dirs_exist_ok=True)
    registry = Registry(root)
    registry.copy("triage:1")
    registry.copy("triage:1", "sentiment")
    big = registry.staging_dir("big")
    source = registry.load("triage:1")
    shutil.copytree(source.path, big, dirs_exist_ok=True)
    (big / "manifest.json").unlink()
    data = big / source.manifest.variants["int8"].data_files[0]
    with data.open("ab") as handle:  # ONNX Runtime reads tensors by offset: trailing bytes change only the size
        handle.write(b"\0" * (48 << 20))
    registry.register(big, source.manifest.model_copy(update={"name": "big"}))
    broken = registry.copy("triage:1", "broken")
    target = broken.path / broken.manifest.variants["int8"].data_files[0]
    content = bytearray(target.read_bytes())
    content[len(content) // 2] ^= 0xFF
    target.unlink()  # the copy is a hard link: replace the file, never write through it
    target.write_bytes(bytes(content))
    return registry


@pytest.fixture(scope="session")
def hold_before_commit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """While this file exists, every consumer loop of the session's Serve application holds between "every send
    acknowledged" and "commit" (the test hook of unison.streaming.loop; absent, it costs one stat a commit)."""
    return tmp_path_factory.mktemp("hooks") / "hold-before-commit"


@pytest.fixture(scope="session")
def serve_settings(platform_settings: Settings, serving_registry: Registry, hold_before_commit: Path,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    config = yaml.safe_load((ROOT / "deploy" / "serve.yaml").read_text())
    config["applications"][0]["runtime_env"] = {"env_vars": {"UNISON_TEST_HOLD_BEFORE_COMMIT": str(hold_before_commit)}}
    for deployment in config["applications"][0]["deployments"]:  # drift checks every second, not every minute
        if deployment["name"] == "DriftMonitor":
            deployment["user_config"].update(interval_s=1, min_rows=50)
    broken = json.loads(json.dumps(config["applications"][0]))
    broken.update(name="broken", route_prefix="/broken")
    broken["args"]["model"] = "broken:1"
    broken["args"]["feature_events"] = False  # one feature-event consumer per feature store
    broken["deployments"] = [d for d in broken["deployments"] if d["name"] != "FeatureEventConsumer"]
    for deployment in broken["deployments"]:  # keep the second application small (2 logical CPUs in all)
        deployment.pop("autoscaling_config", None)
        deployment["num_replicas"] = 1
        deployment["ray_actor_options"] = {"num_cpus": 0.01}
    config["applications"].append(broken)
    path = tmp_path_factory.mktemp("serve") / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    settings = platform_settings.model_copy(update={
        "serving": platform_settings.serving.model_copy(update={"config_file": path}),
        # Non-default Predictor settings for every serving and streaming test, parity included: a path that built
        # its Predictor from anything but `settings.model` (the batch job once did) disagrees with the others.
        "model": platform_settings.model.model_copy(update={"registry_dir": serving_registry.root,
                                                            "max_length": 48, "intra_op_threads": 1}),
    })
    deploy.up(settings, progress=lambda line: None)
    try:
        yield settings
    finally:
        deploy.down(settings)


@pytest.fixture(scope="session")
def url(serve_settings: Settings) -> str:
    return deploy.url(serve_settings)


@contextlib.contextmanager
def _ray_driver(settings: Settings, script: str, *args: str) -> Iterator[str]:
    """Run `script` as a second Ray driver on the session's cluster (argv[1] is its address, then `args`);
    yield the first line it prints once ready. What it created lives until its stdin is closed on exit."""
    import subprocess
    import sys
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as file:
        file.write(script)
    driver = subprocess.Popen([sys.executable, file.name, stack.endpoints(settings).ray_address, *args],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert driver.stdout is not None and driver.stdin is not None
        yield driver.stdout.readline().strip()
    finally:
        assert driver.stdin is not None
        driver.stdin.close()
        driver.wait(timeout=60)
        Path(file.name).unlink(missing_ok=True)


@pytest.fixture
def ray_driver(stack_settings: Settings) -> Any:
    """`with ray_driver(script, *args) as first_line:` -- a second Ray driver on the session's cluster."""
    return functools.partial(_ray_driver, stack_settings)
