"""Stand-ins for the online store, the Predictor and the partition coordinator in unit tests of pure logic (the
scoring shells' error isolation, a consumer's own loop); the real ones are exercised by the integration tests."""

from __future__ import annotations

import threading
from typing import Any

import pandas as pd

from unison.streaming.ownership import LeaseTable


class FakeFeatures:
    """The online store's shape: one row of (missing) customer features per id."""

    down = False

    def online(self, ids: list[int]) -> pd.DataFrame:
        import numpy as np

        from unison.features.transform import CUSTOMER_FEATURES

        if self.down:
            raise ConnectionError("online store unreachable")
        return pd.DataFrame({"customer_id": ids, **{c: [np.nan] * len(ids) for c in CUSTOMER_FEATURES}})


class FakeScorer:
    """Raises on a text that contains "boom" (a failure the edge could not foresee), scores the others."""

    name, version = "triage", "1"

    def close(self) -> None:
        pass

    def predict(self, texts: list[str], features: object) -> object:
        import numpy as np

        from unison.model.predictor import Predictions

        if any("boom" in t for t in texts):
            raise OverflowError("Python int too large to convert to C long")
        n = len(texts)
        outputs = {"probabilities": np.full((n, 2), 0.5, np.float32), "priority": np.zeros(n, np.float32)}
        return Predictions("triage", "1", "int8", ["a", "b"], outputs, np.ones(n, np.int64), np.zeros(n, bool),
                           "rows", "cpu")


class LocalCoordinator:
    """A `LeaseTable` in this process, behind a lock: the partition coordinator of consumers that all run in the
    test's process (the real one is a Ray actor, `unison.streaming.ownership.PartitionCoordinator`)."""

    def __init__(self, table: LeaseTable | None = None) -> None:
        self.table = table or LeaseTable()
        self._lock = threading.Lock()

    def heartbeat(self, member: str, **kwargs: Any) -> dict[str, Any]:
        with self._lock:
            return self.table.heartbeat(member, **kwargs)

    def release(self, member: str, partitions: list[int]) -> None:
        with self._lock:
            self.table.release(member, partitions)

    def leave(self, member: str) -> None:
        with self._lock:
            self.table.leave(member)
