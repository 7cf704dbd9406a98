"""The Predictor: determinism, execution modes, IOBinding on CPU, provider fallback, and bad input."""

import logging

import numpy as np
import pytest

from unison.features import feature_matrix, transform
from unison.features.offline import load_labelled
from unison.model import Predictor, PredictorInputError, PredictorOptions, Registry
from unison.model.runtime import select_providers


@pytest.fixture(scope="module")
def rows(built_model):
    transformed = transform(load_labelled(built_model.data_dir, "eval").head(64))
    return transformed["text"].tolist(), feature_matrix(transformed)


@pytest.fixture(scope="module")
def registry(built_model) -> Registry:
    return Registry(built_model.registry_root)


@pytest.mark.parametrize("variant", ["int8", "fp32"])
def test_rows_execution_is_independent_of_the_batch(registry, rows, variant) -> None:
    texts, features = rows
    predictor = Predictor.from_registry(registry, "triage", PredictorOptions(variant=variant, execution="rows"))
    whole = predictor.predict(texts, features)
    for i in (0, 17, 63):
        alone = predictor.predict([texts[i]], features[i : i + 1])
        for name in whole.outputs:
            assert np.array_equal(whole.outputs[name][i], alone.outputs[name][0]), name
    shuffled = np.random.default_rng(1).permutation(len(texts))
    again = predictor.predict([texts[i] for i in shuffled], features[shuffled])
    assert np.array_equal(again.probabilities, whole.probabilities[shuffled])


def test_fp32_buckets_agree_with_rows(registry, rows) -> None:
    texts, features = rows
    by_rows = Predictor.from_registry(registry, "triage", PredictorOptions(variant="fp32", execution="rows"))
    by_rows = by_rows.predict(texts, features)
    buckets = Predictor.from_registry(registry, "triage",
                                      PredictorOptions(variant="fp32", execution="buckets", bucket_size=8))
    by_buckets = buckets.predict(texts, features)
    assert by_buckets.execution == "buckets"
    np.testing.assert_allclose(by_buckets.probabilities, by_rows.probabilities, atol=1e-5)
    np.testing.assert_allclose(by_buckets.priority, by_rows.priority, atol=1e-5)
    assert by_buckets.categories() == by_rows.categories()


def test_io_binding_gives_the_same_outputs_as_plain_runs(registry, rows) -> None:
    texts, features = rows
    bound = Predictor.from_registry(registry, "triage",
                                    PredictorOptions(variant="fp32", execution="buckets", io_binding=True))
    plain = Predictor.from_registry(registry, "triage",
                                    PredictorOptions(variant="fp32", execution="buckets", io_binding=False))
    assert bound._runner is not None and plain._runner is None
    first = bound.predict(texts, features)
    second = bound.predict(texts, features)  # reuses the preallocated output buffers
    np.testing.assert_array_equal(first.probabilities, second.probabilities)
    np.testing.assert_array_equal(first.probabilities, plain.predict(texts, features).probabilities)


def test_records_carry_model_version_and_valid_probabilities(registry, rows) -> None:
    texts, features = rows
    predictor = Predictor.from_registry(registry, "triage:production", PredictorOptions(variant="int8"))
    records = predictor.predict(texts[:3], features[:3]).to_records()
    assert [r["model_version"] for r in records] == [predictor.version] * 3
    for record in records:
        assert record["category"] in record["probabilities"]
        assert abs(sum(record["probabilities"].values()) - 1) < 1e-4
        assert 0 <= record["priority"] <= 1


def test_truncation_is_reported(registry) -> None:
    predictor = Predictor.from_registry(registry, "triage", PredictorOptions(variant="int8"))
    result = predictor.predict(["word " * 2000, "short"], np.zeros((2, 16), dtype=np.float32))
    assert result.token_counts[0] == predictor.max_length and result.truncated.tolist() == [True, False]


@pytest.mark.parametrize(
    ("texts", "features", "message"),
    [
        ([], None, "empty batch"),
        (["ok", "  "], np.zeros((2, 16)), "row 1: text is empty"),
        (["ok", 3], np.zeros((2, 16)), "row 1: text must be a string, got int"),
        (["x" * 20_001], np.zeros((1, 16)), "more than the limit"),
        (["ok"], None, "needs 16 numeric features"),
        (["ok"], np.zeros((1, 3)), r"shape \(1, 16\)"),
        (["ok"], np.full((1, 16), np.nan), "row 0: features contain NaN"),
        ("just a string", None, "list of strings"),
    ],
)
def test_bad_input_gets_a_clear_error(registry, texts, features, message) -> None:
    predictor = Predictor.from_registry(registry, "triage", PredictorOptions(variant="int8"))
    with pytest.raises(PredictorInputError, match=message):
        predictor.predict(texts, features)


def test_cuda_request_falls_back_to_cpu_with_a_reason(registry, caplog) -> None:
    providers, reason = select_providers("cuda", available=["CPUExecutionProvider"])
    assert providers == ["CPUExecutionProvider"] and "falling back to CPU" in reason
    assert select_providers("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"])[0][0] == "CUDAExecutionProvider"
    with caplog.at_level(logging.INFO, logger="unison.model.runtime"):
        predictor = Predictor.from_registry(registry, "triage", PredictorOptions(variant="fp16", device="cuda"))
    assert predictor.session.device == "cpu"
    assert any("falling back to CPU" in r.getMessage() for r in caplog.records)
    predictor.check()


def test_health_check_passes_on_a_good_model(registry) -> None:
    Predictor.from_registry(registry, "triage", PredictorOptions(variant="int8")).check()
