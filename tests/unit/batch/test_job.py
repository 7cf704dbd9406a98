"""Batch job logic without a cluster: schema checks, row validation, resource planning, the entrypoint."""

import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from unison.batch.job import ERROR_FIELD, BatchJobConfig, BatchSchemaError, check_schema, plan_resources, validate_rows
from unison.batch.submit import entrypoint, equivalent_command, job_environment
from unison.config import load_settings

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "pipelines"))
import batch_predict

GOOD = pa.schema([("ticket_id", pa.string()), ("customer_id", pa.int64()), ("channel", pa.string()),
                  ("subject", pa.string()), ("body", pa.string()), ("created_at", pa.timestamp("us", tz="UTC"))])


def test_schema_accepts_the_generated_tickets() -> None:
    check_schema(GOOD)


@pytest.mark.parametrize(("schema", "message"), [
    (GOOD.remove(GOOD.get_field_index("body")), "missing required column 'body'"),
    (GOOD.set(GOOD.get_field_index("customer_id"), pa.field("customer_id", pa.string())),
     "column 'customer_id' has type string"),
    (GOOD.set(GOOD.get_field_index("created_at"), pa.field("created_at", pa.string())), "'created_at'"),
])
def test_wrong_schema_names_the_column(schema: pa.Schema, message: str) -> None:
    with pytest.raises(BatchSchemaError, match=message):
        check_schema(schema)


def test_rows_that_cannot_be_scored_get_a_reason() -> None:
    now = datetime(2026, 1, 5, tzinfo=UTC)
    batch = pd.DataFrame({
        "ticket_id": ["a", None, "c", "d", "e"], "customer_id": [1, 2, None, 4, 5],
        "subject": ["s", "s", "s", " ", "s"], "body": ["b", "b", "b", "", "b"],
        "created_at": [now, now, now, now, None]})
    reasons = validate_rows(batch)[ERROR_FIELD].tolist()
    assert reasons == ["", "missing ticket_id", "missing customer_id", "empty text (subject and body)",
                       "missing created_at"]


def test_resources_are_sized_from_the_cluster() -> None:
    base = BatchJobConfig(tickets="t", output="o")
    assert plan_resources(base, {"CPU": 2}) == (1, 2, 1.0)  # laptop: one actor using both cores
    assert plan_resources(base, {"CPU": 33}) == (32, 1, 1.0)  # cluster: a join and an I/O task fit beside them
    assert plan_resources(base.model_copy(update={"gpus_per_actor": 0.5}), {"CPU": 16, "GPU": 4}) == (8, 1, 1.0)
    assert plan_resources(base.model_copy(update={"actors": 3, "parallel_rows": 4}), {"CPU": 8}) == (3, 4, 1.0)


def test_a_crowded_cluster_shrinks_the_actor_reservation_so_every_stage_fits() -> None:
    """A Serve application holding 0.85 of 2 CPUs left 1.15 free: a 1-CPU actor and 1-CPU read tasks never both
    fit and the job waited forever. The actor keeps its threads (both cores) and reserves what is left."""
    base = BatchJobConfig(tickets="t", output="o")
    actors, threads, reserved = plan_resources(base, {"CPU": 2}, {"CPU": 1.15})
    assert (actors, threads) == (1, 2)
    assert reserved + base.join_cpus + base.task_cpus <= 1.15 and reserved == 0.4
    assert plan_resources(base, {"CPU": 33}, {"CPU": 10.0}) == (9, 1, 1.0)  # sized from what is free
    shared = plan_resources(base.model_copy(update={"actors": 3}), {"CPU": 2}, {"CPU": 2})
    assert shared.actors == 3 and 3 * shared.actor_cpus + base.join_cpus + base.task_cpus <= 2
    assert plan_resources(base, {"CPU": 2}, {"CPU": 0.5}).actor_cpus == 0.05  # the floor: it waits, and says so


def test_entrypoint_and_equivalent_command(tmp_path: Path) -> None:
    config = BatchJobConfig(tickets="s3://bucket/t.parquet", output="/out", actors=2, partition_by_date=False)
    assert entrypoint(config) == ("python pipelines/batch_predict.py --tickets s3://bucket/t.parquet --output /out "
                                  "--actors 2 --no-partition-by-date")
    settings = load_settings(features={"profile": "redis", "redis_connection": "r:6379,password=s3cret"})
    env = job_environment(settings)
    assert Path(env["UNISON_MODEL__REGISTRY_DIR"]).is_absolute()
    command = equivalent_command("http://head:8265", tmp_path, env, config)
    assert command.startswith("ray job submit --address http://head:8265 --working-dir ")
    assert "s3cret" not in command and "password=***" in command


def test_pipeline_flags_map_to_the_config() -> None:
    config = batch_predict.parse(["--tickets", "in", "--output", "out", "--batch-size", "64", "--gpus-per-actor",
                                  "0.25", "--no-partition-by-date"])
    assert (config.batch_size, config.gpus_per_actor, config.partition_by_date) == (64, 0.25, False)
    with pytest.raises(SystemExit):
        batch_predict.parse(["--output", "out"])  # --tickets is required


def test_the_scoring_actors_run_the_predictor_the_serving_paths_run() -> None:
    """Non-default `model` settings reach the batch actors exactly as they reach the online and streaming
    replicas (`PredictorOptions.from_config(settings.model)`); the job overrides only its actor threads, and a
    variant or device only when given. The actors once built their Predictor by hand and dropped these."""
    from unison.batch.job import predictor_options
    from unison.model.predictor import PredictorOptions

    settings = load_settings(model={"variant": "fp32", "execution": "buckets", "max_length": 64,
                                    "intra_op_threads": 1, "bucket_size": 8})
    serving = PredictorOptions.from_config(settings.model)
    assert (serving.variant, serving.execution, serving.max_length, serving.intra_op_threads, serving.bucket_size) \
        == ("fp32", "buckets", 64, 1, 8)
    batch = predictor_options(settings, BatchJobConfig(tickets="t", output="o", parallel_rows=3))
    assert batch == serving.replace(parallel_rows=3)
    flagged = predictor_options(settings, BatchJobConfig(tickets="t", output="o", variant="int8", device="cuda",
                                                         cpus_per_actor=2))
    assert flagged == serving.replace(variant="int8", device="cuda", parallel_rows=2)
