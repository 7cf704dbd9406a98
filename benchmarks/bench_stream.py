"""Streaming: sustained events/s end to end (produce -> prediction on the output topic) against the raw
Predictor in the same run, and event latency at 50% and 90% of the sustained rate.

    .venv/bin/python benchmarks/bench_stream.py
    .venv/bin/python benchmarks/bench_stream.py --events 12000 --seconds 30

Starts its own embedded stack (Ray + Tansu), deploys deploy/serve.yaml (one StreamConsumer replica), and:
1. raw Predictor: the same tickets scored in this process in polls of `max_poll_records` (online features +
   transform + predict), rows/s, measured while the stack idles beside it (the machine load the stream has);
2. saturation: `--events` tickets produced as fast as the broker takes them. Two rates: end to end (tickets /
   time from the first input until the group's lag is 0 again, the benchmark's producer competing for the CPU
   meanwhile) and draining (the backlog left when the producer finished / the time to drain it: the stream
   alone). Steps 1 and 2 run side by side `--rounds` times; medians are quoted, the target is on the drain;
3. paced runs at 50% and 90% of that rate for `--seconds`: p50/p99 of each event's latency (the output's
   `event_latency_ms` header: from the input record's timestamp to the output being produced);
4. churn (`--churn-events`, paced at 60% of sustained): a scale step 1 -> 2 StreamConsumer replicas, then a
   SIGKILL of the new replica right after it got its partitions. The group's lag (sampled every 0.5 s) and each
   replica's outputs per second (the output's `consumer` header) are charted to
   benchmarks/results/stream_churn.png with the events marked, and the longest stretch without output while
   the group had lag is printed.
Target (issue 18): sustained >= 0.9 of the raw Predictor's rows/s.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
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
    parser.add_argument("--events", type=int, default=8000, help="saturation burst (long enough that start-up "
                        "and the last commit are a small share of it)")
    parser.add_argument("--rounds", type=int, default=3, help="side-by-side rounds of raw + burst (medians)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--churn-events", type=int, default=6000, help="0: skip the churn run")
    args = parser.parse_args()

    import pandas as pd

    from unison.config import load_settings
    from unison.features import store
    from unison.model import Predictor, PredictorOptions, Registry
    from unison.model.scoring import attach_online_features, score_tickets
    from unison.ops import stack
    from unison.serving import deploy
    from unison.streaming.tickets import StreamConfig
    from unison.streaming.tools import produce, tail

    registry = Registry(load_settings().model.registry_dir)
    if "production" not in registry.aliases(load_settings().model.name):
        print("no triage:production in the registry; run `unison demo` or `unison optimize` first")
        return 1
    _, settings = workspace("bench-stream-", customers=2_000, tickets=max(args.events, 2_000))
    frame = pd.read_parquet(settings.data.dir / "tickets.parquet")[
        ["ticket_id", "customer_id", "subject", "body", "channel"]]

    poll = StreamConfig().max_poll_records
    predictor = Predictor.from_registry(registry, f"{settings.model.name}:production",
                                        PredictorOptions.from_config(settings.model))
    sample = frame.head(2_000)

    def raw_rate(features: Any) -> float:
        """The raw Predictor's rows/s: online features + transform + predict, in polls like the stream's."""
        score_tickets(predictor, attach_online_features(features, sample.head(poll)))
        started = time.perf_counter()
        for i in range(0, len(sample), poll):
            score_tickets(predictor, attach_online_features(features, sample.iloc[i:i + poll]))
        return len(sample) / (time.perf_counter() - started)

    stack.up(settings)
    try:
        # One StreamConsumer replica against one in-process Predictor: the lag policy would add a second replica
        # during the burst, which on two cores only splits them (and loads a model on them meanwhile). Scale
        # steps keep the policy and pin its bounds: dropping it changes the application's code version, and
        # Serve then restarts every deployment.
        deploy.up(settings, overrides=_replicas(settings, 1), progress=lambda line: None)
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

        # 1 + 2, side by side: each round measures the raw Predictor (in this process, while the stack idles
        # beside it: the same machine load the stream has) and then one saturation burst. Medians are quoted.
        from unison.streaming.lag import LagReader

        features = store.Features(settings)
        raws, ends, drains = [], [], []
        for round_ in range(args.rounds):
            raws.append(raw_rate(features))
            lag = LagReader(settings.kafka, address)
            run = uuid.uuid4().hex[:6]
            rows = frame.head(args.events)
            end_to_end, drain = _saturate(settings, address, lag, messages(run, rows))
            lag.close()
            done = outputs(run, len(rows), 120)
            ends.append(len(done) / len(rows) * end_to_end)
            drains.append(len(done) / len(rows) * drain)
            print(f"round {round_ + 1}: raw {raws[-1]:,.0f} rows/s; stream {ends[-1]:,.0f} events/s end to end "
                  f"({len(done):,}/{len(rows):,} scored), {drains[-1]:,.0f} events/s draining the backlog once the "
                  "producer finished", flush=True)
        predictor.close()
        raw, sustained, drained = statistics.median(raws), statistics.median(ends), statistics.median(drains)

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
        if args.churn_events:
            churn = _churn(settings, address, messages, frame, sustained * 0.6, args.churn_events)
    finally:
        try:
            deploy.down(settings)
        finally:
            stack.down(settings)

    print("\n| measure | figure |")
    print("|---|---|")
    print(f"| raw Predictor (polls of {poll}), median of {args.rounds} | {raw:,.0f} rows/s |")
    print(f"| streaming, burst end to end (producer running) | {sustained:,.0f} events/s "
          f"({sustained / raw:.2f} of raw) |")
    print(f"| streaming, draining the backlog (producer done) | {drained:,.0f} events/s ({drained / raw:.2f} of raw) |")
    for share, rate, scored, count, p50, p99 in paced:
        print(f"| at {share:.0%} ({rate:,.0f}/s): event latency p50 / p99 | {p50:.0f} / {p99:.0f} ms "
              f"({scored:,}/{count:,} scored) |")
    if args.churn_events:
        print(f"| churn: longest stretch without output while lagging | {churn['gap']:.1f} s |")
        for name, seconds in churn["pauses"].items():
            print(f"| churn: {name}, outputs resumed after | {seconds:.1f} s |")
    ratio = drained / raw
    print(f"target stream/raw: {ratio:.2f} (goal 0.9): {'met' if ratio >= 0.9 else 'NOT met'}")
    return 0


def _saturate(settings: Any, address: str, lag: Any, messages: Any) -> tuple[float, float]:
    """Produce a burst as fast as the broker takes it; (events/s from the first input to the group's lag being 0
    again, events/s while the backlog drains after the producer finished). Lag is read every 0.2 s; lag 0
    means every output acknowledged and committed. The drain rate is the stream alone: the benchmark's own
    producer no longer competes with it for the CPU."""
    from unison.streaming.tools import produce

    count = 0

    def send() -> None:
        nonlocal count
        count = produce(settings.kafka, address, messages)

    t0 = time.time()
    sender = threading.Thread(target=send)
    sender.start()
    deadline = time.monotonic() + 600
    drain_from: tuple[float, int] | None = None
    while time.monotonic() < deadline:
        backlog = sum(r.lag for r in lag.read("unison-scorer"))
        now = time.time()
        if not sender.is_alive():
            if drain_from is None:
                drain_from = (now, backlog)
            if backlog == 0:
                break
        time.sleep(0.2)
    elapsed = time.time() - t0
    sender.join()
    assert drain_from is not None
    drain_s = time.time() - drain_from[0]
    return count / elapsed, drain_from[1] / drain_s if drain_from[1] else count / elapsed


def _replicas(settings: Any, replicas: int) -> dict[str, Any]:
    """Deploy overrides that pin the StreamConsumer's lag policy to `replicas`."""
    import yaml

    from unison.serving.app import STREAM

    config = yaml.safe_load(settings.serving.config_file.read_text())
    scaling = next(d for d in config["applications"][0]["deployments"] if d["name"] == STREAM)["autoscaling_config"]
    bounds = {"min_replicas": replicas, "initial_replicas": replicas, "max_replicas": replicas}
    return {f"unison/{STREAM}": {"autoscaling_config": {**scaling, **bounds}}}


def _churn(settings: Any, address: str, messages: Any, frame: Any, rate: float, count: int) -> dict[str, Any]:
    """Scale 1 -> 2 and SIGKILL the newcomer while tickets stream in at `rate`; chart lag and per-replica
    throughput."""
    import os
    import signal

    import httpx
    import pandas as pd

    from unison.serving import deploy
    from unison.streaming.lag import LagReader
    from unison.streaming.tools import produce, tail

    run = uuid.uuid4().hex[:6]
    rows = pd.concat([frame] * (count // len(frame) + 1)).head(count)
    url = deploy.url(settings)
    lags: list[tuple[float, int]] = []
    events: list[tuple[float, str]] = []
    stop = threading.Event()
    t0 = time.time()

    def sample() -> None:
        reader = LagReader(settings.kafka, address)
        while not stop.wait(0.5):
            try:
                lags.append((time.time() - t0, sum(r.lag for r in reader.read("unison-scorer"))))
            except Exception:  # a passing broker hiccup: one sample fewer
                pass
        reader.close()

    def owners() -> dict[str, int]:
        found = ((httpx.get(f"{url}/v1/stream", timeout=30).json().get("ownership") or {}).get("owners") or {})
        members: dict[str, int] = {}
        for member in found.values():
            members[member] = members.get(member, 0) + 1
        return members

    def wait(condition: Any, timeout: float = 300) -> Any:
        deadline = time.monotonic() + timeout
        while not (found := condition()):
            if time.monotonic() > deadline:
                raise TimeoutError("churn step did not complete")
            time.sleep(0.3)
        return found

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    sender = threading.Thread(target=produce, args=(settings.kafka, address, messages(run, rows)),
                              kwargs={"rate": rate})
    sender.start()
    try:
        time.sleep(min(10.0, count / rate / 5))  # a steady state first (benchmark pacing, not a test wait)
        before = set(wait(owners))
        events.append((time.time() - t0, "scale 1 -> 2"))
        deploy.up(settings, overrides=_replicas(settings, 2), progress=lambda line: None)
        two = wait(lambda: len(found := owners()) == 2 and found)
        victim = next(m for m in two if m not in before)
        os.kill(int(victim.split("-")[1]), signal.SIGKILL)
        events.append((time.time() - t0, "SIGKILL new replica"))
        sender.join()
        got: dict[str, tuple[float, str]] = {}
        for record in tail(settings.kafka, address, settings.kafka.output_topic, from_beginning=True,
                           timeout_s=300):
            if (record["key"] or "").startswith(run):
                got.setdefault(record["key"], (record["timestamp"] / 1000 - t0, record["headers"].get("consumer", "?")))
                if len(got) >= count:
                    break
    finally:
        stop.set()
    done = sorted(got.values())  # (seconds since t0 when the output was produced, the replica that scored it)
    pauses = {}
    for at, name in events:
        after = [t for t, _ in done if t > at]
        gaps = [b - a for a, b in zip([at, *after], after, strict=False)]
        pauses[name] = max(gaps[:50], default=0.0)
    lagging = [t for t, lag in lags if lag > 0]
    times = [t for t, _ in done]
    gap = max((b - a for a, b in itertools.pairwise(times)
               if any(a <= t <= b for t in lagging)), default=0.0)
    _chart(lags, done, events)
    print(f"churn: {len(got):,}/{count:,} outputs; longest gap without output while lagging {gap:.1f} s; "
          + ", ".join(f"{n}: longest pause in the next 50 outputs {p:.1f} s" for n, p in pauses.items()),
          flush=True)
    return {"gap": gap, "pauses": pauses}


def _chart(lags: list[tuple[float, int]], done: list[tuple[float, str]], events: list[tuple[float, str]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from workspace import save_chart

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    top.plot([t for t, _ in lags], [lag for _, lag in lags], color="tab:red")
    top.set_ylabel("group lag (records)")
    members = sorted({m for _, m in done})
    end = int(max((t for t, _ in done), default=0)) + 1
    for member in members:  # outputs per second, averaged over 3 s (a poll's outputs land together)
        per_second = [0] * (end + 2)
        for t, m in done:
            if m == member and t >= 0:
                per_second[int(t)] += 1
        smooth = [sum(per_second[max(0, i - 1):i + 2]) / len(per_second[max(0, i - 1):i + 2]) for i in range(end)]
        bottom.plot(range(end), smooth, label=member)
    bottom.set_ylabel("outputs/s per replica (3 s mean)")
    bottom.set_xlabel("seconds since the churn run started")
    bottom.legend(loc="upper right", fontsize=8)
    for axis in (top, bottom):
        for at, name in events:
            axis.axvline(at, color="gray", linestyle="--")
            if axis is top:
                axis.annotate(name, (at, axis.get_ylim()[1] * 0.9), fontsize=8, rotation=90, ha="right")
    top.set_title("Stream through a scale step and a replica kill (partition leases)")
    save_chart(fig, ROOT / "benchmarks" / "results" / "stream_churn.png")


if __name__ == "__main__":
    sys.exit(main())
