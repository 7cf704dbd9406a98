"""The optimization pipeline: export -> fuse -> variants -> quality gates -> benchmark -> register.

Each step is a function a user can call on its own; `optimize` runs them in order into a staging directory of
the registry and registers the result atomically. Inputs are fingerprinted, so an unchanged model is not
rebuilt (the demo relies on this).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import onnx
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from unison.data import CATEGORIES, FILE_NAMES
from unison.features import NUMERIC_FEATURES, TRANSFORM_VERSION, feature_matrix, transform
from unison.features.offline import load_labelled
from unison.model.drift import reference_bins
from unison.model.export import (
    OPSET,
    SourceModel,
    build_reference,
    copy_tokenizer,
    default_source,
    export_onnx,
    inspect_source,
    save_with_external_data,
    signature,
    uses_token_type_ids,
)
from unison.model.head import TriageHead, fit_triage_head
from unison.model.manifest import Manifest, ModelKind, Variant, VariantInfo
from unison.model.registry import Artifact, Registry, sha256_file
from unison.model.shard import StageSpec
from unison.model.tokenize import encode, length_buckets, load_tokenizer, pad, pad_token_id
from unison.model.validate import Outputs, QualityGates, VariantQuality, compare, run_rows

log = logging.getLogger(__name__)

PIPELINE_VERSION = "2"  # 2: one reference bin per value for discrete inputs, text_chars
VARIANT_DESCRIPTIONS = {
    "fp32": "ONNX Runtime transformer optimizer fusions (Attention, SkipLayerNormalization, BiasGelu, "
    "EmbedLayerNormalization); fp32 weights",
    "int8": "fp32 graph with dynamic INT8 quantization of MatMul/Attention weights (per-channel, signed); "
    "activations quantized at run time; for CPU",
    "fp16": "fp32 graph converted to float16 with float32 inputs/outputs kept; for GPU",
}


class OptimizeOptions(BaseModel):
    """What `unison optimize` builds; every field is a flag of the command."""

    model_config = ConfigDict(extra="forbid")

    source: Path | None = Field(default=None, description="Hugging Face model directory. Empty: all-MiniLM-L6-v2.")
    name: str = Field(default="triage", description="Registry name of the model.")
    kind: Literal["auto", "triage", "encoder", "sequence-classification"] = Field(
        default="auto",
        description="`triage`: encoder + head fitted on the training split; `encoder`: sentence embeddings; "
        "`sequence-classification`: the model's own head. `auto`: sequence-classification when the model "
        "has one, else triage.",
    )
    data_dir: Path = Field(default=Path(".unison/data"), description="Generated data (train and eval splits).")
    variants: list[Variant] = Field(default_factory=lambda: ["fp32", "int8", "fp16"])
    eval_rows: int = Field(default=1000, ge=10, description="Evaluation rows used by the quality gates.")
    train_rows: int | None = Field(default=None, ge=10, description="Training rows for the head. Empty: all.")
    bench_rounds: int = Field(default=30, ge=3, description="Timed rounds per configuration (0 skips).")
    bench_lengths: list[int] = Field(default_factory=lambda: [16, 64, 128, 256])
    bench_batch: int = Field(default=32, ge=1)
    bench_batch_tokens: int = Field(default=64, ge=4)
    threads: int = Field(default=2, ge=1, description="Threads for PyTorch and ONNX Runtime in the benchmark.")
    skip_benchmark: bool = False
    gates: QualityGates = Field(default_factory=QualityGates)
    force: bool = Field(default=False, description="Rebuild even when an identical artifact is registered.")
    stages: list[int] = Field(default_factory=lambda: [2, 3], description="Pipeline splits to store with every "
                              "variant (stage counts >= 2), for sharded serving (`model.stages`). Empty: none.")


@dataclass
class OptimizeResult:
    artifact: Artifact | None
    cached: bool
    quality: dict[str, VariantQuality] = field(default_factory=dict)
    rejected: dict[str, list[str]] = field(default_factory=dict)
    fusions: dict[str, int] = field(default_factory=dict)
    report: dict[str, Path] = field(default_factory=dict)
    report_markdown: str = ""
    seconds: float = 0.0


# ---------------------------------------------------------------------------------------------- steps


def fuse(source: Path, target: Path, model: SourceModel) -> dict[str, int]:
    """ONNX Runtime's transformer optimizer; returns the count of each fused operator found."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(str(source), model_type="bert", num_heads=model.num_heads,
                               hidden_size=model.hidden_size, opt_level=0)
    graph = optimized.model
    if not any(o.domain == "com.microsoft" for o in graph.opset_import):  # the fused ops live in this domain
        graph.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    save_with_external_data(graph, target)
    return {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic INT8: per-channel signed weights; float default tensor type keeps the optimizer's fused ops valid."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True,
                     use_external_data_format=True,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    # quantize_dynamic names its own external file; rewrite as <file>.data like every other variant.
    save_with_external_data(onnx.load(str(target)), target)
    for stray in target.parent.iterdir():
        if stray.name not in {target.name, target.name + ".data"}:
            stray.unlink()


def convert_fp16(source: Path, target: Path) -> None:
    """float16 weights and compute, float32 inputs/outputs (callers never see half precision)."""
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(source)))
    model.convert_float_to_float16(keep_io_types=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    save_with_external_data(model.model, target)


def variant_files(directory: Path, relative: str) -> tuple[str, list[str], int]:
    path = directory / relative
    data = path.with_name(path.name + ".data")
    files = [str(data.relative_to(directory))] if data.exists() else []
    size = path.stat().st_size + (data.stat().st_size if data.exists() else 0)
    return relative, files, size


def fingerprint(model: SourceModel, kind: ModelKind, options: OptimizeOptions) -> str:
    import onnxruntime
    import torch

    inputs: dict[str, Any] = {
        "pipeline": PIPELINE_VERSION, "weights": model.weights_sha256, "kind": kind,
        "transform": TRANSFORM_VERSION, "numeric_features": list(NUMERIC_FEATURES),
        "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__,
        "torch": torch.__version__,
        "options": options.model_dump(mode="json", exclude={"force", "bench_rounds", "skip_benchmark", "threads"}),
    }
    if kind == "triage" or options.data_dir.exists():
        for split in ("train", "eval"):
            path = options.data_dir / FILE_NAMES[split]
            inputs[split] = sha256_file(path) if path.exists() else None
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def embed(reference: Any, tokenizer: Any, pad_id: int, texts: list[str], use_token_type_ids: bool,
          batch: int = 64) -> npt.NDArray[np.float32]:
    """Sentence embeddings from the PyTorch encoder, length-bucketed to keep padding small."""
    import torch

    rows, _ = encode(tokenizer, texts)
    chunks: dict[int, npt.NDArray[np.float32]] = {}
    with torch.inference_mode():
        for bucket in length_buckets([len(r) for r in rows], batch):
            ids, mask = pad([rows[i] for i in bucket], pad_id)
            tensor_ids, tensor_mask = torch.from_numpy(ids), torch.from_numpy(mask)
            segments = torch.zeros_like(tensor_ids) if use_token_type_ids else None
            vectors = reference(tensor_ids, tensor_mask, segments).numpy()
            for i, row in zip(bucket, vectors, strict=True):
                chunks[int(i)] = row
    return np.stack([chunks[i] for i in range(len(rows))]).astype(np.float32)


def reference_outputs(reference: Any, rows: list[npt.NDArray[np.int64]], features: npt.NDArray[np.float32] | None,
                      names: list[str], use_token_type_ids: bool) -> Outputs:
    """The PyTorch reference, one unpadded row at a time."""
    import torch

    def one(i: int) -> list[npt.NDArray[np.float32]]:
        ids = torch.from_numpy(rows[i][None, :])
        args: list[Any] = [ids, torch.ones_like(ids)]
        if use_token_type_ids:
            args.append(torch.zeros_like(ids))
        if features is not None:
            args.append(torch.from_numpy(features[i : i + 1]))
        with torch.inference_mode():
            result = reference(*args)
        result = result if isinstance(result, tuple) else (result,)
        return [r.numpy() for r in result]

    return run_rows(one, len(rows), names)


def variant_outputs(path: Path, rows: list[npt.NDArray[np.int64]], features: npt.NDArray[np.float32] | None,
                    names: list[str], input_names: list[str], threads: int) -> Outputs:
    """An ONNX variant, one unpadded row at a time (the serving path's `rows` execution)."""
    from unison.model.runtime import create_session

    session = create_session(path, "cpu", threads)

    def one(i: int) -> list[npt.NDArray[np.float32]]:
        ids = rows[i][None, :]
        feeds: dict[str, Any] = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "token_type_ids" in input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        if features is not None:
            feeds["features"] = features[i : i + 1]
        return session.run(feeds)

    return run_rows(one, len(rows), names)


def training_reference(transformed: pd.DataFrame, token_counts: npt.NDArray[np.int64]) -> dict[str, Any]:
    """Bin edges and training shares of each numeric input and of the text's length, for drift checks
    (`unison.model.drift`)."""
    columns: dict[str, npt.NDArray[np.float64]] = {
        name: transformed[name].to_numpy(dtype=np.float64) for name in NUMERIC_FEATURES
    }
    columns["text_tokens"] = token_counts.astype(np.float64)
    columns["text_chars"] = transformed["text"].str.len().to_numpy(dtype=np.float64)
    return {name: reference_bins(values) for name, values in columns.items()}


# ---------------------------------------------------------------------------------------------- pipeline


def optimize(options: OptimizeOptions, registry: Registry,
             progress: Callable[[str], None] = lambda message: None) -> OptimizeResult:
    started = time.perf_counter()
    source_path = options.source or default_source()
    model = inspect_source(source_path)
    kind: ModelKind = model.kind if options.kind == "auto" and model.kind == "sequence-classification" else (
        "triage" if options.kind == "auto" else options.kind)  # type: ignore[assignment]
    if kind == "sequence-classification" and model.kind != "sequence-classification":
        raise ValueError(f"{source_path} has no sequence-classification head ({model.architecture})")
    eval_split = options.data_dir / FILE_NAMES["eval"]
    if not eval_split.exists():
        raise FileNotFoundError(f"no evaluation data at {eval_split}: run `unison data generate` first")

    print_ = progress
    digest = fingerprint(model, kind, options)
    if not options.force:
        cached = registry.find(options.name, digest)
        if cached is not None:
            print_(f"{options.name}:{cached} was built from the same inputs; reusing it (--force rebuilds)")
            artifact = registry.load(f"{options.name}:{cached}")
            return OptimizeResult(artifact=artifact, cached=True, seconds=time.perf_counter() - started)

    staging = registry.staging_dir(options.name)
    try:
        return _build(options, registry, model, kind, digest, staging, started, print_)
    except BaseException:
        registry.discard(staging)
        raise


def _build(options: OptimizeOptions, registry: Registry, model: SourceModel, kind: ModelKind, digest: str,
           staging: Path, started: float, say: Callable[[str], None]) -> OptimizeResult:
    import torch

    torch.set_num_threads(options.threads)
    tokenizer_files = [f"tokenizer/{name}" for name in copy_tokenizer(model.path, staging / "tokenizer")]
    tokenizer = load_tokenizer(staging / "tokenizer", model.max_length)
    pad_id = pad_token_id(staging / "tokenizer", tokenizer)

    evaluation = load_labelled(options.data_dir, "eval").head(options.eval_rows)
    eval_inputs = transform(evaluation)
    eval_texts = eval_inputs["text"].tolist()
    eval_features: npt.NDArray[np.float32] | None = None
    truth: npt.NDArray[np.int64] | None = None
    labels: list[str] = list(model.labels)
    head: TriageHead | None = None
    extra_manifest: dict[str, Any] = {}

    if kind == "triage":
        labels = list(CATEGORIES)
        train = load_labelled(options.data_dir, "train")
        if options.train_rows:
            train = train.head(options.train_rows)
        train_inputs = transform(train)
        say(f"fitting the triage head on {len(train):,} training rows (embeddings from the PyTorch encoder)")
        encoder = build_reference(model)
        embeddings = embed(encoder, tokenizer, pad_id, train_inputs["text"].tolist(), uses_token_type_ids(model))
        head = fit_triage_head(embeddings, feature_matrix(train_inputs), train["category"].tolist(),
                               train["priority"].to_numpy(), labels, NUMERIC_FEATURES)
        head.save(staging / "head.npz")
        del encoder
        eval_features = feature_matrix(eval_inputs)
        truth = np.array([labels.index(c) for c in evaluation["category"]], dtype=np.int64)
        train_tokens = np.array([len(r) for r in encode(tokenizer, train_inputs["text"].tolist())[0]])
        extra_manifest = {
            "numeric_features": list(NUMERIC_FEATURES), "transform_version": TRANSFORM_VERSION,
            "head": {**head.report, "file": "head.npz"},
            "training_reference": training_reference(train_inputs, train_tokens),
        }
    elif kind == "sequence-classification" and labels and "category" in evaluation:
        truth = np.array([labels.index(c) if c in labels else -1 for c in evaluation["category"]], dtype=np.int64)
        if (truth < 0).any():
            truth = None

    inputs, outputs = signature(model, kind, len(NUMERIC_FEATURES) if kind == "triage" else 0, len(labels))
    output_names = [o.name for o in outputs]
    input_names = [i.name for i in inputs]

    say(f"exporting {model.architecture} ({kind}) to ONNX opset {OPSET}")
    raw = staging / "export" / "model.onnx"
    export_onnx(build_reference(model, head), inputs, outputs, raw)  # a fresh model object just for export

    say("fusing with the ONNX Runtime transformer optimizer")
    fp32 = staging / "fp32" / "model.onnx"
    fusions = fuse(raw, fp32, model)
    say("fused: " + ", ".join(f"{name} x{count}" for name, count in sorted(fusions.items())))
    for stray in raw.parent.iterdir():
        stray.unlink()
    raw.parent.rmdir()

    if "int8" in options.variants:
        say("quantizing to INT8 (dynamic, per-channel)")
        quantize_int8(fp32, staging / "int8" / "model.onnx")
    if "fp16" in options.variants:
        say("converting to FP16")
        convert_fp16(fp32, staging / "fp16" / "model.onnx")

    say(f"validating against a freshly loaded PyTorch reference on {len(eval_texts):,} unpadded eval rows")
    rows, _ = encode(tokenizer, eval_texts)
    reference = build_reference(model, head)
    ref_out = reference_outputs(reference, rows, eval_features, output_names, "token_type_ids" in input_names)
    quality: dict[str, VariantQuality] = {}
    rejected: dict[str, list[str]] = {}
    variants: dict[str, VariantInfo] = {}
    for variant in options.variants:
        path = staging / variant / "model.onnx"
        try:
            out = variant_outputs(path, rows, eval_features, output_names, input_names, options.threads)
        except Exception as exc:  # a variant the runtime cannot run is rejected, not registered
            rejected[variant] = [f"could not run on CPU: {exc}"]
            _remove_variant(staging, variant)
            continue
        result = compare(variant, ref_out, out, options.gates.for_variant(variant), truth)
        quality[variant] = result
        if not result.passed:
            rejected[variant] = result.failures()
            say(f"{variant}: REJECTED by the quality gate: {'; '.join(result.failures())}")
            _remove_variant(staging, variant)
            continue
        say(f"{variant}: passed ({_summary(result.metrics)})")
        file, data_files, size = variant_files(staging, f"{variant}/model.onnx")
        stages, stage_check = split_stages(staging, variant, options.stages, rows[:20], eval_features, output_names,
                                           input_names, say)
        variants[variant] = VariantInfo(file=file, data_files=data_files, description=VARIANT_DESCRIPTIONS[variant],
                                        fusions=fusions, quality=result.metrics,
                                        gate=result.checks, size_bytes=size, stages=stages, stage_check=stage_check)
    if not variants:
        raise RuntimeError(f"every variant failed its quality gate: {rejected}")

    report_paths: dict[str, Path] = {}
    markdown = ""
    if not options.skip_benchmark and options.bench_rounds > 0:
        say(f"benchmarking PyTorch eager vs {', '.join(variants)} ({options.threads} threads, side by side)")
        from unison.model.benchmark import markdown as to_markdown
        from unison.model.benchmark import write_report

        bench = benchmark_variants(staging, variants, reference, model, input_names, tokenizer, eval_texts, options)
        for row in bench.rows:
            if row["engine"] in variants:
                variants[row["engine"]].benchmark.setdefault("rows", []).append(row)
        engine_quality = {v: q.metrics for v, q in quality.items() if v in variants}
        report_paths = write_report(bench, engine_quality, staging / "report")
        markdown = to_markdown(bench, engine_quality)

    manifest = Manifest(
        name=options.name, created_at=datetime.now(UTC).isoformat(timespec="seconds"), kind=kind,
        source_model={**model.describe(), "kind": model.kind}, fingerprint=digest, opset=OPSET,
        max_length=model.max_length, inputs=inputs, outputs=outputs, labels=labels,
        tokenizer_files=tokenizer_files, variants=variants, **extra_manifest,
    )
    artifact = registry.register(staging, manifest)
    report = {name: artifact.path / path.relative_to(staging) for name, path in report_paths.items()}
    say(f"registered {artifact.ref} at {artifact.path}")
    return OptimizeResult(artifact=artifact, cached=False, quality=quality, rejected=rejected, fusions=fusions,
                          report=report, report_markdown=markdown, seconds=time.perf_counter() - started)


STAGE_TOLERANCE = {"fp32": 1e-5, "int8": 1e-5, "fp16": 1e-2}


def split_stages(staging: Path, variant: str, counts: list[int], rows: list[npt.NDArray[np.int64]],
                 features: npt.NDArray[np.float32] | None, output_names: list[str], input_names: list[str],
                 say: Callable[[str], None]) -> tuple[dict[str, list[StageSpec]], dict[str, float]]:
    """Cut the variant's graph into each stage count and check the chain against the whole graph, row by row;
    a split outside the variant's tolerance is not stored."""
    from unison.model.runtime import create_session
    from unison.model.shard import LocalStages, ShardError, split

    whole = create_session(staging / variant / "model.onnx", "cpu", 1)
    stored: dict[str, list[StageSpec]] = {}
    checked: dict[str, float] = {}
    for count in sorted(set(counts)):
        try:
            specs = split(staging / variant / "model.onnx", count, staging / variant / "stages" / f"k{count}",
                          staging)
        except ShardError as exc:
            say(f"{variant}: no {count}-stage split: {exc}")
            continue
        chain = LocalStages(staging, specs, output_names)
        worst = 0.0
        for i, ids in enumerate(rows):
            feeds: dict[str, npt.NDArray[Any]] = {"input_ids": ids[None, :], "attention_mask": np.ones((1, len(ids)),
                                                                                                     np.int64)}
            if "token_type_ids" in input_names:
                feeds["token_type_ids"] = np.zeros((1, len(ids)), np.int64)
            if "features" in input_names and features is not None:
                feeds["features"] = features[i : i + 1]
            for a, b in zip(whole.run(feeds), chain.run(feeds), strict=True):
                worst = max(worst, float(np.abs(np.asarray(a, np.float64) - b).max()))
        if worst > STAGE_TOLERANCE[variant]:
            say(f"{variant}: {count}-stage split differs by {worst:.2e} (> {STAGE_TOLERANCE[variant]}); not stored")
            shutil.rmtree(staging / variant / "stages" / f"k{count}")
            continue
        stored[str(count)], checked[str(count)] = specs, worst
        say(f"{variant}: {count} stages ({', '.join(f'{s.weight_bytes / 2**20:.1f}' for s in specs)} MiB of "
            f"weights), max |diff| vs whole {worst:.1e}")
    return stored, checked


def benchmark_variants(directory: Path, variants: dict[str, VariantInfo], reference: Any, model: SourceModel,
                       input_names: list[str], tokenizer: Any, texts: list[str], options: OptimizeOptions) -> Any:
    """PyTorch eager first (the baseline), then each registered variant, on the same inputs."""
    import torch

    from unison.model.benchmark import Engine, encoder_flops, run_benchmark, synthetic_feeds
    from unison.model.runtime import create_session

    stream = np.concatenate([np.asarray(e.ids[1:-1], dtype=np.int64) for e in tokenizer.encode_batch(texts[:400])])
    cls_id = tokenizer.token_to_id("[CLS]") or 101
    sep_id = tokenizer.token_to_id("[SEP]") or 102

    def torch_prepare(feeds: dict[str, Any]) -> list[Any]:
        return [torch.from_numpy(feeds[name]) for name in input_names]

    def torch_run(args: list[Any]) -> Any:
        with torch.inference_mode():
            return reference(*args)

    torch_size = sum(p.numel() * p.element_size() for p in reference.parameters())
    engines = [Engine("pytorch", torch_prepare, torch_run, torch_size)]
    for variant, info in variants.items():
        session = create_session(directory / info.file, "cpu", options.threads)
        engines.append(Engine(variant, lambda feeds: feeds, session.run, info.size_bytes))
    num_features = len(NUMERIC_FEATURES) if "features" in input_names else 0
    return run_benchmark(
        engines,
        lambda length, batch: synthetic_feeds(stream, length, batch, input_names, num_features, cls_id, sep_id),
        options.bench_lengths, options.bench_batch, options.bench_batch_tokens, options.bench_rounds,
        options.threads,
        lambda length, batch: encoder_flops(model.hidden_size, model.intermediate_size, model.num_layers, length,
                                            batch),
    )


def _remove_variant(staging: Path, variant: str) -> None:
    directory = staging / variant
    if directory.is_dir():
        for path in directory.iterdir():
            path.unlink()
        directory.rmdir()


def _summary(metrics: dict[str, float]) -> str:
    keys = ("embedding_cosine_mean", "top1_agreement", "accuracy", "priority_mae_vs_reference")
    return ", ".join(f"{k} {metrics[k]:.4f}" for k in keys if k in metrics)
