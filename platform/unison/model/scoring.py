"""The one scoring data plane: tickets (with their customer's features) -> typed predictions, for every path.

HTTP `/v1` and OIP (through the Serve model replicas), the Kafka stream, the batch actors, the demo and parity
only adapt their formats and call `DataPlane.score` (MLServer's `DataPlane.infer`): it attaches online features
(one lookup for the whole call) unless the rows already carry point-in-time ones, runs the one transform and the
Predictor, isolates a failure to the group (request, ticket, block) that causes it, and records the path's metrics
and drift counts. Nothing else turns tickets into model inputs or shapes a prediction, so the paths cannot compute
them differently.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, Field

from unison.features.transform import CUSTOMER_FEATURES, feature_matrix, transform
from unison.model.predictor import Predictions, Predictor, PredictorInputError
from unison.ops import metrics

log = logging.getLogger("unison.scoring")

ScoringPath = Literal["online", "stream", "batch", "demo", "parity"]


class OnlineFeatures(Protocol):
    """What scoring needs from `unison.features.store.Features`."""

    def online(self, customer_ids: Any, as_of: Any = None) -> pd.DataFrame: ...


class DriftObserver(Protocol):
    """What scoring needs from `unison.model.drift.DriftRecorder`."""

    def observe(self, model: str, reference: Any, scored: ScoredTickets) -> None: ...


class Prediction(BaseModel):
    """One ticket's prediction: the record every path returns (the HTTP body, the Kafka value, a Parquet row)."""

    ticket_id: str
    customer_id: int
    category: str = Field(description="Most likely category.")
    probabilities: dict[str, float] = Field(description="Probability of every category.")
    priority: float = Field(description="Priority score (higher is more urgent).")
    features_missing: bool = Field(description="True when the customer had no (fresh) features in the store.")
    tokens: int = Field(description="Tokens the model read.")
    truncated: bool = Field(description="True when the text was cut at the model's token limit.")
    input_digest: str = Field(description="Digest of the transformed inputs the model read (text and features): "
                                          "equal on every path for equal inputs (`unison parity`).")


@dataclass
class ScoredTickets:
    """The tickets, the transformed inputs and the Predictor's outputs, row for row."""

    tickets: pd.DataFrame
    inputs: pd.DataFrame
    predictions: Predictions

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def features_missing(self) -> npt.NDArray[np.bool_]:
        return self.inputs["features_missing"].to_numpy() > 0

    def input_digests(self) -> list[str]:
        """Per row: a digest of exactly what the model read (the text and the float32 feature vector), so
        paths can prove they fed the model identical inputs without shipping the inputs around."""
        numeric = feature_matrix(self.inputs)
        return [hashlib.blake2b(str(text).encode() + row.tobytes(), digest_size=8).hexdigest()
                for text, row in zip(self.inputs["text"], numeric, strict=True)]

    def rows(self, start: int, stop: int) -> ScoredTickets:
        """Rows [start, stop) (one request's share of a batch)."""
        return ScoredTickets(self.tickets.iloc[start:stop], self.inputs.iloc[start:stop],
                             self.predictions.rows(start, stop))

    def _triage_outputs(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Probabilities and priority: what a Prediction needs (an encoder artifact has neither)."""
        p = self.predictions
        if p.probabilities is None or p.priority is None:
            raise ValueError(f"{p.model_name}:{p.model_version} is not a triage model (no probabilities/priority)")
        return p.probabilities, p.priority

    def frame(self) -> pd.DataFrame:
        """The predictions as columns (the batch job's Parquet rows): Prediction's fields, with the probabilities
        as one `p_<label>` column each."""
        p = self.predictions
        probabilities, priority = self._triage_outputs()
        out = pd.DataFrame({
            "ticket_id": self.tickets["ticket_id"].astype(str).to_numpy(),
            "customer_id": self.tickets["customer_id"].astype("int64").to_numpy(),
            "category": p.categories(),
            "priority": priority.astype(np.float32),
            "features_missing": self.features_missing,
            "tokens": p.token_counts,
            "truncated": p.truncated,
            "input_digest": self.input_digests(),
        })
        for i, label in enumerate(p.labels):
            out[f"p_{label}"] = probabilities[:, i]
        return out

    def records(self) -> list[Prediction]:
        """One typed Prediction per row."""
        p = self.predictions
        probabilities, priority = self._triage_outputs()
        categories = p.categories()
        return [
            Prediction.model_construct(
                ticket_id=str(tid), customer_id=int(cid), category=categories[i],
                probabilities={label: float(x) for label, x in zip(p.labels, probabilities[i], strict=True)},
                priority=float(priority[i]), features_missing=bool(missing), tokens=int(p.token_counts[i]),
                truncated=bool(p.truncated[i]), input_digest=digest)
            for i, (tid, cid, missing, digest) in enumerate(zip(
                self.tickets["ticket_id"], self.tickets["customer_id"], self.features_missing, self.input_digests(),
                strict=True))
        ]


@dataclass(frozen=True)
class Failure:
    """Why one group (a request, a ticket, a block) could not be scored. `kind`: `input` (the record itself:
    a 4xx or a dead letter), `features` (the online store: retry later), `scoring` (anything else the record
    raised)."""

    kind: Literal["input", "features", "scoring"]
    message: str
    cause: BaseException | None = field(default=None, compare=False)

    @property
    def status(self) -> int:
        return {"input": 422, "features": 503, "scoring": 500}[self.kind]


Outcome = ScoredTickets | Failure


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
    return ScoredTickets(tickets=rows, inputs=inputs, predictions=predictions)


class DataPlane:
    """The one scoring service of a path (`online`, `stream`, `batch`, `demo`, `parity`).

    `features`: the online store, looked up once per call; None when the rows carry their own (point-in-time)
    features, as in the batch job. `drift`: this replica's drift recorder, if the path reports drift.
    """

    def __init__(self, path: ScoringPath, features: OnlineFeatures | None = None,
                 drift: DriftObserver | None = None) -> None:
        self.path = path
        self.features = features
        self.drift = drift

    def score(self, predictor: Predictor, tickets: pd.DataFrame, groups: Sequence[int] | None = None
              ) -> list[Outcome]:
        """Score `tickets` in one feature lookup and one Predictor call; `groups`: the row counts of consecutive
        groups (requests of a batch, tickets of a poll; default: one group). If the call raises, each group is
        scored alone, so only a group that still raises alone fails (its Failure says why); the others are
        scored. One outcome per group, in order."""
        sizes = list(groups) if groups is not None else [len(tickets)]
        if sum(sizes) != len(tickets):
            raise ValueError(f"groups of {sum(sizes)} rows for {len(tickets)} tickets")
        try:
            scored = self._score(predictor, tickets)
        except Exception as exc:
            if len(sizes) == 1:
                return [self._failure(exc, tickets)]
            outcomes: list[Outcome] = []
            for start, stop in _bounds(sizes):
                outcomes.extend(self.score(predictor, tickets.iloc[start:stop]))
            return outcomes
        if len(sizes) == 1:
            return [scored]
        return [scored.rows(start, stop) for start, stop in _bounds(sizes)]

    def _score(self, predictor: Predictor, tickets: pd.DataFrame) -> ScoredTickets:
        started = time.perf_counter()
        if self.features is not None:
            try:
                rows = attach_online_features(self.features, tickets)
            except Exception as exc:
                raise _FeatureLookupFailed(exc) from exc
        else:
            rows = tickets
        scored = score_tickets(predictor, rows)
        model = f"{predictor.name}:{predictor.version}"
        metrics.scored_batch(self.path, model, len(tickets), time.perf_counter() - started)
        if self.drift is not None:
            self.drift.observe(model, predictor.manifest.training_reference, scored)
        return scored

    def _failure(self, exc: Exception, tickets: pd.DataFrame) -> Failure:
        if isinstance(exc, _FeatureLookupFailed):
            cause = exc.cause
            log.error("online feature lookup failed: %s: %s", type(cause).__name__, cause)
            return Failure("features", f"online feature store unavailable: {type(cause).__name__}: {cause}", cause)
        if isinstance(exc, PredictorInputError):
            return Failure("input", str(exc), exc)
        log.exception("scoring %s failed", ", ".join(map(str, tickets["ticket_id"].head(3))))
        return Failure("scoring", f"scoring failed: {type(exc).__name__}: {exc}", exc)


def _bounds(sizes: Sequence[int]) -> list[tuple[int, int]]:
    ends = np.cumsum(sizes).tolist()
    return list(zip([0, *ends[:-1]], ends, strict=True))


class _FeatureLookupFailed(Exception):
    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause
