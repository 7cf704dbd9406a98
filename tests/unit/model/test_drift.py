"""Drift arithmetic: reference bins, PSI, the counts replicas keep, the monitor's window."""

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest

from unison.data import generate
from unison.features import transform
from unison.features.offline import load_labelled
from unison.model.drift import (
    REFERENCE_INPUTS,
    DriftConfig,
    DriftCounts,
    DriftRecorder,
    DriftWindow,
    assess,
    live_values,
    psi,
    reference_bins,
)
from unison.model.optimize import training_reference


@dataclass
class _Predictions:
    token_counts: np.ndarray


@dataclass
class _Scored:  # the two fields of ScoredTickets that drift reads
    inputs: pd.DataFrame
    predictions: _Predictions


def _scored(rows: pd.DataFrame) -> _Scored:
    inputs = transform(rows)
    return _Scored(inputs, _Predictions(np.asarray(inputs["text"].str.split().str.len() * 2, dtype=np.int64)))


@pytest.fixture(scope="module")
def tickets(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """2,000 training tickets, then 1,000 evaluation tickets, with their customers' features point-in-time."""
    out = tmp_path_factory.mktemp("data")
    generate(out, customers=400, tickets=100, train_tickets=2000, eval_tickets=1000, seed=5)
    return pd.concat([load_labelled(out, "train"), load_labelled(out, "eval")], ignore_index=True)


def _reference(rows: pd.DataFrame) -> dict[str, Any]:
    scored = _scored(rows)
    return training_reference(scored.inputs, scored.predictions.token_counts)


def test_discrete_inputs_get_one_bin_per_value() -> None:
    values = np.array([0.0] * 70 + [1.0] * 30)
    bins = reference_bins(values)
    assert bins["edges"] == [-0.5, 0.5, 1.5] and bins["shares"] == pytest.approx([0, 0.7, 0.3, 0])


def test_a_value_training_never_saw_has_its_own_bin() -> None:
    bins = reference_bins(np.zeros(100))  # a flag that was never set in training
    counts = DriftCounts({"features_missing": bins})
    counts.add({"features_missing": np.array([0.0, 1.0, 1.0])})
    assert bins["shares"] == [0, 1, 0] and counts.take() == (3, {"features_missing": [0, 1, 2]})


def test_continuous_inputs_get_deciles() -> None:
    bins = reference_bins(np.random.default_rng(0).normal(size=10_000))
    assert len(bins["edges"]) == 9
    assert bins["shares"] == pytest.approx([0.1] * 10, abs=0.002)


def test_psi_is_zero_for_the_same_distribution_and_grows_with_the_shift() -> None:
    shares = [0.25, 0.25, 0.5]
    assert psi(shares, [25, 25, 50]) == pytest.approx(0.0)
    small, large = psi(shares, [30, 25, 45]), psi(shares, [60, 20, 20])
    assert 0 < small < 0.1 < 0.25 < large
    expected = sum((a - e) * np.log(a / e) for a, e in zip([0.6, 0.2, 0.2], shares, strict=True))
    assert large == pytest.approx(expected)


def test_an_empty_bin_does_not_make_psi_infinite() -> None:
    assert np.isfinite(psi([0.0, 1.0], [50, 50]))
    assert np.isfinite(psi([0.5, 0.5], [0, 100]))


def test_psi_refuses_counts_over_other_bins() -> None:
    with pytest.raises(ValueError, match="3 live bins against 2 reference bins"):
        psi([0.5, 0.5], [1, 2, 3])


def test_counts_use_the_same_bins_as_the_reference() -> None:
    values = np.array([1.0, 2.0, 2.0, 3.0, 3.0, 3.0])
    bins = reference_bins(values)
    counts = DriftCounts({"tenure_years": bins})
    counts.add({"tenure_years": values})
    rows, taken = counts.take()
    assert rows == 6 and taken["tenure_years"] == [0, 1, 2, 3, 0]
    assert counts.take() == (0, {"tenure_years": [0, 0, 0, 0, 0]})


def test_live_traffic_like_training_is_stable_and_unknown_customers_are_not(tickets: pd.DataFrame) -> None:
    train, live = tickets.iloc[:2000], tickets.iloc[2000:]
    reference = _reference(train)
    assert set(reference) == set(REFERENCE_INPUTS)
    config = DriftConfig(min_rows=100)

    counts = DriftCounts(reference)
    counts.add(live_values(_scored(live)))  # type: ignore[arg-type]
    result = assess(reference, *counts.take(), config)
    assert result["status"] == "stable", result

    unknown = live.drop(columns=["plan", "tenure_days", "lifetime_value", "open_tickets", "tickets_last_90d",
                                 "last_csat", "days_since_last_login"])
    unknown = unknown.assign(body=unknown["body"] + " " + unknown["body"])  # longer texts as well
    counts.add(live_values(_scored(unknown)))  # type: ignore[arg-type]
    result = assess(reference, *counts.take(), config)
    assert result["status"] == "significant"
    assert result["psi"]["features_missing"] > 0.25 and result["psi"]["text_chars"] > 0.25
    assert result["worst"] in result["psi"]


def test_too_few_rows_give_no_figure() -> None:
    result = assess({"x": {"edges": [0.5], "shares": [0.5, 0.5]}}, 10, {"x": [10, 0]}, DriftConfig(min_rows=50))
    assert result == {"rows": 10, "status": "insufficient data", "psi": {}, "worst": None}


def test_the_window_forgets_old_counts() -> None:
    window = DriftWindow()
    window.add(100.0, 2, {"x": [1, 1]})
    window.add(150.0, 3, {"x": [0, 3]})
    assert window.total(160.0, window_s=100) == (5, {"x": [1, 4]})
    assert window.total(230.0, window_s=100) == (3, {"x": [0, 3]})
    assert window.total(400.0, window_s=100) == (0, {})


def test_the_recorder_sends_per_model_and_skips_models_without_a_reference(tickets: pd.DataFrame) -> None:
    sent: list[tuple[str, str, int, dict[str, list[int]]]] = []
    recorder = DriftRecorder("online", lambda *args: sent.append(args), flush_s=3600)
    reference = _reference(tickets.iloc[:500])
    recorder.observe("triage:1", reference, _scored(tickets.iloc[:40]))  # type: ignore[arg-type]
    recorder.observe("triage:1", reference, _scored(tickets.iloc[40:50]))  # type: ignore[arg-type]
    recorder.observe("encoder:1", {}, _scored(tickets.iloc[:5]))  # type: ignore[arg-type]
    recorder.flush()
    assert [(model, path, rows) for model, path, rows, _ in sent] == [("triage:1", "online", 50)]
    assert all(sum(c) == 50 for c in sent[0][3].values())
    recorder.flush()  # nothing new: nothing sent
    assert len(sent) == 1
    recorder.close()


def test_a_failing_send_does_not_reach_the_scoring_path(tickets: pd.DataFrame) -> None:
    def send(*args: Any) -> None:
        raise ConnectionError("monitor away")

    recorder = DriftRecorder("stream", send, flush_s=3600)
    recorder.observe("triage:1", _reference(tickets.iloc[:500]), _scored(tickets.iloc[:10]))  # type: ignore[arg-type]
    recorder.flush()  # logged, not raised
    recorder.close()
