"""Finding the last batch job: the entrypoint's output, the newest job, its `_SUCCESS` figures."""

import json
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.unit.fakes import json_server

from unison.batch.job import BatchJobConfig
from unison.batch.submit import entrypoint, job_output, job_summary, last_batch_job, latest_job
from unison.config import load_settings
from unison.ops.stack import free_ports

pytestmark = pytest.mark.usefixtures("clean_env")  # no UNISON_* variables, an empty working dir


def test_job_output_reads_back_what_entrypoint_wrote(tmp_path: Path) -> None:
    output = tmp_path / "out dir"  # a space: quoted by the entrypoint
    config = BatchJobConfig(tickets="s3://bucket/tickets.parquet", output=str(output))
    assert job_output(entrypoint(config)) == str(output)
    assert job_output("python pipelines/batch_predict.py --tickets t.parquet") is None
    assert job_output("python pipelines/batch_predict.py --output") is None


def test_latest_job_is_the_newest_batch_job() -> None:
    jobs = [{"submission_id": "old", "entrypoint": "python pipelines/batch_predict.py --output a", "start_time": 1},
            {"submission_id": "other", "entrypoint": "python train.py", "start_time": 9},
            {"submission_id": "new", "entrypoint": "python pipelines/batch_predict.py --output b", "start_time": 5},
            {"submission_id": "pending", "entrypoint": "python pipelines/batch_predict.py", "start_time": None}]
    assert latest_job(jobs)["submission_id"] == "new"
    assert latest_job([jobs[1], {"entrypoint": None}]) is None
    assert latest_job([]) is None


def test_job_summary_reads_the_success_manifest(tmp_path: Path) -> None:
    (tmp_path / "_SUCCESS").write_text(json.dumps({"rows_per_second": 1234.5, "rows_out": 10_000}))
    job = {"submission_id": "raysubmit_1", "job_id": "02000000", "status": "SUCCEEDED",
           "entrypoint": shlex.join(["python", "pipelines/batch_predict.py", "--output", str(tmp_path)])}
    assert job_summary(job) == {"job_id": "raysubmit_1", "status": "SUCCEEDED", "rows_per_second": 1234.5,
                                "rows": 10_000}
    running = {"job_id": "02000000", "status": "RUNNING",
               "entrypoint": f"python pipelines/batch_predict.py --output {tmp_path / 'none'}"}
    assert job_summary(running) == {"job_id": "02000000", "status": "RUNNING", "rows_per_second": None,
                                    "rows": None}


JOBS: list[dict[str, Any]] = []


@pytest.fixture
def dashboard() -> Iterator[str]:
    JOBS.clear()
    with json_server({"/api/jobs/": (200, JOBS)}) as url:  # the list is read at each request
        yield url
    JOBS.clear()


def test_last_batch_job_asks_the_job_server(dashboard: str, tmp_path: Path) -> None:
    settings = load_settings(state_dir=tmp_path / "state", ray={"address": "127.0.0.1:1", "dashboard_url": dashboard},
                             kafka={"bootstrap_servers": "127.0.0.1:2"})
    assert last_batch_job(settings) is None  # no jobs yet
    JOBS.extend([{"submission_id": "a", "status": "FAILED", "start_time": 1,
                  "entrypoint": "python pipelines/batch_predict.py --output /nowhere"},
                 {"submission_id": "b", "status": "RUNNING", "start_time": 2,
                  "entrypoint": "python pipelines/batch_predict.py --output /nowhere"}])
    assert last_batch_job(settings) == {"job_id": "b", "status": "RUNNING", "rows_per_second": None, "rows": None}


def test_last_batch_job_without_a_job_server(tmp_path: Path) -> None:
    assert last_batch_job(load_settings(state_dir=tmp_path / "state")) is None  # no stack at all
    down = f"http://127.0.0.1:{free_ports(1)[0]}"
    settings = load_settings(state_dir=tmp_path / "state", ray={"address": "127.0.0.1:1", "dashboard_url": down},
                             kafka={"bootstrap_servers": "127.0.0.1:2"})
    assert last_batch_job(settings) is None
