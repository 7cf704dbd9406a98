"""The one transform: fixed scaling, defaults for missing features, a flag that says so, stable order."""

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest

from unison.features import NUMERIC_FEATURES, feature_matrix, transform
from unison.features.offline import join_customer_features


def transform_records(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """`transform` for a list of dicts, as the tests write tickets."""
    return transform(pd.DataFrame.from_records(list(records)))


CUSTOMER = {"plan": "pro", "tenure_days": 730, "lifetime_value": 1200.0, "open_tickets": 3,
            "tickets_last_90d": 5, "last_csat": 4.0, "days_since_last_login": 9}


def test_known_customer() -> None:
    out = transform_records([{"subject": "  Refund ", "body": "I was\n\tcharged   twice", "channel": "Email",
                              **CUSTOMER}])
    row = out.iloc[0]
    assert row["text"] == "Refund\nI was charged twice"
    assert (row["plan_pro"], row["plan_free"], row["channel_email"]) == (1.0, 0.0, 1.0)
    assert row["tenure_years"] == pytest.approx(2.0)
    assert row["log_lifetime_value"] == pytest.approx(np.log1p(1200) / 10, rel=1e-6)
    assert (row["open_tickets_scaled"], row["csat"], row["csat_missing"], row["features_missing"]) == (
        pytest.approx(0.3), 0.5, 0.0, 0.0)
    assert list(out.columns) == ["text", *NUMERIC_FEATURES]


def test_unknown_customer_gets_defaults_and_a_flag() -> None:
    out = transform_records([{"subject": "s", "body": "b", "channel": "chat"}])
    row = out.iloc[0]
    assert row["features_missing"] == 1.0 and row["plan_free"] == 1.0 and row["csat_missing"] == 1.0
    assert row["login_recency_scaled"] == pytest.approx(30 / 90)


def test_missing_survey_is_not_missing_features() -> None:
    out = transform_records([{"subject": "s", "body": "b", **{**CUSTOMER, "last_csat": None}}])
    assert (out.iloc[0]["csat_missing"], out.iloc[0]["features_missing"], out.iloc[0]["csat"]) == (1.0, 0.0, 0.0)


def test_outliers_are_clipped_and_types_are_float32() -> None:
    out = transform_records([{"subject": "s", "body": "b", **{**CUSTOMER, "open_tickets": 10_000,
                                                              "lifetime_value": -5}}])
    assert out.iloc[0]["open_tickets_scaled"] == 2.0 and out.iloc[0]["log_lifetime_value"] == 0.0
    matrix = feature_matrix(out)
    assert matrix.dtype == np.float32 and matrix.shape == (1, len(NUMERIC_FEATURES)) and matrix.flags.c_contiguous


def test_ticket_text_is_required() -> None:
    with pytest.raises(ValueError, match="body"):
        transform(pd.DataFrame({"subject": ["s"]}))


def test_point_in_time_join_takes_the_value_valid_at_ticket_time() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    activity = pd.DataFrame({
        "customer_id": [1, 1, 2], "event_timestamp": [t0, t0 + timedelta(days=10), t0],
        "open_tickets": [1, 7, 2], "tickets_last_90d": [0, 0, 0], "last_csat": [3.0, 3.0, 3.0],
        "days_since_last_login": [1, 1, 1],
    })
    profile = pd.DataFrame({"customer_id": [1, 2], "event_timestamp": [t0 - timedelta(days=5)] * 2,
                            "plan": ["pro", "free"], "tenure_days": [5, 5], "lifetime_value": [1.0, 1.0]})
    tickets = pd.DataFrame({"ticket_id": ["a", "b", "c", "d"], "customer_id": [1, 1, 2, 3],
                            "created_at": [t0 + timedelta(days=9), t0 + timedelta(days=11), t0 + timedelta(days=1),
                                           t0 + timedelta(days=1)]})
    joined = join_customer_features(tickets, profile, activity)
    assert joined["ticket_id"].tolist() == ["a", "b", "c", "d"]
    assert joined["open_tickets"].tolist()[:3] == [1, 7, 2]  # not the later snapshot for ticket a
    assert pd.isna(joined["open_tickets"].iloc[3]) and pd.isna(joined["plan"].iloc[3])  # unknown customer
    stale = join_customer_features(tickets, profile, activity, activity_ttl=timedelta(days=5))
    assert pd.isna(stale["open_tickets"].iloc[0])  # 9 days old: beyond the TTL counts as missing
