"""Submit the batch job to a Ray cluster through Ray's job SDK, exactly as `ray job submit` would; find the
last one the cluster ran (`last_batch_job`, for `unison status`)."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from unison.batch.job import SUCCESS_FILE, BatchJobConfig
from unison.config import Settings, environment
from unison.ops.stack import endpoints, ray_auth_headers

ENTRYPOINT = "pipelines/batch_predict.py"
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


@dataclass(frozen=True)
class SubmittedJob:
    job_id: str
    command: str
    dashboard_url: str
    status: str


def job_environment(settings: Settings) -> dict[str, str]:
    """UNISON_* variables that point the job at this configuration (paths absolute: the job runs elsewhere)."""
    return environment(settings)


def entrypoint(config: BatchJobConfig) -> str:
    """`python pipelines/batch_predict.py ...` with the flags that differ from the defaults."""
    parts = ["python", ENTRYPOINT]
    for name, value in config.model_dump(exclude_defaults=True).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + name.replace("_", "-"))
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)


def _mask(text: str) -> str:
    return re.sub(r"(password=)[^,\"' ]+", r"\1***", text)


def _mask_env(env: dict[str, str]) -> dict[str, str]:
    secret = re.compile(r"PASSWORD|SECRET|TOKEN")
    return {key: "***" if secret.search(key) else value for key, value in env.items()}


def equivalent_command(dashboard_url: str, working_dir: Path, env: dict[str, str], config: BatchJobConfig) -> str:
    runtime_env = json.dumps({"env_vars": _mask_env(env)}, sort_keys=True)
    return _mask(f"ray job submit --address {dashboard_url} --working-dir {shlex.quote(str(working_dir))} "
                 f"--runtime-env-json {shlex.quote(runtime_env)} -- {entrypoint(config)}")


def submit(settings: Settings, config: BatchJobConfig, dashboard_url: str, working_dir: Path,
           follow: bool = True, on_log: Callable[[str], None] = print) -> SubmittedJob:
    """Submit; with `follow`, stream the job's logs until it ends and return its final status."""
    from ray.job_submission import JobSubmissionClient

    env = job_environment(settings)
    client = JobSubmissionClient(dashboard_url)
    job_id = client.submit_job(entrypoint=entrypoint(config),
                               runtime_env={"working_dir": str(working_dir), "env_vars": env})
    command = equivalent_command(dashboard_url, working_dir, env, config)
    status = str(client.get_job_status(job_id).value)
    if follow:
        async def tail() -> None:
            async for lines in client.tail_job_logs(job_id):
                on_log(lines.rstrip("\n"))

        asyncio.run(tail())
        deadline = time.monotonic() + 30
        while (status := str(client.get_job_status(job_id).value)) not in TERMINAL and time.monotonic() < deadline:
            time.sleep(0.5)
    return SubmittedJob(job_id=job_id, command=command, dashboard_url=dashboard_url, status=status)


# ---------------------------------------------------------------------------------------------- the last job


def job_output(command: str) -> str | None:
    """The `--output` of a batch job's entrypoint (as `entrypoint` writes it), or None when it names none."""
    words = shlex.split(command)
    if "--output" not in words or words.index("--output") + 1 >= len(words):
        return None
    return words[words.index("--output") + 1]


def latest_job(jobs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest batch job (its entrypoint runs pipelines/batch_predict.py) among Ray's job records."""
    script = Path(ENTRYPOINT).stem
    batch = [j for j in jobs if script in (j.get("entrypoint") or "")]
    return max(batch, key=lambda j: j.get("start_time") or 0) if batch else None


def job_summary(job: dict[str, Any]) -> dict[str, Any]:
    """A Ray job record as `unison status` shows it: id, status, and rows and rows/s from the job's `_SUCCESS`
    manifest when its output is a local directory that has one (else None)."""
    row: dict[str, Any] = {"job_id": job.get("submission_id") or job.get("job_id"), "status": job.get("status"),
                           "rows_per_second": None, "rows": None}
    output = job_output(job.get("entrypoint") or "")
    if output is not None:
        manifest = Path(output) / SUCCESS_FILE
        if manifest.is_file():
            data = json.loads(manifest.read_text())
            row.update(rows_per_second=data.get("rows_per_second"), rows=data.get("rows_out"))
    return row


def last_batch_job(settings: Settings) -> dict[str, Any] | None:
    """The newest batch job the configured cluster's job server knows of (`job_summary`); None when there is none
    or the job server cannot be asked."""
    try:
        jobs = requests.get(f"{endpoints(settings).ray_dashboard_url}/api/jobs/", headers=ray_auth_headers(),
                            timeout=10).json()
    except Exception:
        return None
    job = latest_job(jobs)
    return None if job is None else job_summary(job)
