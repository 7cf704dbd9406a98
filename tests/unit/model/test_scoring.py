"""The input digest every path records: equal for equal model inputs, different when anything the model reads
differs (the text or any transformed float32 feature)."""

import numpy as np
import pandas as pd

from unison.features.transform import transform
from unison.model.scoring import ScoredTickets

ROW = {"ticket_id": "t1", "customer_id": 1, "subject": "refund", "body": "charged twice", "channel": "email",
       "plan": "pro", "tenure_days": 400, "lifetime_value": 1200.0, "open_tickets": 2, "tickets_last_90d": 5,
       "last_csat": 4.0, "days_since_last_login": 3}


def _digest(**changes: object) -> str:
    inputs = transform(pd.DataFrame([{**ROW, **changes}]))
    return ScoredTickets(inputs=inputs, predictions=None).input_digests()[0]  # type: ignore[arg-type]


def test_equal_inputs_give_equal_digests_and_any_change_shows() -> None:
    assert _digest() == _digest(ticket_id="other")  # the id is not a model input
    assert _digest() != _digest(body="charged three times")
    assert _digest() != _digest(open_tickets=3)
    assert _digest() != _digest(lifetime_value=1300.0)
    # A raw change the transform does not carry into the float32 input (log1p(1200 + 1 ulp) / 10) is no change.
    assert _digest() == _digest(lifetime_value=float(np.nextafter(np.float32(1200.0), np.float32(2000.0))))
    assert len(_digest()) == 16
