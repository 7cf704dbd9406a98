"""Side-by-side latency of PyTorch eager and each ONNX variant on identical inputs, in one run.

Engines take turns in short blocks (A B C A B C ...), so slow drifts of a shared machine hit all of them
alike, while each block still runs back to back (thread pools that spin after a run would otherwise steal
the next engine's cores). Figures are medians and p99 over all timed runs; speed-ups are ratios of medians
measured in the same run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

Feeds = dict[str, npt.NDArray[Any]]


@dataclass
class Engine:
    """Something that runs the model: `prepare` converts numpy feeds once, `run` is what gets timed."""

    name: str
    prepare: Callable[[Feeds], Any]
    run: Callable[[Any], Any]
    size_bytes: int = 0


@dataclass
class BenchmarkReport:
    threads: int
    matmul_gflops: float
    rows: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"threads": self.threads, "matmul_gflops": self.matmul_gflops, "rows": self.rows}


def synthetic_feeds(token_stream: npt.NDArray[np.int64], length: int, batch: int, input_names: Sequence[str],
                    num_features: int, cls_id: int, sep_id: int, seed: int = 0) -> Feeds:
    """`batch` rows of exactly `length` real tokens ([CLS] ... [SEP]) cut from real text, no padding."""
    rng = np.random.default_rng(seed + length * 1000 + batch)
    body = length - 2
    starts = rng.integers(0, max(1, len(token_stream) - body), size=batch)
    ids = np.stack([np.concatenate([[cls_id], token_stream[s : s + body], [sep_id]]) for s in starts]).astype(np.int64)
    feeds: Feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    if "token_type_ids" in input_names:
        feeds["token_type_ids"] = np.zeros_like(ids)
    if "features" in input_names:
        feeds["features"] = rng.normal(0, 0.5, size=(batch, num_features)).astype(np.float32)
    return feeds


def time_engines(engines: Sequence[Engine], feeds: Feeds, rounds: int, blocks: int = 5,
                 warmup: int = 2) -> dict[str, list[float]]:
    """Seconds per run for each engine: `rounds` timed runs each, in `blocks` alternating blocks."""
    prepared = {e.name: e.prepare(feeds) for e in engines}
    per_block = max(1, -(-rounds // blocks))
    times: dict[str, list[float]] = {e.name: [] for e in engines}
    for _ in range(blocks):
        for engine in engines:
            for _ in range(warmup):
                engine.run(prepared[engine.name])
            for _ in range(per_block):
                start = time.perf_counter()
                engine.run(prepared[engine.name])
                times[engine.name].append(time.perf_counter() - start)
    return times


def matmul_gflops(threads: int, size: int = 1024, rounds: int = 10) -> float:
    """The machine's fp32 matrix-multiply rate with `threads` threads (PyTorch's BLAS), median of rounds."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(size, size), torch.randn(size, size)
        torch.mm(a, b)
        samples = []
        for _ in range(rounds):
            start = time.perf_counter()
            torch.mm(a, b)
            samples.append(time.perf_counter() - start)
        return 2 * size**3 / float(np.median(samples)) / 1e9
    finally:
        torch.set_num_threads(previous)


def encoder_flops(hidden: int, intermediate: int, layers: int, length: int, batch: int) -> float:
    """Multiply-add FLOPs of a BERT-style encoder forward: projections, feed-forward, attention scores."""
    dense = 2 * (4 * hidden * hidden + 2 * hidden * intermediate) * length
    attention = 2 * 2 * length * length * hidden
    return float(batch * layers * (dense + attention))


def run_benchmark(engines: Sequence[Engine], make_feeds: Callable[[int, int], Feeds], lengths: Sequence[int],
                  batch: int, batch_length: int, rounds: int, threads: int,
                  flops: Callable[[int, int], float]) -> BenchmarkReport:
    report = BenchmarkReport(threads=threads, matmul_gflops=matmul_gflops(threads))
    baseline = engines[0].name
    configs = [(1, length) for length in lengths] + [(batch, batch_length)]
    for rows, length in configs:
        times = time_engines(engines, make_feeds(length, rows), rounds if rows == 1 else max(5, rounds // 3))
        base_p50 = float(np.median(times[baseline]))
        for engine in engines:
            samples = np.asarray(times[engine.name])
            p50 = float(np.median(samples))
            report.rows.append({
                "engine": engine.name, "batch": rows, "tokens": length,
                "p50_ms": p50 * 1e3, "p99_ms": float(np.percentile(samples, 99)) * 1e3,
                "rows_per_s": rows / p50, "speedup_vs_" + baseline: base_p50 / p50,
                "gflops": flops(length, rows) / p50 / 1e9, "size_bytes": engine.size_bytes,
            })
    return report


def markdown(report: BenchmarkReport, quality: dict[str, dict[str, float]]) -> str:
    """The table: size, quality, latency per length, batch throughput, speed-up vs PyTorch eager."""
    baseline = report.rows[0]["engine"]
    speed_key = "speedup_vs_" + baseline
    engines = list(dict.fromkeys(r["engine"] for r in report.rows))
    singles = sorted({r["tokens"] for r in report.rows if r["batch"] == 1})
    batch_rows = [r for r in report.rows if r["batch"] > 1]
    header = ["engine", "size MB", "cosine vs ref", "top-1 agree", "accuracy"]
    header += [f"b1/{n} tok p50 ms (x)" for n in singles]
    if batch_rows:
        header.append(f"b{batch_rows[0]['batch']}/{batch_rows[0]['tokens']} tok rows/s (x)")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for engine in engines:
        rows = [r for r in report.rows if r["engine"] == engine]
        q = quality.get(engine, {})
        cells = [engine, f"{rows[0]['size_bytes'] / 1e6:.1f}",
                 f"{q['embedding_cosine_mean']:.5f}" if "embedding_cosine_mean" in q else "-",
                 f"{q['top1_agreement']:.2%}" if "top1_agreement" in q else "-",
                 f"{q['accuracy']:.2%}" if "accuracy" in q else "-"]
        for n in singles:
            r = next(r for r in rows if r["batch"] == 1 and r["tokens"] == n)
            cells.append(f"{r['p50_ms']:.2f} ({r[speed_key]:.1f}x)")
        for r in (r for r in rows if r["batch"] > 1):
            cells.append(f"{r['rows_per_s']:.0f} ({r[speed_key]:.1f}x)")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"{report.threads} threads; machine fp32 matmul rate {report.matmul_gflops:.0f} GFLOP/s. "
                 "Achieved GFLOP/s (model FLOPs / p50 time):")
    for engine in engines:
        rows = [r for r in report.rows if r["engine"] == engine]
        figures = ", ".join(f"b{r['batch']}/{r['tokens']}: {r['gflops']:.0f}" for r in rows)
        lines.append(f"- {engine}: {figures}")
    return "\n".join(lines) + "\n"


def write_report(report: BenchmarkReport, quality: dict[str, dict[str, float]], directory: Path) -> dict[str, Path]:
    """benchmark.md, benchmark.json and benchmark.png in `directory`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": directory / "benchmark.md", "json": directory / "benchmark.json",
             "chart": directory / "benchmark.png"}
    paths["markdown"].write_text(markdown(report, quality))
    paths["json"].write_text(json.dumps({**report.to_json(), "quality": quality}, indent=2))

    engines = list(dict.fromkeys(r["engine"] for r in report.rows))
    singles = sorted({r["tokens"] for r in report.rows if r["batch"] == 1})
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / len(engines)
    for i, engine in enumerate(engines):
        p50 = [next(r["p50_ms"] for r in report.rows if r["engine"] == engine and r["batch"] == 1
                    and r["tokens"] == n) for n in singles]
        left.bar(np.arange(len(singles)) + i * width, p50, width, label=engine)
    left.set_xticks(np.arange(len(singles)) + width * (len(engines) - 1) / 2, [f"{n} tokens" for n in singles])
    left.set_ylabel("p50 latency, batch 1 (ms)")
    left.set_title("Latency (lower is better)")
    left.legend()
    batch_rows = [r for r in report.rows if r["batch"] > 1]
    if batch_rows:
        right.bar([r["engine"] for r in batch_rows], [r["rows_per_s"] for r in batch_rows],
                  color=[f"C{i}" for i in range(len(batch_rows))])
        right.set_ylabel("rows/s")
        right.set_title(f"Throughput, batch {batch_rows[0]['batch']} x {batch_rows[0]['tokens']} tokens")
    figure.suptitle(f"{report.threads} CPU threads, medians of interleaved rounds")
    figure.tight_layout()
    figure.savefig(paths["chart"], dpi=110)
    plt.close(figure)
    return paths
