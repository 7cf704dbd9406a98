"""Input drift: what the live paths score, against the training reference in the model's manifest (PSI).

The optimizer stores, for every numeric model input and for the text's length (tokens and characters), bin
edges and the share of training rows in each bin (`Manifest.training_reference`, built by `reference_bins`).
The online and streaming replicas count the rows they score into those bins (`DriftRecorder`: one
`searchsorted` per input per batch) and send the counts to the application's `DriftMonitor` deployment every
few seconds; the monitor sums them over a sliding window per model and path, and on a schedule computes the
population stability index per input:

    PSI = sum over bins of (live share - training share) * ln(live share / training share)

Read as usual: below 0.1 stable, 0.1-0.25 a moderate shift worth a look, above 0.25 a significant shift.
Empty bins are floored at `SHARE_FLOOR` so one unseen bin does not make the index infinite.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from unison.features.transform import NUMERIC_FEATURES

if TYPE_CHECKING:
    from unison.model.scoring import ScoredTickets

log = logging.getLogger("unison.drift")

TEXT_INPUTS = ("text_tokens", "text_chars")
REFERENCE_INPUTS: tuple[str, ...] = (*NUMERIC_FEATURES, *TEXT_INPUTS)
SHARE_FLOOR = 1e-4
MAX_DISCRETE = 10  # an input with at most this many distinct training values gets one bin per value
STATUSES = ("insufficient data", "stable", "moderate", "significant")


class DriftConfig(BaseModel):
    """The `DriftMonitor` deployment's `user_config` (deploy/serve.yaml)."""

    model_config = ConfigDict(extra="forbid")

    interval_s: float = Field(default=60.0, gt=0, description="How often PSI is computed and exported.")
    window_s: float = Field(default=3600.0, gt=0, description="The live sample: rows scored in this many "
                                                              "seconds, per model and path.")
    min_rows: int = Field(default=500, ge=1, description="Fewer rows in the window: no PSI (too noisy to read); "
                                                         "the status says 'insufficient data'.")
    moderate: float = Field(default=0.1, gt=0, description="PSI from which an input counts as moderately shifted.")
    significant: float = Field(default=0.25, gt=0, description="PSI from which an input counts as significantly "
                                                               "shifted (the alert level).")


# ---------------------------------------------------------------------------------------------- reference


def reference_bins(values: npt.NDArray[np.float64]) -> dict[str, list[float]]:
    """Inner bin edges and training shares. Discrete inputs (one-hot columns, flags) get one bin per training
    value and a bin on each side for values training never saw (a flag that was always 0 can still show up as
    1); continuous inputs get deciles. A value equal to an edge falls in the bin above it."""
    values = values[np.isfinite(values)]
    distinct = np.unique(values)
    if len(distinct) <= MAX_DISCRETE:
        half_gap = float(np.diff(distinct).min()) / 2 if len(distinct) > 1 else 0.5
        inner = np.concatenate([[distinct[0] - half_gap], (distinct[:-1] + distinct[1:]) / 2,
                                [distinct[-1] + half_gap]])
    else:
        inner = np.unique(np.quantile(values, np.linspace(0, 1, 11)))[1:-1]
    counts = np.bincount(np.searchsorted(inner, values, side="right"), minlength=len(inner) + 1)
    return {"edges": inner.tolist(), "shares": (counts / max(counts.sum(), 1)).tolist()}


def live_values(scored: ScoredTickets) -> dict[str, npt.NDArray[np.float64]]:
    """Per reference input, the values of the rows just scored (what the model read)."""
    inputs = scored.inputs
    values = {name: inputs[name].to_numpy(dtype=np.float64) for name in NUMERIC_FEATURES}
    values["text_tokens"] = np.asarray(scored.predictions.token_counts, dtype=np.float64)
    values["text_chars"] = inputs["text"].str.len().to_numpy(dtype=np.float64)
    return values


def psi(shares: list[float] | npt.NDArray[np.float64], counts: list[int] | npt.NDArray[np.int64]) -> float:
    """Population stability index of live `counts` against training `shares` over the same bins."""
    expected = np.maximum(np.asarray(shares, dtype=np.float64), SHARE_FLOOR)
    observed = np.asarray(counts, dtype=np.float64)
    if observed.shape != expected.shape:
        raise ValueError(f"{observed.shape[0]} live bins against {expected.shape[0]} reference bins")
    actual = np.maximum(observed / max(observed.sum(), 1.0), SHARE_FLOOR)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def assess(reference: Mapping[str, Any], rows: int, counts: Mapping[str, list[int]],
           config: DriftConfig) -> dict[str, Any]:
    """PSI per input and an overall status (the worst input's) for one model and path."""
    if rows < config.min_rows:
        return {"rows": rows, "status": STATUSES[0], "psi": {}, "worst": None}
    values = {name: round(psi(reference[name]["shares"], counts[name]), 4) for name in counts if name in reference}
    worst = max(values, key=lambda name: values[name]) if values else None
    top = values[worst] if worst else 0.0
    status = "significant" if top >= config.significant else "moderate" if top >= config.moderate else "stable"
    return {"rows": rows, "status": status, "psi": values, "worst": worst}


# ---------------------------------------------------------------------------------------------- replica side


class DriftCounts:
    """Rows counted into a reference's bins, per input, since the last `take`."""

    def __init__(self, reference: Mapping[str, Any]) -> None:
        self.edges = {name: np.asarray(spec["edges"], dtype=np.float64) for name, spec in reference.items()
                      if name in REFERENCE_INPUTS}
        self.counts = {name: np.zeros(len(edges) + 1, dtype=np.int64) for name, edges in self.edges.items()}
        self.rows = 0

    def add(self, values: Mapping[str, npt.NDArray[np.float64]]) -> None:
        for name, edges in self.edges.items():
            column = values[name]
            column = column[np.isfinite(column)]
            self.counts[name] += np.bincount(np.searchsorted(edges, column, side="right"), minlength=len(edges) + 1)
        self.rows += len(next(iter(values.values()))) if values else 0

    def take(self) -> tuple[int, dict[str, list[int]]]:
        rows, counts = self.rows, {name: c.tolist() for name, c in self.counts.items()}
        for c in self.counts.values():
            c[:] = 0
        self.rows = 0
        return rows, counts


Send = Callable[[str, str, int, dict[str, list[int]]], Any]  # (model "name:version", path, rows, counts)


class DriftRecorder:
    """What a replica keeps between flushes: counts per model version, sent every `flush_s` by a daemon thread
    (never on the request's path)."""

    def __init__(self, path: str, send: Send, flush_s: float = 5.0) -> None:
        self.path = path
        self.send = send
        self.flush_s = flush_s
        self._counts: dict[str, DriftCounts | None] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"unison-drift-{path}", daemon=True)
        self._thread.start()

    @classmethod
    def to_monitor(cls, path: str, monitor: Any) -> DriftRecorder:
        """A recorder sending to the application's `DriftMonitor` deployment (`monitor`: its handle)."""

        def send(model: str, path: str, rows: int, counts: dict[str, list[int]]) -> None:
            monitor.observe.remote(model, path, rows, counts).result(timeout_s=10)

        return cls(path, send)

    def observe(self, model: str, reference: Mapping[str, Any], scored: ScoredTickets) -> None:
        """Count one scored batch. Models without a training reference (encoders, old artifacts) are skipped."""
        with self._lock:
            counts = self._counts.get(model, ...)
            if counts is ...:
                counts = self._counts[model] = DriftCounts(reference) if reference else None
        if counts is None:
            return
        values = live_values(scored)
        with self._lock:
            counts.add(values)

    def flush(self) -> None:
        with self._lock:
            taken = [(model, *c.take()) for model, c in self._counts.items() if c is not None and c.rows]
        for model, rows, counts in taken:
            try:
                self.send(model, self.path, rows, counts)
            except Exception:  # the monitor is away (redeploy): these rows are not counted, scoring goes on
                log.warning("could not send drift counts for %s (%s rows)", model, rows, exc_info=True)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self.flush()


# ---------------------------------------------------------------------------------------------- monitor side


class DriftWindow:
    """The drift monitor's sliding window for one model and path: the drift counts replicas sent in the last
    `window_s` seconds, kept as the batches of counts that arrived, summed on `total`."""

    def __init__(self) -> None:
        self._parts: deque[tuple[float, int, dict[str, list[int]]]] = deque()

    def add(self, at: float, rows: int, counts: dict[str, list[int]]) -> None:
        self._parts.append((at, rows, counts))

    def total(self, now: float, window_s: float) -> tuple[int, dict[str, list[int]]]:
        while self._parts and self._parts[0][0] < now - window_s:
            self._parts.popleft()
        rows = 0
        summed: dict[str, npt.NDArray[np.int64]] = {}
        for _, part_rows, counts in self._parts:
            rows += part_rows
            for name, values in counts.items():
                array = np.asarray(values, dtype=np.int64)
                summed[name] = summed[name] + array if name in summed else array
        return rows, {name: values.tolist() for name, values in summed.items()}
