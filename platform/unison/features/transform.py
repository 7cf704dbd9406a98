"""The one transform: a ticket plus its customer's features -> model inputs (text and a numeric vector).

Batch, online and streaming all call `transform`; nothing else computes model inputs. The scaling constants
are fixed here (no fitted state), so the transform cannot drift between training and serving; any change to
them is a new `TRANSFORM_VERSION`, recorded in the model's manifest and checked by the Predictor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from unison.data import CHANNELS, PLANS

TRANSFORM_VERSION = "1"

# Ticket fields the transform reads, and the customer features it reads (from Feast in production).
TICKET_FIELDS: tuple[str, ...] = ("subject", "body", "channel")
CUSTOMER_FEATURES: tuple[str, ...] = (
    "plan",
    "tenure_days",
    "lifetime_value",
    "open_tickets",
    "tickets_last_90d",
    "last_csat",
    "days_since_last_login",
)

# Values used when a customer feature is missing (unknown customer, stale beyond TTL, never surveyed).
DEFAULTS: Mapping[str, Any] = {
    "plan": "free",
    "tenure_days": 0,
    "lifetime_value": 0.0,
    "open_tickets": 0,
    "tickets_last_90d": 0,
    "days_since_last_login": 30,
}

# The numeric model input, in this order. Names differ from the raw features' so Feast can serve both.
NUMERIC_FEATURES: tuple[str, ...] = (
    *(f"plan_{p}" for p in PLANS),
    *(f"channel_{c}" for c in CHANNELS),
    "tenure_years",
    "log_lifetime_value",
    "open_tickets_scaled",
    "tickets_last_90d_scaled",
    "csat",
    "csat_missing",
    "login_recency_scaled",
    "features_missing",
)


def normalize_text(values: pd.Series) -> pd.Series:
    """NFKC, one space for any whitespace run, trimmed: the same bytes reach the tokenizer on every path."""
    return (
        values.fillna("").astype(str).str.normalize("NFKC").str.replace(r"\s+", " ", regex=True).str.strip()
    )


def transform(rows: pd.DataFrame) -> pd.DataFrame:
    """Model inputs for each row: `text`, one float32 column per NUMERIC_FEATURES, and `features_missing`.

    `rows` holds the ticket fields and the customer features (missing columns or NaN mean "missing").
    Rows keep their order and index.
    """
    missing_ticket = [c for c in ("subject", "body") if c not in rows.columns]
    if missing_ticket:
        raise ValueError(f"transform needs ticket column(s) {missing_ticket}; got {list(rows.columns)}")
    out = pd.DataFrame(index=rows.index)
    subject = normalize_text(rows["subject"])
    body = normalize_text(rows["body"])
    out["text"] = (subject + "\n" + body).str.strip()

    def column(name: str) -> pd.Series:
        return rows[name] if name in rows.columns else pd.Series(np.nan, index=rows.index, dtype="float64")

    present = pd.DataFrame({name: column(name).notna() for name in CUSTOMER_FEATURES if name != "last_csat"})
    # "Missing" means the customer's feature row was not found, not that one survey answer is absent.
    out["features_missing"] = (~present.all(axis=1)).astype("float32")

    plan = column("plan").where(column("plan").notna(), DEFAULTS["plan"]).astype(str)
    for name in PLANS:
        out[f"plan_{name}"] = (plan == name).astype("float32")
    channel = column("channel").astype("string").fillna("").str.lower()
    for name in CHANNELS:
        out[f"channel_{name}"] = (channel == name).astype("float32")

    def numeric(name: str) -> pd.Series:
        return pd.to_numeric(column(name), errors="coerce").fillna(DEFAULTS[name]).astype("float64")

    out["tenure_years"] = (numeric("tenure_days").clip(0, 36_500) / 365.0).astype("float32")
    out["log_lifetime_value"] = (np.log1p(numeric("lifetime_value").clip(lower=0)) / 10.0).astype("float32")
    out["open_tickets_scaled"] = (numeric("open_tickets").clip(0, 20) / 10.0).astype("float32")
    out["tickets_last_90d_scaled"] = (numeric("tickets_last_90d").clip(0, 50) / 10.0).astype("float32")
    csat = pd.to_numeric(column("last_csat"), errors="coerce")
    out["csat"] = ((csat.clip(1, 5) - 3.0) / 2.0).fillna(0.0).astype("float32")
    out["csat_missing"] = csat.isna().astype("float32")
    out["login_recency_scaled"] = (numeric("days_since_last_login").clip(0, 365) / 90.0).astype("float32")
    return out[["text", *NUMERIC_FEATURES]]


def feature_matrix(transformed: pd.DataFrame) -> npt.NDArray[np.float32]:
    """The numeric model input [rows, len(NUMERIC_FEATURES)] from `transform`'s output."""
    return np.ascontiguousarray(transformed[list(NUMERIC_FEATURES)].to_numpy(dtype=np.float32))


def transform_records(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """`transform` for a list of dicts (one HTTP request or one Kafka poll)."""
    return transform(pd.DataFrame.from_records(list(records)))
