"""Parity: the same tickets through the batch job, the HTTP API and the stream must give the same answers.

The three paths share one transform and one Predictor (`unison.model.scoring`), so they can only drift apart
through what surrounds them: a different model version, different feature values, a different variant or
execution mode. `run` proves they did not, on every call:

1. materialize the features, then take the snapshot time; a seeded sample of tickets is stamped just after it,
   so the batch job's point-in-time join and the online store return the same values;
2. score the sample through the batch job (submitted to Ray as in production), `/v1/predict` through the
   Serve proxy, and the streaming deployment (produce to the input topic, read the output topic);
3. compare per ticket: the transformed inputs (a digest of the text and the float32 feature vector, exactly
   equal), the top category (equal), probabilities and priority (max absolute difference within `tolerance`),
   and the model name/version and feature service each path recorded.

On CPU the Predictor runs in `rows` mode, where every row's output is bit-identical whatever else is in its
batch (docs/MODEL.md, "Determinism"), so the default tolerance is 1e-6: equality up to float formatting.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from unison.config import Settings

PATHS = ("batch", "online", "stream")
FIELDS = ("missing", "input_digest", "category", "probabilities", "priority")


class ParityConfig(BaseModel):
    """`unison parity` options."""

    model_config = ConfigDict(extra="forbid")

    sample: int = Field(default=500, ge=1, le=100_000, description="Tickets to score through every path.")
    seed: int = Field(default=0, description="Which tickets (the sample is reproducible).")
    tolerance: float = Field(default=1e-6, ge=0, description="Largest allowed absolute difference of a "
                                                              "probability or the priority between two paths.")
    timeout_s: float = Field(default=900, gt=0, description="Longest wait for each path's results.")
    working_dir: Path = Field(description="Project directory holding pipelines/batch_predict.py (the batch "
                                          "job's working dir).")
    materialize: bool = Field(default=True, description="Materialize first, so the online store holds the "
                                                        "offline store's latest values. Off: compare against the "
                                                        "online store as it is (finds a stale or half-written "
                                                        "online store; writes nothing to the feature store).")
    report: Path | None = Field(default=None, description="Where to write the JSON report. Empty: "
                                                          "<state_dir>/parity/last.json.")


class ParityError(RuntimeError):
    """A path could not be run (not deployed, failed, timed out)."""


@dataclass
class PathRun:
    name: str
    frame: pd.DataFrame  # index ticket_id; input_digest, category, priority, p_<label>..., versions
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return len(self.frame) / self.seconds if self.seconds > 0 else 0.0


@dataclass
class ParityReport:
    tickets: int
    labels: list[str]
    tolerance: float
    snapshot: str
    paths: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> versions, rows/s, rows
    pairs: dict[str, dict[str, Any]] = field(default_factory=dict)  # "a~b" -> mismatches per field, max diffs
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "tickets": self.tickets, "labels": self.labels, "tolerance": self.tolerance,
                "snapshot": self.snapshot, "paths": self.paths, "pairs": self.pairs, "problems": self.problems}


# ---------------------------------------------------------------------------------------------- compare


def compare(runs: dict[str, PathRun], ticket_ids: list[str], labels: list[str], tolerance: float,
            snapshot: str = "") -> ParityReport:
    """Field-by-field comparison of every pair of paths (pure: tested without a stack)."""
    report = ParityReport(tickets=len(ticket_ids), labels=labels, tolerance=tolerance, snapshot=snapshot)
    probability_columns = [f"p_{label}" for label in labels]
    for name, run in runs.items():
        frame = run.frame
        versions = sorted({f"{n}:{v}" for n, v in zip(frame["model_name"], frame["model_version"], strict=True)})
        services = sorted(set(frame["feature_service"]))
        report.paths[name] = {"rows": len(frame), "seconds": round(run.seconds, 2),
                              "rows_per_second": round(run.rows_per_second, 1), "models": versions,
                              "feature_services": services}
        if len(versions) > 1:
            report.problems.append(f"the {name} path served several model versions: {', '.join(versions)}")
        if len(services) > 1:
            report.problems.append(f"the {name} path used several feature services: {', '.join(services)}")
    served = {name: tuple(info["models"]) for name, info in report.paths.items()}
    if len(set(served.values())) > 1:
        report.problems.append("the paths serve different model versions (the usual cause of skew): " + "; ".join(
            f"{name} {', '.join(models)}" for name, models in served.items()))
    services = {name: tuple(info["feature_services"]) for name, info in report.paths.items()}
    if len(set(services.values())) > 1:
        report.problems.append("the paths use different feature services: " + "; ".join(
            f"{name} {', '.join(s)}" for name, s in services.items()))

    names = [n for n in PATHS if n in runs]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            left = runs[a].frame.reindex(ticket_ids)
            right = runs[b].frame.reindex(ticket_ids)
            missing = left["category"].isna() | right["category"].isna()
            both = ~missing
            lhs, rhs = left[both], right[both]
            probability_diff = (np.abs(lhs[probability_columns].to_numpy(np.float64)
                                       - rhs[probability_columns].to_numpy(np.float64)).max(axis=1)
                                if both.any() else np.zeros(0))
            priority_diff = np.abs(lhs["priority"].to_numpy(np.float64) - rhs["priority"].to_numpy(np.float64))
            mismatches = {
                "missing": int(missing.sum()),
                "input_digest": int((lhs["input_digest"] != rhs["input_digest"]).sum()),
                "category": int((lhs["category"] != rhs["category"]).sum()),
                "probabilities": int((probability_diff > tolerance).sum()),
                "priority": int((priority_diff > tolerance).sum()),
            }
            pair = f"{a}~{b}"
            report.pairs[pair] = {
                "mismatches": mismatches,
                "max_probability_diff": float(probability_diff.max()) if len(probability_diff) else 0.0,
                "max_priority_diff": float(priority_diff.max()) if len(priority_diff) else 0.0,
            }
            for name in FIELDS:
                if mismatches[name]:
                    example = _first_mismatch(lhs, rhs, name, probability_columns, tolerance) if name != "missing" \
                        else next(t for t, m in zip(ticket_ids, missing, strict=True) if m)
                    report.problems.append(f"{a} vs {b}: {mismatches[name]} ticket(s) differ in {name} "
                                           f"(first: {example})")
    return report


def _first_mismatch(left: pd.DataFrame, right: pd.DataFrame, name: str, probability_columns: list[str],
                    tolerance: float) -> str:
    if name in ("input_digest", "category"):
        differs = left[name] != right[name]
    elif name == "priority":
        differs = (left["priority"] - right["priority"]).abs() > tolerance
    else:
        differs = (left[probability_columns] - right[probability_columns]).abs().max(axis=1) > tolerance
    ticket = str(differs[differs].index[0])
    columns = [name] if name != "probabilities" else probability_columns
    return f"{ticket}: {left.loc[ticket, columns].to_dict()} vs {right.loc[ticket, columns].to_dict()}"


# ---------------------------------------------------------------------------------------------- run


def sample_tickets(settings: Settings, size: int, seed: int, created_at: datetime, run: str) -> pd.DataFrame:
    """`size` tickets from the demo data (seeded), with ids unique to this run and stamped `created_at`."""
    frame = pd.read_parquet(settings.data.dir / "tickets.parquet",
                            columns=["ticket_id", "customer_id", "subject", "body", "channel"])
    if len(frame) == 0:
        raise ParityError(f"{settings.data.dir / 'tickets.parquet'} has no tickets")
    picked = frame.sample(n=size, replace=size > len(frame), random_state=seed).reset_index(drop=True)
    picked["ticket_id"] = [f"parity-{run}-{i}" for i in range(len(picked))]
    picked["created_at"] = pd.Timestamp(created_at)
    return picked


def run(settings: Settings, config: ParityConfig, progress: Any = print) -> ParityReport:
    """Score one sample through all three paths on the running stack and compare (see module doc)."""
    from unison.features import store
    from unison.model import Registry
    from unison.ops.stack import endpoints
    from unison.serving import deploy

    endpoints(settings)  # StackError naming `unison stack up` when the stack is not running
    deploy.url(settings)  # ServeError naming `unison serve up`
    if config.materialize:
        progress("materializing features (the snapshot every path reads)")
        store.materialize(settings)
    snapshot = datetime.now(UTC)
    run_id = uuid.uuid4().hex[:8]
    tickets = sample_tickets(settings, config.sample, config.seed, snapshot + timedelta(seconds=1), run_id)
    ids = tickets["ticket_id"].tolist()
    registry = Registry(settings.model.registry_dir)
    reference = settings.model.ref
    labels = list(registry.load(reference).manifest.labels)
    work = (settings.state_dir / "parity" / run_id).resolve()  # absolute: the batch job runs elsewhere
    work.mkdir(parents=True, exist_ok=True)

    runs = {"batch": _batch(settings, config, tickets, work, progress),
            "online": _online(settings, config, tickets, labels, progress),
            "stream": _stream(settings, config, tickets, labels, progress)}
    report = compare(runs, ids, labels, config.tolerance, snapshot.isoformat())
    path = config.report or settings.state_dir / "parity" / "last.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.as_dict(), indent=2))
    progress(f"report written to {path}")
    _publish(settings, report, progress)
    return report


def _publish(settings: Settings, report: ParityReport, progress: Any) -> None:
    """Hand the result to the Serve application (parity metrics, /v1/ops, the ops page); best effort."""
    import httpx

    from unison.serving import deploy

    try:
        response = httpx.post(f"{deploy.url(settings)}/v1/parity", json=report.as_dict(), timeout=30)
        if response.status_code != 200:
            progress(f"the Serve application did not record the result ({response.status_code}: "
                     f"{response.text[:200]})")
    except Exception as exc:
        progress(f"could not hand the result to the Serve application: {exc}")


def _batch(settings: Settings, config: ParityConfig, tickets: pd.DataFrame, work: Path, progress: Any) -> PathRun:
    from unison.batch.job import BatchJobConfig
    from unison.batch.submit import submit
    from unison.ops.stack import endpoints

    source = work / "tickets.parquet"
    tickets.to_parquet(source, index=False)
    output = work / "batch"
    # One actor: the job runs next to the Serve application, and sizes its reservations from the CPUs left free.
    # Model, variant and device left empty: the job scores with `settings.model`'s, as the other two paths.
    job_config = BatchJobConfig(tickets=str(source), output=str(output), partition_by_date=False,
                                run_id=f"parity-{work.name}", actors=1)
    progress(f"batch: submitting the job for {len(tickets)} tickets")
    started = time.perf_counter()
    job = submit(settings, job_config, endpoints(settings).ray_dashboard_url, config.working_dir, follow=True,
                 on_log=lambda line: None)
    seconds = time.perf_counter() - started
    if job.status != "SUCCEEDED":
        raise ParityError(f"the batch job {job.job_id} ended {job.status}; see `ray job logs {job.job_id}`")
    frame = pd.read_parquet(output / "predictions").set_index("ticket_id")
    return PathRun("batch", frame, seconds)


def _online(settings: Settings, config: ParityConfig, tickets: pd.DataFrame, labels: list[str],
            progress: Any) -> PathRun:
    import httpx

    from unison.serving import deploy

    url = deploy.url(settings)
    rows: list[dict[str, Any]] = []
    instances = tickets.drop(columns=["created_at"]).to_dict(orient="records")
    progress(f"online: {len(instances)} tickets through {url}/v1/predict")
    started = time.perf_counter()
    with httpx.Client(timeout=120) as client:
        for i in range(0, len(instances), 32):
            body = {"instances": [{k: (int(v) if k == "customer_id" else v) for k, v in t.items() if v is not None}
                                  for t in instances[i:i + 32]]}
            try:
                response = client.post(f"{url}/v1/predict", json=body)
            except httpx.HTTPError as exc:
                raise ParityError(f"cannot reach the Serve application at {url} ({exc}); `unison serve up`?") \
                    from None
            if response.status_code != 200:
                raise ParityError(f"/v1/predict answered {response.status_code}: {response.text[:300]}")
            answer = response.json()
            for prediction in answer["predictions"]:
                rows.append(_row(prediction, labels, answer["model_name"], answer["model_version"],
                                 answer["feature_service"]))
    return PathRun("online", pd.DataFrame(rows).set_index("ticket_id"), time.perf_counter() - started)


def _stream(settings: Settings, config: ParityConfig, tickets: pd.DataFrame, labels: list[str],
            progress: Any) -> PathRun:
    from unison.ops.stack import endpoints
    from unison.streaming.tools import produce, tail

    address = endpoints(settings).kafka_bootstrap_servers
    topic = settings.kafka.output_topic
    wanted = set(tickets["ticket_id"])
    messages = [(t["ticket_id"].encode(), json.dumps({k: (int(v) if k == "customer_id" else v)
                                                      for k, v in t.items() if v is not None}).encode())
                for t in tickets.drop(columns=["created_at"]).to_dict(orient="records")]
    progress(f"stream: {len(messages)} tickets into {settings.kafka.input_topic}, reading {topic}")
    started = time.perf_counter()
    produce(settings.kafka, address, iter(messages))
    found: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + config.timeout_s
    for record in tail(settings.kafka, address, topic, from_beginning=True, timeout_s=config.timeout_s):
        key = record["key"]
        if key in wanted and key not in found and isinstance(record["value"], dict):
            value = record["value"]
            found[key] = _row(value, labels, value["model_name"], value["model_version"], value["feature_service"])
            if len(found) == len(wanted):
                break
        if time.monotonic() > deadline:
            break
    seconds = time.perf_counter() - started
    if not found:
        raise ParityError(f"no streaming output for this run's tickets on {topic} within {config.timeout_s:.0f} s: "
                          "is the StreamConsumer deployment running (`unison serve status`)?")
    return PathRun("stream", pd.DataFrame(list(found.values())).set_index("ticket_id"), seconds)


def _row(prediction: dict[str, Any], labels: list[str], model_name: str, model_version: str,
         feature_service: str) -> dict[str, Any]:
    row = {"ticket_id": prediction["ticket_id"], "category": prediction["category"],
           "priority": float(prediction["priority"]), "input_digest": prediction["input_digest"],
           "model_name": model_name, "model_version": str(model_version), "feature_service": feature_service}
    for label in labels:
        row[f"p_{label}"] = float(prediction["probabilities"][label])
    return row
