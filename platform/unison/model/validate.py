"""Quality gates: each variant against a freshly loaded PyTorch reference, on unpadded evaluation inputs.

A variant that fails any check of its gate is not registered; the check that failed says why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from unison.model.manifest import GateCheck

Outputs = dict[str, npt.NDArray[np.float32]]


class Gate(BaseModel):
    """Thresholds for one variant. A metric that the model kind does not produce is skipped."""

    model_config = ConfigDict(extra="forbid")

    embedding_cosine_mean: float = Field(ge=0, le=1, description="Mean cosine of embeddings vs the reference.")
    logits_cosine_mean: float = Field(ge=0, le=1, description="Mean cosine of class logits vs the reference.")
    top1_agreement: float = Field(ge=0, le=1, description="Share of rows whose top class equals the reference's.")
    accuracy_drop: float = Field(ge=0, le=1, description="Largest allowed drop in accuracy vs the reference.")
    priority_mae_vs_reference: float = Field(ge=0, description="Largest mean |priority - reference priority|.")


class QualityGates(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fp32: Gate = Gate(embedding_cosine_mean=0.9999, logits_cosine_mean=0.9999, top1_agreement=0.999,
                      accuracy_drop=0.001, priority_mae_vs_reference=0.001)
    int8: Gate = Gate(embedding_cosine_mean=0.99, logits_cosine_mean=0.99, top1_agreement=0.98,
                      accuracy_drop=0.01, priority_mae_vs_reference=0.02)
    fp16: Gate = Gate(embedding_cosine_mean=0.999, logits_cosine_mean=0.999, top1_agreement=0.99,
                      accuracy_drop=0.005, priority_mae_vs_reference=0.005)

    def for_variant(self, variant: str) -> Gate:
        gate: Gate = getattr(self, variant)
        return gate


@dataclass
class VariantQuality:
    variant: str
    metrics: dict[str, float]
    checks: list[GateCheck]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def failures(self) -> list[str]:
        return [f"{c.metric} = {c.value:.5f}, needs {c.comparison} {c.threshold}" for c in self.checks if not c.passed]


def _cosine(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    return (a64 * b64).sum(axis=1) / np.maximum(norms, 1e-12)


def macro_f1(predicted: npt.NDArray[np.int64], truth: npt.NDArray[np.int64], classes: int) -> float:
    scores = []
    for c in range(classes):
        tp = int(((predicted == c) & (truth == c)).sum())
        fp = int(((predicted == c) & (truth != c)).sum())
        fn = int(((predicted != c) & (truth == c)).sum())
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def compare(variant: str, reference: Outputs, candidate: Outputs, gate: Gate,
            truth: npt.NDArray[np.int64] | None = None) -> VariantQuality:
    """Metrics of `candidate` against `reference` (and labels when given), checked against `gate`."""
    metrics: dict[str, float] = {}
    checks: list[GateCheck] = []

    def check(metric: str, value: float, threshold: float, comparison: str) -> None:
        passed = value >= threshold if comparison == ">=" else value <= threshold
        checks.append(GateCheck(metric=metric, value=value, threshold=threshold, comparison=comparison,  # type: ignore[arg-type]
                                passed=bool(passed)))

    if "embedding" in reference:
        cos = _cosine(reference["embedding"], candidate["embedding"])
        metrics.update(embedding_cosine_mean=float(cos.mean()), embedding_cosine_min=float(cos.min()))
        check("embedding_cosine_mean", metrics["embedding_cosine_mean"], gate.embedding_cosine_mean, ">=")
    if "logits" in reference:
        cos = _cosine(reference["logits"], candidate["logits"])
        metrics.update(logits_cosine_mean=float(cos.mean()), logits_cosine_min=float(cos.min()))
        check("logits_cosine_mean", metrics["logits_cosine_mean"], gate.logits_cosine_mean, ">=")
        ref_top = reference["logits"].argmax(axis=1)
        top = candidate["logits"].argmax(axis=1)
        metrics["top1_agreement"] = float((ref_top == top).mean())
        metrics["probabilities_max_abs_diff"] = float(
            np.abs(reference["probabilities"] - candidate["probabilities"]).max())
        check("top1_agreement", metrics["top1_agreement"], gate.top1_agreement, ">=")
        if truth is not None:
            classes = reference["logits"].shape[1]
            metrics["reference_accuracy"] = float((ref_top == truth).mean())
            metrics["accuracy"] = float((top == truth).mean())
            metrics["reference_macro_f1"] = macro_f1(ref_top, truth, classes)
            metrics["macro_f1"] = macro_f1(top, truth, classes)
            metrics["accuracy_drop"] = metrics["reference_accuracy"] - metrics["accuracy"]
            check("accuracy_drop", metrics["accuracy_drop"], gate.accuracy_drop, "<=")
    if "priority" in reference:
        metrics["priority_mae_vs_reference"] = float(np.abs(reference["priority"] - candidate["priority"]).mean())
        check("priority_mae_vs_reference", metrics["priority_mae_vs_reference"], gate.priority_mae_vs_reference, "<=")
    return VariantQuality(variant, metrics, checks)


def run_rows(run_one: Callable[[int], Sequence[npt.NDArray[np.float32]]], rows: int,
             names: Sequence[str]) -> Outputs:
    """Collect per-row outputs (each call returns one array per output name, batch of one) into arrays."""
    collected: dict[str, list[npt.NDArray[np.float32]]] = {name: [] for name in names}
    for i in range(rows):
        for name, value in zip(names, run_one(i), strict=True):
            collected[name].append(np.asarray(value, dtype=np.float32)[0])
    return {name: np.stack(values) for name, values in collected.items()}
