"""Wire formats of the online API: Unison's JSON API (`/v1`) and the Open Inference Protocol v2 (`/v2`).

Request bodies are strict (unknown fields and wrong types are errors that name the field). Limits that answer
413 (too many instances, text too long) are checked after parsing, by `check_limits`, so the status tells a
client whether to fix the request or split it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from unison.domain import MAX_TEXT_CHARS
from unison.features.ticket import Ticket, first_error
from unison.model.scoring import Prediction
from unison.serving.body import DEFAULT_MAX_BODY_BYTES


class RequestError(Exception):
    """A request the server refuses; `status` is the HTTP status, the message goes into `{"error": ...}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ApiLimits(BaseModel):
    """Per-request limits of the HTTP API (the application's `args` in deploy/serve.yaml)."""

    model_config = ConfigDict(extra="forbid")

    max_instances: int = Field(default=64, ge=1, le=4096,
                               description="Most tickets in one request; more answers 413 (split the request).")
    max_text_chars: int = Field(default=MAX_TEXT_CHARS, ge=1,
                                description="Longest subject + body in characters; longer answers 413.")
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1024,
                                description="Largest request body in bytes, counted as it arrives (chunked "
                                            "uploads too); larger answers 413 before parsing. At most the proxy's "
                                            "read-ahead (deploy/serve.yaml, `controller_options`).")
    request_timeout_s: float = Field(default=10.0, gt=0,
                                     description="A request not answered by the model in this time answers 504.")


# ---------------------------------------------------------------------------------------------- /v1


class PredictRequest(BaseModel):
    """`POST /v1/predict`: one or many tickets."""

    model_config = ConfigDict(extra="forbid")

    instances: list[Ticket] = Field(min_length=1, description="Tickets to score (at least one).")
    model: str | None = Field(default=None,
                              description="Optional `name` or `name:version` the caller expects; 404 if not served.")


class Latency(BaseModel):
    total: float = Field(description="Milliseconds from the request reaching the ingress to the answer.")
    load: float = Field(default=0.0, description="Milliseconds getting the model: ~0 on a cache hit, the load "
                                                 "on a miss.")
    queue: float = Field(description="Milliseconds waiting for a dynamic batch to start.")
    model: float = Field(description="Milliseconds of the batch this request rode in: features, transform, model.")


class PredictResponse(BaseModel):
    model_name: str
    model_version: str
    variant: str
    feature_service: str
    model_cache: Literal["hit", "miss"] = Field(description="Whether the replica already held the model.")
    predictions: list[Prediction]
    latency_ms: Latency


def check_limits(tickets: list[Ticket], limits: ApiLimits) -> None:
    if len(tickets) > limits.max_instances:
        raise RequestError(413, f"{len(tickets)} instances in one request; the limit is {limits.max_instances}: "
                                "split the request")
    for i, ticket in enumerate(tickets):
        if ticket.text_chars() > limits.max_text_chars:
            raise RequestError(413, f"instances[{i}] has {ticket.text_chars()} characters of text; the limit is "
                                    f"{limits.max_text_chars}")


# ---------------------------------------------------------------------------------------------- /v2 (OIP)

Datatype = Literal["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16",
                   "FP32", "FP64", "BYTES"]
INTEGER_TYPES = {"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"}


class Tensor(BaseModel):
    """An OIP v2 tensor (request input or response output); `data` is row-major, flat or nested."""

    model_config = ConfigDict(extra="forbid")

    name: str
    shape: list[int]
    datatype: Datatype
    parameters: dict[str, Any] | None = None
    data: list[Any]


class RequestedOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    """`POST /v2/models/{name}[/versions/{v}]/infer` body."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[Tensor] = Field(min_length=1)
    outputs: list[RequestedOutput] | None = None


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[Tensor]


class TensorMetadata(BaseModel):
    name: str
    datatype: Datatype
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


# Inputs the triage model takes over OIP: one element per ticket, shape [N] or [N, 1].
OIP_INPUTS: tuple[TensorMetadata, ...] = (
    TensorMetadata(name="customer_id", datatype="INT64", shape=[-1]),
    TensorMetadata(name="subject", datatype="BYTES", shape=[-1]),
    TensorMetadata(name="body", datatype="BYTES", shape=[-1]),
    TensorMetadata(name="channel", datatype="BYTES", shape=[-1]),
    TensorMetadata(name="ticket_id", datatype="BYTES", shape=[-1]),
)
OIP_REQUIRED = ("customer_id",)


OUTPUT_NAMES = ("category", "probabilities", "priority", "features_missing")


def check_requested_outputs(requested: list[RequestedOutput] | None) -> None:
    unknown = [o.name for o in requested or [] if o.name not in OUTPUT_NAMES]
    if unknown:
        raise RequestError(400, f"unknown output(s) {', '.join(map(repr, unknown))}; outputs are "
                                f"{', '.join(OUTPUT_NAMES)}")


def oip_outputs(labels: list[str]) -> tuple[TensorMetadata, ...]:
    return (
        TensorMetadata(name="category", datatype="BYTES", shape=[-1]),
        TensorMetadata(name="probabilities", datatype="FP32", shape=[-1, len(labels)]),
        TensorMetadata(name="priority", datatype="FP32", shape=[-1]),
        TensorMetadata(name="features_missing", datatype="BOOL", shape=[-1]),
    )


def _flatten(data: list[Any]) -> list[Any]:
    flat: list[Any] = []
    for item in data:
        if isinstance(item, list):
            flat.extend(_flatten(item))
        else:
            flat.append(item)
    return flat


def oip_tickets(request: InferenceRequest, limits: ApiLimits) -> list[Ticket]:
    """Tickets from OIP input tensors; RequestError(400/413) naming the tensor that is wrong."""
    known = {t.name: t for t in OIP_INPUTS}
    columns: dict[str, list[Any]] = {}
    rows: int | None = None
    for tensor in request.inputs:
        spec = known.get(tensor.name)
        if spec is None:
            raise RequestError(400, f"unexpected input {tensor.name!r}; inputs are {', '.join(known)}")
        if tensor.name in columns:
            raise RequestError(400, f"input {tensor.name!r} given twice")
        expected_int = spec.datatype == "INT64"
        if (tensor.datatype in INTEGER_TYPES) != expected_int or (not expected_int and tensor.datatype != "BYTES"):
            want = "an integer type (INT64)" if expected_int else "BYTES"
            raise RequestError(400, f"input {tensor.name!r} has datatype {tensor.datatype}; expected {want}")
        if not tensor.shape or any(d < 0 for d in tensor.shape) or len(tensor.shape) > 2 or (
                len(tensor.shape) == 2 and tensor.shape[1] != 1):
            raise RequestError(400, f"input {tensor.name!r} has shape {tensor.shape}; expected [N] or [N, 1]")
        values = _flatten(tensor.data)
        if len(values) != tensor.shape[0]:
            raise RequestError(400, f"input {tensor.name!r} has {len(values)} elements but shape {tensor.shape}")
        for i, value in enumerate(values):
            ok = (isinstance(value, int) and not isinstance(value, bool)) if expected_int else isinstance(value, str)
            if not ok:
                kind = "an integer" if expected_int else "a string"
                raise RequestError(400, f"input {tensor.name!r} element {i} is {value!r}, not {kind}")
        if rows is not None and len(values) != rows:
            raise RequestError(400, f"input {tensor.name!r} has {len(values)} elements; other inputs have {rows}")
        rows = len(values)
        columns[tensor.name] = values
    for name in OIP_REQUIRED:
        if name not in columns:
            raise RequestError(400, f"missing input {name!r}")
    if "subject" not in columns and "body" not in columns:
        raise RequestError(400, "missing input 'subject' or 'body': there is no text to score")
    assert rows is not None
    if rows == 0:
        raise RequestError(400, "inputs have no elements: nothing to score")
    if rows > limits.max_instances:
        raise RequestError(413, f"{rows} rows in one request; the limit is {limits.max_instances}: split the request")
    tickets = []
    for i in range(rows):
        fields = {name: values[i] for name, values in columns.items()}
        fields.setdefault("ticket_id", f"{request.id or 'row'}-{i}")
        try:
            tickets.append(Ticket.model_validate(fields))
        except ValueError as exc:
            raise RequestError(400, f"row {i}: {first_error(exc)}") from None
    check_limits(tickets, limits)
    return tickets


def oip_response(result: dict[str, Any], requested: list[RequestedOutput] | None, request_id: str | None,
                 labels: list[str]) -> InferenceResponse:
    """Typed output tensors from a model result; only the `requested` ones when the client named them."""
    predictions: list[Prediction] = result["predictions"]
    n = len(predictions)
    available = {
        "category": Tensor(name="category", datatype="BYTES", shape=[n], data=[p.category for p in predictions]),
        "probabilities": Tensor(name="probabilities", datatype="FP32", shape=[n, len(labels)],
                                data=[p.probabilities[label] for p in predictions for label in labels]),
        "priority": Tensor(name="priority", datatype="FP32", shape=[n], data=[p.priority for p in predictions]),
        "features_missing": Tensor(name="features_missing", datatype="BOOL", shape=[n],
                                   data=[p.features_missing for p in predictions]),
    }
    check_requested_outputs(requested)
    names = [o.name for o in requested] if requested else list(OUTPUT_NAMES)
    return InferenceResponse(model_name=result["model_name"], model_version=result["model_version"], id=request_id,
                             parameters={"feature_service": result["feature_service"]},
                             outputs=[available[name] for name in names])
