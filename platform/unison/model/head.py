"""The triage head, fitted on the generated training split and baked into the ONNX graph.

Category: multinomial logistic regression on the sentence embedding (L-BFGS, L2-regularized, deterministic).
Priority: ridge regression of logit(priority) on [embedding, numeric customer features], read back through a
sigmoid. Both are linear, so the head costs nothing at inference next to the encoder, and fitting takes
seconds on a CPU. The head's weights are stored in the artifact (`head.npz`) so the PyTorch reference used by
the quality gates can be rebuilt exactly.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

FloatArray = npt.NDArray[np.float32]


@dataclass
class TriageHead:
    labels: list[str]
    numeric_features: list[str]
    category_weight: FloatArray  # [classes, hidden]
    category_bias: FloatArray  # [classes]
    priority_weight: FloatArray  # [hidden + features]
    priority_bias: float
    report: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        np.savez(path, category_weight=self.category_weight, category_bias=self.category_bias,
                 priority_weight=self.priority_weight, priority_bias=np.float32(self.priority_bias))
        path.with_suffix(".json").write_text(json.dumps(
            {"labels": self.labels, "numeric_features": self.numeric_features, "report": self.report}, indent=2))

    @classmethod
    def load(cls, path: Path) -> TriageHead:
        arrays = np.load(path)
        meta = json.loads(path.with_suffix(".json").read_text())
        return cls(labels=meta["labels"], numeric_features=meta["numeric_features"],
                   category_weight=arrays["category_weight"], category_bias=arrays["category_bias"],
                   priority_weight=arrays["priority_weight"], priority_bias=float(arrays["priority_bias"]),
                   report=meta.get("report", {}))

    def predict(self, embeddings: FloatArray, features: FloatArray) -> tuple[FloatArray, FloatArray]:
        """(probabilities, priority) in numpy, for checks independent of the exported graph."""
        logits = embeddings @ self.category_weight.T + self.category_bias
        logits = logits - logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        z = np.concatenate([embeddings, features], axis=1) @ self.priority_weight + self.priority_bias
        return probabilities.astype(np.float32), (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def fit_triage_head(
    embeddings: FloatArray,
    features: FloatArray,
    categories: Sequence[str],
    priorities: npt.ArrayLike,
    labels: Sequence[str],
    numeric_features: Sequence[str],
    category_l2: float = 1e-4,
    priority_l2: float = 1e-2,
) -> TriageHead:
    unknown = sorted(set(categories) - set(labels))
    if unknown:
        raise ValueError(f"training categories not among the labels {list(labels)}: {unknown}")
    index = {label: i for i, label in enumerate(labels)}
    targets = torch.tensor([index[c] for c in categories], dtype=torch.int64)
    x = torch.from_numpy(np.asarray(embeddings, dtype=np.float32))
    torch.manual_seed(0)
    weight = torch.zeros((len(labels), x.shape[1]), dtype=torch.float32, requires_grad=True)
    bias = torch.zeros(len(labels), dtype=torch.float32, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=500, tolerance_grad=1e-6,
                                  history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ weight.T + bias, targets) + category_l2 * (weight**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    category_weight = weight.detach().numpy().astype(np.float32)
    category_bias = bias.detach().numpy().astype(np.float32)

    y = np.asarray(priorities, dtype=np.float64).clip(0.02, 0.98)
    z = np.log(y / (1 - y))
    design = np.concatenate([embeddings, features, np.ones((len(y), 1), dtype=np.float32)], axis=1).astype(np.float64)
    penalty = priority_l2 * np.eye(design.shape[1])
    penalty[-1, -1] = 0.0  # never shrink the intercept
    solution = np.linalg.solve(design.T @ design + penalty, design.T @ z)

    head = TriageHead(
        labels=list(labels), numeric_features=list(numeric_features), category_weight=category_weight,
        category_bias=category_bias, priority_weight=solution[:-1].astype(np.float32),
        priority_bias=float(solution[-1]),
    )
    probabilities, priority = head.predict(np.asarray(embeddings, dtype=np.float32),
                                           np.asarray(features, dtype=np.float32))
    head.report = {
        "method": "category: multinomial logistic regression (L-BFGS, L2 "
        f"{category_l2:g}) on the L2-normalized sentence embedding; priority: ridge regression (L2 "
        f"{priority_l2:g}) of logit(priority) on [embedding, numeric features], read through a sigmoid",
        "train_rows": len(y),
        "train_accuracy": float((probabilities.argmax(1) == targets.numpy()).mean()),
        "train_priority_mae": float(np.abs(priority - np.asarray(priorities)).mean()),
    }
    return head
