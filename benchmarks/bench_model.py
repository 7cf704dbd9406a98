"""Model speed: PyTorch eager vs the optimized ONNX variants, side by side in one run, plus the Predictor.

    .venv/bin/python benchmarks/bench_model.py                 # uses (or builds) triage:production
    .venv/bin/python benchmarks/bench_model.py --rounds 60 --threads 2

Prints (1) model-only latency at batch 1 for 16/64/128/256 tokens and throughput at batch 32, each engine on
identical inputs, with speed-ups against PyTorch eager and the targets of issue 3; (2) end-to-end rows/s on
real evaluation tickets: the Predictor (tokenization included) against a straightforward PyTorch loop
(tokenizer with padding, batches of 32). Medians of alternating blocks; the machine is shared and noisy, so
read the ratios, and rerun before trusting a single figure.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

TARGETS = [  # (engine, batch, tokens, minimum speed-up vs PyTorch eager)
    ("int8", 1, 16, 4.0), ("int8", 1, 128, 4.0), ("int8", 32, 64, 3.0),
    ("fp32", 1, 16, 2.0), ("fp32", 1, 128, 2.0),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="triage", help="registry reference (default: triage, i.e. production)")
    parser.add_argument("--rounds", type=int, default=40, help="timed runs per engine and configuration")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=512, help="evaluation tickets for the end-to-end comparison")
    args = parser.parse_args()

    import torch

    from unison.config import load_settings
    from unison.data import generate
    from unison.features import feature_matrix, transform
    from unison.features.offline import load_labelled
    from unison.model import Predictor, PredictorOptions, Registry
    from unison.model.benchmark import markdown
    from unison.model.export import build_reference, inspect_source
    from unison.model.head import TriageHead
    from unison.model.optimize import OptimizeOptions, benchmark_variants, optimize
    from unison.model.tokenize import load_tokenizer

    settings = load_settings()
    registry = Registry(settings.model.registry_dir)
    if not (settings.data.dir / "eval.parquet").exists():
        generate(settings.data.dir, customers=settings.data.customers, tickets=settings.data.tickets,
                 seed=settings.data.seed)
    if args.model.partition(":")[0] not in registry.models():
        print("no registered model yet: running `unison optimize` first", flush=True)
        optimize(OptimizeOptions(data_dir=settings.data.dir, skip_benchmark=True), registry, progress=print)
    artifact = registry.load(args.model)
    manifest = artifact.manifest
    print(f"model {artifact.ref} ({manifest.kind}), {args.threads} threads, {args.rounds} rounds", flush=True)

    source = inspect_source(Path(manifest.source_model["path"]))
    head = TriageHead.load(artifact.file("head.npz")) if manifest.kind == "triage" else None
    reference = build_reference(source, head)
    torch.set_num_threads(args.threads)
    evaluation = transform(load_labelled(settings.data.dir, "eval").head(args.rows))
    texts = evaluation["text"].tolist()
    features = feature_matrix(evaluation)
    tokenizer = load_tokenizer(artifact.path / "tokenizer", manifest.max_length)
    variants = {v: i for v, i in manifest.variants.items() if v in ("fp32", "int8", "fp16")}
    options = OptimizeOptions(data_dir=settings.data.dir, bench_rounds=args.rounds, threads=args.threads)
    report = benchmark_variants(artifact.path, variants, reference, source, manifest.input_names(), tokenizer,
                                texts, options)
    quality = {v: i.quality for v, i in variants.items()}
    print("\n## Model only (identical token inputs)\n")
    print(markdown(report, quality))

    print("## Targets (issue 3)\n")
    misses = 0
    for engine, batch, tokens, minimum in TARGETS:
        row = next((r for r in report.rows if r["engine"] == engine and r["batch"] == batch
                    and r["tokens"] == tokens), None)
        if row is None:
            continue
        ratio = row["speedup_vs_pytorch"]
        ok = ratio >= minimum
        misses += not ok
        print(f"- {engine} batch {batch} x {tokens} tokens: {ratio:.2f}x vs PyTorch eager "
              f"(target >= {minimum:.0f}x): {'met' if ok else 'NOT met'}")

    print("\n## End to end on real tickets (tokenization included)\n")
    results: dict[str, list[float]] = {}
    predictor = Predictor.from_options(artifact, PredictorOptions(variant="int8", execution="rows",
                                                                  parallel_rows=args.threads))
    predictor.predict(texts[:32], features[:32])

    def run_predictor() -> None:
        for start in range(0, len(texts), 256):
            predictor.predict(texts[start : start + 256], features[start : start + 256])

    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(source.path)

    def run_torch() -> None:
        with torch.inference_mode():
            for start in range(0, len(texts), 32):
                batch = hf(texts[start : start + 32], padding=True, truncation=True,
                           max_length=manifest.max_length, return_tensors="pt")
                reference(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                          torch.from_numpy(features[start : start + 32]))

    for _ in range(3):  # alternate, take the median
        for name, run in (("pytorch loop (padded batches of 32)", run_torch),
                          ("Predictor int8 (rows)", run_predictor)):
            start = time.perf_counter()
            run()
            results.setdefault(name, []).append(len(texts) / (time.perf_counter() - start))
    medians = {name: float(np.median(values)) for name, values in results.items()}
    base = medians["pytorch loop (padded batches of 32)"]
    for name, value in medians.items():
        print(f"- {name}: {value:,.0f} rows/s ({value / base:.2f}x)")
    print(f"\n{len(TARGETS) - misses} of {len(TARGETS)} model-only targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
