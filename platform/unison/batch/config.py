"""The batch job's options: one pydantic model whose fields are the flags of pipelines/batch_predict.py and of
`unison batch submit` (both generate their flags from it). Apart from job.py so the CLI can read it without
importing pandas and pyarrow."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class BatchJobConfig(BaseModel):
    """One batch run. Every field is a flag of pipelines/batch_predict.py and `unison batch submit`."""

    model_config = ConfigDict(extra="forbid")

    tickets: str = Field(description="Input Parquet: a file or directory, local path or pyarrow filesystem URI "
                                     "(s3://, gs://, hdfs://, file://).")
    output: str = Field(description="Output directory URI. Replaced atomically on a local filesystem.")
    model: str | None = Field(default=None, description="Registry reference: name, name:alias or name:version. "
                                                        "Empty: `model.name`:`model.alias`, as online and stream.")
    variant: Literal["fp32", "int8", "fp16"] | None = Field(
        default=None, description="Artifact variant to score with. Empty: `model.variant`, as online and stream.")
    device: Literal["cpu", "cuda"] | None = Field(
        default=None, description="cuda: CUDA provider (falls back to CPU). Empty: `model.device`.")
    batch_size: int = Field(default=1024, ge=1, le=65536, description="Rows per scoring call of an actor.")
    join_batch_size: int = Field(default=20_000, ge=1, description="Rows per point-in-time join task.")
    actors: int | None = Field(default=None, ge=1, description="Scoring actors. Empty: sized from the cluster.")
    cpus_per_actor: float = Field(default=1.0, gt=0, description="CPUs Ray reserves for each scoring actor.")
    join_cpus: float = Field(default=0.5, gt=0, description="CPUs Ray reserves for each point-in-time join task.")
    task_cpus: float = Field(default=0.25, gt=0, description="CPUs Ray reserves for each read, validate and write "
                                                           "task: I/O-bound, so a share that fits beside the "
                                                           "scoring actors.")
    gpus_per_actor: float = Field(default=0.0, ge=0, description="GPUs per scoring actor (fractions share a GPU).")
    actor_placement: Literal["DEFAULT", "SPREAD"] = Field(
        default="DEFAULT", description="Where the scoring actors go: DEFAULT (Ray Data's own placement), SPREAD "
        "(over as many nodes as possible: one per GPU node for data-parallel scoring). The same "
        "choice as the serving replicas' `max_replicas_per_node` / placement strategy.")
    parallel_rows: int | None = Field(default=None, ge=1,
                                      description="Concurrent rows inside an actor. Empty: the CPUs it may use.")
    object_store_memory_bytes: int | None = Field(default=None, ge=1 << 26,
                                                  description="Cap on Ray Data's object store use for this job.")
    partition_by_date: bool = Field(default=True, description="Partition output by the ticket's creation date.")
    target_block_bytes: int = Field(default=8 << 20, ge=1 << 20,
                                    description="Ray Data block size: the unit of progress, output and retry.")
    run_id: str | None = Field(default=None, description="Run identifier. Empty: a timestamp plus random suffix.")
