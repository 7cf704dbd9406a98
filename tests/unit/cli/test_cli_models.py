"""`unison models` against a real registry."""

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from unison.cli import app

runner = CliRunner()


@pytest.fixture
def registry_env(built_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    copy = tmp_path / "registry"
    shutil.copytree(built_model.registry_root, copy)
    monkeypatch.setenv("UNISON_MODEL__REGISTRY_DIR", str(copy))
    monkeypatch.chdir(tmp_path)
    return copy


def test_list_show_promote_verify(registry_env: Path, built_model) -> None:
    listing = runner.invoke(app, ["models", "list"])
    assert listing.exit_code == 0 and "triage" in listing.output and "production" in listing.output
    show = runner.invoke(app, ["models", "show", "triage:production"])
    assert show.exit_code == 0 and "int8" in show.output and "gate passed" in show.output
    promote = runner.invoke(app, ["models", "promote", built_model.ref, "--alias", "canary"])
    assert promote.exit_code == 0 and "canary -> 1" in promote.output
    assert runner.invoke(app, ["models", "verify", "triage"]).exit_code == 0


def test_errors_name_what_exists(registry_env: Path) -> None:
    missing = runner.invoke(app, ["models", "show", "triage:9"])
    assert missing.exit_code == 2 and "versions: 1" in missing.output
    (registry_env / "triage" / "1" / "fp32" / "model.onnx").write_bytes(b"tampered")
    verify = runner.invoke(app, ["models", "verify", "triage:1"])
    assert verify.exit_code == 1 and "fp32/model.onnx" in verify.output
