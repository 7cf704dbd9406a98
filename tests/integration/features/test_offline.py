"""The training-time join (`unison.features.offline`) against Feast's `get_historical_features` on a real store,
where the two could part: activity snapshots older than the view's 365-day TTL, tickets exactly at the TTL's
boundary and a microsecond past it, tickets before a customer's first snapshot or profile, unknown customers, and
two snapshots at one event time told apart by their created time."""

from datetime import timedelta

import pandas as pd
import pytest

from unison.config import Settings
from unison.data import FILE_NAMES
from unison.domain import CUSTOMER_ACTIVITY, CUSTOMER_FEATURES
from unison.features import store
from unison.features.offline import join_customer_features

TTL = CUSTOMER_ACTIVITY.ttl
US = timedelta(microseconds=1)


def _tables(settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The profile table and every part of the activity dataset (pushes included), as Feast reads them."""
    return (pd.read_parquet(settings.data.dir / FILE_NAMES["customer_profile"]),
            pd.read_parquet(settings.data.dir / FILE_NAMES["customer_activity"]))


def _assert_same_rows(ours: pd.DataFrame, feast: pd.DataFrame) -> None:
    assert ours["ticket_id"].tolist() == feast["ticket_id"].tolist()
    problems = []
    for column in CUSTOMER_FEATURES:
        left, right = ours[column].reset_index(drop=True), feast[column].reset_index(drop=True)
        same = (left.astype(object) == right.astype(object)) | (left.isna() & right.isna())
        if not same.all():
            differ = ours.loc[~same.to_numpy(), "ticket_id"].tolist()
            problems.append(f"{column}: {len(differ)} rows differ, e.g. {differ[:5]}: ours {left[~same].tolist()[:5]}"
                            f", Feast {right[~same].tolist()[:5]}")
    assert not problems, "the training join differs from Feast's:\n" + "\n".join(problems)


@pytest.fixture(scope="module")
def stale(applied: Settings) -> pd.DataFrame:
    """Tickets that meet the TTL, with the labelled training tickets: (ticket_id, customer_id, created_at)."""
    profile, activity = _tables(applied)
    last = activity.groupby("customer_id")["event_timestamp"].max().sort_index()
    first = activity.groupby("customer_id")["event_timestamp"].min()
    born = profile.set_index("customer_id")["event_timestamp"]
    a, b, c, d, e = (int(i) for i in last.index[:5])
    assert born[c] < first[c] - timedelta(seconds=1) and born[d] < first[d]  # the generator's order
    rows = [
        ("boundary", a, last[a] + TTL),  # exactly TTL old: still valid (Feast's window is closed)
        ("inside", a, last[a] + TTL - US),
        ("past", a, last[a] + TTL + US),  # a microsecond older than the TTL: missing
        ("long-past", b, last[b] + 2 * TTL),
        ("boundary-b", b, last[b] + TTL),
        ("before-activity", c, first[c] - timedelta(seconds=1)),  # profile valid, no activity yet
        ("before-profile", d, born[d] - timedelta(seconds=1)),
        ("unknown", 10_000_000, last[e] + TTL + US),  # in no view: nothing to drop
        ("boundary-e", e, last[e] + TTL),
    ]
    train = pd.read_parquet(applied.data.dir / FILE_NAMES["train"])[["ticket_id", "customer_id", "created_at"]]
    made = pd.DataFrame(rows, columns=["ticket_id", "customer_id", "created_at"]).astype(
        {"created_at": train["created_at"].dtype})  # microseconds, as stored
    return pd.concat([train, made], ignore_index=True)


def test_the_training_join_applies_the_ttl_as_feast_does(applied: Settings, stale: pd.DataFrame) -> None:
    profile, activity = _tables(applied)
    feast = store.Features(applied).historical(stale, timestamp_column="created_at")
    ours = join_customer_features(stale, profile, activity)
    _assert_same_rows(ours, feast)
    rows = ours.set_index("ticket_id")
    for kept in ("boundary", "inside", "boundary-b", "boundary-e"):  # the TTL's closed end: values present
        assert rows.loc[kept, list(CUSTOMER_FEATURES)].drop("last_csat").notna().all(), kept
    for gone in ("past", "long-past", "before-activity", "before-profile", "unknown"):
        # Feast drops the whole entity row when a view has rows for the customer but none valid: every feature
        # of it is missing, the profile's too.
        assert rows.loc[gone, list(CUSTOMER_FEATURES)].isna().all(), gone


def test_equal_event_times_are_told_apart_by_created_time(applied: Settings) -> None:
    """Two offline pushes at one event time: the later-created row wins, whichever was written first."""
    features = store.Features(applied)
    _, activity = _tables(applied)
    customer = int(activity["customer_id"].max())
    when = activity["event_timestamp"].max() + timedelta(days=1)

    def snapshot(open_tickets: int, created: timedelta) -> pd.DataFrame:
        return pd.DataFrame({"customer_id": [customer], "open_tickets": [open_tickets], "tickets_last_90d": [1],
                             "last_csat": [None], "days_since_last_login": [0], "event_timestamp": [when],
                             "created_timestamp": [when + created]})

    features.push(snapshot(902, timedelta(seconds=2)), to="offline")  # written first, created last: it wins
    features.push(snapshot(901, timedelta(seconds=1)), to="offline")
    # Few entity rows: Feast's file store orders ties of event time by created time only while its sort of the
    # joined rows is stable (pandas on up to 16 rows); on more it may pick either row.
    tickets = pd.DataFrame({"ticket_id": ["tie", "tie-boundary"], "customer_id": [customer] * 2,
                            "created_at": [when + timedelta(hours=1), when + TTL]}).astype(
        {"created_at": activity["event_timestamp"].dtype})
    profile, activity = _tables(applied)
    ours = join_customer_features(tickets, profile, activity)
    _assert_same_rows(ours, features.historical(tickets, timestamp_column="created_at"))
    assert ours["open_tickets"].tolist() == [902, 902]
