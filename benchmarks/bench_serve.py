"""Online serving: Unison's Serve application against a plain FastAPI + PyTorch service, side by side, one run.

    .venv/bin/python benchmarks/bench_serve.py                   # ~10 s per cell
    .venv/bin/python benchmarks/bench_serve.py --seconds 20 --concurrency 1 8 32

Starts its own embedded stack (free ports, its own state directory), reuses (or builds) triage:production,
applies and materializes the features, deploys deploy/serve.yaml with `unison.serving.deploy.up`, and starts
benchmarks/baseline_server.py (FastAPI + transformers PyTorch, each request scored alone) on a free port. The
same closed-loop load generator (asyncio + httpx, one ticket per request, keep-alive connections) drives both at
each concurrency with short and long tickets, servers alternating per cell. Prints requests/s, p50 and p99,
Unison's batch fill ratio (requests per batch / max_batch_size, from the model replica's counters), and the
raw Predictor's in-process latency for the same ticket (online features + transform + predict).
Targets (issue 6): Unison >= 10x the baseline's requests/s at concurrency 32; Unison's p50 at concurrency 1
within 5 ms of the raw Predictor's. The load generator shares the 2 cores with the servers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

from workspace import workspace  # noqa: E402  (benchmarks/ is the script directory)

SHORT = {"subject": "Refund for double charge", "body": "I was charged twice for my subscription this month."}
LONG = {"subject": "App keeps crashing after the latest update",
        "body": ("Since the update yesterday the desktop app crashes whenever I open the reports page. I tried "
                 "reinstalling, clearing the cache and logging out and in again, but nothing helps. My team "
                 "cannot export the weekly numbers and our deadline is tomorrow. ") * 3}


async def drive(url: str, ticket: dict[str, Any], concurrency: int, seconds: float) -> dict[str, float]:
    """Closed loop: `concurrency` clients each send the next request when the previous one answers."""
    import httpx

    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        deadline = time.perf_counter() + seconds

        async def client_loop(k: int) -> None:
            nonlocal errors
            i = 0
            while time.perf_counter() < deadline:
                body = {"instances": [{**ticket, "ticket_id": f"{k}-{i}"}]}
                started = time.perf_counter()
                response = await client.post(url, json=body)
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1
                i += 1

        started = time.perf_counter()
        await asyncio.gather(*(client_loop(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {"rps": len(latencies) / elapsed, "p50": latencies[len(latencies) // 2] * 1000,
            "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
            "n": len(latencies), "errors": errors}


def _wait_http(url: str, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"{url} did not come up in {timeout:g} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each measured cell")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--raw-rounds", type=int, default=200)
    args = parser.parse_args()

    import httpx
    import pandas as pd

    from unison.config import environment
    from unison.features import store
    from unison.model import Predictor, PredictorOptions, Registry
    from unison.model.optimize import OptimizeOptions, optimize
    from unison.model.scoring import attach_online_features, score_tickets
    from unison.ops import stack
    from unison.serving import deploy

    _, settings = workspace("bench-serve-", customers=2_000, tickets=2_000)
    registry = Registry(settings.model.registry_dir)
    if "production" not in registry.aliases(settings.model.name):
        result = optimize(OptimizeOptions(data_dir=settings.data.dir, skip_benchmark=True), registry, progress=print)
        assert result.artifact is not None
        registry.promote(settings.model.name, result.artifact.manifest.version)
    customer = int(pd.read_parquet(settings.data.dir / "tickets.parquet")["customer_id"].iloc[0])

    # Raw Predictor latency for the same tickets, in this process, before anything else runs.
    predictor = Predictor.from_registry(registry, f"{settings.model.name}:production",
                                        PredictorOptions.from_config(settings.model))
    features = store.Features(settings)
    raw: dict[str, float] = {}
    for label, text in (("short", SHORT), ("long", LONG)):
        frame = pd.DataFrame([{"ticket_id": "t", "customer_id": customer, **text}])
        timings = []
        for _ in range(args.raw_rounds):
            started = time.perf_counter()
            score_tickets(predictor, attach_online_features(features, frame))
            timings.append(time.perf_counter() - started)
        raw[label] = statistics.median(timings) * 1000
    predictor.close()
    print(f"raw Predictor, one ticket (online features + transform + predict): short p50 {raw['short']:.1f} ms, "
          f"long p50 {raw['long']:.1f} ms", flush=True)

    stack.up(settings)
    baseline_proc = None
    try:
        state = deploy.up(settings, progress=print)
        unison_url = f"{state.url}/v1/predict"
        port = stack.free_ports(1)[0]
        env = {**os.environ, **environment(settings), "PYTHONPATH": str(ROOT / "platform")}
        baseline_proc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "baseline_server.py"),
                                          "--port", str(port)], env=env)
        baseline_url = f"http://127.0.0.1:{port}/v1/predict"
        _wait_http(f"http://127.0.0.1:{port}/docs", 300)

        def stats() -> dict[str, Any]:
            return httpx.get(f"{state.url}/v1/models", timeout=30).json()["replica"]

        max_batch = stats()["batching"]["max_batch_size"]
        for url in (unison_url, baseline_url):  # warm up both
            asyncio.run(drive(url, {**SHORT, "customer_id": customer}, 2, 3))
        rows = []
        for label, text in (("short", SHORT), ("long", LONG)):
            ticket = {**text, "customer_id": customer}
            for concurrency in args.concurrency:
                before = stats()["stats"]
                u = asyncio.run(drive(unison_url, ticket, concurrency, args.seconds))
                after = stats()["stats"]
                b = asyncio.run(drive(baseline_url, ticket, concurrency, args.seconds))
                batches = after["batches"] - before["batches"]
                fill = (after["requests"] - before["requests"]) / batches / max_batch if batches else 0.0
                rows.append((label, concurrency, u, b, fill))
                print(f"  {label} c={concurrency}: unison {u['rps']:.0f} req/s p50 {u['p50']:.1f} ms | baseline "
                      f"{b['rps']:.0f} req/s p50 {b['p50']:.1f} ms", flush=True)
    finally:
        if baseline_proc is not None:
            baseline_proc.terminate()
            baseline_proc.wait(30)
        try:
            deploy.down(settings)
        finally:
            stack.down(settings)

    print("\n| tickets | concurrency | Unison req/s | p50 ms | p99 ms | baseline req/s | p50 ms | p99 ms | "
          "throughput ratio | batch fill |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, concurrency, u, b, fill in rows:
        print(f"| {label} | {concurrency} | {u['rps']:.0f} | {u['p50']:.1f} | {u['p99']:.1f} | {b['rps']:.0f} | "
              f"{b['p50']:.1f} | {b['p99']:.1f} | {u['rps'] / b['rps']:.1f}x | {fill:.2f} |")
        if u["errors"] or b["errors"]:
            print(f"  ({label} c={concurrency}: errors unison {u['errors']}, baseline {b['errors']})")
    top = max(args.concurrency)
    for label, concurrency, u, b, _ in rows:
        if concurrency == top:
            ratio = u["rps"] / b["rps"]
            print(f"{label}, concurrency {top}: Unison / baseline throughput = {ratio:.1f}x (target >= 10x): "
                  f"{'met' if ratio >= 10 else 'NOT met'}")
        if concurrency == 1:
            gap = u["p50"] - raw[label]
            print(f"{label}, concurrency 1: Unison p50 - raw Predictor p50 = {gap:.1f} ms (target <= 5 ms): "
                  f"{'met' if gap <= 5 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
