"""Point-in-time join of tickets with customer features from the generated Parquet tables, in pandas.

This is the training-time join for the model head: each ticket gets the profile and the activity snapshot
valid at its creation time (the newest with event_timestamp <= created_at), never a later one.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd

from unison.data import FILE_NAMES

PROFILE_COLUMNS = ("plan", "tenure_days", "lifetime_value")
ACTIVITY_COLUMNS = ("open_tickets", "tickets_last_90d", "last_csat", "days_since_last_login")


def join_customer_features(
    tickets: pd.DataFrame,
    profile: pd.DataFrame,
    activity: pd.DataFrame,
    timestamp_column: str = "created_at",
    activity_ttl: timedelta | None = None,
) -> pd.DataFrame:
    """`tickets` with the profile and activity columns valid at each ticket's time; row order is kept."""
    left = tickets.reset_index(drop=True).assign(_row=lambda f: range(len(f)))
    left = left.sort_values(timestamp_column, kind="stable")
    joined = left
    for table, columns, ttl in ((profile, PROFILE_COLUMNS, None), (activity, ACTIVITY_COLUMNS, activity_ttl)):
        right = table[["customer_id", "event_timestamp", *columns]].sort_values("event_timestamp", kind="stable")
        joined = pd.merge_asof(
            joined, right, left_on=timestamp_column, right_on="event_timestamp", by="customer_id",
            direction="backward", tolerance=pd.Timedelta(ttl) if ttl is not None else None,
        ).drop(columns="event_timestamp")
    return joined.sort_values("_row").drop(columns="_row").set_index(tickets.index)


def load_labelled(data_dir: Path, split: str) -> pd.DataFrame:
    """A labelled split (`train` or `eval`) joined point-in-time with its customers' features."""
    tickets = pd.read_parquet(data_dir / FILE_NAMES[split])
    profile = pd.read_parquet(data_dir / FILE_NAMES["customer_profile"])
    activity = pd.read_parquet(data_dir / FILE_NAMES["customer_activity"])
    return join_customer_features(tickets, profile, activity)
