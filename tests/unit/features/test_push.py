"""The push path without servers: push validation, the newest row per customer."""

from datetime import UTC, datetime

import pandas as pd
import pytest

from unison.features.push import PushSchemaError, newest_rows, validate_push


def _good() -> pd.DataFrame:
    return pd.DataFrame({"customer_id": [1, 2], "open_tickets": [0, 3], "tickets_last_90d": [1, 2],
                         "last_csat": [4.5, None], "days_since_last_login": [3, 0],
                         "event_timestamp": [datetime(2026, 5, 1, tzinfo=UTC)] * 2})


def test_valid_push_is_typed() -> None:
    out = validate_push(_good())
    assert str(out["open_tickets"].dtype) == "int32" and str(out["customer_id"].dtype) == "int64"
    assert out["event_timestamp"].dt.tz is not None and "created_timestamp" in out


@pytest.mark.parametrize(("change", "message"), [
    (lambda f: f.drop(columns="open_tickets"), r"lack column\(s\) \['open_tickets'\]"),
    (lambda f: f.assign(color=["red", "blue"]), r"unknown column\(s\) \['color'\]"),
    (lambda f: f.assign(open_tickets=["many", 1]), "column 'open_tickets' must be int"),
    (lambda f: f.assign(open_tickets=[1.5, 1]), "column 'open_tickets' must be int"),
    (lambda f: f.assign(customer_id=[None, 2]), "column 'customer_id' has missing values"),
    (lambda f: f.assign(event_timestamp=["yesterday", "x"]), "column 'event_timestamp' must be time"),
    (lambda f: f.assign(days_since_last_login=[-1, 0]), "must be >= 0"),
    (lambda f: f.assign(last_csat=[9.0, None]), "between 1 and 5"),
])
def test_bad_push_names_the_field(change, message) -> None:
    with pytest.raises(PushSchemaError, match=message):
        validate_push(change(_good()))


def _rows(*rows: tuple[int, int, str, str | None]) -> pd.DataFrame:
    """(customer, open_tickets, event time, created time or None) each."""
    return pd.DataFrame([{"customer_id": c, "open_tickets": v, "event_timestamp": pd.Timestamp(e, tz="UTC"),
                          "created_timestamp": pd.Timestamp(m, tz="UTC") if m else pd.Timestamp(0, tz="UTC")}
                         for c, v, e, m in rows])


def test_newest_rows_keeps_the_latest_event_then_the_latest_created() -> None:
    rows = _rows((1, 10, "2026-05-02", None), (2, 20, "2026-05-01", None), (1, 11, "2026-05-01", None),
                 (2, 21, "2026-05-03", "2026-05-03"), (2, 22, "2026-05-03", "2026-05-04"),
                 (3, 30, "2026-05-01", None))
    newest = newest_rows(rows)
    assert newest["customer_id"].tolist() == [1, 2, 3]  # the kept rows in input order
    assert newest["open_tickets"].tolist() == [10, 22, 30]


def test_newest_rows_breaks_full_ties_by_position() -> None:
    rows = _rows((5, 1, "2026-05-01", "2026-05-01"), (5, 2, "2026-05-01", "2026-05-01"))
    assert newest_rows(rows)["open_tickets"].tolist() == [2]  # as a later push would win
    assert newest_rows(rows.iloc[::-1])["open_tickets"].tolist() == [1]


def test_newest_rows_per_instant_drops_only_rows_superseded_at_the_same_time() -> None:
    rows = _rows((1, 10, "2026-05-02", "2026-05-02"), (1, 11, "2026-05-02", "2026-05-05"), (1, 12, "2026-05-01", None),
                 (2, 20, "2026-05-02", None))
    kept = newest_rows(rows, ("customer_id", "event_timestamp"))
    assert kept["open_tickets"].tolist() == [11, 12, 20]


def test_newest_rows_of_validated_rows_are_still_valid() -> None:
    frame = validate_push(pd.concat([_good(), _good().assign(open_tickets=[7, 8])], ignore_index=True))
    newest = newest_rows(frame)
    assert newest["open_tickets"].tolist() == [7, 8] and newest.dtypes.equals(frame.dtypes)


def test_validated_times_are_whole_microseconds() -> None:
    out = validate_push(_good().assign(event_timestamp=[pd.Timestamp("2026-05-01T10:00:00.123456789Z")] * 2))
    assert out["event_timestamp"].iloc[0] == pd.Timestamp("2026-05-01T10:00:00.123456Z")
