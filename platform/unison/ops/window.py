"""Live throughput and latency over the last minute, kept by the process that serves (for `/v1/ops`,
`unison status` and the ops page, which must work without a Prometheus server)."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

import numpy as np


class ThroughputWindow:
    """Throughput, latency and errors of the last `window_s` seconds of a serving process's events (requests,
    records): when each happened, how long it took, how many items, whether it failed."""

    def __init__(self, window_s: float = 60.0, max_events: int = 100_000) -> None:
        self.window_s = window_s
        self._events: deque[tuple[float, float, int, bool]] = deque(maxlen=max_events)
        self._lock = threading.Lock()
        self._started = time.monotonic()

    def add(self, seconds: float, items: int = 1, error: bool = False, at: float | None = None) -> None:
        with self._lock:
            self._events.append((time.monotonic() if at is None else at, seconds, items, error))

    def stats(self, now: float | None = None) -> dict[str, Any]:
        """Per second rates over the window (or the time since start, if shorter), latency percentiles of the
        successful events, and the error count."""
        now = time.monotonic() if now is None else now
        with self._lock:
            while self._events and self._events[0][0] < now - self.window_s:
                self._events.popleft()
            events = list(self._events)
        span = max(min(self.window_s, now - self._started), 1e-9)
        good = np.array([e[1] for e in events if not e[3]], dtype=np.float64)
        return {
            "window_s": round(span, 1),
            "events": len(events),
            "events_per_s": round(len(events) / span, 3),
            "items_per_s": round(sum(e[2] for e in events) / span, 3),
            "errors": sum(1 for e in events if e[3]),
            "p50_s": float(np.percentile(good, 50)) if len(good) else None,
            "p99_s": float(np.percentile(good, 99)) if len(good) else None,
        }
