"""Request parsing and limits of both APIs (pure logic; the HTTP behaviour is in tests/integration/serving)."""

import pytest
from pydantic import ValidationError

from unison.model.scoring import Prediction
from unison.serving.schema import (
    ApiLimits,
    InferenceRequest,
    PredictRequest,
    RequestError,
    check_limits,
    check_requested_outputs,
    oip_response,
    oip_tickets,
)

LIMITS = ApiLimits(max_instances=3, max_text_chars=50)
LABELS = ["billing", "technical"]


def _oip(*inputs: dict, **extra: object) -> InferenceRequest:
    return InferenceRequest.model_validate({"inputs": list(inputs), **extra})


def test_tickets_are_strict_and_need_text() -> None:
    ok = PredictRequest.model_validate({"instances": [{"ticket_id": "t", "customer_id": 1, "body": "hi"}]})
    assert ok.instances[0].subject == ""
    for bad in (
        {"instances": []},
        {"instances": [{"ticket_id": "t", "customer_id": "1", "body": "x"}]},  # no string-to-int coercion
        {"instances": [{"ticket_id": "t", "customer_id": 1, "subject": " ", "body": ""}]},
        {"instances": [{"ticket_id": "t", "customer_id": 1, "body": "x", "subjet": "typo"}]},
        {"instances": [{"ticket_id": "t", "customer_id": 1, "body": "x", "channel": "fax"}]},
        {"instances": [{"customer_id": 1, "body": "x"}]},
    ):
        with pytest.raises(ValidationError):
            PredictRequest.model_validate(bad)


def test_limits_answer_413() -> None:
    tickets = PredictRequest.model_validate(
        {"instances": [{"ticket_id": str(i), "customer_id": i, "body": "x"} for i in range(4)]}).instances
    with pytest.raises(RequestError, match="4 instances") as too_many:
        check_limits(tickets, LIMITS)
    assert too_many.value.status == 413
    long = PredictRequest.model_validate({"instances": [{"ticket_id": "t", "customer_id": 1, "body": "x" * 51}]})
    with pytest.raises(RequestError, match="51 characters") as too_long:
        check_limits(long.instances, LIMITS)
    assert too_long.value.status == 413


def test_oip_inputs_become_tickets() -> None:
    request = _oip({"name": "customer_id", "shape": [2, 1], "datatype": "INT64", "data": [[7], [8]]},
                   {"name": "subject", "shape": [2], "datatype": "BYTES", "data": ["refund", "login"]},
                   {"name": "body", "shape": [2], "datatype": "BYTES", "data": ["charged twice", "cannot log in"]},
                   id="r1")
    tickets = oip_tickets(request, LIMITS)
    assert [(t.ticket_id, t.customer_id, t.subject) for t in tickets] == [("r1-0", 7, "refund"), ("r1-1", 8, "login")]


@pytest.mark.parametrize(("inputs", "status", "message"), [
    ([{"name": "subject", "shape": [1], "datatype": "BYTES", "data": ["x"]}], 400, "missing input 'customer_id'"),
    ([{"name": "customer_id", "shape": [1], "datatype": "FP32", "data": [1.0]}], 400, "datatype FP32"),
    ([{"name": "customer_id", "shape": [2], "datatype": "INT64", "data": [1]}], 400, "1 elements but shape"),
    ([{"name": "customer_id", "shape": [1], "datatype": "INT64", "data": [1]},
      {"name": "body", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}], 400, "other inputs have 1"),
    ([{"name": "customer_id", "shape": [1], "datatype": "INT64", "data": [1]},
      {"name": "body", "shape": [1], "datatype": "BYTES", "data": [5]}], 400, "not a string"),
    ([{"name": "customer_id", "shape": [1], "datatype": "INT64", "data": [1]},
      {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}], 400, "unexpected input 'text'"),
    ([{"name": "customer_id", "shape": [1], "datatype": "INT64", "data": [1]}], 400, "no text"),
    ([{"name": "customer_id", "shape": [1], "datatype": "INT64", "data": [1]},
      {"name": "body", "shape": [1], "datatype": "BYTES", "data": ["   "]}], 400, "both empty"),
    ([{"name": "customer_id", "shape": [4], "datatype": "INT64", "data": [1, 2, 3, 4]},
      {"name": "body", "shape": [4], "datatype": "BYTES", "data": ["a"] * 4}], 413, "limit is 3"),
    ([{"name": "customer_id", "shape": [1], "datatype": "INT64", "data": [1]},
      {"name": "body", "shape": [1], "datatype": "BYTES", "data": ["y" * 60]}], 413, "60 characters"),
])
def test_oip_errors_name_the_tensor(inputs: list[dict], status: int, message: str) -> None:
    with pytest.raises(RequestError, match=message) as error:
        oip_tickets(_oip(*inputs), LIMITS)
    assert error.value.status == status


def test_oip_response_is_typed_and_filtered() -> None:
    common = {"tokens": 5, "truncated": False, "input_digest": "d", "customer_id": 1}
    result = {"model_name": "triage", "model_version": "3", "feature_service": "triage_v1", "predictions": [
        Prediction(ticket_id="a", category="billing", probabilities={"billing": 0.9, "technical": 0.1},
                   priority=0.5, features_missing=False, **common),  # type: ignore[arg-type]
        Prediction(ticket_id="b", category="technical", probabilities={"billing": 0.2, "technical": 0.8},
                   priority=0.1, features_missing=True, **common),  # type: ignore[arg-type]
    ]}
    response = oip_response(result, None, "r", LABELS)
    outputs = {o.name: o for o in response.outputs}
    assert outputs["probabilities"].shape == [2, 2] and outputs["probabilities"].data == [0.9, 0.1, 0.2, 0.8]
    assert outputs["category"].datatype == "BYTES" and outputs["features_missing"].data == [False, True]
    assert (response.model_version, response.id) == ("3", "r")
    only = oip_response(result, InferenceRequest.model_validate(
        {"inputs": [{"name": "customer_id", "shape": [1], "datatype": "INT64", "data": [1]}],
         "outputs": [{"name": "priority"}]}).outputs, None, LABELS)
    assert [o.name for o in only.outputs] == ["priority"]
    with pytest.raises(RequestError, match="unknown output"):
        check_requested_outputs(InferenceRequest.model_validate(
            {"inputs": [{"name": "customer_id", "shape": [1], "datatype": "INT64", "data": [1]}],
             "outputs": [{"name": "logits"}]}).outputs)
