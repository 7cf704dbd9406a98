"""Stand-ins for the online store and the Predictor in unit tests of pure logic (the scoring shells' error
isolation); the real ones are exercised by the integration tests."""

from __future__ import annotations

import pandas as pd


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
        return Predictions("triage", "1", "int8", ["a", "b"], {"probabilities": np.full((n, 2), 0.5, np.float32)},
                           np.ones(n, np.int64), np.zeros(n, bool), "rows", "cpu")
