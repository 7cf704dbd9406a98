"""The CLI reads like a manual, fails with clear messages, and never needs a server for --help."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from unison.cli import app

GROUPS = ("stack", "data", "optimize", "models", "features", "batch", "serve", "stream", "parity", "status", "demo")
runner = CliRunner()


pytestmark = pytest.mark.usefixtures("clean_env")  # no UNISON_* variables, an empty working dir


def test_help_lists_every_command_group() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for group in GROUPS:
        assert group in result.output


@pytest.mark.parametrize("command", [["stack"], ["data"], ["config"], ["stack", "up"], ["data", "generate"],
                                     ["demo"], ["status"]])
def test_every_command_has_help(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: unison" in result.output


def test_parity_without_a_stack_says_what_to_start(tmp_path: Path) -> None:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "batch_predict.py").write_text("")
    result = runner.invoke(app, ["parity", "--working-dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "stack up" in result.output


def test_invalid_configuration_exits_2_naming_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNISON_KAFKA__TOPICS", '[{"name": "x", "partitions": -2}]')
    result = runner.invoke(app, ["config", "show"])
    assert result.exit_code == 2
    assert "kafka.topics.0.partitions" in result.output


def test_config_show_masks_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNISON_KAFKA__SASL_PASSWORD", "hunter2")
    result = runner.invoke(app, ["config", "show"])
    assert result.exit_code == 0
    assert "hunter2" not in result.output and "**********" in result.output


def test_stack_status_without_a_stack_exits_1() -> None:
    result = runner.invoke(app, ["stack", "status", "--json"])
    assert result.exit_code == 1
    assert '"health": "stopped"' in result.output


def test_data_generate_rejects_bad_sizes(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "generate", "--customers", "0", "--out", str(tmp_path / "d")])
    assert result.exit_code == 2
    assert "customers" in result.output


def test_features_compact_merges_the_pushed_parts_and_prints_before_and_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from unison.data import CUSTOMER_ACTIVITY_SCHEMA
    from unison.data.dataset import parts, write_dataset, write_part

    path = tmp_path / "customer_activity.parquet"
    write_dataset(path, CUSTOMER_ACTIVITY_SCHEMA, [CUSTOMER_ACTIVITY_SCHEMA.empty_table()])
    for _ in range(3):
        write_part(path, CUSTOMER_ACTIVITY_SCHEMA.empty_table())
    monkeypatch.setenv("UNISON_DATA__DIR", str(tmp_path))
    result = runner.invoke(app, ["features", "compact"])
    assert result.exit_code == 0, result.output
    assert "parts before: 4 (3 pushed, 0 compacted, 1 generated)" in result.output
    assert "parts after:  2 (0 pushed, 1 compacted, 1 generated)" in result.output
    assert len(parts(path)) == 2
    missing = runner.invoke(app, ["features", "compact"], env={"UNISON_DATA__DIR": str(tmp_path / "none")})
    assert missing.exit_code == 2 and "not a dataset directory" in missing.output
