"""The Predictor: tokenizer + ONNX Runtime over a registry artifact. Batch, online and streaming all use it.

Two ways to execute a batch, chosen by configuration:

- `rows` (CPU default): every text runs alone, unpadded, and rows are spread over `parallel_rows` concurrent
  single-threaded runs. A row's output then never depends on the rest of the batch or on padding -- which
  matters for dynamic INT8, whose activation scales are computed over the whole input tensor (a padded batch
  changed embedding components by up to 0.02 in our measurements). On 2 CPU cores this was also the fastest
  way to run (no padding at all).
- `buckets` (CUDA default): rows sorted by length and cut into padded batches of `bucket_size`, run through
  IOBinding with outputs preallocated per batch shape. Efficient on a GPU; on CPU the fp32 outputs agree with
  `rows` to ~1e-6, while dynamic INT8 outputs depend on the batch (see docs/MODEL.md).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from unison.config import ModelConfig
from unison.domain import MAX_TEXT_CHARS
from unison.model.manifest import Manifest
from unison.model.registry import Artifact, Registry
from unison.model.runtime import BoundRunner, Device, Session, create_session
from unison.model.tokenize import encode, length_buckets, load_tokenizer, pad, pad_token_id

log = logging.getLogger(__name__)

Execution = Literal["auto", "rows", "buckets"]


class PredictorInputError(ValueError):
    """The input cannot be scored as given; the message says which row and why (maps to HTTP 400 / a DLQ reason)."""


@dataclass
class Predictions:
    """Outputs in input order, plus what produced them."""

    model_name: str
    model_version: str
    variant: str
    labels: list[str]
    outputs: dict[str, npt.NDArray[np.float32]]
    token_counts: npt.NDArray[np.int64]
    truncated: npt.NDArray[np.bool_]
    execution: str
    device: str
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.token_counts)

    @property
    def probabilities(self) -> npt.NDArray[np.float32] | None:
        return self.outputs.get("probabilities")

    @property
    def priority(self) -> npt.NDArray[np.float32] | None:
        return self.outputs.get("priority")

    @property
    def embedding(self) -> npt.NDArray[np.float32] | None:
        return self.outputs.get("embedding")

    def rows(self, start: int, stop: int) -> Predictions:
        """Rows [start, stop), everything else as it is."""
        return replace(self, outputs={k: v[start:stop] for k, v in self.outputs.items()},
                       token_counts=self.token_counts[start:stop], truncated=self.truncated[start:stop])

    def categories(self) -> list[str]:
        if self.probabilities is None:
            return []
        return [self.labels[i] for i in self.probabilities.argmax(axis=1)]

    def to_records(self) -> list[dict[str, Any]]:
        """One plain dict per row (JSON-ready)."""
        records: list[dict[str, Any]] = []
        categories = self.categories()
        for i in range(len(self)):
            record: dict[str, Any] = {"model_name": self.model_name, "model_version": self.model_version,
                                      "tokens": int(self.token_counts[i]), "truncated": bool(self.truncated[i])}
            if categories:
                assert self.probabilities is not None
                record["category"] = categories[i]
                record["probabilities"] = {
                    label: float(p) for label, p in zip(self.labels, self.probabilities[i], strict=True)
                }
            if self.priority is not None:
                record["priority"] = float(self.priority[i])
            if self.embedding is not None and not categories:
                record["embedding"] = self.embedding[i].tolist()
            records.append(record)
        return records


@dataclass(frozen=True)
class PredictorOptions:
    """Everything that decides how a Predictor runs (infinity's `EngineArgs`): built once from the `model` section
    of the settings, with explicit per-path overrides (`replace`), so batch, online and stream cannot run the same
    artifact differently by accident. `Predictor.from_options` is the only way to build a Predictor."""

    variant: str = "int8"
    device: Device = "cpu"
    execution: Execution = "auto"
    parallel_rows: int = 2
    intra_op_threads: int | None = None
    bucket_size: int = 32
    max_length: int | None = None
    max_text_chars: int = MAX_TEXT_CHARS
    io_binding: bool = True
    stages: int = 1
    stage_resources: tuple[tuple[str, float], ...] = (("CPU", 0.1),)
    stage_placement: str = "PACK"

    @classmethod
    def from_config(cls, model: ModelConfig, **overrides: Any) -> PredictorOptions:
        """The options `settings.model` describes; `overrides` (a path's own choices, e.g. the batch job's actor
        threads) replace single fields and are named at the call site."""
        options = PredictorOptions(
            variant=model.variant, device=model.device, execution=model.execution,
            parallel_rows=model.parallel_rows, intra_op_threads=model.intra_op_threads,
            bucket_size=model.bucket_size, max_length=model.max_length, stages=model.stages,
            stage_resources=tuple(sorted(model.stage_resources.items())), stage_placement=model.stage_placement)
        return replace(options, **overrides)

    def replace(self, **overrides: Any) -> PredictorOptions:
        return replace(self, **overrides)


class Predictor:
    """Scores texts (and, for the triage model, the customer's numeric features) with one artifact variant."""

    def __init__(self, artifact: Artifact, options: PredictorOptions, chain: Any = None) -> None:
        """Use `Predictor.from_options` (it builds the stage chain of a sharded model too)."""
        manifest = artifact.manifest
        variant = options.variant
        if variant not in manifest.variants:
            raise ValueError(f"{artifact.ref} has no variant {variant!r} (has {', '.join(manifest.variants)})")
        self.artifact = artifact
        self.options = options
        self.manifest: Manifest = manifest
        self.variant = variant
        self.bucket_size = options.bucket_size
        self.max_text_chars = options.max_text_chars
        self.max_length = min(options.max_length or manifest.max_length, manifest.max_length)
        self.tokenizer = load_tokenizer(artifact.path / "tokenizer", self.max_length)
        self.pad_id = pad_token_id(artifact.path / "tokenizer", self.tokenizer)
        self.input_names = manifest.input_names()
        self.output_widths: dict[str, int | None] = {
            spec.name: (int(spec.shape[1]) if len(spec.shape) > 1 else None) for spec in manifest.outputs
        }
        self.num_features = len(manifest.numeric_features)

        execution, device = options.execution, options.device
        rows_mode = execution == "rows" or (execution == "auto" and device == "cpu")
        threads = options.intra_op_threads or (1 if rows_mode else None)
        # A sharded model (`chain`: unison.model.chain.StageChain) runs in its stage actors; no whole graph here.
        self.chain = chain
        self.session: Session | None = None
        if chain is None:
            self.session = create_session(artifact.path / manifest.variants[variant].file, device, threads)
            if execution == "auto":
                rows_mode = self.session.device == "cpu"
        self.device: Device = self.session.device if self.session is not None else chain.device
        self.execution = "rows" if rows_mode else "buckets"
        self.parallel_rows = options.parallel_rows
        self._pool = ThreadPoolExecutor(options.parallel_rows, thread_name_prefix="predictor") \
            if rows_mode and chain is None else None
        self._runner = BoundRunner(self.session, self.output_widths) \
            if options.io_binding and not rows_mode and self.session is not None else None
        self._lock = threading.Lock()  # the bound runner reuses output buffers
        log.info("Predictor %s variant %s: %s execution on %s", artifact.ref, variant, self.execution,
                 self.session.providers[0] if self.session is not None else f"{len(chain.specs)} stages")

    @classmethod
    def from_options(cls, artifact: Artifact, options: PredictorOptions, sharded: bool = False,
                     chain: Any = None) -> Predictor:
        """The one way to build a Predictor. `sharded`: run the artifact's `options.stages`-stage split in stage
        actors when `options.stages` > 1 (the serving paths' default model); otherwise the whole graph here.
        `chain`: stages built by the caller (a benchmark's or test's own split) instead."""
        if chain is None and sharded and options.stages > 1:
            from unison.model.chain import StageChain

            info = artifact.manifest.variants[options.variant]
            specs = info.stages.get(str(options.stages))
            if specs is None:
                have = ", ".join(sorted(info.stages)) or "none"
                raise ValueError(f"{artifact.ref} {options.variant} has no {options.stages}-stage split (has: "
                                 f"{have}); `unison optimize --stages {options.stages}` stores one")
            chain = StageChain(artifact.path, specs, artifact.manifest.output_names(), device=options.device,
                               resources=dict(options.stage_resources), strategy=options.stage_placement,
                               parallel=options.parallel_rows)
        return cls(artifact, options, chain=chain)

    @classmethod
    def from_registry(cls, registry: Registry, ref: str, options: PredictorOptions | None = None,
                      sharded: bool = False) -> Predictor:
        """Load (and verify) `ref`'s variant from the registry, then `from_options`."""
        options = options or PredictorOptions()
        return cls.from_options(registry.load(ref, [options.variant]), options, sharded=sharded)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        if self.chain is not None:
            self.chain.close()

    # ------------------------------------------------------------------------------------------ inputs

    def _check(self, texts: Sequence[Any], features: npt.NDArray[np.float32] | None) -> None:
        if isinstance(texts, str | bytes) or not isinstance(texts, Sequence):
            raise PredictorInputError("texts must be a list of strings")
        if len(texts) == 0:
            raise PredictorInputError("empty batch: nothing to score")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise PredictorInputError(f"row {i}: text must be a string, got {type(text).__name__}")
            if not text.strip():
                raise PredictorInputError(f"row {i}: text is empty")
            if len(text) > self.max_text_chars:
                raise PredictorInputError(f"row {i}: text has {len(text)} characters, more than the limit of "
                                          f"{self.max_text_chars}")
        if self.num_features:
            if features is None:
                raise PredictorInputError(f"this model needs {self.num_features} numeric features per row "
                                          f"({', '.join(self.manifest.numeric_features)})")
            if features.shape != (len(texts), self.num_features):
                raise PredictorInputError(f"features must have shape ({len(texts)}, {self.num_features}), "
                                          f"got {features.shape}")
            if not np.isfinite(features).all():
                row = int(np.argwhere(~np.isfinite(features))[0][0])
                raise PredictorInputError(f"row {row}: features contain NaN or infinity")

    def _feeds(self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.int64],
               features: npt.NDArray[np.float32] | None) -> dict[str, npt.NDArray]:
        feeds: dict[str, npt.NDArray] = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        if "features" in self.input_names:
            assert features is not None
            feeds["features"] = np.ascontiguousarray(features, dtype=np.float32)
        return feeds

    # ------------------------------------------------------------------------------------------ scoring

    def predict(self, texts: Sequence[str], features: npt.ArrayLike | None = None) -> Predictions:
        """Score `texts` (with `features` [rows, numeric_features] for the triage model), in input order."""
        feature_array = None if features is None else np.asarray(features, dtype=np.float32)
        self._check(texts, feature_array)
        rows, truncated = encode(self.tokenizer, texts)
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        outputs = {name: np.empty((len(rows),) if w is None else (len(rows), w), dtype=np.float32)
                   for name, w in self.output_widths.items()}
        if self.execution == "rows":
            self._predict_rows(rows, feature_array, outputs)
        else:
            self._predict_buckets(rows, lengths, feature_array, outputs)
        return Predictions(
            model_name=self.manifest.name, model_version=self.manifest.version, variant=self.variant,
            labels=list(self.manifest.labels), outputs=outputs, token_counts=lengths, truncated=truncated,
            execution=self.execution, device=self.device,
        )

    def _predict_rows(self, rows: list[npt.NDArray[np.int64]], features: npt.NDArray[np.float32] | None,
                      outputs: dict[str, npt.NDArray[np.float32]]) -> None:
        names = list(self.output_widths)

        def feeds(i: int) -> dict[str, npt.NDArray]:
            ids = rows[i][None, :]
            return self._feeds(ids, np.ones_like(ids), None if features is None else features[i : i + 1])

        if self.chain is not None:  # every row, each on its own, through the stages in one pass
            for i, values in enumerate(self.chain.run_many([feeds(i) for i in range(len(rows))])):
                for name, value in zip(names, values, strict=True):
                    outputs[name][i] = value[0]
            return
        assert self.session is not None
        session = self.session

        def one(i: int) -> None:
            for name, value in zip(names, session.run(feeds(i)), strict=True):
                outputs[name][i] = value[0]

        assert self._pool is not None
        list(self._pool.map(one, range(len(rows))))

    def _predict_buckets(self, rows: list[npt.NDArray[np.int64]], lengths: npt.NDArray[np.int64],
                         features: npt.NDArray[np.float32] | None,
                         outputs: dict[str, npt.NDArray[np.float32]]) -> None:
        names = list(self.output_widths)
        buckets = length_buckets(lengths, self.bucket_size)
        if self.chain is not None:  # all padded buckets through the stages in one pass
            all_feeds = []
            for bucket in buckets:
                ids, mask = pad([rows[i] for i in bucket], self.pad_id)
                all_feeds.append(self._feeds(ids, mask, None if features is None else features[bucket]))
            for bucket, values in zip(buckets, self.chain.run_many(all_feeds), strict=True):
                for name, value in zip(names, values, strict=True):
                    outputs[name][bucket] = value
            return
        assert self.session is not None
        for bucket in buckets:
            ids, mask = pad([rows[i] for i in bucket], self.pad_id)
            feeds = self._feeds(ids, mask, None if features is None else features[bucket])
            if self._runner is not None:
                with self._lock:
                    result = self._runner.run(feeds)
                    for name in names:
                        outputs[name][bucket] = result[name]
            else:
                for name, value in zip(names, self.session.run(feeds), strict=True):
                    outputs[name][bucket] = value

    def check(self) -> None:
        """Raise unless the model answers a tiny request with finite outputs (for health checks)."""
        features = np.zeros((1, self.num_features), dtype=np.float32) if self.num_features else None
        result = self.predict(["health check"], features)
        for name, value in result.outputs.items():
            if not np.isfinite(value).all():
                raise RuntimeError(f"model output {name} is not finite")
