"""The batch job on the real embedded Ray cluster, submitted with the real `ray job submit` CLI and with
`unison batch submit`."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest

from unison.batch.job import BatchJobConfig
from unison.batch.submit import entrypoint, job_environment
from unison.config import Settings
from unison.features import feature_matrix, transform
from unison.features.store import Features
from unison.model import Predictor, PredictorOptions, Registry

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
N_TICKETS = 600


@pytest.fixture(scope="module")
def tickets(platform_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """Generated tickets plus rows that must land in errors/ (empty text, missing customer)."""
    frame = pd.read_parquet(platform_settings.data.dir / "tickets.parquet").head(N_TICKETS)
    bad = frame.head(3).copy()
    bad["ticket_id"] = ["BAD-1", "BAD-2", "BAD-3"]
    bad.loc[bad.index[0], ["subject", "body"]] = ["", "  "]
    bad["customer_id"] = bad["customer_id"].astype("Int64")
    bad.loc[bad.index[1], "customer_id"] = pd.NA
    frame = pd.concat([frame.astype({"customer_id": "Int64"}), bad], ignore_index=True)
    path = tmp_path_factory.mktemp("batch-input") / "tickets.parquet"
    frame.to_parquet(path)
    return path, 2


def _read(output: Path) -> tuple[pd.DataFrame, dict]:
    predictions = ds.dataset(output / "predictions", format="parquet", partitioning="hive").to_table().to_pandas()
    return predictions, json.loads((output / "_SUCCESS").read_text())


def test_ray_job_submit_cli_runs_the_job(platform_settings: Settings, endpoints, tickets, tmp_path: Path) -> None:
    path, expected_errors = tickets
    output = tmp_path / "out"
    config = BatchJobConfig(tickets=str(path), output=str(output), batch_size=128)
    env = job_environment(platform_settings)
    command = [str(BIN / "ray"), "job", "submit", "--address", endpoints.ray_dashboard_url, "--working-dir",
               str(ROOT), "--runtime-env-json", json.dumps({"env_vars": env}), "--", *entrypoint(config).split()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "rows/s" in result.stdout  # progress is visible in the job's log

    predictions, manifest = _read(output)
    rows_in = N_TICKETS + 3
    assert manifest["rows_in"] == rows_in and manifest["rows_error"] == expected_errors
    assert manifest["rows_out"] == rows_in - expected_errors == len(predictions)
    assert manifest["error_reasons"] == {"empty text (subject and body)": 1, "missing customer_id": 1}
    errors = ds.dataset(output / "errors", format="parquet").to_table().to_pandas()
    assert sorted(errors["ticket_id"]) == ["BAD-1", "BAD-2"]
    assert predictions["ticket_id"].is_unique and "BAD-3" in set(predictions["ticket_id"])
    assert set(predictions["model_version"]) == {"1"} and set(predictions["feature_service"]) == {"triage_v1"}
    assert len({p.name for p in (output / "predictions").iterdir()}) > 1  # partitioned by created_date
    assert not list(tmp_path.glob("out.staging-*"))

    # The same rows scored directly (Feast point-in-time join + transform + Predictor) give the same answers.
    sample = pd.read_parquet(path).head(N_TICKETS).sample(40, random_state=1)
    joined = Features(platform_settings).historical(sample, timestamp_column="created_at")
    inputs = transform(joined)
    predictor = Predictor.from_registry(Registry(platform_settings.model.registry_dir), "triage:production",
                                        PredictorOptions.from_config(platform_settings.model, variant="int8"))
    direct = predictor.predict(inputs["text"].tolist(), feature_matrix(inputs))
    by_id = predictions.set_index("ticket_id").loc[joined["ticket_id"]]
    labels = direct.labels
    np.testing.assert_array_equal(by_id[[f"p_{label}" for label in labels]].to_numpy(np.float32), direct.probabilities)
    np.testing.assert_array_equal(by_id["priority"].to_numpy(np.float32), direct.priority)
    assert by_id["category"].tolist() == direct.categories()


def test_unison_batch_submit_and_atomic_rerun(platform_settings: Settings, tickets, tmp_path: Path) -> None:
    path, _ = tickets
    output = tmp_path / "out"
    env = {**os.environ, **{f"UNISON_{k}": v for k, v in {
        "STATE_DIR": str(platform_settings.state_dir), "MODEL__REGISTRY_DIR": str(platform_settings.model.registry_dir),
        "DATA__DIR": str(platform_settings.data.dir), "FEATURES__STATE_DIR": str(platform_settings.features.state_dir),
    }.items()}}
    runs = []
    for run_id in ("first", "second"):
        result = subprocess.run(
            [str(BIN / "unison"), "batch", "submit", "--tickets", str(path), "--output", str(output), "--run-id",
             run_id, "--working-dir", str(ROOT), "--batch-size", "256"],
            env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
        assert "job id: " in result.stdout and "equivalent: ray job submit --address" in result.stdout
        predictions, manifest = _read(output)
        runs.append((set(predictions["run_id"]), manifest["run_id"]))
    assert runs == [({"first"}, "first"), ({"second"}, "second")]  # replaced whole, never mixed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_wrong_schema_fails_fast_naming_the_column(platform_settings: Settings, tmp_path: Path) -> None:
    broken = tmp_path / "broken.parquet"
    pd.read_parquet(platform_settings.data.dir / "tickets.parquet").head(10).drop(columns="body").to_parquet(broken)
    env = {**os.environ, "UNISON_STATE_DIR": str(platform_settings.state_dir),
           "UNISON_MODEL__REGISTRY_DIR": str(platform_settings.model.registry_dir),
           "UNISON_DATA__DIR": str(platform_settings.data.dir),
           "UNISON_FEATURES__STATE_DIR": str(platform_settings.features.state_dir)}
    result = subprocess.run([str(BIN / "unison"), "batch", "submit", "--tickets", str(broken), "--output",
                             str(tmp_path / "out"), "--working-dir", str(ROOT)],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1
    assert "missing required column 'body'" in result.stdout + result.stderr
    assert not (tmp_path / "out").exists()


HOLDER = """
import sys
import time
import ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
hold = max(0.0, ray.available_resources().get("CPU", 0.0) - float(sys.argv[2]))

@ray.remote
class Holder:  # what a Serve application's replicas do to the cluster: reserve CPUs and keep them
    def ready(self):
        return True

holder = Holder.options(num_cpus=hold).remote() if hold > 0 else None
if holder is not None:
    ray.get(holder.ready.remote())
print(round(ray.available_resources().get("CPU", 0.0), 2), flush=True)
sys.stdin.read()
"""


@pytest.mark.timeout(1200)
def test_the_job_fits_beside_an_application_holding_most_cpus(platform_settings: Settings, endpoints, tickets,
                                                              tmp_path: Path, ray_driver) -> None:
    """1.15 of the 2 CPUs free (a Serve application holds the rest): with its default reservations the job
    once waited forever for a whole CPU for its read tasks; it sizes itself from what is free instead."""
    from ray.job_submission import JobSubmissionClient

    from unison.batch.submit import submit

    path, expected_errors = tickets
    client = JobSubmissionClient(endpoints.ray_dashboard_url)
    job = None
    with ray_driver(HOLDER, "1.15") as free:
        try:
            assert float(free) <= 1.2, f"{free} CPUs free: the holder did not take its share"
            config = BatchJobConfig(tickets=str(path), output=str(tmp_path / "out"), batch_size=128)
            job = submit(platform_settings, config, endpoints.ray_dashboard_url, ROOT, follow=False)
            deadline = time.monotonic() + 600  # generous; a job that cannot schedule never finishes at all
            while (status := str(client.get_job_status(job.job_id).value)) not in {"SUCCEEDED", "FAILED", "STOPPED"}:
                assert time.monotonic() < deadline, client.get_job_logs(job.job_id)[-3000:]
                time.sleep(2)
            assert status == "SUCCEEDED", client.get_job_logs(job.job_id)[-3000:]
            predictions, manifest = _read(tmp_path / "out")
            assert manifest["rows_out"] == N_TICKETS + 3 - expected_errors == len(predictions)
            assert manifest["cpus_per_actor"] < 1.0 and manifest["parallel_rows"] == 2, manifest
        finally:
            if job is not None and str(client.get_job_status(job.job_id).value) not in {"SUCCEEDED", "FAILED",
                                                                                          "STOPPED"}:
                client.stop_job(job.job_id)


def test_the_job_runs_the_predictor_the_settings_describe(platform_settings: Settings, endpoints, tickets,
                                                          tmp_path: Path) -> None:
    """Non-default model settings (`fp32`, `execution=buckets`, `max_length=64`, `intra_op_threads=1`,
    `bucket_size=8`) reach the scoring actors: the job's answers equal the data plane's with the Predictor the
    online and streaming replicas build from the same settings. fp32 padded buckets agree with each other to ~1e-7
    whatever the batch; a Predictor at the artifact's own token limit or in `rows` execution would differ more on
    the long tickets (some are truncated at 64 tokens)."""
    from unison.model.scoring import DataPlane, ScoredTickets

    path, _ = tickets
    model = platform_settings.model.model_copy(update={"variant": "fp32", "execution": "buckets", "max_length": 64,
                                                       "intra_op_threads": 1, "bucket_size": 8})
    settings = platform_settings.model_copy(update={"model": model})
    output = tmp_path / "out"
    config = BatchJobConfig(tickets=str(path), output=str(output), batch_size=128)
    command = [str(BIN / "ray"), "job", "submit", "--address", endpoints.ray_dashboard_url, "--working-dir",
               str(ROOT), "--runtime-env-json", json.dumps({"env_vars": job_environment(settings)}), "--",
               *entrypoint(config).split()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    predictions, manifest = _read(output)
    assert manifest["variant"] == "fp32" and set(predictions["variant"]) == {"fp32"}

    frame = pd.read_parquet(path).head(N_TICKETS)
    longest = frame.assign(n=frame["body"].str.len()).nlargest(10, "n").drop(columns="n")
    sample = pd.concat([longest, frame.drop(longest.index).sample(30, random_state=2)])
    joined = Features(settings).historical(sample, timestamp_column="created_at")
    predictor = Predictor.from_registry(Registry(settings.model.registry_dir), "triage:production",
                                        PredictorOptions.from_config(settings.model))
    assert predictor.execution == "buckets" and predictor.max_length == 64
    [scored] = DataPlane("parity").score(predictor, joined)
    assert isinstance(scored, ScoredTickets) and scored.predictions.truncated.sum() >= 5
    want = scored.frame().set_index("ticket_id")
    got = predictions.set_index("ticket_id").loc[want.index]
    columns = [f"p_{label}" for label in predictor.manifest.labels] + ["priority"]
    np.testing.assert_allclose(got[columns].to_numpy(np.float32), want[columns].to_numpy(np.float32), atol=1e-5)
    assert got["category"].tolist() == want["category"].tolist()
    assert got["input_digest"].tolist() == want["input_digest"].tolist()
    assert got["truncated"].tolist() == want["truncated"].tolist()
