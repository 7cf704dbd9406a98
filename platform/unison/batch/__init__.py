"""Batch prediction on Ray Data: the job (`job.run`) and its submission to a cluster (`submit`)."""

from unison.batch.job import BatchJobConfig, BatchSchemaError, check_schema, run, validate_rows

__all__ = ["BatchJobConfig", "BatchSchemaError", "check_schema", "run", "validate_rows"]
