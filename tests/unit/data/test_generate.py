"""Unit tests of the demo-data generator: determinism, schemas, label coverage and point-in-time structure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from unison.data import (
    CATEGORIES,
    CHANNELS,
    PLANS,
    GenerationReport,
    generate,
    priority_score,
    urgency_hits,
)

START = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 30
SMALL: dict[str, Any] = {
    "customers": 60,
    "tickets": 500,
    "train_tickets": 300,
    "eval_tickets": 200,
    "days": DAYS,
}
Small = tuple[GenerationReport, dict[str, pa.Table]]
NAMES = ("customer_profile", "customer_activity", "tickets", "train", "eval")

TS = pa.timestamp("us", tz="UTC")
TICKET_FIELDS = [
    ("ticket_id", pa.string()),
    ("customer_id", pa.int64()),
    ("channel", pa.string()),
    ("subject", pa.string()),
    ("body", pa.string()),
    ("created_at", TS),
]
EXPECTED_SCHEMAS = {
    "customer_profile": [
        ("customer_id", pa.int64()),
        ("plan", pa.string()),
        ("tenure_days", pa.int32()),
        ("lifetime_value", pa.float64()),
        ("region", pa.string()),
        ("event_timestamp", TS),
        ("created_timestamp", TS),
    ],
    "customer_activity": [
        ("customer_id", pa.int64()),
        ("open_tickets", pa.int32()),
        ("tickets_last_90d", pa.int32()),
        ("last_csat", pa.float64()),
        ("days_since_last_login", pa.int32()),
        ("event_timestamp", TS),
        ("created_timestamp", TS),
    ],
    "tickets": TICKET_FIELDS,
    "train": [*TICKET_FIELDS, ("category", pa.string()), ("priority", pa.float64())],
    "eval": [*TICKET_FIELDS, ("category", pa.string()), ("priority", pa.float64())],
}


def _read_all(report: GenerationReport) -> dict[str, pa.Table]:
    return {name: pq.read_table(report.files[name]) for name in NAMES}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[GenerationReport, dict[str, pa.Table]]:
    report = generate(tmp_path_factory.mktemp("small"), seed=7, **SMALL)
    return report, _read_all(report)


def test_report_lists_every_file_and_row_count(small: Small) -> None:
    report, tables = small
    assert set(report.files) == set(NAMES)
    for name in NAMES:
        assert report.files[name].parent == report.out_dir
        assert report.rows[name] == tables[name].num_rows
    assert report.rows["customer_profile"] == SMALL["customers"]
    assert report.rows["tickets"] == SMALL["tickets"]
    assert report.seconds > 0 and report.tickets_per_second > 0
    assert not [p for p in report.out_dir.iterdir() if p.name.endswith(".tmp")]


def test_same_seed_same_tables_other_seed_differs(tmp_path: Path, small: Small) -> None:
    _, first = small
    again = _read_all(generate(tmp_path / "again", seed=7, **SMALL))
    for name in NAMES:
        assert again[name].equals(first[name]), name
    other = _read_all(generate(tmp_path / "other", seed=8, **SMALL))
    for name in NAMES:
        assert not other[name].equals(first[name]), name


def test_overwrites_existing_files(tmp_path: Path) -> None:
    generate(tmp_path, seed=1, **SMALL)
    report = generate(tmp_path, seed=2, **SMALL)
    expected = _read_all(generate(tmp_path / "fresh", seed=2, **SMALL))
    for name, table in _read_all(report).items():
        assert table.equals(expected[name]), name


def test_train_and_eval_do_not_depend_on_tickets(tmp_path: Path, small: Small) -> None:
    _, base = small
    bigger = _read_all(generate(tmp_path, seed=7, **{**SMALL, "tickets": 1_234}))
    for name in ("customer_profile", "customer_activity", "train", "eval"):
        assert bigger[name].equals(base[name]), name
    assert bigger["tickets"].num_rows == 1_234


def test_schemas(small: Small) -> None:
    _, tables = small
    for name, fields in EXPECTED_SCHEMAS.items():
        schema = tables[name].schema
        assert [(f.name, f.type) for f in schema] == fields, name


def test_labels_cover_every_category_and_priority_in_unit_interval(tmp_path: Path) -> None:
    report = generate(
        tmp_path, customers=100, tickets=100, train_tickets=2_000, eval_tickets=2_000, days=DAYS
    )
    tables = _read_all(report)
    for name in ("train", "eval"):
        table = tables[name]
        assert set(table.column("category").to_pylist()) == set(CATEGORIES), name
        priority = table.column("priority").to_numpy()
        assert np.all((priority >= 0.0) & (priority <= 1.0)), name
        assert priority.std() > 0.05, name
    assert set(tables["tickets"].column("channel").to_pylist()) <= set(CHANNELS)


def test_every_category_present_at_hundred_rows(tmp_path: Path) -> None:
    report = generate(tmp_path, customers=10, tickets=0, train_tickets=100, eval_tickets=100, days=DAYS)
    for name in ("train", "eval"):
        assert set(pq.read_table(report.files[name]).column("category").to_pylist()) == set(CATEGORIES)


def test_ticket_ids_unique_and_sequential(small: Small) -> None:
    _, tables = small
    ids = [tables[name].column("ticket_id").to_pylist() for name in ("tickets", "train", "eval")]
    everything = [i for part in ids for i in part]
    assert len(set(everything)) == len(everything)
    assert ids[0][:2] == ["T0000000001", "T0000000002"]
    assert ids[1][0] == "R0000000001" and ids[2][0] == "E0000000001"


def test_tickets_reference_customers_inside_window(small: Small) -> None:
    _, tables = small
    end = START + timedelta(days=DAYS)
    for name in ("tickets", "train", "eval"):
        table = tables[name]
        customer_id = table.column("customer_id").to_numpy()
        assert customer_id.min() >= 1 and customer_id.max() <= SMALL["customers"]
        created = table.column("created_at")
        assert pc.min(created).as_py() >= START and pc.max(created).as_py() < end
        assert pc.all(pc.greater(pc.utf8_length(table.column("body")), 0)).as_py()
        assert pc.all(pc.greater(pc.utf8_length(table.column("subject")), 0)).as_py()
    # Skewed customers: the busiest customer files far more than the average.
    counts = np.bincount(tables["tickets"].column("customer_id").to_numpy())
    assert counts.max() > 3 * counts[1:].mean()


def test_texts_have_filled_slots_and_varied_lengths(tmp_path: Path) -> None:
    report = generate(tmp_path, customers=50, tickets=3_000, train_tickets=0, eval_tickets=0, days=DAYS)
    bodies = pq.read_table(report.files["tickets"]).column("body")
    subjects = pq.read_table(report.files["tickets"]).column("subject")
    for texts in (bodies, subjects):
        assert not pc.any(pc.match_substring(texts, "{")).as_py()
    words = np.array([len(b.split()) for b in bodies.to_pylist()])
    assert words.min() < 20 and words.max() > 150
    assert pc.any(pc.match_substring_regex(bodies, r"#\d{5}")).as_py()
    assert pc.any(pc.match_substring_regex(bodies, r"\$\d+\.\d\d")).as_py()


def test_activity_snapshots(small: Small) -> None:
    _, tables = small
    activity = tables["customer_activity"].to_pandas()
    assert set(activity["customer_id"]) == set(range(1, SMALL["customers"] + 1))
    per_customer = activity.groupby("customer_id").size()
    assert per_customer.min() >= 1 and per_customer.max() <= 6
    first = activity.groupby("customer_id")["event_timestamp"].min()
    assert (first == START).all()
    assert activity["event_timestamp"].max() < START + timedelta(days=DAYS)
    assert activity.groupby("customer_id")["event_timestamp"].is_monotonic_increasing.all()
    for column in ("open_tickets", "tickets_last_90d", "days_since_last_login"):
        assert (activity[column] >= 0).all(), column
    csat = activity["last_csat"]
    assert 0 < csat.isna().sum() < len(csat)
    assert csat.dropna().between(1.0, 5.0).all()
    assert (csat.dropna().round(1) == csat.dropna()).all()


def test_activity_values_drift_between_snapshots(small: Small) -> None:
    _, tables = small
    activity = tables["customer_activity"].to_pandas()
    multi = activity.groupby("customer_id").filter(lambda g: len(g) >= 2)
    columns = ["open_tickets", "tickets_last_90d", "days_since_last_login"]
    varying = multi.groupby("customer_id")[columns].nunique()
    assert (varying.max(axis=1) >= 2).sum() >= 5


def test_profile_values(small: Small) -> None:
    _, tables = small
    profile = tables["customer_profile"].to_pandas()
    assert profile["customer_id"].tolist() == list(range(1, SMALL["customers"] + 1))
    assert set(profile["plan"]) <= set(PLANS)
    assert (profile["tenure_days"] >= 0).all() and (profile["lifetime_value"] >= 0).all()
    assert (profile["lifetime_value"].round(2) == profile["lifetime_value"]).all()
    assert (profile["event_timestamp"] <= START).all()


def test_priority_score_directions() -> None:
    def score(**changes: object) -> float:
        args: dict[str, object] = {
            "category": ["billing"],
            "plan": ["basic"],
            "lifetime_value": [100.0],
            "open_tickets": [1],
            "last_csat": [3.0],
            "urgency_hits": [0],
        }
        args.update({k: [v] for k, v in changes.items()})
        return float(priority_score(**args)[0])  # type: ignore[arg-type]

    base = score()
    assert 0.0 < base < 1.0
    assert score(category="cancellation") > base > score(category="other")
    assert score(plan="enterprise") > base > score(plan="free")
    assert score(open_tickets=5) > base
    assert score(last_csat=1.0) > base > score(last_csat=5.0)
    assert score(last_csat=float("nan")) == pytest.approx(base)
    assert score(urgency_hits=2) > base
    assert score(lifetime_value=50_000.0) > base
    codes = priority_score(np.array([1]), np.array([1]), [100.0], [1], [3.0], [0])
    assert codes[0] == pytest.approx(score(category="technical"))
    with pytest.raises(ValueError, match="category"):
        priority_score(["nope"], ["basic"], [1.0], [0], [3.0], [0])


def test_urgency_hits_counts_whole_words() -> None:
    hits = urgency_hits(["URGENT: the site is down again", "downgrade please", "Please answer asap."])
    assert hits.tolist() == [3, 0, 1]


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("customers", 0),
        ("tickets", -1),
        ("eval_tickets", -1),
        ("train_tickets", -5),
        ("days", 0),
        ("seed", -1),
        ("start", datetime(2026, 1, 1)),
    ],
)
def test_invalid_arguments_name_the_argument(tmp_path: Path, argument: str, value: object) -> None:
    with pytest.raises(ValueError, match=argument):
        generate(tmp_path, **{argument: value})  # type: ignore[arg-type]
    assert not any(tmp_path.iterdir())


def test_zero_tickets_writes_empty_tables(tmp_path: Path) -> None:
    report = generate(tmp_path, customers=5, tickets=0, train_tickets=0, eval_tickets=0, days=1)
    tables = _read_all(report)
    for name in ("tickets", "train", "eval"):
        assert tables[name].num_rows == 0
        assert [(f.name, f.type) for f in tables[name].schema] == EXPECTED_SCHEMAS[name]
