"""Tickets (with their customer's features) -> predictions: the one scoring step every path calls.

The batch job joins features point-in-time and calls `score_tickets`; the online and streaming paths fetch the
current features with `attach_online_features` (one lookup for the whole batch) and call `score_tickets`. Nothing
else turns tickets into model inputs, so the three paths cannot compute them differently.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd

from unison.features.transform import CUSTOMER_FEATURES, feature_matrix, transform
from unison.model.predictor import Predictions, Predictor


class OnlineFeatures(Protocol):
    """What scoring needs from `unison.features.store.Features`."""

    def online(self, customer_ids: Any, as_of: Any = None) -> pd.DataFrame: ...


@dataclass
class ScoredTickets:
    """The transformed inputs and the Predictor's outputs, row for row."""

    inputs: pd.DataFrame
    predictions: Predictions

    @property
    def features_missing(self) -> npt.NDArray[np.bool_]:
        return self.inputs["features_missing"].to_numpy() > 0

    def input_digests(self) -> list[str]:
        """Per row: a digest of exactly what the model read (the text and the float32 feature vector), so
        paths can prove they fed the model identical inputs without shipping the inputs around."""
        numeric = feature_matrix(self.inputs)
        return [hashlib.blake2b(str(text).encode() + row.tobytes(), digest_size=8).hexdigest()
                for text, row in zip(self.inputs["text"], numeric, strict=True)]

    def records(self) -> list[dict[str, Any]]:
        """Per row: category, probabilities, priority, features_missing, tokens, truncated, input_digest
        (JSON-ready)."""
        records = self.predictions.to_records()
        for record, missing, digest in zip(records, self.features_missing, self.input_digests(), strict=True):
            record.pop("model_name", None)
            record.pop("model_version", None)
            record["features_missing"] = bool(missing)
            record["input_digest"] = digest
        return records


def attach_online_features(features: OnlineFeatures, tickets: pd.DataFrame) -> pd.DataFrame:
    """`tickets` with CUSTOMER_FEATURES from the online store (one batch lookup), rows kept in order."""
    values = features.online(tickets["customer_id"].astype("int64").tolist())
    own = tickets.drop(columns=[c for c in CUSTOMER_FEATURES if c in tickets.columns])
    values = values.drop(columns=["customer_id"]).set_axis(own.index)
    return pd.concat([own, values], axis=1)


def score_tickets(predictor: Predictor, rows: pd.DataFrame) -> ScoredTickets:
    """The one transform, then the Predictor. `rows`: ticket fields plus customer features (missing = NaN)."""
    inputs = transform(rows)
    predictions = predictor.predict(inputs["text"].tolist(), feature_matrix(inputs))
    return ScoredTickets(inputs=inputs, predictions=predictions)
