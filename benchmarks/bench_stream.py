"""Streaming: sustained events/s end to end (produce -> prediction on the output topic) against the raw
Predictor in the same run, and event latency at 50% and 90% of the sustained rate.

    .venv/bin/python benchmarks/bench_stream.py
    .venv/bin/python benchmarks/bench_stream.py --events 6000 --seconds 30

Starts its own embedded stack (Ray + Tansu), deploys deploy/serve.yaml (one StreamConsumer replica), and:
1. raw Predictor: the same tickets scored in this process in polls of `max_poll_records` (online features +
   transform + predict), rows/s;
2. saturation: `--events` tickets produced as fast as the broker takes them; events/s = tickets / (last
   output's time - first input's time), read from the output topic;
3. paced runs at 50% and 90% of that rate for `--seconds`: p50/p99 of each event's latency (the output's
   `event_latency_ms` header: from the input record's timestamp to the output being produced).
Target (issue 8): sustained >= 80% of the raw Predictor's rows/s.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

from workspace import workspace  # noqa: E402  (benchmarks/ is the script directory)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()

    import pandas as pd

    from unison.config import load_settings
    from unison.features import store
    from unison.model import Predictor, Registry
    from unison.model.scoring import attach_online_features, score_tickets
    from unison.ops import stack
    from unison.serving import deploy
    from unison.streaming.consumer import StreamConfig
    from unison.streaming.tools import produce, tail

    registry = Registry(load_settings().model.registry_dir)
    if "production" not in registry.aliases(load_settings().model.name):
        print("no triage:production in the registry; run `unison demo` or `unison optimize` first")
        return 1
    _, settings = workspace("bench-stream-", customers=2_000, tickets=max(args.events, 2_000))
    frame = pd.read_parquet(settings.data.dir / "tickets.parquet")[
        ["ticket_id", "customer_id", "subject", "body", "channel"]]

    poll = StreamConfig().max_poll_records
    predictor = Predictor.from_registry(registry, f"{settings.model.name}:production", settings.model.variant,
                                        max_batch_size=1 << 20)
    features = store.Features(settings)
    sample = frame.head(2_000)
    score_tickets(predictor, attach_online_features(features, sample.head(poll)))
    started = time.perf_counter()
    for i in range(0, len(sample), poll):
        score_tickets(predictor, attach_online_features(features, sample.iloc[i:i + poll]))
    raw = len(sample) / (time.perf_counter() - started)
    predictor.close()
    print(f"raw Predictor (online features + transform + predict, polls of {poll}): {raw:,.0f} rows/s", flush=True)

    stack.up(settings)
    try:
        deploy.up(settings, progress=lambda line: None)
        address = stack.endpoints(settings).kafka_bootstrap_servers

        def messages(run: str, rows: pd.DataFrame) -> Any:
            for i, row in enumerate(rows.to_dict(orient="records")):
                row = {k: (int(v) if k == "customer_id" else v) for k, v in row.items() if v is not None}
                row["ticket_id"] = f"{run}-{i}"
                yield row["ticket_id"].encode(), json.dumps(row).encode()

        def outputs(run: str, want: int, timeout: float) -> list[dict[str, Any]]:
            got: dict[str, dict[str, Any]] = {}
            deadline = time.monotonic() + timeout
            for record in tail(settings.kafka, address, settings.kafka.output_topic, from_beginning=True,
                               timeout_s=timeout):
                if (record["key"] or "").startswith(run):
                    got.setdefault(record["key"], record)
                    if len(got) >= want or time.monotonic() > deadline:
                        break
            return list(got.values())

        # Warm up the consumer (group join, model load).
        run = uuid.uuid4().hex[:6]
        produce(settings.kafka, address, messages(run, frame.head(100)))
        outputs(run, 100, 120)

        # 2. Saturation.
        run = uuid.uuid4().hex[:6]
        rows = frame.head(args.events)
        t0 = time.time()
        sender = threading.Thread(target=produce, args=(settings.kafka, address, messages(run, rows)))
        sender.start()
        done = outputs(run, len(rows), 600)
        sender.join()
        elapsed = time.time() - t0
        sustained = len(done) / elapsed
        print(f"saturation: {len(done):,} of {len(rows):,} events in {elapsed:.1f} s = {sustained:,.0f} events/s "
              f"end to end", flush=True)

        # 3. Paced runs.
        paced = []
        for share in (0.5, 0.9):
            run = uuid.uuid4().hex[:6]
            rate = sustained * share
            count = int(rate * args.seconds)
            rows = frame.head(count) if count <= len(frame) else pd.concat([frame] * (count // len(frame) + 1))
            rows = rows.head(count)
            sender = threading.Thread(target=produce, args=(settings.kafka, address, messages(run, rows)),
                                      kwargs={"rate": rate})
            sender.start()
            done = outputs(run, count, args.seconds * 4 + 60)
            sender.join()
            latencies = sorted(float(r["headers"].get("event_latency_ms", "nan")) for r in done)
            p50 = latencies[len(latencies) // 2]
            p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
            paced.append((share, rate, len(done), count, p50, p99))
            print(f"  {share:.0%} of sustained ({rate:,.0f}/s): {len(done):,}/{count:,} scored, event latency "
                  f"p50 {p50:.0f} ms, p99 {p99:.0f} ms", flush=True)
    finally:
        try:
            deploy.down(settings)
        finally:
            stack.down(settings)

    print("\n| measure | figure |")
    print("|---|---|")
    print(f"| raw Predictor (polls of {poll}) | {raw:,.0f} rows/s |")
    print(f"| streaming, sustained end to end | {sustained:,.0f} events/s ({sustained / raw:.2f} of raw) |")
    for share, rate, scored, count, p50, p99 in paced:
        print(f"| at {share:.0%} ({rate:,.0f}/s): event latency p50 / p99 | {p50:.0f} / {p99:.0f} ms "
              f"({scored:,}/{count:,} scored) |")
    ratio = sustained / raw
    print(f"streaming / raw Predictor = {ratio:.2f} (target >= 0.80): {'met' if ratio >= 0.8 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
