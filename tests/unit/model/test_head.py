"""The triage head fits what is learnable and round-trips through its file."""

from pathlib import Path

import numpy as np

from unison.model.head import TriageHead, fit_triage_head


def test_head_fits_separable_classes_and_a_linear_priority(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 8))
    classes = rng.integers(0, 3, 600)
    embeddings = (centers[classes] + rng.normal(scale=0.1, size=(600, 8))).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    features = rng.normal(size=(600, 2)).astype(np.float32)
    priority = 1 / (1 + np.exp(-(0.8 * features[:, 0] - 0.5)))
    labels = ["a", "b", "c"]
    head = fit_triage_head(embeddings, features, [labels[c] for c in classes], priority, labels, ["f1", "f2"])
    probabilities, predicted = head.predict(embeddings, features)
    assert (probabilities.argmax(1) == classes).mean() > 0.98
    assert np.abs(predicted - priority).mean() < 0.02
    head.save(tmp_path / "head.npz")
    loaded = TriageHead.load(tmp_path / "head.npz")
    assert loaded.labels == labels and np.array_equal(loaded.category_weight, head.category_weight)
    assert loaded.report["train_rows"] == 600
