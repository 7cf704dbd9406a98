"""Many models online: the byte-budget model cache and autoscaling, measured on the embedded stack in one run.

    .venv/bin/python benchmarks/bench_multiplex.py
    .venv/bin/python benchmarks/bench_multiplex.py --models 6 --fit 3 --requests 600

Starts its own stack and registry (copies of triage:production registered as `m0..mN`), deploys
deploy/serve.yaml, and measures:
1. **cache**: a replica whose budget fits `--fit` models, with requests cycling over `--models` models in two
   patterns (round robin: the LRU worst case; Zipf s=1.2: a few hot models). Hit rate, p50/p99 of hits and of
   misses (the `model_cache` field of each answer), the replica's resident bytes against the budget after
   every request, and per model the cold load, the warm reload (after an eviction) and the measured bytes.
2. **autoscaling**: a load ramp (concurrency 1 -> 24 -> 0) against the Model deployment with autoscaling on
   (min 1, max 2): replicas and p99 over time, printed and charted to benchmarks/results/autoscaling.png.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

from workspace import save_chart, workspace  # noqa: E402  (benchmarks/ is the script directory)

TICKET = {"ticket_id": "t", "customer_id": 1, "subject": "Refund for double charge",
          "body": "I was charged twice for my subscription this month."}


def _p(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=6)
    parser.add_argument("--fit", type=int, default=3, help="models the budget is sized for")
    parser.add_argument("--requests", type=int, default=300, help="requests per access pattern")
    parser.add_argument("--ramp-step-s", type=float, default=15.0)
    args = parser.parse_args()

    import httpx

    from unison.config import load_settings
    from unison.model import Registry
    from unison.ops import stack
    from unison.serving import deploy
    from unison.serving.app import MODEL

    work = Path(tempfile.mkdtemp(prefix="bench-multiplex-"))
    base = load_settings()
    source = Registry(base.model.registry_dir)
    if "production" not in source.aliases(base.model.name):
        print("no triage:production in the registry; run `unison demo` or `unison optimize` first")
        return 1
    registry = Registry(work / "registry")
    production = source.load(f"{base.model.name}:production")
    # Each model gets its own files (copied, not linked), so every load really reads its own weights.
    for i in range(args.models):
        staging = registry.staging_dir(f"m{i}")
        for path in production.path.rglob("*"):
            if path.is_file() and path.name != "manifest.json":
                target = staging / path.relative_to(production.path)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(path.read_bytes())
        registry.register(staging, production.manifest.model_copy(update={"name": f"m{i}"}))
    _, prepared = workspace("bench-multiplex-", customers=500, tickets=100)
    settings = prepared.model_copy(update={"model": prepared.model.model_copy(
        update={"registry_dir": registry.root, "name": "m0", "alias": "latest"})})
    stack.up(settings)
    try:
        state = deploy.up(settings, progress=lambda line: None)
        url = state.url
        # Size the budget from a measurement: load one model, read what it added.
        httpx.post(f"{url}/v1/predict", json={"instances": [TICKET], "model": "m0"}, timeout=120)
        replica = httpx.get(f"{url}/v1/models", timeout=30).json()["replica"]
        one = max(replica["cache"]["models"].values(), key=lambda m: m["resident_bytes"])["resident_bytes"]
        budget = int(one * args.fit * 1.15)
        fixed = {"autoscaling_config": None, "num_replicas": 1}
        deploy.up(settings, overrides={MODEL: {**fixed, "user_config": {
            "max_batch_size": 16, "batch_wait_timeout_s": 0.05, "cache": {"budget_bytes": budget}}}},
            progress=lambda line: None)
        time.sleep(12)  # a health check applies a lowered budget
        print(f"one model measures {one / 2**20:.1f} MiB resident; budget {budget / 2**20:.1f} MiB "
              f"(room for {args.fit} of {args.models})")

        rng = random.Random(7)
        weights = [1 / (i + 1) ** 1.2 for i in range(args.models)]
        patterns = {
            "round robin": [f"m{i % args.models}" for i in range(args.requests)],
            "zipf 1.2": [f"m{rng.choices(range(args.models), weights)[0]}" for _ in range(args.requests)],
        }
        rows = []
        peak_over = 0
        for name, sequence in patterns.items():
            hits: list[float] = []
            misses: list[float] = []
            peak = 0
            with httpx.Client(timeout=120) as client:
                for model in sequence:
                    started = time.perf_counter()
                    response = client.post(f"{url}/v1/predict", json={"instances": [TICKET], "model": model})
                    elapsed = (time.perf_counter() - started) * 1000
                    body = response.json()
                    assert response.status_code == 200, body
                    (hits if body["model_cache"] == "hit" else misses).append(elapsed)
                    cache = client.get(f"{url}/v1/models").json()["replica"]["cache"]
                    peak = max(peak, cache["resident_bytes"])
                    peak_over = max(peak_over, cache["resident_bytes"] - budget)
            rows.append((name, len(hits) / len(sequence), _p(hits, 0.5), _p(hits, 0.99), _p(misses, 0.5),
                         _p(misses, 0.99), peak))
        replica = httpx.get(f"{url}/v1/models", timeout=30).json()["replica"]

        print("\n| access pattern | hit rate | hit p50 ms | hit p99 ms | miss p50 ms | miss p99 ms | "
              "peak model bytes / budget |")
        print("|---|---|---|---|---|---|---|")
        for name, rate, h50, h99, m50, m99, peak in rows:
            print(f"| {name} | {rate:.2f} | {h50:.1f} | {h99:.1f} | {m50:.1f} | {m99:.1f} | "
                  f"{peak / 2**20:.1f} / {budget / 2**20:.1f} MiB |")
        print(f"resident model bytes {'stayed under' if peak_over <= 0 else 'WENT OVER'} the budget "
              f"(max excess {max(peak_over, 0) / 2**20:.1f} MiB); process RSS "
              f"{replica['cache']['process_resident_bytes'] / 2**20:.0f} MiB; loads {replica['cache']['loads']}, "
              f"evictions {replica['cache']['evictions']}")

        # Cold load vs warm reload, from the replica's per-load timings: evict everything, load each model twice.
        timings: dict[str, list[float]] = {}
        for model in [f"m{i}" for i in range(args.models)] * 2:
            httpx.post(f"{url}/v1/predict", json={"instances": [TICKET], "model": model}, timeout=120)
            cache = httpx.get(f"{url}/v1/models", timeout=30).json()["replica"]["cache"]
            timings.setdefault(model, []).append(cache["last_load_seconds"][f"{model}:1"] * 1000)
        reload_ms = statistics.median(t[-1] for t in timings.values())
        print(f"model reload after eviction (verify checksums + session + warm-up), median over models: "
              f"{reload_ms:.0f} ms (files in the page cache; this machine cannot drop caches to time a cold "
              f"disk read)")

        # 2. Autoscaling under a ramp.
        deploy.up(settings, overrides={MODEL: {"autoscaling_config": {
            "min_replicas": 1, "initial_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 4,
            "upscale_delay_s": 3, "downscale_delay_s": 15, "look_back_period_s": 12}}}, progress=lambda line: None)
        timeline = asyncio.run(_ramp(url, settings, args.ramp_step_s))
    finally:
        try:
            deploy.down(settings)
        finally:
            stack.down(settings)
    print("\n| t (s) | concurrency | Model replicas | p99 ms | requests/s |")
    print("|---|---|---|---|---|")
    for t, concurrency, replicas, p99, rps in timeline:
        print(f"| {t:.0f} | {concurrency} | {replicas} | {p99:.0f} | {rps:.0f} |")
    first_up = next((t for t, _, r, _, _ in timeline if r >= 2), None)
    back = next((t for t, c, r, _, _ in timeline if c == 0 and r == 1 and first_up and t > first_up), None)
    print(f"first scale-up at t={first_up}s; back to one replica at t={back}s")
    _chart(timeline, ROOT / "benchmarks" / "results" / "autoscaling.png")
    return 0


async def _ramp(url: str, settings: Any, step_s: float) -> list[tuple[float, int, int, float, float]]:
    import httpx

    from unison.ops.stack import endpoints
    from unison.serving import deploy
    from unison.serving.app import MODEL

    def replicas() -> int:
        apps = deploy.applications(endpoints(settings))["applications"]
        return sum(1 for r in apps["unison"]["deployments"][MODEL]["replicas"] if r["state"] == "RUNNING")

    plan = [1, 4, 12, 24, 24, 12, 0, 0, 0]
    timeline = []
    start = time.monotonic()
    async with httpx.AsyncClient(timeout=120) as client:
        for concurrency in plan:
            window_end = time.monotonic() + step_s
            while time.monotonic() < window_end:
                latencies: list[float] = []
                slice_end = min(window_end, time.monotonic() + 5)

                async def worker(slice_end: float, latencies: list[float]) -> None:
                    while time.monotonic() < slice_end:
                        t = time.perf_counter()
                        response = await client.post(f"{url}/v1/predict", json={"instances": [TICKET] * 4})
                        if response.status_code == 200:
                            latencies.append((time.perf_counter() - t) * 1000)

                began = time.monotonic()
                if concurrency:
                    await asyncio.gather(*(worker(slice_end, latencies) for _ in range(concurrency)))
                else:
                    await asyncio.sleep(max(0.0, slice_end - time.monotonic()))
                count = await asyncio.to_thread(replicas)
                timeline.append((time.monotonic() - start, concurrency, count, _p(latencies, 0.99) if latencies
                                 else 0.0, len(latencies) / max(time.monotonic() - began, 1e-9)))
                print(f"  t={timeline[-1][0]:.0f}s c={concurrency} replicas={count} p99={timeline[-1][3]:.0f} ms",
                      flush=True)
    return timeline


def _chart(timeline: list[tuple[float, int, int, float, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    t = [row[0] for row in timeline]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(8, 5))
    top.step(t, [row[2] for row in timeline], where="post", label="Model replicas")
    top.step(t, [row[1] / 12 for row in timeline], where="post", linestyle="--", label="concurrency / 12")
    top.set_ylabel("replicas")
    top.legend()
    bottom.plot(t, [row[3] for row in timeline], marker="o")
    bottom.set_ylabel("p99 latency (ms)")
    bottom.set_xlabel("time (s)")
    fig.suptitle("Autoscaling under a load ramp (2-core machine)")
    save_chart(fig, path)


if __name__ == "__main__":
    sys.exit(main())
