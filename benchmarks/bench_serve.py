"""Online serving, the whole story in one run on one machine: the raw Predictor (the floor), Unison as configured
(HAProxy ingress + Serve's throughput-optimized mode), Unison's previous default (Serve's Python proxy), a
hand-made FastAPI + ONNX Runtime service and the FastAPI + PyTorch baseline.

    .venv/bin/python benchmarks/bench_serve.py                            # ~15 min on 2 cores
    .venv/bin/python benchmarks/bench_serve.py --seconds 5 --concurrency 1 32 --kinds short

Starts its own embedded stacks (free ports, its own state directory; one per Unison configuration, one after
the other, since Serve reads its request-path flags when it starts), reuses (or builds) triage:production,
applies and materializes the features, deploys deploy/serve.yaml with `unison.serving.deploy.up`, and starts
benchmarks/baseline_server.py twice (`--runtime onnx`: FastAPI + the same Predictor over the same artifact,
features and transform, one request at a time; `--runtime torch`: FastAPI + transformers PyTorch). One closed-loop
load generator (asyncio streams, one keep-alive connection per client) drives every server with short,
long and a realistic mix of tickets (the generated demo tickets, round robin) at each concurrency.

Per cell: requests/s, p50/p99, non-200 answers, the server's CPU seconds per request outside the model (all
processes of the server, minus the raw Predictor's CPU for the same ticket), and Unison's batch fill (requests per
batch, from the model replica's counters). Then an overload cell against Unison as configured: 8 long tickets per
request at `--overload-concurrency` (512), every answer's status, the 503s' p99 latency, the accepted requests'
p99 against their timeout, and the stack's resident memory. It ends with one line per target of issue 21:
`target <name>: <measured> (goal <goal>): met | NOT met`. The load generator shares the cores with the servers.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

from workspace import workspace  # noqa: E402  (benchmarks/ is the script directory)

SHORT = {"subject": "Refund for double charge", "body": "I was charged twice for my subscription this month."}
LONG = {"subject": "App keeps crashing after the latest update",
        "body": ("Since the update yesterday the desktop app crashes whenever I open the reports page. I tried "
                 "reinstalling, clearing the cache and logging out and in again, but nothing helps. My team "
                 "cannot export the weekly numbers and our deadline is tomorrow. ") * 3}
THROUGHPUT_ROWS = 32  # rows per in-process call when measuring the raw Predictor's rows/s


@dataclass
class Cell:
    server: str
    kind: str
    concurrency: int
    rps: float
    p50: float
    p99: float
    ok: int
    statuses: dict[str, int]
    cpu_outside_ms: float | None = None
    requests_per_batch: float | None = None
    fill: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


async def drive(url: str, tickets: list[dict[str, Any]], concurrency: int, seconds: float,
                per_request: int = 1, honor_retry_after: bool = False) -> dict[str, Any]:
    """Closed loop: `concurrency` clients, each on its own keep-alive connection, send the next request when the
    previous one answers (after a 503's Retry-After with `honor_retry_after`, as a well-behaved client does;
    without it, 512 clients retrying at once measure how fast Python can say no, not the service). A minimal
    HTTP/1.1 client over asyncio streams: at 512 connections httpx alone kept a core busy and its own queueing
    showed up as server latency."""
    import json
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path
    latencies: dict[str, list[float]] = collections.defaultdict(list)
    deadline = time.perf_counter() + seconds

    def request(k: int, i: int) -> bytes:
        body = json.dumps({"instances": [{**tickets[(k * 7919 + i + j) % len(tickets)], "ticket_id": f"{k}-{i}-{j}"}
                                         for j in range(per_request)]}).encode()
        return (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    async def client_loop(k: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        i = 0
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    writer.write(request(k, i))
                    head = await reader.readuntil(b"\r\n\r\n")
                    lines = head.decode("latin-1").split("\r\n")
                    status = lines[0].split(" ", 2)[1]
                    fields = {name.strip().lower(): value.strip()
                              for name, _, value in (h.partition(":") for h in lines[1:] if ":" in h)}
                    await reader.readexactly(int(fields.get("content-length", "0")))
                    if status == "503" and "retry-after" not in fields:
                        status = "503 (no Retry-After)"
                    elif status == "503" and honor_retry_after:
                        pause = min(float(fields["retry-after"]), deadline - time.perf_counter())
                        latencies[status].append(time.perf_counter() - started)
                        i += 1
                        await asyncio.sleep(max(0.0, pause))
                        continue
                    if fields.get("connection", "").lower() == "close":
                        writer.close()
                        reader, writer = await asyncio.open_connection(host, port)
                except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
                    status = type(exc).__name__
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                latencies[status].append(time.perf_counter() - started)
                i += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client_loop(k) for k in range(concurrency)))
    elapsed = time.perf_counter() - started
    ok = sorted(latencies.get("200", []))
    return {"rps": len(ok) / elapsed, "p50": _pct(ok, 0.5), "p99": _pct(ok, 0.99), "ok": len(ok),
            "statuses": {k: len(v) for k, v in latencies.items()}, "latencies": dict(latencies)}


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] * 1000


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


class CpuMeter:
    """CPU seconds of a process tree (a server, or the whole embedded stack) between two readings."""

    def __init__(self, root_pid: int) -> None:
        import psutil

        self.root = psutil.Process(root_pid)

    def processes(self) -> list[Any]:
        import psutil

        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return []

    def read(self) -> float:
        return sum(self.groups().values())

    def groups(self) -> dict[str, float]:
        """CPU seconds so far per kind of process (a Serve replica's deployment, haproxy, the controller...)."""
        import psutil

        out: dict[str, float] = collections.defaultdict(float)
        for proc in self.processes():
            try:
                times = proc.cpu_times()
                name = (proc.cmdline() or [proc.name()])[0]
                out[_group(name)] += times.user + times.system
            except psutil.Error:
                continue
        return dict(out)

    def rss(self) -> int:
        import psutil

        total = 0
        for proc in self.processes():
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                continue
        return total


def _group(command: str) -> str:
    """`ray::ServeReplica:unison:Model` -> `Model`; `.../haproxy` -> `haproxy`; other Ray processes by name."""
    if command.startswith("ray::ServeReplica:"):
        return command.rsplit(":", 1)[-1]
    if command.startswith("ray::"):
        return command[len("ray::"):]
    return Path(command).name


def raw_floor(settings: Any, kinds: dict[str, list[dict[str, Any]]], rounds: int) -> dict[str, dict[str, float]]:
    """The raw Predictor in this process: one ticket's latency and CPU (features + transform + predict), and rows/s
    for THROUGHPUT_ROWS tickets per call."""
    import pandas as pd

    from unison.features import store
    from unison.model import Predictor, PredictorOptions, Registry
    from unison.model.scoring import attach_online_features, score_tickets

    registry = Registry(settings.model.registry_dir)
    predictor = Predictor.from_registry(registry, settings.model.ref, PredictorOptions.from_config(settings.model))
    features = store.Features(settings)
    out: dict[str, dict[str, float]] = {}
    try:
        for kind, tickets in kinds.items():
            timings, cpu = [], []
            for i in range(rounds):
                frame = pd.DataFrame([{**tickets[i % len(tickets)], "ticket_id": "t"}])
                started, cpu_started = time.perf_counter(), time.process_time()
                score_tickets(predictor, attach_online_features(features, frame))
                timings.append(time.perf_counter() - started)
                cpu.append(time.process_time() - cpu_started)
            batch = pd.DataFrame([{**tickets[i % len(tickets)], "ticket_id": f"t{i}"} for i in range(THROUGHPUT_ROWS)])
            calls = []
            for _ in range(max(3, rounds // 20)):
                started = time.perf_counter()
                score_tickets(predictor, attach_online_features(features, batch))
                calls.append(time.perf_counter() - started)
            out[kind] = {"p50": statistics.median(timings) * 1000, "cpu_ms": statistics.median(cpu) * 1000,
                         "rows_per_s": THROUGHPUT_ROWS / statistics.median(calls)}
    finally:
        predictor.close()
    return out


def measure_unison(name: str, settings: Any, runtime: dict[str, Any], kinds: dict[str, list[dict[str, Any]]],
                   args: argparse.Namespace, raw: dict[str, dict[str, float]],
                   overload: list[dict[str, Any]] | None = None) -> list[Cell]:
    """Cells against one Unison configuration on a stack of its own (Serve reads its runtime flags at start)."""
    import httpx

    from unison.ops import stack
    from unison.serving import deploy

    settings = settings.model_copy(update={
        "state_dir": settings.state_dir.parent / f"state-{name}",
        "serving": settings.serving.model_copy(update={
            "runtime": settings.serving.runtime.model_copy(update=runtime)}),
    })
    cells: list[Cell] = []
    stack.up(settings)
    try:
        state = deploy.up(settings, progress=lambda _: None)
        url = f"{state.url}/v1/predict"
        meter = CpuMeter(stack.load_state(settings).components["ray"].process.pid)

        def stats() -> dict[str, Any]:
            return httpx.get(f"{state.url}/v1/models", timeout=30).json()["replica"]["stats"]

        asyncio.run(drive(url, kinds["short"], 4, 3))  # warm up
        for kind, tickets in kinds.items():
            for concurrency in args.concurrency:
                before, groups_before = stats(), meter.groups()
                result = asyncio.run(drive(url, tickets, concurrency, args.seconds))
                groups, after = meter.groups(), stats()
                per_group = {k: v - groups_before.get(k, 0.0) for k, v in groups.items()}
                cell = _cell(name, kind, concurrency, result, sum(per_group.values()), raw[kind]["cpu_ms"], before,
                             after)
                answered = max(1, sum(result["statuses"].values()))
                cell.extra["cpu_ms_by_process"] = {k: v * 1000 / answered for k, v in per_group.items() if v > 0}
                cells.append(cell)
                print(f"  {name} {kind} c={concurrency}: {result['rps']:.0f} req/s p50 {result['p50']:.1f} ms "
                      f"{_odd(result['statuses'])}", flush=True)
        if overload:
            rss_before = meter.rss()
            result = asyncio.run(drive(url, overload, args.overload_concurrency, args.overload_seconds,
                                       per_request=8, honor_retry_after=True))
            cell = Cell(name, "overload", args.overload_concurrency, result["rps"], result["p50"], result["p99"],
                        result["ok"], result["statuses"])
            cell.extra = {"p99_503_ms": _pct(result["latencies"].get("503", []), 0.99),
                          "rss_before": rss_before, "rss_after": meter.rss(), "timeout_s": 10.0}
            cells.append(cell)
            print(f"  {name} overload c={args.overload_concurrency}: {result['statuses']}", flush=True)
    finally:
        try:
            deploy.down(settings)
        finally:
            stack.down(settings)
    return cells


def _cell(name: str, kind: str, concurrency: int, result: dict[str, Any], cpu: float, model_cpu_ms: float,
          before: dict[str, Any] | None = None, after: dict[str, Any] | None = None) -> Cell:
    cell = Cell(name, kind, concurrency, result["rps"], result["p50"], result["p99"], result["ok"],
                result["statuses"])
    answered = sum(result["statuses"].values())
    if answered:  # a refused request costs no model time: the model's share is counted for the 200s only
        cell.cpu_outside_ms = (cpu * 1000 - result["ok"] * model_cpu_ms) / answered
    if before is not None and after is not None:
        batches = after["batches"] - before["batches"]
        if batches:
            cell.requests_per_batch = (after["requests"] - before["requests"]) / batches
            cell.fill = (after["fill_ratio"] * after["batches"] - before["fill_ratio"] * before["batches"]) / batches
    return cell


def _odd(statuses: dict[str, int]) -> str:
    others = {k: v for k, v in statuses.items() if k != "200"}
    return f"(non-200: {others})" if others else ""


def measure_fastapi(settings: Any, kinds: dict[str, list[dict[str, Any]]], args: argparse.Namespace,
                    raw: dict[str, dict[str, float]]) -> list[Cell]:
    """The hand-made services: FastAPI + ONNX Runtime (the same Predictor) and FastAPI + PyTorch."""
    from unison.config import environment
    from unison.ops import stack

    cells: list[Cell] = []
    env = {**os.environ, **environment(settings), "PYTHONPATH": str(ROOT / "platform")}
    procs: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    try:
        for runtime in ("onnx", "torch"):
            port = stack.free_ports(1)[0]
            procs[runtime] = (subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "baseline_server.py"),
                                                "--port", str(port), "--runtime", runtime], env=env),
                              f"http://127.0.0.1:{port}")
        for _, base in procs.values():
            _wait_http(f"{base}/docs", 300)
            asyncio.run(drive(f"{base}/v1/predict", kinds["short"], 2, 3))
        for kind, tickets in kinds.items():
            for concurrency in args.concurrency:
                for runtime, (proc, base) in procs.items():
                    name = {"onnx": "fastapi+ort", "torch": "fastapi+torch"}[runtime]
                    meter = CpuMeter(proc.pid)
                    cpu_before = meter.read()
                    result = asyncio.run(drive(f"{base}/v1/predict", tickets, concurrency, args.seconds))
                    cells.append(_cell(name, kind, concurrency, result, meter.read() - cpu_before,
                                       raw[kind]["cpu_ms"] if runtime == "onnx" else 0.0))
                    print(f"  {name} {kind} c={concurrency}: {result['rps']:.0f} req/s p50 {result['p50']:.1f} ms "
                          f"{_odd(result['statuses'])}", flush=True)
    finally:
        for proc, _ in procs.values():
            proc.terminate()
            proc.wait(30)
    return cells


def report(cells: list[Cell], raw: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    import platform as stdlib_platform  # the standard library's: this script never imports a `platform` package

    flags = sorted(set(Path("/proc/cpuinfo").read_text().split()) & {"avx2", "avx512f", "avx512_vnni", "amx_int8"})
    print(f"\nmachine: {os.cpu_count()} cores, {stdlib_platform.processor() or stdlib_platform.machine()}, "
          f"CPU flags {' '.join(flags)}; {args.seconds:g} s per cell")
    print("\nraw Predictor in process (the floor): " + "; ".join(
        f"{kind} one ticket p50 {r['p50']:.1f} ms ({r['cpu_ms']:.1f} ms CPU), {r['rows_per_s']:.0f} rows/s at "
        f"{THROUGHPUT_ROWS} per call" for kind, r in raw.items()))
    print("\n| server | tickets | concurrency | req/s | p50 ms | p99 ms | non-200 | CPU ms/request outside the model "
          "| requests/batch | batch fill |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for c in cells:
        if c.kind == "overload":
            continue
        others = sum(v for k, v in c.statuses.items() if k != "200")
        print(f"| {c.server} | {c.kind} | {c.concurrency} | {c.rps:.0f} | {c.p50:.1f} | {c.p99:.1f} | {others} | "
              f"{_f(c.cpu_outside_ms)} | {_f(c.requests_per_batch)} | {_f(c.fill, 2)} |")
    top = 32 if 32 in args.concurrency else max(args.concurrency)
    print(f"\nCPU ms per request by process (all of a process's CPU, the model's included), concurrency {top}:")
    for c in cells:
        if c.server.startswith("unison") and c.concurrency == top and c.kind != "overload":
            parts = sorted(c.extra.get("cpu_ms_by_process", {}).items(), key=lambda kv: -kv[1])
            print(f"  {c.server} {c.kind}: " + ", ".join(f"{k} {v:.1f}" for k, v in parts if v >= 0.05))
    for c in cells:
        if c.kind == "overload":
            print(f"\noverload ({c.server}, concurrency {c.concurrency}, 8 long tickets per request): statuses "
                  f"{c.statuses}; 200 p50 {c.p50:.0f} ms p99 {c.p99:.0f} ms; 503 p99 {c.extra['p99_503_ms']:.1f} ms; "
                  f"stack RSS {c.extra['rss_before'] / 2**20:.0f} -> {c.extra['rss_after'] / 2**20:.0f} MiB")

    def find(server: str, kind: str, concurrency: int) -> Cell | None:
        return next((c for c in cells if (c.server, c.kind, c.concurrency) == (server, kind, concurrency)), None)

    print()
    unison = find("unison", "short", 1)
    ort = find("fastapi+ort", "short", 1)
    if unison and ort:
        gap = unison.p50 - raw["short"]["p50"]
        target("c=1 short: Unison p50 - raw Predictor p50", f"{gap:.1f} ms", "<= 3 ms", gap <= 3)
        gap = unison.p50 - ort.p50
        target("c=1 short: Unison p50 - FastAPI+ORT p50", f"{gap:.1f} ms", "<= 2 ms", gap <= 2)
    for kind in raw:
        unison, ort, torch = find("unison", kind, top), find("fastapi+ort", kind, top), find("fastapi+torch", kind, top)
        if unison is None:
            continue
        share = unison.rps / raw[kind]["rows_per_s"]
        target(f"c={top} {kind}: Unison req/s / raw Predictor rows/s", f"{share:.2f}", ">= 0.85", share >= 0.85)
        if ort:
            ratio = unison.rps / ort.rps
            target(f"c={top} {kind}: Unison / FastAPI+ORT", f"{ratio:.2f}x", ">= 1.2x", ratio >= 1.2)
        if torch:
            ratio = unison.rps / torch.rps
            target(f"c={top} {kind}: Unison / FastAPI+PyTorch", f"{ratio:.1f}x", ">= 10x", ratio >= 10)
    for c in cells:
        if c.kind != "overload" or c.server != "unison":
            continue
        bad = {k: v for k, v in c.statuses.items() if k not in ("200", "503")}
        target("overload: every answer 200 or 503 (with Retry-After)", str(bad or "all"), "none other", not bad)
        fast = c.extra["p99_503_ms"]
        target("overload: 503 p99", f"{fast:.1f} ms", "< 50 ms", fast < 50 or c.statuses.get("503", 0) == 0)
        target("overload: accepted p99 within the timeout", f"{c.p99:.0f} ms", f"< {c.extra['timeout_s']:g} s",
               c.p99 < c.extra["timeout_s"] * 1000)


def target(name: str, measured: str, goal: str, met: bool) -> None:
    print(f"target {name}: {measured} (goal {goal}): {'met' if met else 'NOT met'}")


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each measured cell")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--kinds", nargs="+", default=["short", "long", "mix"], choices=["short", "long", "mix"])
    parser.add_argument("--raw-rounds", type=int, default=100)
    parser.add_argument("--overload-concurrency", type=int, default=512)
    parser.add_argument("--overload-seconds", type=float, default=20.0)
    parser.add_argument("--skip", nargs="*", default=[], choices=["previous", "fastapi"],
                        help="leave out Unison's previous default or the FastAPI services")
    args = parser.parse_args()

    import pandas as pd

    from unison.model import Registry
    from unison.model.optimize import OptimizeOptions, optimize

    _, settings = workspace("bench-serve-", customers=2_000, tickets=2_000)
    registry = Registry(settings.model.registry_dir)
    if settings.model.alias not in registry.aliases(settings.model.name):
        result = optimize(OptimizeOptions(data_dir=settings.data.dir, skip_benchmark=True), registry, progress=print)
        assert result.artifact is not None
        registry.promote(settings.model.name, result.artifact.manifest.version)
    demo = pd.read_parquet(settings.data.dir / "tickets.parquet").head(500)
    customer = int(demo["customer_id"].iloc[0])
    kinds = {"short": [{**SHORT, "customer_id": customer}], "long": [{**LONG, "customer_id": customer}],
             "mix": [{"customer_id": int(r.customer_id), "subject": r.subject, "body": r.body}
                     for r in demo.itertuples()]}
    overload = [{**LONG, "customer_id": customer}]
    kinds = {k: v for k, v in kinds.items() if k in args.kinds}

    raw = raw_floor(settings, kinds, args.raw_rounds)
    print("raw Predictor: " + "; ".join(f"{k} p50 {r['p50']:.1f} ms, {r['rows_per_s']:.0f} rows/s"
                                        for k, r in raw.items()), flush=True)
    cells = measure_unison("unison", settings, {}, kinds, args, raw,
                           overload=overload if args.overload_concurrency > 0 else None)
    if "previous" not in args.skip:
        cells += measure_unison("unison-previous", settings, {"proxy": "python", "throughput_optimized": False},
                                kinds, args, raw)
    if "fastapi" not in args.skip:
        cells += measure_fastapi(settings, kinds, args, raw)
    report(cells, raw, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
