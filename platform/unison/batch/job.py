"""The batch prediction job: Parquet tickets -> point-in-time features (Feast) -> the one transform -> Predictor
in an actor pool -> partitioned Parquet, published atomically with a `_SUCCESS` manifest.

Runs on any Ray cluster (it is what `pipelines/batch_predict.py` calls). Execution streams: blocks flow from the
reader through the join and the scorers to the writer with bounded memory; nothing is materialized whole.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs

from unison.batch.config import BatchJobConfig
from unison.config import Settings
from unison.domain import MAX_TEXT_CHARS
from unison.ops import metrics
from unison.ops.logs import setup_logging

log = logging.getLogger("unison.batch")

REQUIRED_COLUMNS: dict[str, Callable[[pa.DataType], bool]] = {
    "ticket_id": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
    "customer_id": pa.types.is_integer,
    "subject": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
    "body": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
    "created_at": pa.types.is_timestamp,
}
OPTIONAL_COLUMNS = ("channel",)
ERROR_FIELD = "_error"
SUCCESS_FILE = "_SUCCESS"
MIN_ACTOR_CPUS = 0.05  # the smallest reservation a scoring actor shrinks to on a crowded cluster


class BatchSchemaError(ValueError):
    """The input table lacks a column or has it with the wrong type; the message names it."""


# ---------------------------------------------------------------------------------------------- validation


def check_schema(schema: pa.Schema) -> None:
    """Fail fast, before any work, naming the first missing or mistyped column."""
    names = set(schema.names)
    for column, accepts in REQUIRED_COLUMNS.items():
        if column not in names:
            raise BatchSchemaError(f"input is missing required column {column!r} (has: {', '.join(schema.names)})")
        kind = schema.field(column).type
        if not accepts(kind):
            raise BatchSchemaError(f"input column {column!r} has type {kind}, which is not accepted")


def validate_rows(batch: pd.DataFrame) -> pd.DataFrame:
    """Add ERROR_FIELD: empty when the row can be scored, else the reason (missing ids, empty text, ...)."""
    reasons = pd.Series("", index=batch.index, dtype="object")

    def flag(mask: pd.Series, reason: str) -> None:
        reasons.loc[mask & (reasons == "")] = reason

    ticket_id = batch["ticket_id"]
    flag(ticket_id.isna() | (ticket_id.astype(str).str.strip() == ""), "missing ticket_id")
    flag(batch["customer_id"].isna(), "missing customer_id")
    flag(batch["created_at"].isna(), "missing created_at")
    text = batch["subject"].fillna("").astype(str).str.strip() + batch["body"].fillna("").astype(str).str.strip()
    flag(text == "", "empty text (subject and body)")
    flag(text.str.len() > MAX_TEXT_CHARS, f"text longer than {MAX_TEXT_CHARS} characters")
    return batch.assign(**{ERROR_FIELD: reasons})


# ---------------------------------------------------------------------------------------------- stages

_FEATURES_CACHE: dict[str, Any] = {}


def join_features(batch: pd.DataFrame, settings_json: str) -> pd.DataFrame:
    """Point-in-time join of a block through Feast (one FeatureStore per worker process, reused)."""
    from unison.features.store import Features

    features = _FEATURES_CACHE.get(settings_json)
    if features is None:
        features = _FEATURES_CACHE[settings_json] = Features(Settings.model_validate_json(settings_json))
    joined = features.historical(batch.drop(columns=[ERROR_FIELD]), timestamp_column="created_at")
    return joined


class Scorer:
    """A scoring actor: one verified artifact and Predictor for its lifetime; each block through the data plane."""

    def __init__(self, settings_json: str, config_json: str, context: dict[str, Any]) -> None:
        from unison.model import Registry
        from unison.model.predictor import Predictor
        from unison.model.scoring import DataPlane

        # Actor processes log at WARNING by default; the rows/s line is part of the job's visible progress.
        setup_logging()
        settings = Settings.model_validate_json(settings_json)
        config = BatchJobConfig.model_validate_json(config_json)
        self.predictor = Predictor.from_registry(Registry(settings.model.registry_dir), config.model,
                                                 predictor_options(settings, config))
        self.dataplane = DataPlane("batch")  # the rows carry their point-in-time features
        self.context = context
        self.rows = 0
        self.started = time.perf_counter()

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        started = time.perf_counter()
        from unison.model.scoring import Failure

        [outcome] = self.dataplane.score(self.predictor, batch)
        if isinstance(outcome, Failure):  # the block is retried by Ray Data, then fails the job
            raise RuntimeError(f"a block of {len(batch)} rows failed: {outcome.message}") from outcome.cause
        model = f"{self.predictor.name}:{self.predictor.version}"
        metrics.observe("unison_batch_block_duration_seconds", time.perf_counter() - started, model=model)
        metrics.inc("unison_batch_rows_total", len(batch), model=model)
        created = pd.to_datetime(batch["created_at"], utc=True)
        out = outcome.frame().drop(columns=["tokens"]).assign(
            created_at=created.to_numpy(),
            model_name=self.predictor.name,
            model_version=self.predictor.version,
            variant=self.predictor.variant,
            feature_service=self.context["feature_service"],
            features_as_of=pd.Timestamp(self.context["features_as_of"]) if self.context["features_as_of"]
            else pd.NaT,
            run_id=self.context["run_id"],
            created_date=created.dt.strftime("%Y-%m-%d").to_numpy(),
        )
        self.rows += len(out)
        elapsed = time.perf_counter() - self.started
        if self.rows // 10_000 != (self.rows - len(out)) // 10_000 or self.rows <= len(out):
            log.info("scored %d rows (%.0f rows/s in this actor)", self.rows, self.rows / max(elapsed, 1e-9))
        return out


def predictor_options(settings: Settings, config: BatchJobConfig) -> Any:
    """The Predictor options of the scoring actors: the `model` section, as online and stream use it, with only
    what the job itself decides overridden (variant and device when given, the actor's threads)."""
    from unison.model.predictor import PredictorOptions

    overrides: dict[str, Any] = {"parallel_rows": config.parallel_rows or max(1, math.ceil(config.cpus_per_actor))}
    if config.variant is not None:
        overrides["variant"] = config.variant
    if config.device is not None:
        overrides["device"] = config.device
    return PredictorOptions.from_config(settings.model, **overrides)


# ---------------------------------------------------------------------------------------------- run


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    return pafs.FileSystem.from_uri(uri)


class ResourcePlan(NamedTuple):
    actors: int
    parallel_rows: int  # threads inside each actor: the cores it may use
    actor_cpus: float  # the logical CPUs Ray reserves for each actor


def plan_resources(config: BatchJobConfig, cluster: dict[str, float],
                   available: dict[str, float] | None = None) -> ResourcePlan:
    """Scoring actors and their reservation, sized from the CPUs free now (`available`, default: all of
    `cluster`). One join task and one read/validate/write task must fit beside the actors, or the pipeline waits
    forever for a CPU (a Serve application on the same small cluster holds part of it): when they do not, the
    actors' reservation shrinks, never their threads. Laptop (<= 4 CPUs): one actor using every core. Cluster:
    as many actors as fit, or one per GPU share when GPUs are asked for."""
    cpus = float(cluster.get("CPU", 1))
    free = float((available if available is not None else cluster).get("CPU", 0.0))
    stages = config.join_cpus + config.task_cpus
    if config.actors is not None:
        actors = config.actors
    elif config.gpus_per_actor > 0:
        actors = max(1, int(cluster.get("GPU", 0) // config.gpus_per_actor))
    else:
        actors = max(1, int((free - stages) // config.cpus_per_actor))
    actor_cpus = config.cpus_per_actor
    if actors * actor_cpus + stages > free:
        actor_cpus = max(MIN_ACTOR_CPUS, math.floor(round((free - stages) / actors * 100, 6)) / 100)
        if actors * actor_cpus + stages > free:
            log.warning("%.2f CPUs free: %d actor(s) x %.2f + %.2f for the other stages do not fit; the job waits "
                        "for CPUs (lower join_cpus/task_cpus or free the cluster)", free, actors, actor_cpus, stages)
    if config.parallel_rows is not None:
        return ResourcePlan(actors, config.parallel_rows, actor_cpus)
    if cpus <= 4 and actors == 1:
        return ResourcePlan(actors, max(1, int(cpus)), actor_cpus)
    return ResourcePlan(actors, max(1, math.ceil(config.cpus_per_actor)), actor_cpus)


def run(config: BatchJobConfig, settings: Settings) -> dict[str, Any]:
    """Run the job on the connected Ray cluster; return the manifest also written as `_SUCCESS`."""
    import ray
    from ray.data import ActorPoolStrategy, DataContext, ExecutionResources

    from unison.features.store import Features, feature_service_name
    from unison.model import Registry

    started = datetime.now(UTC)
    clock = time.perf_counter()
    run_id = config.run_id or f"{started:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    # What the job leaves empty is what the online and streaming paths use: the `model` section.
    config = config.model_copy(update={"model": config.model or settings.model.ref,
                                       "variant": config.variant or settings.model.variant,
                                       "device": config.device or settings.model.device})
    if not ray.is_initialized():
        ray.init(log_to_driver=True)

    # Everything that can be wrong is checked before the first block moves.
    artifact = Registry(settings.model.registry_dir).load(config.model, [config.variant])
    features = Features(settings)
    activity = next((f for f in features.freshness() if f.view == "customer_activity"), None)
    context = {"run_id": run_id, "feature_service": feature_service_name(),
               "features_as_of": activity.newest_event_time.isoformat() if activity and activity.newest_event_time
               else None}
    in_fs, in_path = _filesystem(config.tickets)
    tasks = {"num_cpus": config.task_cpus}
    data_context = DataContext.get_current()
    # Ray Data's V2 Parquet read lists files in its own task that always reserves a whole CPU (no argument
    # reaches it): next to the scoring actor on a crowded 2-CPU cluster it never got scheduled and the job hung.
    # V1 lists on the driver and reads in tasks that take `task_cpus`.
    data_context.use_datasource_v2 = False
    dataset = ray.data.read_parquet(in_path, filesystem=in_fs, ray_remote_args=tasks)
    check_schema(dataset.schema().base_schema)
    columns = [*REQUIRED_COLUMNS, *(c for c in OPTIONAL_COLUMNS if c in dataset.schema().names)]
    rows_in = dataset.count()

    # Small blocks: a scoring task emits its output only per block, and Ray Data's default (128 MiB of ~300-byte
    # prediction rows, i.e. ~400,000 rows = 20 minutes of CPU inference) made a 1M-row run look stalled and hit
    # Ray's 30-minute no-progress timeout. 8 MiB keeps every block to well under a minute of scoring.
    data_context.target_max_block_size = config.target_block_bytes
    if config.object_store_memory_bytes:
        data_context.execution_options.resource_limits = ExecutionResources(
            object_store_memory=config.object_store_memory_bytes)
    actors, parallel_rows, actor_cpus = plan_resources(config, ray.cluster_resources(), ray.available_resources())
    config = config.model_copy(update={"parallel_rows": parallel_rows, "run_id": run_id})
    log.info("run %s: %d rows from %s; model %s (%s); %d scoring actor(s) x %d parallel rows, %.2f CPUs reserved "
             "each", run_id, rows_in, config.tickets, artifact.ref, config.variant, actors, parallel_rows, actor_cpus)

    out_fs, out_path = _filesystem(config.output)
    local = isinstance(out_fs, pafs.LocalFileSystem)
    staging = f"{out_path}.staging-{run_id}" if local else f"{out_path}/{run_id}"
    out_fs.create_dir(staging, recursive=True)
    settings_json = settings.model_dump_json()

    # Every task beside the scorers takes `task_cpus` (Ray Data's default is a whole CPU per task).
    validated = dataset.select_columns(columns, **tasks).map_batches(validate_rows, batch_format="pandas",
                                                                     batch_size=config.join_batch_size, **tasks)
    scored = (
        validated.filter(expr=f"{ERROR_FIELD} == ''", **tasks)
        # Its own tasks (a CPU share unlike the scorers', so Ray does not fuse it into the scoring actors): the
        # join of the next blocks then overlaps inference instead of pausing it.
        .map_batches(join_features, batch_format="pandas", batch_size=config.join_batch_size,
                     fn_kwargs={"settings_json": settings_json}, num_cpus=config.join_cpus)
        .map_batches(Scorer, batch_format="pandas", batch_size=config.batch_size,
                     compute=ActorPoolStrategy(size=actors),
                     fn_constructor_kwargs={"settings_json": settings_json,
                                            "config_json": config.model_dump_json(), "context": context},
                     num_cpus=actor_cpus, num_gpus=config.gpus_per_actor or None,
                     **({"scheduling_strategy": "SPREAD"} if config.actor_placement == "SPREAD" else {}))
    )
    pipeline_started = time.perf_counter()
    scored.write_parquet(f"{staging}/predictions", filesystem=out_fs,
                         partition_cols=["created_date"] if config.partition_by_date else None, ray_remote_args=tasks)
    pipeline_seconds = time.perf_counter() - pipeline_started
    errors = validated.filter(expr=f"{ERROR_FIELD} != ''", **tasks).select_columns(
        ["ticket_id", "customer_id", ERROR_FIELD], **tasks)
    errors.write_parquet(f"{staging}/errors", filesystem=out_fs, ray_remote_args=tasks)

    rows_out = _count_rows(out_fs, f"{staging}/predictions")
    error_rows = _count_rows(out_fs, f"{staging}/errors")
    error_reasons = _error_reasons(out_fs, f"{staging}/errors")
    seconds = time.perf_counter() - clock
    manifest = {
        "run_id": run_id, "status": "succeeded", "input": config.tickets, "output": config.output,
        "model": artifact.ref, "variant": config.variant, "feature_service": context["feature_service"],
        "features_as_of": context["features_as_of"], "rows_in": rows_in, "rows_out": rows_out,
        "rows_error": error_rows, "error_reasons": error_reasons, "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(), "seconds": round(seconds, 3),
        "rows_per_second": round(rows_in / seconds, 1) if seconds else None,
        # The scoring pipeline alone (read -> join -> score -> write), without the row count, start-up checks and
        # the errors pass: what the job sustains once running.
        "pipeline_seconds": round(pipeline_seconds, 3),
        "pipeline_rows_per_second": round(rows_out / pipeline_seconds, 1) if pipeline_seconds else None,
        "actors": actors, "parallel_rows": parallel_rows, "cpus_per_actor": actor_cpus,
        "gpus_per_actor": config.gpus_per_actor, "batch_size": config.batch_size,
        "partitioned_by": ["created_date"] if config.partition_by_date else [],
    }
    if rows_out + error_rows != rows_in:
        raise RuntimeError(f"row count mismatch: {rows_in} in, {rows_out} scored + {error_rows} errors; "
                           f"staging left at {staging} for inspection, output untouched")
    with out_fs.open_output_stream(f"{staging}/{SUCCESS_FILE}") as stream:
        stream.write(json.dumps(manifest, indent=2).encode())
    if local:
        _publish_local(staging, out_path, run_id)
    log.info("run %s: %d rows scored, %d errors, %.1fs (%.0f rows/s) -> %s", run_id, rows_out, error_rows, seconds,
             rows_in / seconds if seconds else 0, config.output)
    return manifest


def _count_rows(fs: pafs.FileSystem, path: str) -> int:
    import pyarrow.dataset as ds

    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return 0
    return int(ds.dataset(path, filesystem=fs, format="parquet", partitioning="hive").count_rows())


def _error_reasons(fs: pafs.FileSystem, path: str) -> dict[str, int]:
    import pyarrow.dataset as ds

    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return {}
    table = ds.dataset(path, filesystem=fs, format="parquet").to_table(columns=[ERROR_FIELD])
    return {str(k): int(v) for k, v in table.column(0).to_pandas().value_counts().items()}


def _publish_local(staging: str, target: str, run_id: str) -> None:
    """Swap the finished staging directory in with renames: readers see the old result or the new, whole."""
    old = f"{target}.replaced-{run_id}"
    if os.path.exists(target):
        os.rename(target, old)
    os.rename(staging, target)
    if os.path.exists(old):
        import shutil

        shutil.rmtree(old)
