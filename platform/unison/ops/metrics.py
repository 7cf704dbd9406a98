"""Unison's Prometheus metrics, defined once (names, labels, buckets) and recorded where the figure is known.

Recorded with `ray.util.metrics` so they work on any Ray cluster: Ray's metrics agent on each node exports them
on its metrics port as `ray_<name>` (docs/OPS.md lists them as scraped). Each process creates its metrics
lazily on first use, so importing this module costs nothing and code outside Ray (unit tests, the CLI) never
touches them. Base units: seconds and bytes; counters end in `_total`.

This is the only module that constructs a Ray or Prometheus metric (tests/unit/test_architecture.py checks it):
a new metric is a line in DEFINITIONS, recorded with `inc`, `observe` or `set_gauge`.
"""

from __future__ import annotations

import threading
import time
from typing import Any

LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]
EVENT_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0]
BATCH_SIZE_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
FILL_BUCKETS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
HTTP_LATENCY_BUCKETS: list[float] = [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10]

# name -> (kind, description, label names, buckets)
DEFINITIONS: dict[str, tuple[str, str, tuple[str, ...], list[float] | None]] = {
    "unison_http_requests_total": ("counter", "HTTP requests answered, by route, model version and status.",
                                   ("route", "model", "version", "status"), None),
    "unison_http_request_duration_seconds": ("histogram", "End-to-end latency in the ingress.",
                                             ("route", "model", "version"), HTTP_LATENCY_BUCKETS),
    "unison_model_batch_duration_seconds": (
        "histogram", "Model-only time of one scored batch: online features, transform, Predictor.",
        ("path", "model"), LATENCY_BUCKETS),
    "unison_model_batch_size": ("histogram", "Rows per scored batch.", ("path", "model"), BATCH_SIZE_BUCKETS),
    "unison_model_batch_fill_ratio": (
        "histogram", "Requests in a dynamic batch divided by max_batch_size (online).", ("model",), FILL_BUCKETS),
    "unison_model_queue_depth": ("gauge", "Requests inside a Model replica (waiting for or in a batch).",
                                 ("replica",), None),
    "unison_model_cache_loads_total": ("counter", "Model versions loaded into a replica's cache.", ("model",), None),
    "unison_model_cache_evictions_total": ("counter", "Model versions evicted from a replica's cache.", ("model",),
                                           None),
    "unison_model_cache_bytes": ("gauge", "Bytes a Model replica's cache accounts for.", ("replica",), None),
    "unison_stream_records_total": ("counter", "Records the stream consumers handled, by outcome.",
                                    ("topic", "outcome"), None),
    "unison_stream_dead_letters_total": ("counter", "Records sent to a dead-letter topic, by reason.",
                                         ("topic", "reason"), None),
    "unison_stream_errors_total": ("counter", "Failures in a consumer loop, by kind: broker (reconnect), transient "
                                              "(retried), permanent (the poll retried a record at a time).",
                                   ("topic", "kind"), None),
    "unison_stream_event_duration_seconds": (
        "histogram", "From a record's timestamp (when it was produced) to its result being produced.", ("topic",),
        EVENT_BUCKETS),
    "unison_kafka_consumer_lag": ("gauge", "Records in a partition not yet committed by the consumer group (end "
                                           "offset - committed offset).", ("group", "topic", "partition"), None),
    "unison_stream_members": ("gauge", "Live consumers holding or waiting for partition leases (coordinator).",
                              ("group", "topic"), None),
    "unison_stream_unowned_lagging_partitions": (
        "gauge", "Partitions with lag that no consumer holds a lease on (coordinator).", ("group", "topic"), None),
    "unison_stream_stalled_partitions": (
        "gauge", "Partitions with lag whose committed offset has not moved for stall_after_s (coordinator).",
        ("group", "topic"), None),
    "unison_stream_partition_handoffs_total": (
        "counter", "Partition leases that moved, by reason: rebalance (released), left, expired, stalled.",
        ("group", "topic", "reason"), None),
    "unison_stream_partitions_owned": ("gauge", "Partitions a consumer replica holds a lease on and consumes.",
                                       ("group", "topic", "member"), None),
    "unison_stream_seconds_since_commit": (
        "gauge", "Seconds since a consumer replica last committed (or caught up); its health check fails past "
                 "stall_after_s while its partitions lag.", ("group", "topic", "member"), None),
    "unison_feature_freshness_seconds": ("gauge", "Age of the newest feature data the online store holds, per view.",
                                         ("view",), None),
    "unison_feature_drift_psi": ("gauge", "Population stability index of a model input over the drift window, live "
                                          "against the training reference.", ("model", "path", "input"), None),
    "unison_feature_drift_window_rows": ("gauge", "Rows in the drift window.", ("model", "path"), None),
    "unison_parity_ok": ("gauge", "1 when the last parity check found no mismatch, 0 otherwise.", (), None),
    "unison_parity_mismatches": ("gauge", "Mismatched tickets per path pair in the last parity check.", ("pair",),
                                 None),
    "unison_parity_last_run_timestamp_seconds": ("gauge", "When the last parity check ran (Unix time).", (), None),
    "unison_batch_rows_total": ("counter", "Rows scored by batch jobs.", ("model",), None),
    "unison_batch_block_duration_seconds": ("histogram", "Model time per block in a batch job.", ("model",),
                                            LATENCY_BUCKETS),
}

# Recorded with `ray.serve.metrics` instead (the ingress's, inside a Serve replica): Serve adds the `application`,
# `deployment` and `replica` labels of the replica that records them.
SERVE_METRICS = frozenset({"unison_http_requests_total", "unison_http_request_duration_seconds"})

# Ray's metrics agent forgets a gauge series that its process has not recorded for two export intervals (about
# 20 s by default), so a value set once (a parity result, a cache size, an idle queue depth) would vanish from
# Prometheus while it is still true. Each process therefore keeps its gauges' last values and records them again
# every GAUGE_REFRESH_S: a gauge holds until it is set again or its process ends.
GAUGE_REFRESH_S = 5.0

_lock = threading.Lock()
_made: dict[str, Any] = {}
_held: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
_refresher: threading.Thread | None = None


class _Unrecorded:
    """Outside a Ray worker (unit tests, a benchmark running a loop in-process) figures go nowhere."""

    def observe(self, value: float, tags: dict[str, str] | None = None) -> None: ...

    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None: ...

    def set(self, value: float, tags: dict[str, str] | None = None) -> None: ...


def metric(name: str) -> Any:
    """The process's instance of metric `name` (created on first use)."""
    made = _made.get(name)
    if made is not None:  # the hot path: no import, no lock
        return made
    import ray

    if not ray.is_initialized():
        return _Unrecorded()
    with _lock:
        if name not in _made:
            kinds: Any
            if name in SERVE_METRICS:  # imported only there: a batch actor has no use for ray.serve
                from ray.serve import metrics as kinds
            else:
                from ray.util import metrics as kinds
            kind, description, labels, buckets = DEFINITIONS[name]
            if kind == "histogram":
                _made[name] = kinds.Histogram(name, description, boundaries=buckets, tag_keys=labels)
            elif kind == "counter":
                _made[name] = kinds.Counter(name, description, tag_keys=labels)
            else:
                _made[name] = kinds.Gauge(name, description, tag_keys=labels)
        return _made[name]


def observe(name: str, value: float, **tags: str) -> None:
    metric(name).observe(value, tags=tags or None)


def inc(name: str, value: float = 1.0, **tags: str) -> None:
    if value > 0:
        metric(name).inc(value, tags=tags or None)


def set_gauge(name: str, value: float, **tags: str) -> None:
    """Set a gauge series; it is re-recorded every GAUGE_REFRESH_S until set again (see GAUGE_REFRESH_S)."""
    gauge = metric(name)
    gauge.set(value, tags=tags or None)
    if isinstance(gauge, _Unrecorded):
        return
    global _refresher
    with _lock:
        _held[(name, tuple(sorted(tags.items())))] = value
        if _refresher is None:
            _refresher = threading.Thread(target=_refresh_held, name="unison-gauge-refresh", daemon=True)
            _refresher.start()


def clear_gauge(name: str, **tags: str) -> None:
    """Stop holding a gauge series (a figure that no longer exists, such as the PSI of a window that emptied):
    it is no longer re-recorded, so Ray's agent drops it within two export intervals."""
    with _lock:
        _held.pop((name, tuple(sorted(tags.items()))), None)


def _refresh_held() -> None:
    while True:
        time.sleep(GAUGE_REFRESH_S)
        with _lock:
            held = list(_held.items())
        for (name, tags), value in held:
            _made[name].set(value, tags=dict(tags) or None)


def scored_batch(path: str, model: str, rows: int, seconds: float) -> None:
    """One batch scored on a serving path (`online`, `stream`): its model time and size."""
    observe("unison_model_batch_duration_seconds", seconds, path=path, model=model)
    observe("unison_model_batch_size", rows, path=path, model=model)
