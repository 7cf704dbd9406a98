"""Batch job throughput against the raw Predictor and a naive pandas + PyTorch loop, on one machine, one run.

    .venv/bin/python benchmarks/bench_batch.py                      # 20,000 tickets (a few minutes)
    .venv/bin/python benchmarks/bench_batch.py --tickets 1000000    # the full run (about an hour on 2 cores)

Starts its own embedded stack (free ports, its own state directory), builds or reuses the triage model in the
configured registry, applies and materializes the features, then measures, side by side:
1. raw Predictor: the same tickets, features already joined, transform + `Predictor.predict` in this process;
2. the batch job, submitted with Ray's job SDK to the stack (rows/s from its `_SUCCESS` manifest, i.e. including
   actor start-up and model loading), with the resident memory of all the stack's processes sampled every
   second (bounded memory = streaming execution): the peak, the level at each quarter of the run, and the trace
   charted to benchmarks/results/batch_memory.png;
3. a naive loop: pandas `iterrows`, Hugging Face tokenizer and PyTorch eager per ticket (the usual starting
   point), on a sample.
Target: job >= 80% of the raw Predictor's rows/s.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from workspace import save_chart  # noqa: E402  (benchmarks/ is the script directory)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tickets", type=int, default=20_000)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--naive-rows", type=int, default=300)
    parser.add_argument("--raw-rows", type=int, default=5_000, help="rows for the raw Predictor measurement")
    args = parser.parse_args()

    import pandas as pd

    from unison.batch.job import BatchJobConfig
    from unison.batch.submit import submit
    from unison.config import load_settings
    from unison.data import generate
    from unison.features import feature_matrix, store, transform
    from unison.model import Predictor, PredictorOptions, Registry
    from unison.model.optimize import OptimizeOptions, optimize
    from unison.ops import stack

    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    base = load_settings()
    settings = base.model_copy(update={
        "state_dir": work / "state",
        "data": base.data.model_copy(update={"dir": work / "data"}),
        "features": base.features.model_copy(update={"repo_dir": ROOT / "features", "state_dir": work / "feast"}),
    })
    print(f"generating {args.tickets:,} tickets in {work}", flush=True)
    generate(settings.data.dir, customers=args.customers, tickets=args.tickets, seed=5)
    registry = Registry(settings.model.registry_dir)
    if "production" not in registry.aliases(settings.model.name):
        demo_data = base.data.dir if (base.data.dir / "train.parquet").exists() else settings.data.dir
        result = optimize(OptimizeOptions(data_dir=demo_data, skip_benchmark=True), registry, progress=print)
        assert result.artifact is not None
        registry.promote(settings.model.name, result.artifact.manifest.version)
    store.apply(settings)
    store.materialize(settings)
    tickets_path = settings.data.dir / "tickets.parquet"

    # 1. raw Predictor on pre-joined rows
    sample = pd.read_parquet(tickets_path).head(args.raw_rows)
    joined = store.Features(settings).historical(sample, timestamp_column="created_at")
    predictor = Predictor.from_registry(registry, f"{settings.model.name}:production", PredictorOptions(variant="int8"))
    predictor.predict(["warm up"], np.zeros((1, predictor.num_features), dtype=np.float32))
    start = time.perf_counter()
    for i in range(0, len(joined), 1024):
        inputs = transform(joined.iloc[i : i + 1024])
        predictor.predict(inputs["text"].tolist(), feature_matrix(inputs))
    raw = len(joined) / (time.perf_counter() - start)
    predictor.close()
    print(f"raw Predictor (transform + predict, in process): {raw:,.0f} rows/s", flush=True)

    # 2. the job on the embedded stack
    stack.up(settings)
    peak = {"bytes": 0}
    trace: list[tuple[float, int]] = []  # (seconds since submit, bytes)
    stop = threading.Event()

    def sample_memory() -> None:
        state = stack.load_state(settings)
        started = time.monotonic()
        while not stop.is_set():
            total = sum(p.memory_info().rss for c in state.components.values()
                        for p in stack._component_processes(c) if p.is_running())
            peak["bytes"] = max(peak["bytes"], total)
            trace.append((time.monotonic() - started, total))
            stop.wait(1.0)

    sampler = threading.Thread(target=sample_memory, daemon=True)
    try:
        sampler.start()
        config = BatchJobConfig(tickets=str(tickets_path), output=str(work / "out"))
        job = submit(settings, config, stack.endpoints(settings).ray_dashboard_url, ROOT, follow=True,
                     on_log=lambda line: None)
        stop.set()
        sampler.join()
        if job.status != "SUCCEEDED":
            print(f"job {job.job_id} ended {job.status}; see `ray job logs`")
            return 1
        manifest = json.loads((work / "out" / "_SUCCESS").read_text())
    finally:
        stop.set()
        stack.down(settings)
    job_rate = manifest["rows_per_second"]
    pipeline_rate = manifest["pipeline_rows_per_second"]
    print(f"batch job: {manifest['rows_out']:,} rows scored + {manifest['rows_error']} errors in "
          f"{manifest['seconds']:.0f}s = {job_rate:,.0f} rows/s end to end, {pipeline_rate:,.0f} rows/s in the "
          f"scoring pipeline; peak RSS of the stack {peak['bytes'] / 2**30:.2f} GiB", flush=True)
    if trace:
        quarters = [trace[min(len(trace) - 1, int(len(trace) * q))] for q in (0.25, 0.5, 0.75, 1.0)]
        print("memory over the run (RSS of the stack's processes): " + ", ".join(
            f"{t:.0f} s {b / 2**30:.2f} GiB" for t, b in quarters), flush=True)
        _chart_memory(trace, manifest["rows_out"], ROOT / "benchmarks" / "results" / "batch_memory.png")

    # 3. naive pandas + PyTorch loop
    import torch
    from transformers import AutoTokenizer

    from unison.model.export import build_reference, inspect_source
    from unison.model.head import TriageHead

    artifact = registry.load(f"{settings.model.name}:production")
    source = inspect_source(Path(artifact.manifest.source_model["path"]))
    model = build_reference(source, TriageHead.load(artifact.file("head.npz")))
    tokenizer = AutoTokenizer.from_pretrained(source.path)
    torch.set_num_threads(2)
    rows = transform(joined.head(args.naive_rows))
    start = time.perf_counter()
    with torch.inference_mode():
        for _, row in rows.iterrows():
            encoded = tokenizer(row["text"], truncation=True, max_length=artifact.manifest.max_length,
                                return_tensors="pt")
            features = torch.tensor([row[list(artifact.manifest.numeric_features)].to_numpy(dtype=np.float32)])
            model(encoded["input_ids"], encoded["attention_mask"], encoded["token_type_ids"], features)
    naive = len(rows) / (time.perf_counter() - start)

    print("\n| path | rows/s | vs raw Predictor | vs naive loop |")
    print("|---|---|---|---|")
    for name, rate in (("naive pandas + PyTorch loop", naive), ("raw Predictor (int8, rows)", raw),
                       (f"batch job end to end ({manifest['rows_in']:,} rows, submitted)", job_rate),
                       ("batch job scoring pipeline (steady state)", pipeline_rate)):
        print(f"| {name} | {rate:,.0f} | {rate / raw:.2f} | {rate / naive:.1f}x |")
    for label, rate in (("end to end", job_rate), ("scoring pipeline", pipeline_rate)):
        ratio = rate / raw
        print(f"job ({label}) / raw Predictor = {ratio:.2f} (target >= 0.80): {'met' if ratio >= 0.8 else 'NOT met'}")
    return 0


def _chart_memory(trace: list[tuple[float, int]], rows: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(9, 3.5))
    axis.plot([t for t, _ in trace], [b / 2**30 for _, b in trace])
    axis.set_xlabel("seconds since the job was submitted")
    axis.set_ylabel("RSS of the stack (GiB)")
    axis.set_ylim(bottom=0)
    axis.set_title(f"Batch job over {rows:,} tickets: resident memory of every stack process")
    save_chart(fig, path)


if __name__ == "__main__":
    sys.exit(main())
