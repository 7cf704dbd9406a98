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
    return ScoredTickets(tickets=pd.DataFrame(), inputs=inputs, predictions=None).input_digests()[0]  # type: ignore[arg-type]


def test_equal_inputs_give_equal_digests_and_any_change_shows() -> None:
    assert _digest() == _digest(ticket_id="other")  # the id is not a model input
    assert _digest() != _digest(body="charged three times")
    assert _digest() != _digest(open_tickets=3)
    assert _digest() != _digest(lifetime_value=1300.0)
    # A raw change the transform does not carry into the float32 input (log1p(1200 + 1 ulp) / 10) is no change.
    assert _digest() == _digest(lifetime_value=float(np.nextafter(np.float32(1200.0), np.float32(2000.0))))
    assert len(_digest()) == 16


# ------------------------------------------------------------------------------------------ the data plane's fallback


def _tickets(bodies: list[str]) -> pd.DataFrame:
    return pd.DataFrame([{"ticket_id": f"t{i}", "customer_id": i, "subject": "refund", "body": body}
                         for i, body in enumerate(bodies)])


def test_one_bad_record_among_good_ones_fails_alone_with_its_reason() -> None:
    from tests.unit.fakes import FakeFeatures, FakeScorer

    from unison.model.scoring import DataPlane, Failure

    tickets = _tickets(["charged twice", "boom", "cannot log in", "charged again"])
    outcomes = DataPlane("stream", FakeFeatures()).score(FakeScorer(), tickets, groups=[1, 1, 1, 1])  # type: ignore[arg-type]
    assert [type(o).__name__ for o in outcomes] == ["ScoredTickets", "Failure", "ScoredTickets", "ScoredTickets"]
    failure = outcomes[1]
    assert isinstance(failure, Failure) and failure.kind == "scoring" and failure.status == 500
    assert "OverflowError: Python int too large" in failure.message and isinstance(failure.cause, OverflowError)
    good = [o.records()[0] for o in outcomes if not isinstance(o, Failure)]  # type: ignore[union-attr]
    assert [p.ticket_id for p in good] == ["t0", "t2", "t3"] and all(p.features_missing for p in good)


def test_groups_keep_their_rows_and_order_when_nothing_fails() -> None:
    from tests.unit.fakes import FakeFeatures, FakeScorer

    from unison.model.scoring import DataPlane

    tickets = _tickets(["a", "b", "c", "d", "e"])
    outcomes = DataPlane("online", FakeFeatures()).score(FakeScorer(), tickets, groups=[2, 0, 3])  # type: ignore[arg-type]
    assert [[p.ticket_id for p in o.records()] for o in outcomes] == [["t0", "t1"], [], ["t2", "t3", "t4"]]  # type: ignore[union-attr]
    frame = outcomes[2].frame()  # type: ignore[union-attr]
    assert frame["ticket_id"].tolist() == ["t2", "t3", "t4"] and list(frame.columns[-2:]) == ["p_a", "p_b"]


def test_an_online_store_outage_is_a_features_failure_for_every_group() -> None:
    from tests.unit.fakes import FakeFeatures, FakeScorer

    from unison.model.scoring import DataPlane, Failure

    features = FakeFeatures()
    features.down = True
    outcomes = DataPlane("online", features).score(FakeScorer(), _tickets(["a", "b"]), groups=[1, 1])  # type: ignore[arg-type]
    assert all(isinstance(o, Failure) and o.kind == "features" and o.status == 503 for o in outcomes)
    assert isinstance(outcomes[0].cause, ConnectionError)  # type: ignore[union-attr]


def test_input_errors_are_422_and_group_sizes_must_add_up() -> None:
    import pytest

    from unison.model.predictor import PredictorInputError
    from unison.model.scoring import DataPlane, Failure

    class Refusing:
        name, version = "triage", "1"

        def predict(self, texts: list[str], features: object) -> object:
            raise PredictorInputError("row 0: text is empty")

    [outcome] = DataPlane("batch").score(Refusing(), _tickets(["x"]))  # type: ignore[arg-type]
    assert isinstance(outcome, Failure) and outcome.status == 422 and outcome.message == "row 0: text is empty"
    with pytest.raises(ValueError, match="groups of 3 rows for 1 tickets"):
        DataPlane("batch").score(Refusing(), _tickets(["x"]), groups=[3])  # type: ignore[arg-type]
