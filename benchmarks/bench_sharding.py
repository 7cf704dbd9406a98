"""Pipeline-sharded model replicas on one machine: what the stage chain costs.

For K = 1 (the whole graph in one stage actor), 2 and 3 stages, side by side in one run, interleaved in rounds so
the machine's noise hits every K alike: p50/p90 latency of one ticket, throughput with 32 tickets per call, and
the bytes that moved between stages per ticket. The in-process Predictor (no actors at all) is the reference.
On one machine this is pure overhead (every stage shares the same cores); on a GPU cluster the stages run on
their own devices and the chain is what lets a model larger than one device be served.

    .venv/bin/python benchmarks/bench_sharding.py [--model triage:production] [--variant int8] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="Registry reference (default: the configured model).")
    parser.add_argument("--variant", default="int8")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=40, help="Single-ticket calls per K per round.")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sharding.json")
    args = parser.parse_args()

    import pandas as pd
    import ray

    from unison.config import load_settings
    from unison.features import feature_matrix, transform
    from unison.model import Predictor, PredictorOptions, Registry
    from unison.model.chain import StageChain
    from unison.model.shard import whole_graph

    settings = load_settings()
    registry = Registry(settings.model.registry_dir)
    artifact = registry.load(args.model or settings.model.ref, [args.variant])
    info = artifact.manifest.variants[args.variant]
    if not info.stages:
        print(f"{artifact.ref} {args.variant} has no stage splits; rebuild it with `unison optimize`", file=sys.stderr)
        return 2
    tickets_path = settings.data.dir / "tickets.parquet"
    frame = pd.read_parquet(tickets_path).sample(n=400, random_state=0) if tickets_path.exists() else pd.DataFrame(
        {"subject": ["refund"] * 400, "body": ["I was charged twice for my subscription this month"] * 400})
    inputs = transform(frame)
    texts, features = inputs["text"].tolist(), feature_matrix(inputs)

    # A private local Ray for the run; without this, ray.init would switch on token auth and write a token
    # into ~/.ray that other local clients then send.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    outputs = artifact.manifest.output_names()
    chains = {1: StageChain(artifact.path, [whole_graph(info.file, artifact.manifest.input_names(), outputs)],
                            outputs)}
    for k in sorted(int(k) for k in info.stages):
        chains[k] = StageChain(artifact.path, info.stages[str(k)], outputs)
    options = PredictorOptions(variant=args.variant, execution="rows")
    predictors = {k: Predictor.from_options(artifact, options, chain=c) for k, c in chains.items()}
    local = Predictor.from_options(artifact, options)
    engines: dict[str, Predictor] = {"in-process": local, **{f"K={k}": p for k, p in predictors.items()}}

    reference = local.predict(texts[:64], features[:64]).outputs
    for name, predictor in engines.items():  # equal outputs first, then speed
        got = predictor.predict(texts[:64], features[:64]).outputs
        diff = max(float(np.abs(reference[o] - got[o]).max()) for o in reference)
        print(f"{name}: max |diff| vs in-process on 64 tickets = {diff:.1e}")

    latency: dict[str, list[float]] = {name: [] for name in engines}
    throughput: dict[str, list[float]] = {name: [] for name in engines}
    rng = np.random.default_rng(0)
    for round_ in range(args.rounds):
        for name, predictor in engines.items():
            for _ in range(args.calls):
                i = int(rng.integers(len(texts)))
                started = time.perf_counter()
                predictor.predict(texts[i:i + 1], features[i:i + 1])
                latency[name].append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            for j in range(0, 4 * args.batch, args.batch):
                predictor.predict(texts[j:j + args.batch], features[j:j + args.batch])
            throughput[name].append(4 * args.batch / (time.perf_counter() - started))
        print(f"round {round_ + 1}/{args.rounds} done", flush=True)

    rows = []
    for name in engines:
        k = int(name.split("=")[1]) if name.startswith("K=") else 0
        moved = None
        if k:
            stats = chains[k].describe()
            feeds = max(stats[0]["feeds"], 1)
            moved = sum(s["forwarded_bytes"] for s in stats) / feeds
        rows.append({"engine": name, "stages": k, "p50_ms": statistics.median(latency[name]),
                     "p90_ms": float(np.percentile(latency[name], 90)),
                     "tickets_per_s": statistics.median(throughput[name]), "bytes_between_stages_per_ticket": moved})
    base = next(r for r in rows if r["stages"] == 1)
    print(f"\n{'engine':<11} {'p50 ms':>8} {'p90 ms':>8} {'tickets/s':>10} {'bytes moved/ticket':>19} "
          f"{'p50 overhead/extra stage':>25}")
    for r in rows:
        extra = (f"{(r['p50_ms'] - base['p50_ms']) / (r['stages'] - 1):.2f} ms" if r["stages"] > 1 else "-")
        r["p50_overhead_per_extra_stage_ms"] = None if extra == "-" else float(extra.split()[0])
        moved = f"{r['bytes_between_stages_per_ticket']:,.0f}" if r["bytes_between_stages_per_ticket"] else "-"
        print(f"{r['engine']:<11} {r['p50_ms']:>8.2f} {r['p90_ms']:>8.2f} {r['tickets_per_s']:>10.1f} {moved:>19} "
              f"{extra:>25}")
    print(f"\nthroughput ratio K=2/K=1 {rows[2]['tickets_per_s'] / base['tickets_per_s']:.2f}, "
          f"K=1 chain / in-process p50 {base['p50_ms'] / rows[0]['p50_ms']:.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": artifact.ref, "variant": args.variant, "rows": rows}, indent=2))
    for chain in chains.values():
        chain.close()
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
