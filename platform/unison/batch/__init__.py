"""Batch prediction on Ray Data: the job (`job.run`) and its submission to a cluster (`submit`)."""

from typing import Any

from unison.batch.config import BatchJobConfig

__all__ = ["BatchJobConfig", "BatchSchemaError", "check_schema", "run", "validate_rows"]


def __getattr__(name: str) -> Any:
    """The job's names on first use: importing the package (the CLI reads BatchJobConfig) loads no pandas."""
    if name in {"BatchSchemaError", "check_schema", "run", "validate_rows"}:
        from unison.batch import job

        return getattr(job, name)
    raise AttributeError(f"module 'unison.batch' has no attribute {name!r}")
