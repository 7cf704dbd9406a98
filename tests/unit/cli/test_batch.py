"""`unison batch submit` takes its job flags from BatchJobConfig, as pipelines/batch_predict.py does."""

import sys
from pathlib import Path

import typer

from unison.batch.config import BatchJobConfig
from unison.cli.batch import app

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "pipelines"))
import batch_predict


def _submit() -> typer.core.TyperCommand:
    command = typer.main.get_command(app)  # a group of one command is that command
    return getattr(command, "commands", {}).get("submit", command)


def _submit_options() -> dict[str, list[str]]:
    command = _submit()
    return {param.name: [*param.opts, *param.secondary_opts] for param in command.params
            if param.name not in {"install_completion", "show_completion"}}  # typer's, on a lone command


def test_every_job_option_is_a_flag_with_the_pipeline_s_name_and_default() -> None:
    options = _submit_options()
    assert set(BatchJobConfig.model_fields) | {"working_dir", "follow"} == set(options)
    for name in BatchJobConfig.model_fields:
        assert "--" + name.replace("_", "-") in options[name]
    assert options["object_store_memory_bytes"] == ["--object-store-memory-bytes", "--object-store-memory"]
    command = _submit()
    defaults = {p.name: p.default for p in command.params}
    assert defaults["model"] is None and defaults["variant"] is None and defaults["device"] is None
    assert defaults["batch_size"] == BatchJobConfig.model_fields["batch_size"].default


def test_the_pipeline_and_the_cli_build_the_same_config() -> None:
    argv = ["--tickets", "in.parquet", "--output", "out", "--variant", "fp32", "--batch-size", "64",
            "--no-partition-by-date"]
    from_pipeline = batch_predict.parse(argv)
    assert from_pipeline.model is None and from_pipeline.device is None  # the settings' model, as online
    assert (from_pipeline.variant, from_pipeline.batch_size, from_pipeline.partition_by_date) == ("fp32", 64, False)
