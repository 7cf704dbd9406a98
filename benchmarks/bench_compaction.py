"""Reading the offline activity dataset with N parts, before and after a compaction (`unison.data.dataset.compact`).

    .venv/bin/python benchmarks/bench_compaction.py                        # 100,000 rows in 1/10/100/1,000 parts
    .venv/bin/python benchmarks/bench_compaction.py --parts 100 --rounds 3 --pushes 0

Parts: the rows split evenly into N pushed parts, read whole (median of `--rounds`) with pyarrow
(`pq.read_table`) and with Dask (`dd.read_parquet(...).compute()`, what Feast's file offline store runs for
retrieval and materialization), then compacted into one part and read again; ratios side by side.
Stream: `--pushes` pushes of `--push-rows` rows onto a generated part of `--rows` rows, once without compaction and
once compacting whenever more than `--after` pushed parts are pending (what a push does, here in line), then the
same reads. Prints the CPU's vector flags: the machine matters for these figures.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa

from unison.data import CUSTOMER_ACTIVITY_SCHEMA
from unison.data.dataset import compact, parts, pending_parts, write_dataset, write_part

NEVER = 1 << 40  # compacted parts are never too large to merge again, here


def _rows(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    stamps = pa.array(1_780_000_000_000_000 + rng.integers(0, 10**13, n), pa.int64()).cast(
        pa.timestamp("us", tz="UTC"))
    csat = rng.uniform(1, 5, n)
    return pa.table({
        "customer_id": rng.integers(0, 100_000, n), "open_tickets": rng.integers(0, 10, n).astype("int32"),
        "tickets_last_90d": rng.integers(0, 50, n).astype("int32"),
        "last_csat": pa.array(csat, mask=rng.random(n) < 0.2), "days_since_last_login": rng.integers(0, 400, n)
        .astype("int32"), "event_timestamp": stamps, "created_timestamp": stamps,
    }, schema=CUSTOMER_ACTIVITY_SCHEMA)


def _median(fn: Callable[[], object], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _reads(path: Path, rounds: int) -> tuple[float, float]:
    import dask.dataframe as dd
    import pyarrow.parquet as pq

    pq.read_table(path)  # warm the page cache: every figure is a warm read
    return (_median(lambda: pq.read_table(path), rounds),
            _median(lambda: dd.read_parquet(str(path)).compute(), rounds))


def _cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    return " ".join(sorted(set(re.findall(r"avx512[a-z_]*|avx2", text)))) or "no avx2/avx512"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--parts", default="1,10,100,1000", help="comma-separated part counts")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pushes", type=int, default=2_000, help="stream scenario: pushes (0: skip)")
    parser.add_argument("--push-rows", type=int, default=50)
    parser.add_argument("--after", type=int, default=32, help="stream scenario: features.compact_after_parts")
    args = parser.parse_args()
    print(f"CPU flags: {_cpu_flags()}")

    print(f"\n{args.rows:,} rows in N pushed parts, read whole; median of {args.rounds}")
    print(f"{'parts':>6} | {'pyarrow before':>14} {'after':>8} {'ratio':>6} | {'dask before':>11} {'after':>8} "
          f"{'ratio':>6} | {'compaction':>10}")
    for count in (int(p) for p in args.parts.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "customer_activity.parquet"
            path.mkdir()
            table = _rows(args.rows, seed=count)
            step = -(-args.rows // count)
            for start in range(0, args.rows, step):
                write_part(path, table.slice(start, step))
            arrow_before, dask_before = _reads(path, args.rounds)
            start = time.perf_counter()
            done = compact(path, grace_s=0, max_part_bytes=NEVER)
            seconds = time.perf_counter() - start
            assert len(parts(path)) == 1 and done.rows_out == (args.rows if count > 1 else 0)
            arrow_after, dask_after = _reads(path, args.rounds)
        print(f"{count:>6} | {arrow_before:>12.3f} s {arrow_after:>6.3f} s {arrow_before / arrow_after:>5.1f}x | "
              f"{dask_before:>9.3f} s {dask_after:>6.3f} s {dask_before / dask_after:>5.1f}x | {seconds:>8.3f} s")

    if args.pushes:
        print(f"\nStream: {args.pushes:,} pushes of {args.push_rows} rows onto {args.rows:,} generated rows; "
              f"median of {args.rounds}")
        print(f"{'':>24} | {'parts':>5} | {'pyarrow':>8} | {'dask':>8} | {'compactions':>11} {'their time':>10}")
        results = {}
        for after in (0, args.after):
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "customer_activity.parquet"
                write_dataset(path, CUSTOMER_ACTIVITY_SCHEMA, [_rows(args.rows, seed=1)])
                compactions, spent = 0, 0.0
                for push in range(args.pushes):
                    write_part(path, _rows(args.push_rows, seed=push + 2))
                    if after and pending_parts(path) > after:
                        start = time.perf_counter()
                        compact(path, grace_s=0, max_part_bytes=NEVER)
                        spent += time.perf_counter() - start
                        compactions += 1
                arrow, dask = _reads(path, args.rounds)
                results[after] = (len(parts(path)), arrow, dask)
                label = f"compact past {after} parts" if after else "no compaction"
                print(f"{label:>24} | {len(parts(path)):>5} | {arrow:>6.3f} s | {dask:>6.3f} s | {compactions:>11} "
                      f"{spent:>8.2f} s")
        (_, arrow_off, dask_off), (_, arrow_on, dask_on) = results[0], results[args.after]
        print(f"{'ratio':>24} | {'':>5} | {arrow_off / arrow_on:>6.1f} x | {dask_off / dask_on:>6.1f} x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
