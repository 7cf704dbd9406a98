"""The streaming deployments: each Serve replica consumes the partitions it holds leases on.

`StreamConsumer` scores tickets from the input topic; `FeatureEventConsumer` pushes customer activity events
into Feast (`unison.streaming.events`). For the scorer:

Partitions spread over the replicas and move when replicas come and go, by leases from the partition
coordinator (`unison.streaming.ownership`), never by a Kafka group rebalance. The loop runs in a thread started
after the replica is constructed (`reconfigure`, which Serve calls with the `user_config`), and stops cleanly --
committing, then giving its leases back -- when Serve shuts the replica down. A replica that makes no progress
while its partitions lag fails its health check (`ConsumerLoop.stall`), so Serve replaces it. Scoring is the
one scoring step (online features for the whole poll in one lookup, the one transform, the Predictor); the
served version follows the registry alias (re-read every few seconds), so a promote reaches the stream too.
Every few seconds a replica reads its group's lag (`unison.streaming.lag.LagWatch`: the
`unison_kafka_consumer_lag` gauge per partition, stall detection) and reports it to Serve's autoscaler
(`record_autoscaling_stats`) for the lag-based policy in `unison.streaming.autoscaling`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import Any

import pandas as pd

from unison.config import Settings, load_settings
from unison.ops import metrics
from unison.ops.logs import setup_logging
from unison.streaming.events import FeatureEventConfig, FeatureEventStream
from unison.streaming.lag import LagWatch
from unison.streaming.loop import ConsumerConfig, ConsumerLoop
from unison.streaming.tickets import StreamConfig, TicketStream

log = logging.getLogger("unison.streaming")

ALIAS_CHECK_S = 5.0
FRESHNESS_S = 15.0
RETRY_LOAD_S = 30.0


class StreamConsumer:
    """A Serve deployment class (decorated in `unison.serving.app`)."""

    def __init__(self, model: str | None = None, variant: str | None = None, drift: Any = None) -> None:
        from unison.features.store import Features, feature_service_name
        from unison.model import Registry
        from unison.model.drift import DriftRecorder
        from unison.model.scoring import DataPlane

        setup_logging()
        self.settings: Settings = load_settings()
        self.ref = model or self.settings.model.ref
        self.variant = variant or self.settings.model.variant
        self.registry = Registry(self.settings.model.registry_dir)
        self.feature_service = feature_service_name()
        self.drift = DriftRecorder.to_monitor("stream", drift) if drift is not None else None
        self.features: Any = None
        self.predictor: Any = None
        self.load_error: str | None = None
        self._checked = self._attempted = 0.0
        self._lock = threading.Lock()
        try:
            self.features = Features(self.settings)
            self.dataplane = DataPlane("stream", self.features, self.drift)
            self._load()
        except Exception as exc:  # do not consume what cannot be scored; retried from check_health
            self.load_error = f"cannot score: {type(exc).__name__}: {exc}"
            self._attempted = time.monotonic()
            log.error("%s; the consumer waits until it can", self.load_error)
        self.stream: TicketStream | None = None
        self.config = StreamConfig()
        self.disabled = _disabled(self.settings)
        self.lag: LagWatch | None = None

    def _load(self) -> None:
        from unison.model.predictor import Predictor, PredictorOptions

        name, version = self.registry.resolve(self.ref)
        if self.predictor is not None and self.predictor.version == version:
            return
        options = PredictorOptions.from_config(self.settings.model, variant=self.variant)
        predictor = Predictor.from_registry(self.registry, f"{name}:{version}", options, sharded=True)
        old, self.predictor = self.predictor, predictor
        if old is not None:
            old.close()
        log.info("stream scores with %s:%s (%s)", name, version, self.variant)

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Apply `user_config`; (re)start the consumer loop with it."""
        parsed = StreamConfig.model_validate(config or {})
        if self.stream is not None and parsed == self.config and self.stream.alive:
            return
        self.config = parsed
        if self.disabled:
            return
        # Lag is worth reporting even while the model cannot load.
        self.lag = _lag_watch(self.lag, self.settings, parsed, self.settings.kafka.input_topic)
        if self.load_error:
            return
        if self.stream is not None:
            self.stream.stop()
        assert self.settings.kafka.bootstrap_servers is not None
        self.stream = TicketStream(self.settings.kafka, self.settings.kafka.bootstrap_servers, parsed, self._score,
                                   lag=self.lag)
        self.stream.start()

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve's custom autoscaling metrics hook: the group's lag and the input topic's partition count."""
        rows = self.lag.fresh(max(30.0, 5 * self.config.lag_interval_s)) if self.lag is not None else None
        if not rows:
            return {}  # nothing (recent) read: the policy holds rather than acting on a stale figure
        return {"lag": float(sum(r.lag for r in rows)), "partitions": float(len(rows))}

    def _score(self, tickets: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """A poll through the data plane, each ticket its own group: a ticket that raises alone gets
        `{"error": reason}` (dead-lettered with it) and the others are scored. If every ticket's feature lookup
        fails, the cause is not a ticket but the online store: raise, so the poll is retried with backoff."""
        from unison.model.scoring import Failure

        with self._lock:
            if time.monotonic() - self._checked > ALIAS_CHECK_S:
                self._checked = time.monotonic()
                try:
                    self._load()
                except Exception:  # keep the loaded version; the next check retries
                    log.exception("could not follow %s", self.ref)
            predictor = self.predictor
        frame = pd.DataFrame.from_records(tickets)
        outcomes = self.dataplane.score(predictor, frame, groups=[1] * len(frame))
        lookups = [o for o in outcomes if isinstance(o, Failure) and o.kind == "features"]
        if len(lookups) == len(outcomes) and lookups[0].cause is not None:
            raise lookups[0].cause
        common = {"model_name": predictor.name, "model_version": predictor.version, "variant": self.variant,
                  "feature_service": self.feature_service}
        results: list[dict[str, Any]] = []
        for outcome in outcomes:
            if isinstance(outcome, Failure):
                results.append({"error": outcome.message})
            else:
                results.extend({**p.model_dump(), **common} for p in outcome.records())
        headers = {"model_name": predictor.name, "model_version": predictor.version}
        return results, headers

    async def check_health(self) -> None:
        """Raise when the consumer loop died or makes no progress while its partitions lag (Serve then
        replaces the replica); retry a failed load."""
        if self.load_error and time.monotonic() - self._attempted >= RETRY_LOAD_S:
            await asyncio.to_thread(self._retry_load)
        _raise_if_stalled(self.disabled, self.stream)

    def _retry_load(self) -> None:
        from unison.features.store import Features
        from unison.model.scoring import DataPlane

        self._attempted = time.monotonic()
        try:
            if self.features is None:
                self.features = Features(self.settings)
                self.dataplane = DataPlane("stream", self.features, self.drift)
            self._load()
        except Exception as exc:
            self.load_error = f"cannot score: {type(exc).__name__}: {exc}"
            return
        self.load_error = None
        self.reconfigure(self.config.model_dump())

    def status(self) -> dict[str, Any]:
        return {"replica_pid": os.getpid(), "disabled": self.disabled, "load_error": self.load_error,
                "config": self.config.model_dump(),
                "model_version": getattr(self.predictor, "version", None),
                **_lag_status(self.lag),
                "ownership": self.stream.liveness() if self.stream is not None else None,
                "stats": self.stream.stats.as_dict() if self.stream is not None else None,
                "window": self.stream.window.stats() if self.stream is not None else None}

    def __del__(self) -> None:  # Serve calls it on graceful shutdown: commit, give the leases back
        _shut(getattr(self, "stream", None), getattr(self, "lag", None))


def _lag_watch(current: LagWatch | None, settings: Settings, config: ConsumerConfig, topic: str) -> LagWatch:
    """The replica's lag reader for `config`'s group (a new one when the group or interval changed)."""
    if current is not None and (current.group, current.interval_s) == (config.group_id, config.lag_interval_s):
        return current
    if current is not None:
        current.stop()
    assert settings.kafka.bootstrap_servers is not None
    return LagWatch(settings.kafka, settings.kafka.bootstrap_servers, config.group_id, topic,
                    config.lag_interval_s).start()


def _lag_status(lag: LagWatch | None) -> dict[str, Any]:
    rows = lag.fresh() if lag is not None else None
    return {"lag": None if rows is None else {"lag": float(sum(r.lag for r in rows)), "partitions": float(len(rows))},
            "lag_error": lag.error if lag is not None else None}


def _raise_if_stalled(disabled: str | None, stream: ConsumerLoop | None) -> None:
    if disabled is None and stream is not None:
        why = stream.stall()
        if why:
            raise RuntimeError(why)


def _shut(stream: ConsumerLoop | None, lag: LagWatch | None) -> None:
    if lag is not None:
        lag.stop()
    if stream is not None:
        stream.stop()


def _disabled(settings: Settings) -> str | None:
    if settings.kafka.bootstrap_servers:
        return None
    reason = "no Kafka broker configured (kafka.bootstrap_servers); streaming is off"
    log.warning("%s", reason)
    return reason


class FeatureEventConsumer:
    """A Serve deployment class: each replica consumes the feature-event partitions it holds leases on."""

    def __init__(self) -> None:
        setup_logging()
        self.settings: Settings = load_settings()
        self.config = FeatureEventConfig()
        self.stream: FeatureEventStream | None = None
        self.features: Any = None
        self.store_error: str | None = None
        self._attempted = 0.0
        self.disabled = _disabled(self.settings)
        self.freshness: list[dict[str, Any]] = []
        self.lag: LagWatch | None = None
        self._open()
        self._fresh_stop = threading.Event()
        threading.Thread(target=self._watch_freshness, name="unison-freshness", daemon=True).start()

    def _watch_freshness(self) -> None:
        """Every FRESHNESS_S: per view, seconds since the online store last got data (the end of the newest
        materialized interval, or a pushed event's arrival), as `unison_feature_freshness_seconds`."""
        while True:
            if self.features is not None:
                try:
                    rows = self.features.freshness(newest_events=False)  # only the materialization end is used
                except Exception:  # the store is away: keep the last figures
                    log.warning("could not read feature freshness", exc_info=True)
                    rows = []
                pushed = self.stream.last_push_at if self.stream is not None else None
                now = time.time()
                found = []
                for row in rows:
                    latest = [t.timestamp() for t in (row.materialized_until,) if t is not None]
                    if pushed is not None and row.view == "customer_activity":
                        latest.append(pushed)
                    if latest:
                        age = max(0.0, now - max(latest))
                        metrics.set_gauge("unison_feature_freshness_seconds", age, view=row.view)
                        found.append({"view": row.view, "age_s": round(age, 1),
                                      "ttl_s": row.ttl.total_seconds() if row.ttl else None})
                if found:
                    self.freshness = found
            if self._fresh_stop.wait(FRESHNESS_S):
                return

    def _open(self) -> None:
        from unison.features.store import Features

        self._attempted = time.monotonic()
        try:
            self.features = Features(self.settings)
            self.store_error = None
        except Exception as exc:  # do not consume what cannot be pushed; retried from check_health
            self.store_error = f"feature store unavailable: {type(exc).__name__}: {exc}"
            log.error("%s; the consumer waits until it is", self.store_error)

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Apply `user_config`; (re)start the consumer loop with it."""
        parsed = FeatureEventConfig.model_validate(config or {})
        if self.stream is not None and parsed == self.config and self.stream.alive:
            return
        self.config = parsed
        if self.disabled:
            return
        self.lag = _lag_watch(self.lag, self.settings, parsed, self.settings.kafka.feature_events_topic)
        if self.features is None:
            return
        if self.stream is not None:
            self.stream.stop()
        assert self.settings.kafka.bootstrap_servers is not None
        self.stream = FeatureEventStream(self.settings.kafka, self.settings.kafka.bootstrap_servers, parsed,
                                         self.features.push, lag=self.lag)
        self.stream.start()

    async def check_health(self) -> None:
        """Raise when the consumer loop died or makes no progress while its partitions lag (Serve replaces the
        replica); retry an unavailable store."""
        if self.features is None and time.monotonic() - self._attempted >= RETRY_LOAD_S:
            await asyncio.to_thread(self._open)
            if self.features is not None:
                self.reconfigure(self.config.model_dump())
        _raise_if_stalled(self.disabled, self.stream)

    def status(self) -> dict[str, Any]:
        stream = self.stream
        return {"replica_pid": os.getpid(), "disabled": self.disabled, "store_error": self.store_error,
                "config": self.config.model_dump(), "topic": self.settings.kafka.feature_events_topic,
                "newest_event": stream.newest_event.isoformat() if stream and stream.newest_event is not None
                else None,
                "last_push_seconds": stream.last_push_seconds if stream else None,
                "freshness": self.freshness, **_lag_status(self.lag),
                "ownership": stream.liveness() if stream is not None else None,
                "stats": stream.stats.as_dict() if stream is not None else None}

    def __del__(self) -> None:  # Serve calls it on graceful shutdown: commit, give the leases back
        _shut(getattr(self, "stream", None), getattr(self, "lag", None))
