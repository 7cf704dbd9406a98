"""Feature access speed: online lookups (SQLite and Redis) and historical retrieval at scale.

    .venv/bin/python benchmarks/bench_features.py                    # 1,000,000 tickets, 100,000 customers
    .venv/bin/python benchmarks/bench_features.py --tickets 200000   # quicker

Online: p50/p99 of looking up 1 and 32 customers, Unison's reader (`Features.online`: one pipelined Redis round
trip, TTL applied, a DataFrame out) against Feast's `get_online_features` on the same store, side by side in
one run. Target: p99 < 2 ms for 32 rows in-process with Redis. Historical: Feast's point-in-time join of every
ticket with its customer's features (file offline store), in a child process so its peak memory can be read.
Uses Redis on 127.0.0.1:6379 (db 14, a throw-away project prefix that is torn down afterwards).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _historical_child(settings_json: str) -> None:
    """Run in a child: one historical retrieval of all tickets; print rows/s and peak RSS."""
    import pandas as pd

    from unison.config import Settings
    from unison.features.store import Features

    settings = Settings.model_validate_json(settings_json)
    tickets = pd.read_parquet(settings.data.dir / "tickets.parquet", columns=["ticket_id", "customer_id",
                                                                             "created_at"])
    start = time.perf_counter()
    joined = Features(settings).historical(tickets, timestamp_column="created_at")
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"rows": len(joined), "seconds": seconds, "peak_bytes": peak}))


def _latency(fn, rounds: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return float(np.median(samples) * 1e3), float(np.percentile(samples, 99) * 1e3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _historical_child(args.child)
        return 0

    from unison.config import load_settings
    from unison.data import generate
    from unison.features import store

    work = Path(tempfile.mkdtemp(prefix="bench-features-"))
    print(f"generating {args.tickets:,} tickets for {args.customers:,} customers in {work}", flush=True)
    generate(work / "data", customers=args.customers, tickets=args.tickets, seed=3)
    project = f"bench_{uuid.uuid4().hex[:8]}"
    profiles = {
        "sqlite": load_settings(data={"dir": work / "data"}, features={
            "repo_dir": ROOT / "features", "state_dir": work / "feast-sqlite"}),
        "redis": load_settings(data={"dir": work / "data"}, features={
            "repo_dir": ROOT / "features", "state_dir": work / "feast-redis", "profile": "redis",
            "project": project, "redis_connection": "127.0.0.1:6379,db=14"}),
    }
    rng = np.random.default_rng(0)
    print("\n## Online lookup (p50 / p99 ms)\n")
    print("| store | rows | Unison reader | Feast get_online_features | speed-up (p50) |")
    print("|---|---|---|---|---|")
    try:
        for name, settings in profiles.items():
            store.apply(settings)
            store.materialize(settings)
            features = store.Features(settings)
            refs = store.feature_refs()
            for rows in (1, 32):
                batches = [rng.integers(1, args.customers + 1, rows).tolist() for _ in range(64)]
                def ours_fn(features=features, batches=batches) -> object:  # type: ignore[no-untyped-def]
                    return features.online(batches[rng.integers(64)])

                def feast_fn(features=features, batches=batches, refs=refs) -> object:  # type: ignore[no-untyped-def]
                    return features.store.get_online_features(
                        features=refs, entity_rows={"customer_id": batches[rng.integers(64)]}).to_df()

                for _ in range(20):
                    ours_fn(), feast_fn()
                ours, feast = [], []
                for _ in range(5):  # alternate blocks
                    ours.append(_latency(ours_fn, args.rounds // 5))
                    feast.append(_latency(feast_fn, args.rounds // 5))
                o50, o99 = float(np.median([o[0] for o in ours])), float(np.max([o[1] for o in ours]))
                f50, f99 = float(np.median([f[0] for f in feast])), float(np.max([f[1] for f in feast]))
                print(f"| {name} | {rows} | {o50:.2f} / {o99:.2f} | {f50:.2f} / {f99:.2f} | {f50 / o50:.1f}x |",
                      flush=True)
        print("\n(p99 is the largest per-block p99 of five blocks)")

        print(f"\n## Historical retrieval of {args.tickets:,} tickets (Feast, file offline store)\n", flush=True)
        child = subprocess.run([sys.executable, __file__, "--child", profiles["sqlite"].model_dump_json()],
                               capture_output=True, text=True, timeout=3600)
        if child.returncode != 0:
            print(f"historical retrieval failed:\n{child.stderr[-2000:]}")
        else:
            result = json.loads(child.stdout.strip().splitlines()[-1])
            print(f"- {result['rows']:,} rows in {result['seconds']:.1f}s = {result['rows'] / result['seconds']:,.0f} "
                  f"rows/s; peak memory {result['peak_bytes'] / 2**30:.2f} GiB")
    finally:
        store.teardown(profiles["redis"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
