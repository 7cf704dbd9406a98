"""The one transform: a ticket plus its customer's features -> model inputs (text and a numeric vector).

Batch, online and streaming all call `transform`; nothing else computes model inputs. The scaling constants
are fixed here (no fitted state), so the transform cannot drift between training and serving; any change to
them is a new `TRANSFORM_VERSION`, recorded in the model's manifest and checked by the Predictor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from unison.domain import CHANNELS, CUSTOMER_FEATURES, PLANS

TRANSFORM_VERSION = "1"

# Ticket fields the transform reads. The customer features it reads (from Feast in production) are the feature
# views' columns, `unison.domain.CUSTOMER_FEATURES`.
TICKET_FIELDS: tuple[str, ...] = ("subject", "body", "channel")

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
    Rows keep their order and index. Computed on NumPy arrays and assembled once: the online paths call this
    for a handful of rows, where per-column pandas overhead would cost more than the model.
    """
    missing_ticket = [c for c in ("subject", "body") if c not in rows.columns]
    if missing_ticket:
        raise ValueError(f"transform needs ticket column(s) {missing_ticket}; got {list(rows.columns)}")
    n = len(rows)
    text = (normalize_text(rows["subject"]) + "\n" + normalize_text(rows["body"])).str.strip()

    def column(name: str) -> pd.Series:
        return rows[name] if name in rows.columns else pd.Series(np.nan, index=rows.index, dtype="float64")

    def floats(name: str) -> npt.NDArray[np.float64]:
        return pd.to_numeric(column(name), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)

    def numeric(name: str) -> npt.NDArray[np.float64]:
        values = floats(name)
        return np.where(np.isnan(values), float(DEFAULTS[name]), values)

    out: dict[str, Any] = {"text": text.to_numpy()}
    # "Missing" means the customer's feature row was not found, not that one survey answer is absent.
    present = np.ones(n, dtype=bool)
    for name in CUSTOMER_FEATURES:
        if name != "last_csat":
            present &= column(name).notna().to_numpy()
    plan_column = column("plan")
    plan = plan_column.where(plan_column.notna(), DEFAULTS["plan"]).astype(str).to_numpy()
    for name in PLANS:
        out[f"plan_{name}"] = (plan == name).astype(np.float32)
    channel = column("channel").astype("string").fillna("").str.lower().to_numpy(dtype=object)
    for name in CHANNELS:
        out[f"channel_{name}"] = (channel == name).astype(np.float32)
    out["tenure_years"] = (np.clip(numeric("tenure_days"), 0, 36_500) / 365.0).astype(np.float32)
    out["log_lifetime_value"] = (np.log1p(np.clip(numeric("lifetime_value"), 0, None)) / 10.0).astype(np.float32)
    out["open_tickets_scaled"] = (np.clip(numeric("open_tickets"), 0, 20) / 10.0).astype(np.float32)
    out["tickets_last_90d_scaled"] = (np.clip(numeric("tickets_last_90d"), 0, 50) / 10.0).astype(np.float32)
    csat = floats("last_csat")
    scaled = (np.clip(csat, 1, 5) - 3.0) / 2.0
    out["csat"] = np.where(np.isnan(scaled), 0.0, scaled).astype(np.float32)
    out["csat_missing"] = np.isnan(csat).astype(np.float32)
    out["login_recency_scaled"] = (np.clip(numeric("days_since_last_login"), 0, 365) / 90.0).astype(np.float32)
    out["features_missing"] = (~present).astype(np.float32)
    return pd.DataFrame({name: out[name] for name in ("text", *NUMERIC_FEATURES)}, index=rows.index)


def feature_matrix(transformed: pd.DataFrame) -> npt.NDArray[np.float32]:
    """The numeric model input [rows, len(NUMERIC_FEATURES)] from `transform`'s output."""
    return np.ascontiguousarray(transformed[list(NUMERIC_FEATURES)].to_numpy(dtype=np.float32))
