"""Point-in-time join of tickets with customer features from the generated Parquet tables, in pandas.

This is the training-time join for the model head, and it answers exactly what Feast's `get_historical_features`
(file offline store, `feast/infra/offline_stores/dask.py`) answers for the same rows, view by view as
`unison.domain.FEATURE_VIEWS` defines them:

- a snapshot is valid for a ticket created at t when its event time lies in [t - ttl, t], both ends included
  (no TTL: any time <= t); never a later one;
- of the valid snapshots the newest wins: greatest event time, then greatest created time (an empty created
  time loses), then the later row. Feast means the same (it sorts by created time, then by event time, and keeps
  the last) but its second sort is not stable, so on equal event times it can pick either;
- a customer with no row at all in a view gets that view's columns missing; a customer whose rows in a view are
  all invalid for the ticket (older than the TTL, or all later than the ticket) gets *every* feature missing:
  Feast's filter drops the whole entity row then, and `Features.historical` returns it with nothing joined.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from unison.data import FILE_NAMES
from unison.domain import CREATED_TIMESTAMP, CUSTOMER_ACTIVITY, CUSTOMER_PROFILE, ENTITY_KEY, EVENT_TIMESTAMP

PROFILE_COLUMNS = CUSTOMER_PROFILE.column_names
ACTIVITY_COLUMNS = CUSTOMER_ACTIVITY.column_names


def join_customer_features(
    tickets: pd.DataFrame,
    profile: pd.DataFrame,
    activity: pd.DataFrame,
    timestamp_column: str = "created_at",
    activity_ttl: timedelta | None = CUSTOMER_ACTIVITY.ttl,
) -> pd.DataFrame:
    """`tickets` with the profile and activity columns valid at each ticket's time; row order and index are kept.

    `activity_ttl` defaults to the view's TTL (None: no TTL). The feature tables need `customer_id`,
    `event_timestamp` and their view's columns; `created_timestamp` breaks ties of event time when present.
    """
    customers = tickets[ENTITY_KEY].to_numpy(dtype="int64")
    keys = pd.DataFrame({"_customer": customers, "_when": _utc(tickets[timestamp_column]),
                         "_row": np.arange(len(tickets))}).sort_values("_when", kind="stable")
    dropped = np.zeros(len(tickets), dtype=bool)  # a view had rows for the customer, none valid: Feast drops the row
    joined: dict[str, pd.Series] = {}
    for table, view, ttl in ((profile, CUSTOMER_PROFILE, CUSTOMER_PROFILE.ttl),
                             (activity, CUSTOMER_ACTIVITY, activity_ttl)):
        columns = list(view.column_names)
        created = _utc(table[CREATED_TIMESTAMP]) if CREATED_TIMESTAMP in table.columns else np.datetime64("NaT", "ns")
        right = table[columns].assign(_customer=table[ENTITY_KEY].to_numpy(dtype="int64"),
                                      _event=_utc(table[EVENT_TIMESTAMP]), _created=created)
        # The newest valid row is its customer's last row at or before the ticket's time in this order.
        right = right.sort_values(["_event", "_created"], na_position="first", kind="stable")
        merged = pd.merge_asof(
            keys, right, left_on="_when", right_on="_event", by="_customer", direction="backward",
            allow_exact_matches=True, tolerance=pd.Timedelta(ttl) if ttl and ttl.total_seconds() else None,
        ).set_index("_row").sort_index()
        dropped |= merged["_event"].isna().to_numpy() & np.isin(customers, right["_customer"].to_numpy())
        joined.update({column: merged[column] for column in columns})
    features = pd.DataFrame({c: values.mask(dropped) if dropped.any() else values for c, values in joined.items()})
    features.index = tickets.index
    return pd.concat([tickets.drop(columns=[c for c in features.columns if c in tickets.columns]), features],
                     axis=1)


def _utc(values: pd.Series) -> np.ndarray:
    """Instants as naive UTC datetime64[ns] (one unit on both sides of the join; naive input is read as UTC)."""
    return pd.to_datetime(values, utc=True).dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")


def load_labelled(data_dir: Path, split: str) -> pd.DataFrame:
    """A labelled split (`train` or `eval`) joined point-in-time with its customers' features."""
    tickets = pd.read_parquet(data_dir / FILE_NAMES[split])
    profile = pd.read_parquet(data_dir / FILE_NAMES["customer_profile"])
    activity = pd.read_parquet(data_dir / FILE_NAMES["customer_activity"])
    return join_customer_features(tickets, profile, activity)
