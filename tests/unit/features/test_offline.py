"""The training-time as-of join's rules, which are Feast's (file offline store): the TTL window [t - ttl, t] with
both ends included, the newest valid row by event then created time, and a whole row missing when a view has rows
for the customer but none valid. tests/integration/features/test_offline.py holds it equal to Feast itself."""

from datetime import UTC, datetime, timedelta

import pandas as pd

from unison.domain import CUSTOMER_ACTIVITY, CUSTOMER_FEATURES
from unison.features.offline import join_customer_features

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TTL = CUSTOMER_ACTIVITY.ttl
US = timedelta(microseconds=1)


def _profile(*customers: int) -> pd.DataFrame:
    return pd.DataFrame({"customer_id": list(customers), "event_timestamp": [T0 - timedelta(days=30)] * len(customers),
                         "plan": ["pro"] * len(customers), "tenure_days": [10] * len(customers),
                         "lifetime_value": [5.0] * len(customers)})


def _activity(rows: list[tuple[int, datetime, int, datetime | None]]) -> pd.DataFrame:
    """(customer, event time, open_tickets, created time) per row."""
    created = pd.to_datetime([r[3] for r in rows], utc=True)
    return pd.DataFrame({"customer_id": [r[0] for r in rows], "event_timestamp": [r[1] for r in rows],
                         "open_tickets": [r[2] for r in rows], "tickets_last_90d": 1, "last_csat": 4.0,
                         "days_since_last_login": 2, "created_timestamp": created})


def _tickets(*rows: tuple[int, datetime]) -> pd.DataFrame:
    return pd.DataFrame({"ticket_id": [f"t{i}" for i in range(len(rows))], "customer_id": [r[0] for r in rows],
                         "created_at": [r[1] for r in rows]})


def test_the_ttl_window_includes_both_ends() -> None:
    activity = _activity([(1, T0, 3, T0)])
    tickets = _tickets((1, T0), (1, T0 + TTL - US), (1, T0 + TTL), (1, T0 + TTL + US))
    joined = join_customer_features(tickets, _profile(1), activity)
    assert joined["open_tickets"].iloc[:3].tolist() == [3, 3, 3]
    assert joined.iloc[3][list(CUSTOMER_FEATURES)].isna().all()  # stale: the profile goes too, as in Feast


def test_a_view_with_no_valid_row_drops_every_feature_but_an_unknown_customer_only_its_own() -> None:
    activity = _activity([(1, T0, 3, T0), (2, T0, 4, T0)])
    profile = _profile(1, 2, 3)
    tickets = _tickets((1, T0 - timedelta(days=1)), (3, T0), (9, T0), (2, T0 - timedelta(days=40)))
    joined = join_customer_features(tickets, profile, activity).set_index("ticket_id")
    assert joined.loc["t0", list(CUSTOMER_FEATURES)].isna().all()  # before its first activity snapshot
    assert joined.loc["t1", "plan"] == "pro" and pd.isna(joined.loc["t1", "open_tickets"])  # no activity at all
    assert joined.loc["t2", list(CUSTOMER_FEATURES)].isna().all()  # in no view
    assert joined.loc["t3", list(CUSTOMER_FEATURES)].isna().all()  # before its profile


def test_equal_event_times_go_to_the_later_created_row_wherever_it_is_stored() -> None:
    activity = _activity([(1, T0, 7, T0 + timedelta(seconds=2)), (1, T0, 5, T0 + timedelta(seconds=1)),
                          (1, T0, 6, None)])
    joined = join_customer_features(_tickets((1, T0 + timedelta(hours=1))), _profile(1), activity)
    assert joined["open_tickets"].tolist() == [7]
    without_created = activity.drop(columns="created_timestamp")  # then the later row, as a later push
    assert join_customer_features(_tickets((1, T0)), _profile(1), without_created)["open_tickets"].tolist() == [6]


def test_rows_keep_their_order_index_and_columns_whatever_the_time_units() -> None:
    activity = _activity([(1, T0, 3, T0), (1, T0 + timedelta(days=2), 8, T0)])
    activity["event_timestamp"] = activity["event_timestamp"].astype("datetime64[us, UTC]")
    tickets = _tickets((1, T0 + timedelta(days=3)), (1, T0 + timedelta(days=1)), (2, T0)).set_axis(["c", "a", "b"])
    tickets["created_at"] = tickets["created_at"].dt.tz_localize(None)  # naive: read as UTC
    joined = join_customer_features(tickets, _profile(1, 2), activity, activity_ttl=None)
    assert list(joined.index) == ["c", "a", "b"] and joined["open_tickets"].iloc[:2].tolist() == [8, 3]
    assert list(joined.columns) == [*tickets.columns, *CUSTOMER_FEATURES]
    assert str(joined["tenure_days"].dtype) == "int64"  # nothing missing: the stored type stays
