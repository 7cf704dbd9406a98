"""Lag-based autoscaling of the streaming deployment: the same burst with the lag policy on and off, one run.

    .venv/bin/python benchmarks/bench_lag_autoscaling.py
    .venv/bin/python benchmarks/bench_lag_autoscaling.py --burst 12000 --target-lag 500 --max-replicas 3

Starts its own embedded stack (Ray + Tansu) and deploys deploy/serve.yaml. For each mode -- `off` (one
StreamConsumer replica) and `on` (unison.streaming.autoscaling.LagPolicy, min 1, max `--max-replicas`) -- it
warms the consumer up, then produces `--burst` tickets as fast as the broker takes them (well above what one
replica scores per second) and samples once a second: the group's total lag (read like `unison stream lag`) and
the RUNNING StreamConsumer replicas. Reported per mode: time to the first scale-up, time until the lag is back
under the target (`--target-lag` per replica x min replicas), time until it is 0, the peak lag, and (on) whether
it scaled back down after the downscale delay. Charted to benchmarks/results/lag_autoscaling.png.

On our 2-core machine a second replica competes for the same cores as the first, so it shortens the drain
less than it would on a cluster with a node per replica; the timeline still shows the policy's decisions.
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

from workspace import save_chart, workspace  # noqa: E402  (benchmarks/ is the script directory)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--burst", type=int, default=8000, help="tickets produced at once")
    parser.add_argument("--target-lag", type=int, default=500, help="LagPolicy target_lag_per_replica")
    parser.add_argument("--max-replicas", type=int, default=2)
    parser.add_argument("--upscale-delay-s", type=float, default=5.0)
    parser.add_argument("--downscale-delay-s", type=float, default=20.0)
    parser.add_argument("--timeout-s", type=float, default=600.0, help="longest wait per mode")
    args = parser.parse_args()

    import pandas as pd

    from unison.config import load_settings
    from unison.model import Registry
    from unison.ops import stack
    from unison.serving import deploy
    from unison.serving.app import STREAM
    from unison.streaming.lag import LagReader
    from unison.streaming.tools import produce

    registry = Registry(load_settings().model.registry_dir)
    if "production" not in registry.aliases(load_settings().model.name):
        print("no triage:production in the registry; run `unison demo` or `unison optimize` first")
        return 1
    _, settings = workspace("bench-lag-", customers=2_000, tickets=4_000)
    frame = pd.read_parquet(settings.data.dir / "tickets.parquet")[
        ["ticket_id", "customer_id", "subject", "body", "channel"]]
    rows = [{k: (int(v) if k == "customer_id" else v) for k, v in r.items() if v is not None}
            for r in frame.to_dict(orient="records")]
    group = "unison-scorer"
    scaling = {"min_replicas": 1, "initial_replicas": 1, "max_replicas": args.max_replicas,
               "upscale_delay_s": args.upscale_delay_s, "downscale_delay_s": args.downscale_delay_s,
               "metrics_interval_s": 1, "look_back_period_s": 3,
               "policy": {"policy_function": "unison.streaming.autoscaling:LagPolicy",
                          "policy_kwargs": {"target_lag_per_replica": args.target_lag}}}
    modes = {"off": {"autoscaling_config": None, "num_replicas": 1},
             "on": {"autoscaling_config": scaling, "num_replicas": None}}

    def messages(run: str, count: int) -> Any:
        for i in range(count):
            row = {**rows[i % len(rows)], "ticket_id": f"{run}-{i}"}
            yield row["ticket_id"].encode(), json.dumps(row).encode()

    results: dict[str, dict[str, Any]] = {}
    stack.up(settings)
    try:
        address = stack.endpoints(settings).kafka_bootstrap_servers
        reader = LagReader(settings.kafka, address)

        def lag() -> int:
            return sum(r.lag for r in reader.read(group))

        def replicas() -> int:
            apps = deploy.applications(stack.endpoints(settings))["applications"]
            found = apps.get("unison", {}).get("deployments", {}).get(STREAM, {}).get("replicas", [])
            return sum(r["state"] == "RUNNING" for r in found)

        def settle(what: str, predicate: Any, timeout: float) -> None:
            deadline = time.monotonic() + timeout
            while not predicate():
                if time.monotonic() > deadline:
                    raise TimeoutError(what)
                time.sleep(1)

        for mode, override in modes.items():
            print(f"\n== lag autoscaling {mode} ==", flush=True)
            override = {k: v for k, v in override.items() if v is not None or k == "autoscaling_config"}
            deploy.up(settings, overrides={f"unison/{STREAM}": override}, progress=lambda line: None)
            settle("one replica", lambda: replicas() == 1, 180)
            produce(settings.kafka, address, messages(uuid.uuid4().hex[:6], 100))  # warm-up: join, load
            settle("warm-up drained", lambda: lag() == 0, 180)

            timeline: list[tuple[float, int, int]] = []
            run = uuid.uuid4().hex[:6]
            t0 = time.monotonic()
            sender = threading.Thread(target=produce, args=(settings.kafka, address, messages(run, args.burst)))
            sender.start()
            first_up = under_target = drained = scaled_down = None
            target = args.target_lag * scaling["min_replicas"]
            while time.monotonic() - t0 < args.timeout_s:
                now = time.monotonic() - t0
                current_lag, current_replicas = lag(), replicas()
                timeline.append((now, current_lag, current_replicas))
                if first_up is None and current_replicas > 1:
                    first_up = now
                sending = sender.is_alive()
                if not sending and under_target is None and current_lag <= target:
                    under_target = now
                if not sending and drained is None and current_lag == 0:
                    drained = now
                if drained is not None and (mode == "off" or first_up is None):
                    break
                if drained is not None and current_replicas == 1:
                    scaled_down = now
                    break
                time.sleep(1)
            sender.join()
            peak = max(row[1] for row in timeline)
            results[mode] = {"timeline": timeline, "first_up": first_up, "under_target": under_target,
                             "drained": drained, "scaled_down": scaled_down, "peak_lag": peak,
                             "peak_replicas": max(row[2] for row in timeline)}
            print(f"  peak lag {peak:,}, peak replicas {results[mode]['peak_replicas']}, first scale-up "
                  f"{_s(first_up)}, lag <= {target} at {_s(under_target)}, drained at {_s(drained)}"
                  + (f", back to 1 replica at {_s(scaled_down)}" if mode == "on" else ""), flush=True)
        reader.close()
    finally:
        try:
            deploy.down(settings)
        finally:
            stack.down(settings)

    print(f"\nburst of {args.burst:,} tickets; target lag {args.target_lag} per replica; max replicas "
          f"{args.max_replicas}; upscale delay {args.upscale_delay_s:.0f} s, downscale delay "
          f"{args.downscale_delay_s:.0f} s")
    print("\n| mode | peak lag | peak replicas | first scale-up | lag under target | lag 0 | back to 1 |")
    print("|---|---|---|---|---|---|---|")
    for mode, r in results.items():
        print(f"| autoscaling {mode} | {r['peak_lag']:,} | {r['peak_replicas']} | {_s(r['first_up'])} | "
              f"{_s(r['under_target'])} | {_s(r['drained'])} | {_s(r['scaled_down'])} |")
    off, on = results["off"]["drained"], results["on"]["drained"]
    if off and on:
        print(f"drain time on / off = {on / off:.2f}")
    _chart(results, ROOT / "benchmarks" / "results" / "lag_autoscaling.png", args.target_lag)
    return 0


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} s"


def _chart(results: dict[str, dict[str, Any]], path: Path, target: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for mode, style in (("off", "--"), ("on", "-")):
        timeline = results[mode]["timeline"]
        t = [row[0] for row in timeline]
        top.plot(t, [row[1] for row in timeline], style, label=f"lag, autoscaling {mode}")
        bottom.step(t, [row[2] for row in timeline], style, where="post", label=f"replicas, autoscaling {mode}")
    top.axhline(target, color="grey", linewidth=0.8, label="target lag per replica")
    top.set_ylabel("consumer lag (records)")
    top.legend()
    bottom.set_ylabel("StreamConsumer replicas")
    bottom.set_xlabel("seconds since the burst started")
    bottom.legend()
    fig.suptitle("Burst on the tickets topic: lag-based autoscaling on vs off")
    save_chart(fig, path)


if __name__ == "__main__":
    sys.exit(main())
