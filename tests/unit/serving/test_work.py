"""Work units, token-budget batches (through Serve's own `@serve.batch`) and admission by work."""

import asyncio

import pytest
from ray import serve
from ray.serve import batching

from unison.serving.model_server import BatchingConfig
from unison.serving.work import (
    ROW_COST_TOKENS,
    SPECIAL_TOKENS,
    Admission,
    Call,
    batch_cost,
    batch_size,
    request_work,
    ticket_tokens,
)

SHORT = {"subject": "refund", "body": "charged twice"}
LONG = {"subject": "crash", "body": "the app crashes when I open reports " * 40}


def test_ticket_tokens_are_estimated_from_characters_and_capped_at_the_token_limit() -> None:
    assert ticket_tokens(SHORT, 128) == SPECIAL_TOKENS + 5  # 19 characters
    assert ticket_tokens(LONG, 128) == 128 and ticket_tokens(LONG, 48) == 48
    assert ticket_tokens({"subject": "", "body": None}, 128) == SPECIAL_TOKENS
    assert request_work([SHORT, LONG], 128) == ticket_tokens(SHORT, 128) + 128 + 2 * ROW_COST_TOKENS


def test_batch_cost_is_at_least_an_equal_share_and_at_most_the_budget() -> None:
    assert batch_cost(10, 4096, 16) == 256  # 16 one-ticket requests fill a batch: the request bound holds
    assert batch_cost(1000, 4096, 16) == 1000
    assert batch_cost(50_000, 4096, 16) == 4096  # larger than the budget: rides alone, not refused
    assert batch_cost(10, 100, 3) == 34  # rounded up, so never more than max_batch_size requests


class _Batcher:
    """Serve's own batching with Unison's batch_size_fn, outside a replica: which calls form a batch."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    @serve.batch(max_batch_size=4096, batch_wait_timeout_s=0.2, batch_size_fn=batch_size)
    async def score(self, calls: list[Call]) -> list[int]:
        self.batches.append([c.work for c in calls])
        await asyncio.sleep(0)
        return [c.work for c in calls]


def _calls(tickets: list[dict[str, str]], count: int, config: BatchingConfig) -> list[Call]:
    work = request_work(tickets, 128)
    cost = batch_cost(work, config.max_batch_tokens, config.max_batch_size)
    return [Call(0.0, tickets, None, work, cost) for _ in range(count)]  # type: ignore[arg-type]


def test_serve_batches_are_bounded_by_work_units_and_by_request_count(monkeypatch: pytest.MonkeyPatch) -> None:
    # Serve's batch queue warns, through the replica context, when max_batch_size exceeds max_ongoing_requests
    # (a request count; with batch_size_fn the size is in work units). Outside a replica there is no context.
    monkeypatch.setattr(batching._BatchQueue, "_warn_if_max_batch_size_exceeds_max_ongoing_requests", lambda self: None)
    config = BatchingConfig()  # max_batch_tokens 4096, max_batch_size 16

    batcher = _Batcher()  # Serve keeps one batch queue per decorated method, bound to the loop that first used it

    async def run(calls: list[Call]) -> list[list[int]]:
        batcher.batches = []
        results = await asyncio.gather(*(batcher.score(c) for c in calls))
        assert results == [c.work for c in calls]
        return batcher.batches

    async def scenarios() -> None:
        short = await run(_calls([SHORT], 40, config))
        assert [len(b) for b in short] == [16, 16, 8]  # one-ticket requests: 16 per batch, as before
        long = await run(_calls([LONG] * 8, 10, config))
        per_request = request_work([LONG] * 8, 128)  # 8 x (128 + 16) = 1152 units
        assert per_request == 1152 and [len(b) for b in long] == [3, 3, 3, 1]  # 3 x 1152 <= 4096 < 4 x 1152
        huge = await run(_calls([LONG] * 64, 2, config))
        assert [len(b) for b in huge] == [1, 1]  # over the budget: alone, never refused

    asyncio.run(asyncio.wait_for(scenarios(), 60))


def test_admission_accepts_anything_when_idle_and_refuses_work_that_could_not_finish_in_time() -> None:
    admission = Admission(max_queued_s=1.0, seconds_per_unit=1e-3)  # 1,000 units/s, one replica
    assert admission.admit(5_000) is None  # 5 s of work, but nothing in flight: accepted
    retry = admission.admit(10)
    assert retry is not None and retry == pytest.approx(4.01)
    admission.done(5_000)
    assert admission.in_flight == 0 and admission.admit(600) is None and admission.admit(300) is None
    assert admission.admit(200) is not None  # 1.1 s > 1.0 s
    assert admission.in_flight == 900


def test_admission_learns_the_model_speed_and_counts_the_replicas_that_answer() -> None:
    admission = Admission(max_queued_s=1.0, seconds_per_unit=1e-3)
    for _ in range(40):
        admission.observe("replica-a", batch_seconds=0.1, batch_work=1000)  # 1e-4 s per unit
    assert admission.seconds_per_unit == pytest.approx(1e-4, rel=1e-2)
    assert admission.admit(9_000) is None and admission.admit(1_500) is not None  # 1.05 s on one replica
    admission.observe("replica-b", batch_seconds=0.1, batch_work=1000)
    assert admission.admit(1_500) is None  # two replicas drain it in 0.525 s
    admission.replicas["replica-a"] -= admission.replica_window_s + 1  # not heard from in the window
    assert admission.wait_s() == pytest.approx(10_500 * 1e-4, rel=1e-2)


def test_the_admission_gate_refuses_scoring_requests_before_reading_their_body(monkeypatch: pytest.MonkeyPatch) -> None:
    from unison.serving import ingress

    reached: list[str] = []

    async def inner(scope: dict, receive: object, send: object) -> None:
        reached.append(scope["path"])

    async def receive() -> dict:
        raise AssertionError("the body was read")

    async def call(method: str, path: str) -> list[dict]:
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "method": method, "path": path, "headers": [], "query_string": b""}
        await ingress.AdmissionGate(inner)(scope, receive, send)
        return sent

    admission = Admission(max_queued_s=1.0, seconds_per_unit=1e-3)
    monkeypatch.setitem(ingress._admission, "current", admission)
    assert asyncio.run(call("POST", "/v1/predict")) == [] and reached == ["/v1/predict"]  # idle: through
    admission.admit(3_000)  # 3 s in flight, over the 1 s bound
    for path in ("/v1/predict", "/v2/models/triage/infer", "/broken/v1/predict"):
        sent = asyncio.run(call("POST", path))
        headers = dict(sent[0]["headers"])
        assert sent[0]["status"] == 503 and headers[b"retry-after"] == b"2"
        assert b"3.0 s of work queued (limit 1 s)" in sent[1]["body"]
    assert asyncio.run(call("GET", "/v2/health/ready")) == [] and reached[-1] == "/v2/health/ready"
