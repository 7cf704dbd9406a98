"""The ticket stream: decode and validate each message, score a poll through the data plane in its own thread
while the loop reads the next one, and produce one result per ticket (dead letters for the rest).

Results are keyed by ticket id, with model-version, latency and source headers; see `unison.streaming.loop` for
the at-least-once loop around it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import Field, ValidationError

from unison.config import KafkaConfig
from unison.domain import MAX_TEXT_CHARS
from unison.features.ticket import Ticket, first_error
from unison.ops import metrics
from unison.streaming.lag import LagWatch
from unison.streaming.loop import MAX_MESSAGE_BYTES, ConsumerConfig, ConsumerLoop, json_object, source
from unison.streaming.ownership import Coordinator

log = logging.getLogger("unison.streaming")


class StreamConfig(ConsumerConfig):
    """The ticket-scoring deployment's `user_config`."""

    group_id: str = Field(default="unison-scorer", description="Kafka consumer group id the replicas commit "
                                                               "offsets to.")
    max_text_chars: int = Field(default=MAX_TEXT_CHARS, ge=1, description="Longer subject + body goes to the DLQ.")


def decode(value: bytes | None, max_text_chars: int) -> tuple[Ticket | None, str | None]:
    """The ticket in a message, or the reason it cannot be scored."""
    payload, reason = json_object(value, MAX_MESSAGE_BYTES)
    if payload is None:
        return None, reason
    try:
        ticket = Ticket.model_validate(payload)
    except ValidationError as exc:
        return None, first_error(exc)
    if ticket.text_chars() > max_text_chars:
        return None, f"text has {ticket.text_chars()} characters, more than {max_text_chars}"
    return ticket, None


ScoreFn = Callable[[list[dict[str, Any]]], tuple[list[dict[str, Any]], dict[str, str]]]


class TicketStream(ConsumerLoop):
    """Scores tickets into the output topic. `score(tickets)` returns one result per ticket plus common
    headers."""

    name = "stream"

    def __init__(self, kafka: KafkaConfig, bootstrap_servers: str, config: StreamConfig, score: ScoreFn,
                 lag: LagWatch | None = None, coordinator: Callable[[], Coordinator] | None = None) -> None:
        super().__init__(kafka, bootstrap_servers, config, kafka.input_topic, kafka.dead_letter_topic, lag,
                         coordinator)
        self.config: StreamConfig = config
        self.score = score
        self._scoring = ThreadPoolExecutor(1, thread_name_prefix="unison-score")  # one poll scored at a time

    def begin(self, records: list[Any]) -> Callable[[], None]:
        """Decode now and start the model on the good tickets in the scoring thread; the returned call waits for
        it and sends the outputs and dead letters."""
        good: list[tuple[Any, Ticket]] = []
        bad: list[tuple[Any, str]] = []
        for record in records:
            ticket, reason = decode(record.value, self.config.max_text_chars)
            if ticket is None:
                bad.append((record, reason or "invalid"))
            else:
                good.append((record, ticket))
        started = time.perf_counter()
        scoring = self._scoring.submit(self.score, [t.model_dump(exclude={"created_at"}) for _, t in good]) \
            if good else None

        def complete() -> None:
            scored = scoring.result() if scoring is not None else None  # raises before anything is sent
            for record, reason in bad:
                self.dead_letter(record, reason)
            if scored is not None:
                self._send_results(good, *scored, (time.perf_counter() - started) * 1000)

        return complete

    def handle(self, records: list[Any]) -> None:
        self.begin(records)()

    def stop(self, timeout: float = 20.0) -> None:
        super().stop(timeout)
        self._scoring.shutdown(wait=False, cancel_futures=True)

    def _send_results(self, good: list[tuple[Any, Ticket]], results: list[dict[str, Any]], headers: dict[str, str],
                      latency_ms: float) -> None:
        member = self.ownership.member.encode()
        scored: dict[str, int] = {}
        for (record, ticket), result in zip(good, results, strict=True):
            if "error" in result:
                # Unscorable for a reason of the ticket itself (the model refused it): dead-letter it.
                self.dead_letter(record, str(result["error"]))
                continue
            waited_ms = time.time() * 1000 - record.timestamp if record.timestamp and record.timestamp > 0 else -1
            # The dedupe key in the value too, for sinks that drop headers: at-least-once may repeat an output.
            result = {**result, "result_id": f"{source(record)}/{result.get('model_name')}:"
                                             f"{result.get('model_version')}"}
            self.send(self.kafka.output_topic, ticket.ticket_id.encode(), json.dumps(result).encode(),
                      [*((k, v.encode()) for k, v in headers.items()),
                       ("latency_ms", f"{latency_ms:.1f}".encode()),
                       ("event_latency_ms", f"{waited_ms:.1f}".encode()),
                       ("source", source(record).encode()), ("consumer", member)])
            self.stats.scored += 1
            scored[record.topic] = scored.get(record.topic, 0) + 1
            if waited_ms >= 0:
                metrics.observe("unison_stream_event_duration_seconds", waited_ms / 1000, topic=record.topic)
                self.window.add(waited_ms / 1000)
        for topic, count in scored.items():  # one counter update per poll, not per record
            metrics.inc("unison_stream_records_total", count, topic=topic, outcome="scored")
