"""Work, not requests: what a request costs the model, and admission bounded by it.

A request's cost varies ~50x with its ticket count and length, so queues bounded in requests either refuse cheap
traffic or accept more expensive work than can finish in time. The unit here is the *work unit*: a ticket's
estimated tokens (characters / CHARS_PER_TOKEN plus the special tokens, capped at the model's token limit) plus
ROW_COST_TOKENS for what every row costs whatever its length (its feature row, its session run). Estimated from
characters, so it costs nothing to compute: the tokenizer runs once, in the Predictor.

Two users of the same estimate:
- the Model deployment's dynamic batching (`@serve.batch(batch_size_fn=...)`) bounds a batch by work units
  (`max_batch_tokens`, TEI's `--max-batch-tokens`), with `max_batch_size` still bounding the request count;
- `Admission` at the ingress bounds the work in flight by the model-seconds it will take, so excess load is
  answered 503 with `Retry-After` at once, and what is accepted can finish within its timeout.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Measured on the demo tickets with the MiniLM WordPiece tokenizer: 4.3 characters per token (median per ticket);
# 4 errs towards more work. ROW_COST_TOKENS: on this CPU a 1-ticket call costs as much as ~16 more tokens of text
# (benchmarks/bench_serve.py prints the raw Predictor's short/long cost that this rests on).
CHARS_PER_TOKEN = 4.0
SPECIAL_TOKENS = 3  # [CLS], [SEP] between subject and body, [SEP]
ROW_COST_TOKENS = 16


def ticket_tokens(ticket: Mapping[str, Any], max_length: int) -> int:
    """Estimated tokens of one ticket after truncation to `max_length`."""
    chars = len(ticket.get("subject") or "") + len(ticket.get("body") or "")
    return min(max_length, SPECIAL_TOKENS + math.ceil(chars / CHARS_PER_TOKEN))


def request_work(tickets: Iterable[Mapping[str, Any]], max_length: int) -> int:
    """Work units of one request: its tickets' estimated tokens plus the per-row cost."""
    return sum(ticket_tokens(t, max_length) + ROW_COST_TOKENS for t in tickets)


def batch_cost(work: int, max_batch_tokens: int, max_batch_size: int) -> int:
    """What one request counts against a batch's `max_batch_tokens`: its work, at least an equal share of the
    budget (so a batch holds at most `max_batch_size` requests) and at most the whole budget (a request larger
    than the budget rides alone instead of being refused)."""
    return min(max_batch_tokens, max(work, -(-max_batch_tokens // max_batch_size)))


@dataclass
class Call:
    """One request waiting for a batch: its tickets, the model it asked for, and what it counts in a batch."""

    arrived: float
    tickets: list[dict[str, Any]]
    loaded: Any  # unison.serving.model_server.LoadedModel
    work: int  # work units (unison.serving.work.request_work)
    cost: int  # what it counts against max_batch_tokens (batch_cost)


def batch_size(calls: list[Call]) -> int:
    """Serve's `batch_size_fn`: a batch's size in work units, bounded by `max_batch_tokens`."""
    return sum(call.cost for call in calls)


@dataclass
class Admission:
    """The ingress's bound on work in flight, in model-seconds.

    `seconds_per_unit` is learnt from the model's answers (a batch's duration over its work units, smoothed), and
    the capacity counts the model replicas that answered recently. A request is refused when the work already in
    flight plus its own would take longer than `max_queued_s` to drain; a request that arrives when nothing is in
    flight is always accepted, however large (it can only be refused by its own limits). The answer to a refused
    request is how long until the queue has drained enough, for `Retry-After`.
    """

    max_queued_s: float
    seconds_per_unit: float = 5e-5  # a starting guess (~20k units/s); the first answers replace it
    replica_window_s: float = 30.0
    in_flight: int = 0
    replicas: dict[str, float] = field(default_factory=dict)

    def wait_s(self, work: int = 0) -> float:
        """Model-seconds to drain what is in flight plus `work`, over the replicas that answered recently."""
        return (self.in_flight + work) * self.seconds_per_unit / max(1, self._live_replicas())

    def saturated(self) -> float | None:
        """Seconds to retry after when the work already in flight exceeds the bound (any request would be refused,
        so the door can answer before reading its body), else None."""
        wait = self.wait_s()
        return wait - self.max_queued_s if self.in_flight > 0 and wait > self.max_queued_s else None

    def admit(self, work: int) -> float | None:
        """None and the work counted in flight, or the seconds after which to retry."""
        if self.in_flight > 0:
            wait = self.wait_s(work)
            if wait > self.max_queued_s:
                return wait - self.max_queued_s
        self.in_flight += work
        return None

    def done(self, work: int) -> None:
        self.in_flight = max(0, self.in_flight - work)

    def observe(self, replica: str | None, batch_seconds: float, batch_work: int) -> None:
        """One answer's batch: how long the model took for how much work, and which replica ran it."""
        if replica:
            self.replicas[replica] = time.monotonic()
        if batch_work > 0 and batch_seconds > 0:
            self.seconds_per_unit = 0.8 * self.seconds_per_unit + 0.2 * (batch_seconds / batch_work)

    def _live_replicas(self) -> int:
        cutoff = time.monotonic() - self.replica_window_s
        for name in [name for name, seen in self.replicas.items() if seen < cutoff]:
            del self.replicas[name]
        return len(self.replicas)
